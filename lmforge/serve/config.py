"""`ServeConfig`: the `serve:` section of a recipe, owned by the package that serves.

It lives beside the code that reads it (`deploy.py`), so serving options are defined in
one place; the recipe (`lmforge.jobs.recipe.Recipe`) includes it as its `serve` field.
`model` and `served_model_name` are None until `Recipe.with_defaults` fills them from
the registered model of the recipe. Ports are TCP ports, CPUs and GPUs are per replica
(fractions allowed, as Ray schedules them), `max_tokens` is in tokens.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmforge.platform.config import Section


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
    num_replicas: int = Field(1, ge=1, description="Model replicas.")
    num_cpus: float = Field(1, ge=0, description="CPUs per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica.")
    max_tokens: int = Field(64, ge=1, description="Default completion length (tokens).")
    demo_prompt: str = Field(
        "What does the os.path.join function do?",
        description="Question the `run` pipeline asks the deployed model at the end.",
    )
    blocking: bool = Field(True, description="`lmforge serve` keeps serving until interrupted.")
