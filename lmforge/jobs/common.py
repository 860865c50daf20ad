"""What every stage's job shares: input checks, joining Ray, and its MLflow run.

`stage_context` is the frame each stage runs in: the recipe is already validated, the
inputs are checked before Ray is touched, then one MLflow run wraps the work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from lmforge.jobs.recipe import Recipe
from lmforge.platform import storage, tracking
from lmforge.platform.config import ConfigError


@dataclass
class StageResult:
    stage: str
    run_id: str
    output: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def check_inputs(uris: list[str], *, what: str) -> None:
    """Fail with one line, before Ray starts, when a local input does not exist."""
    if not uris:
        raise ConfigError(
            f"{what}.input: no input given (set --input or {what}.input in the recipe)"
        )
    for uri in uris:
        if uri.startswith(("builtin:", "hf:")) or storage.is_remote(uri):
            continue  # checked by the reader, with the cluster's credentials and network
        if any(c in uri for c in "*?["):
            continue
        if not os.path.exists(uri):
            raise ConfigError(f"{what}.input: input not found: {uri}")


def init_ray(recipe: Recipe) -> None:
    """Join the configured cluster, the one a `ray job submit` driver runs in, or
    start a local Ray in this process (the laptop default)."""
    import ray

    if ray.is_initialized():
        return
    address = recipe.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # "local" never attaches to a cluster another user started with `ray start`
        ray.init(address="local", num_cpus=recipe.ray.num_cpus)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True


@contextmanager
def stage_context(
    stage: str,
    recipe: Recipe,
    params: dict[str, Any],
    *,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """Set up MLflow and Ray; yields the stage's MLflow run id (`resume_run_id`: continue
    that run instead of starting one)."""
    assert recipe.mlflow.tracking_uri is not None  # filled by Recipe.with_defaults
    tracking.setup(recipe.mlflow.tracking_uri, recipe.mlflow.experiment)
    with tracking.stage_run(
        stage, params=params, parent_run_id=parent_run_id, resume_run_id=resume_run_id
    ) as run_id:
        tracking.set_tags({"lmforge.recipe": recipe.name})
        init_ray(recipe)
        yield run_id


def log_data_stage(manifest: dict[str, Any], output: str) -> dict[str, float]:
    """MLflow metrics of a data stage from its manifest: rows by fate and reason."""
    counts = manifest["counts"]
    metrics = {f"rows_{k}": float(v) for k, v in counts.items()}
    for key, n in manifest["dropped_by_reason"].items():
        metrics[f"dropped.{key.replace('/', '.')}"] = float(n)
    for key, n in manifest["quarantined_by_step"].items():
        metrics[f"quarantined.{key}"] = float(n)
    tracking.log_metrics(metrics)
    tracking.log_dict(manifest, "manifest.json")
    tracking.set_tags({"lmforge.output": output})
    tracking.record_output(output, manifest.get("digest"))
    return metrics
