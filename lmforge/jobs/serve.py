"""`serve`: deploy a model on Ray Serve behind an OpenAI-compatible API.

    python -m lmforge.jobs.serve --input models:/lmforge-demo@candidate

`deploy` starts the application and returns its base URL; `ask` calls it with the
official `openai` client, the way users will.
"""

from __future__ import annotations

import time
from typing import Any

from lmforge.jobs.common import StageResult, stage_context
from lmforge.platform import registry, tracking
from lmforge.platform.config import ConfigError, Recipe

APP_NAME = "lmforge"


def validate(recipe: Recipe) -> None:
    model = recipe.serve.model
    assert model is not None
    if not model.startswith("models:/"):
        try:
            registry.resolve_model_dir(model)
        except FileNotFoundError as e:
            raise ConfigError(f"serve.model: {e}") from None


def deploy(recipe: Recipe) -> str:
    """Start (or update) the Serve application; returns the OpenAI base URL."""
    from ray import serve

    from lmforge.serve import build_app

    cfg = recipe.serve
    assert cfg.model is not None and cfg.served_model_name is not None
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    options: dict[str, Any] = {
        "num_cpus": cfg.num_cpus,
        "num_gpus": cfg.num_gpus,
        # the replica resolves models:/NAME@ALIAS itself, from the same store
        "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": recipe.mlflow.tracking_uri}},
    }
    app = build_app(
        cfg.model,
        served_model_name=cfg.served_model_name,
        num_replicas=cfg.num_replicas,
        ray_actor_options=options,
        default_max_tokens=cfg.max_tokens,
    )
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}/v1"


def ask(base_url: str, model: str, question: str, max_tokens: int) -> Any:
    """One chat completion through the official client; returns the response object."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="not-needed-locally", max_retries=2)
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0.0,
    )


def run(
    recipe: Recipe, *, parent_run_id: str | None = None, block: bool | None = None
) -> StageResult:
    cfg = recipe.serve
    assert cfg.model is not None and cfg.served_model_name is not None
    validate(recipe)
    with stage_context("serve", recipe, cfg.model_dump(), parent_run_id=parent_run_id) as run_id:
        if cfg.model.startswith("models:/"):
            info = registry.model_version_info(cfg.model)
            tracking.set_tags({f"lmforge.model.{k}": v for k, v in info.items()})
            if info["run_id"]:
                tracking.set_tags({"lmforge.consumed_runs": info["run_id"]})
        t0 = time.perf_counter()
        base_url = deploy(recipe)
        ready_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reply = ask(base_url, cfg.served_model_name, cfg.demo_prompt, cfg.max_tokens)
        latency = time.perf_counter() - t0
        answer = reply.choices[0].message.content or ""
        metrics = {
            "deploy_s": ready_s,
            "demo_latency_s": latency,
            "demo_completion_tokens": float(reply.usage.completion_tokens),
            "demo_tokens_per_s": reply.usage.completion_tokens / latency,
        }
        tracking.log_metrics(metrics)
        tracking.log_dict(
            {"base_url": base_url, "question": cfg.demo_prompt, "answer": answer},
            "demo_answer.json",
        )
        tracking.set_tags({"lmforge.endpoint": base_url})
    print(f"[lmforge serve] {cfg.served_model_name} at {base_url}", flush=True)
    print(f"[lmforge serve] Q: {cfg.demo_prompt}", flush=True)
    # the answer of a tiny model often starts with blank lines: show its text, indented
    shown = "\n    ".join(line for line in answer.strip().splitlines() if line.strip())
    print(f"[lmforge serve] A: {shown or repr(answer)}", flush=True)
    if cfg.blocking if block is None else block:
        _serve_forever()
    return StageResult("serve", run_id, base_url, metrics, {"answer": answer, "base_url": base_url})


def _serve_forever() -> None:
    from ray import serve

    print("[lmforge serve] serving; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


if __name__ == "__main__":
    from lmforge.jobs.cli import stage_main

    stage_main("serve")
