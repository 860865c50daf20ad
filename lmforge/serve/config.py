"""`ServeConfig`: the `serve:` section of a recipe, owned by the package that serves.

It lives beside the code that reads it (`deploy.py`), so serving options are defined in
one place; the recipe (`lmforge.jobs.recipe.Recipe`) includes it as its `serve` field.
`model` and `served_model_name` are None until `Recipe.with_defaults` fills them from
the registered model of the recipe. Ports are TCP ports, CPUs and GPUs are per replica
(fractions allowed, as Ray schedules them), `max_tokens` is in tokens, times in seconds.
Limits on requests are per replica: `max_ongoing_requests` generations run at once,
`max_queued_requests` more wait, and any beyond are answered 503 (`admission.py`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lmforge.platform.config import Section


class AutoscalingConfig(Section):
    """`serve.autoscaling`: Serve scales replicas on ongoing requests per replica."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0: scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        16, gt=0, description="Ongoing requests per replica that Serve scales towards."
    )

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})"
            )
        return self


class ServeConfig(Section):
    model: str | None = Field(
        None,
        description="`models:/NAME@ALIAS` in the MLflow registry, or a local Hugging Face "
        "folder (default: the registered model of this recipe).",
    )
    served_model_name: str | None = Field(
        None, description="Name clients use in requests (default: the registered model name)."
    )
    host: str = Field("127.0.0.1", description="HTTP host for Ray Serve's proxy.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port for Ray Serve's proxy.")
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode",
        description="Where Ray Serve runs HTTP proxies: on every node (a cluster, behind a "
        "load balancer), or on the head only (several nodes on one machine share its ports).",
    )
    engine: Literal["hf", "vllm"] = Field(
        "hf",
        description="`hf`: transformers on CPU or one GPU, lmforge's own OpenAI app; `vllm`: "
        "`ray.serve.llm` (pip install lmforge[vllm]), tensor parallel over `num_gpus`.",
    )
    num_replicas: int = Field(1, ge=1, description="Model replicas (without autoscaling).")
    num_cpus: float = Field(1, ge=0, description="CPUs per replica.")
    num_gpus: float = Field(
        0,
        ge=0,
        description="GPUs per replica: at most 1 for `hf`, the tensor-parallel size for `vllm`.",
    )
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type the replicas need (`H100`, `A100-80G`, ...)."
    )
    autoscaling: AutoscalingConfig | None = Field(
        None, description="Scale replicas with load (replaces `num_replicas`)."
    )
    max_ongoing_requests: int = Field(
        32, ge=1, description="Generations a replica runs at once (they share forward passes)."
    )
    max_queued_requests: int = Field(
        64, ge=0, description="Requests a replica keeps waiting for a slot; more get a 503."
    )
    retry_after_s: int = Field(
        1, ge=0, description="`Retry-After` (seconds) of a 503 sent when a replica is full."
    )
    request_timeout_s: float = Field(
        300,
        gt=0,
        description="A request still unanswered after this gets a 504 (queue "
        "time included); the proxy's own limit is a little longer.",
    )
    graceful_shutdown_timeout_s: float = Field(
        30, ge=0, description="How long a stopping replica lets its requests finish."
    )
    api_keys_file: str | None = Field(
        None,
        description="File of API keys, one per line, read by each replica; keys also "
        "come from LMFORGE_API_KEYS (comma-separated) on the replica's node. None and no "
        "variable: no authentication.",
    )
    max_tokens: int = Field(64, ge=1, description="Default completion length (tokens).")
    max_tokens_limit: int = Field(
        4096, ge=1, description="Most tokens one completion gets; a larger request is capped."
    )
    kv_cache_blocks: int = Field(
        128,
        ge=1,
        description="hf engine: blocks of the paged KV cache per replica; it holds "
        "kv_cache_blocks x kv_page_size tokens over all requests in flight.",
    )
    kv_page_size: int = Field(128, ge=4, description="hf engine: tokens per KV cache block.")
    demo_prompt: str = Field(
        "What does the os.path.join function do?",
        description="Question the `run` pipeline asks the deployed model at the end.",
    )
    blocking: bool = Field(True, description="`lmforge serve` keeps serving until interrupted.")

    @field_validator("num_gpus")
    @classmethod
    def _gpus_fit_engine(cls, num_gpus: float, info: ValidationInfo) -> float:
        # the hf engine runs on one device: more GPUs would be reserved and never used
        if info.data.get("engine") == "hf" and num_gpus > 1:
            raise ValueError(
                f"the hf engine uses one GPU per replica (got {num_gpus:g}); set "
                "serve.engine=vllm for tensor parallelism, or serve.num_gpus=1"
            )
        if info.data.get("engine") == "vllm" and (num_gpus < 1 or num_gpus != int(num_gpus)):
            raise ValueError(f"the vllm engine shards the model over whole GPUs (got {num_gpus:g})")
        return num_gpus

    def engine_options(self) -> dict[str, int]:
        """Keyword arguments of `HFEngine` (a batch holds `max_ongoing_requests`)."""
        return {
            "kv_cache_blocks": self.kv_cache_blocks,
            "kv_page_size": self.kv_page_size,
            "max_batch_requests": self.max_ongoing_requests,
        }
