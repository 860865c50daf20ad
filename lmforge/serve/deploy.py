"""Deploying the OpenAI-compatible app on Ray Serve, and calling it the way users will.

    base_url = deploy(cfg, tracking_uri="sqlite:////abs/work/mlflow.db")  # ".../v1"
    reply = ask(base_url, cfg.served_model_name, "What does os.path.join do?", 64)
    serve_forever()  # until Ctrl-C, then Serve is shut down

The library half of the `serve` stage (`lmforge.jobs.serve` is its entry point): it needs
a connected Ray (`ray.init` done by the caller) and a `ServeConfig` whose `model` and
`served_model_name` are filled (`Recipe.with_defaults` does). The replica resolves a
`models:/NAME@ALIAS` itself, so it is given the caller's MLflow tracking URI.
`app_builder(args)` builds the same app from a Serve config file (a KubeRay RayService).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lmforge.serve.config import ServeConfig

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion
    from ray.serve import Application

APP_NAME = "lmforge"  # the Serve application name, one per cluster


def deploy(cfg: ServeConfig, *, tracking_uri: str | None) -> str:
    """Start (or update) the Serve application; returns the OpenAI base URL (".../v1").

    `tracking_uri` becomes MLFLOW_TRACKING_URI in the replicas' runtime env; None leaves
    the replicas with whatever their node has.
    """
    from ray import serve

    from lmforge.serve.app import build_app

    if cfg.model is None or cfg.served_model_name is None:
        raise ValueError("serve.model and serve.served_model_name must be set")
    serve.start(
        proxy_location=cfg.proxy_location, http_options={"host": cfg.host, "port": cfg.port}
    )
    options: dict[str, Any] = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
    if tracking_uri is not None:
        # the replica resolves models:/NAME@ALIAS itself, from the same store
        options["runtime_env"] = {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}}
    app = build_app(
        cfg.model,
        served_model_name=cfg.served_model_name,
        num_replicas=cfg.num_replicas,
        ray_actor_options=options,
        default_max_tokens=cfg.max_tokens,
    )
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    # a wildcard bind address is reachable on loopback
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}/v1"


def app_builder(args: dict[str, Any]) -> Application:
    """The application of a Serve config file (`import_path:
    lmforge.serve.deploy:app_builder`, as KubeRay's serveConfigV2 names it); `args` are
    `serve:` fields, `model` and `served_model_name` required. The replicas find MLflow
    through MLFLOW_TRACKING_URI in their node's environment."""
    from lmforge.serve.app import build_app

    cfg = ServeConfig.model_validate(args)
    if cfg.model is None or cfg.served_model_name is None:
        raise ValueError("Serve args: 'model' and 'served_model_name' must be set")
    return build_app(
        cfg.model,
        served_model_name=cfg.served_model_name,
        num_replicas=cfg.num_replicas,
        ray_actor_options={"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
        default_max_tokens=cfg.max_tokens,
    )


def ask(base_url: str, model: str, question: str, max_tokens: int) -> ChatCompletion:
    """One greedy chat completion through the official client (its `usage` is filled)."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="not-needed-locally", max_retries=2)
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
