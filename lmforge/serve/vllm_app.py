"""`serve.engine: vllm`: the recipe's model on `ray.serve.llm` (vLLM), for GPU clusters.

    config = llm_config(cfg)        # a validated `LLMConfig`, no GPU or vLLM needed
    app = build_vllm_app(cfg)       # `build_openai_app`: needs `pip install lmforge[vllm]`

Ray's own OpenAI app then serves the model (`/v1/models`, `/v1/completions`,
`/v1/chat/completions`), its replicas sized from the recipe: `tensor_parallel_size` is
the replica's GPUs (`serve.num_gpus`), `accelerator_type` and autoscaling come from the
recipe, and `max_ongoing_requests` / `max_queued_requests` are Serve's (overload is
Ray's 503 with `Retry-After`). lmforge's API keys, log line and metrics belong to the
`hf` app: Ray's app checks no key (a warning says so when `serve.host` is beyond
loopback), and vLLM reports its own engine metrics (`log_engine_metrics`).

The model source: a local folder as is (it must be on every GPU node), an `s3://` or
`gs://` folder as Ray's cloud mirror (each replica downloads it), `models:/NAME@ALIAS`
(or `/VERSION`) resolved through the MLflow registry to its Hugging Face folder,
downloaded on the node that builds the app.

`ray.serve.llm` imports vLLM when imported, and vLLM is a CUDA-only wheel, so nothing
here imports it at module level. `LLMConfig` itself validates without vLLM: where the
public module cannot be imported, the class it re-exports is used for validation.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lmforge.serve.auth import LOOPBACK
from lmforge.serve.config import ServeConfig
from lmforge.serve.deployment import scaling_options

if TYPE_CHECKING:
    from ray.serve import Application

logger = logging.getLogger("ray.serve")

INSTALL_HINT = "serve.engine=vllm needs vLLM on the GPU nodes: pip install 'lmforge[vllm]'"


def model_source(model: str) -> str | dict[str, str]:
    """`model_loading_config.model_source` for a recipe's `serve.model`."""
    from lmforge.platform.storage import is_remote

    if model.startswith("models:/"):
        from lmforge.platform.registry import resolve_model_dir

        return resolve_model_dir(model)
    if is_remote(model):
        return {"bucket_uri": model.rstrip("/")}
    return model


def _llm_config_class() -> Any:
    try:
        from ray.serve.llm import LLMConfig
    except ImportError:  # no vLLM here: the same model, from where the public one comes
        from ray.llm._internal.serve.core.configs.llm_config import (  # type: ignore[assignment]
            LLMConfig,
        )
    return LLMConfig


def llm_config(cfg: ServeConfig, *, source: str | dict[str, str] | None = None) -> Any:
    """The `ray.serve.llm.LLMConfig` of the recipe's serve section (validated).

    `source` replaces the resolved `model_source` (a test without a registry)."""
    if cfg.model is None or cfg.served_model_name is None:
        raise ValueError("serve.model and serve.served_model_name must be set")
    deployment_config: dict[str, Any] = {
        **scaling_options(cfg),
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "graceful_shutdown_timeout_s": cfg.graceful_shutdown_timeout_s,
    }
    if cfg.max_queued_requests > 0:
        deployment_config["max_queued_requests"] = cfg.max_queued_requests
    return _llm_config_class()(
        model_loading_config={
            "model_id": cfg.served_model_name,
            "model_source": source if source is not None else model_source(cfg.model),
        },
        engine_kwargs={"tensor_parallel_size": int(cfg.num_gpus)},
        accelerator_type=cfg.accelerator_type,
        deployment_config=deployment_config,
    )


def build_vllm_app(cfg: ServeConfig) -> Application:
    """Ray's OpenAI app over vLLM for the recipe's model (vLLM must be installed)."""
    config = llm_config(cfg)
    if cfg.host not in LOOPBACK:
        logger.warning(
            "serve.engine=vllm: Ray's OpenAI app checks no lmforge API key; serve.host is %s, "
            "so put the endpoint behind a gateway that authenticates",
            cfg.host,
        )
    try:
        from ray.serve.llm import build_openai_app
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return build_openai_app({"llm_configs": [config]})
