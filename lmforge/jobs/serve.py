"""`serve`: deploy a model on Ray Serve behind an OpenAI-compatible API.

    python -m lmforge.jobs.serve --input models:/lmforge-demo@candidate

`lmforge.serve.deploy` starts the application and returns its base URL; `ask` calls it
with the official `openai` client, the way users will. `serve_forever` blocks until
Ctrl-C.
"""

from __future__ import annotations

import time

from lmforge.jobs.common import StageResult, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.platform import registry, tracking
from lmforge.platform.config import ConfigError
from lmforge.serve.auth import client_key
from lmforge.serve.deploy import ask, deploy, serve_forever


def validate(recipe: Recipe) -> None:
    model = recipe.serve.model
    assert model is not None
    if not model.startswith("models:/"):
        try:
            registry.resolve_model_dir(model)
        except FileNotFoundError as e:
            raise ConfigError(f"serve.model: {e}") from None


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
            # the version is what the register run made (its own run_id: the training run)
            consumed = info["register_run_id"] or info["run_id"]
            if consumed:
                tracking.set_tags({"lmforge.consumed_runs": consumed})
        t0 = time.perf_counter()
        base_url = deploy(cfg, tracking_uri=recipe.mlflow.tracking_uri)
        ready_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        key = client_key(cfg.api_keys_file)  # the endpoint asks for one when keys are set
        reply = ask(base_url, cfg.served_model_name, cfg.demo_prompt, cfg.max_tokens, api_key=key)
        latency = time.perf_counter() - t0
        answer = reply.choices[0].message.content or ""
        completion_tokens = reply.usage.completion_tokens if reply.usage else 0
        metrics = {
            "deploy_s": ready_s,
            "demo_latency_s": latency,
            "demo_completion_tokens": float(completion_tokens),
            "demo_tokens_per_s": completion_tokens / latency,
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
        serve_forever()
    return StageResult("serve", run_id, base_url, metrics, {"answer": answer, "base_url": base_url})


if __name__ == "__main__":
    from lmforge.jobs.command import stage_main

    stage_main("serve")
