"""Deploying the OpenAI-compatible app on Ray Serve, and calling it the way users will.

    base_url = deploy(cfg, tracking_uri="sqlite:////abs/work/mlflow.db")  # ".../v1"
    reply = ask(base_url, cfg.served_model_name, "What does os.path.join do?", 64)
    serve_forever()  # until Ctrl-C, then Serve is shut down

The library half of the `serve` stage (`lmforge.jobs.serve` is its entry point): it needs
a connected Ray (`ray.init` done by the caller) and a `ServeConfig` whose `model` and
`served_model_name` are filled (`Recipe.with_defaults` does). The replica resolves a
`models:/NAME@ALIAS` itself, so it is given the caller's MLflow tracking URI.
`app_builder(args)` builds the same app from a Serve config file (`lmforge serve-config`,
a KubeRay RayService); `build(cfg)` picks the engine's app (`serve.engine`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lmforge.serve.config import ServeConfig
from lmforge.serve.deployment import APP_NAME, actor_options, deployment_options, http_options

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion
    from ray.serve import Application

__all__ = ["APP_NAME", "app_builder", "ask", "deploy", "serve_forever"]


def build(cfg: ServeConfig, *, runtime_env: dict[str, Any] | None = None) -> Application:
    """The application of `cfg.engine`: lmforge's OpenAI app over the `hf` engine, or
    `ray.serve.llm`'s over vLLM (`vllm_app.py`)."""
    if cfg.model is None or cfg.served_model_name is None:
        raise ValueError("serve.model and serve.served_model_name must be set")
    if cfg.engine == "vllm":
        from lmforge.serve.vllm_app import build_vllm_app

        return build_vllm_app(cfg)
    from lmforge.serve.app import build_app
    from lmforge.serve.operations import OpsSettings

    actor = actor_options(cfg)
    if runtime_env is not None:
        actor["runtime_env"] = runtime_env
    return build_app(
        cfg.model,
        served_model_name=cfg.served_model_name,
        ray_actor_options=actor,
        default_max_tokens=cfg.max_tokens,
        max_tokens_limit=cfg.max_tokens_limit,
        engine_options=cfg.engine_options(),
        ops=OpsSettings.from_config(cfg),
        deployment_options=deployment_options(cfg),
    )


def deploy(cfg: ServeConfig, *, tracking_uri: str | None) -> str:
    """Start (or update) the Serve application; returns the OpenAI base URL (".../v1").

    `tracking_uri` becomes MLFLOW_TRACKING_URI in the replicas' runtime env; None leaves
    the replicas with whatever their node has. API keys never go there: each replica
    reads its node's LMFORGE_API_KEYS or `serve.api_keys_file` (`auth.py`).
    """
    from ray import serve

    from lmforge.serve.auth import ApiKeys, client_key, warn_if_open

    runtime_env = None
    if tracking_uri is not None:
        # the replica resolves models:/NAME@ALIAS itself, from the same store
        runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}}
    app = build(cfg, runtime_env=runtime_env)
    key = client_key(cfg.api_keys_file)
    if (warning := warn_if_open(cfg.host, ApiKeys([key] if key else []))) is not None:
        print(f"[lmforge serve] warning: {warning}", flush=True)
    serve.start(proxy_location=cfg.proxy_location, http_options=http_options(cfg))
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    # a wildcard bind address is reachable on loopback
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}/v1"


def app_builder(args: dict[str, Any]) -> Application:
    """The application of a Serve config file (`import_path:
    lmforge.serve.deploy:app_builder`, as `lmforge serve-config` and KubeRay's
    serveConfigV2 name it); `args` are `serve:` fields, `model` and `served_model_name`
    required. The replicas find MLflow through MLFLOW_TRACKING_URI in their node's
    environment, and API keys there too (LMFORGE_API_KEYS) or in `api_keys_file`."""
    cfg = ServeConfig.model_validate(args)
    if cfg.model is None or cfg.served_model_name is None:
        raise ValueError("Serve args: 'model' and 'served_model_name' must be set")
    return build(cfg)


def ask(
    base_url: str, model: str, question: str, max_tokens: int, *, api_key: str | None = None
) -> ChatCompletion:
    """One greedy chat completion through the official client (its `usage` is filled).
    `api_key` None: the first key of LMFORGE_API_KEYS, if any."""
    from openai import OpenAI

    from lmforge.serve.auth import client_key

    key = api_key or client_key() or "not-needed-locally"
    client = OpenAI(base_url=base_url, api_key=key, max_retries=2)
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        temperature=0.0,
    )


def serve_forever() -> None:
    """Block until Ctrl-C, then shut the Serve application down."""
    from ray import serve

    print("[lmforge serve] serving; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
