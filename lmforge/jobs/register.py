"""`register`: a Hugging Face model folder -> a version in the MLflow Model Registry.

    python -m lmforge.jobs.register --input MODEL_DIR [--set register.model_name=NAME]

The new version gets the recipe's alias (`candidate` by default); serving resolves
`models:/NAME@candidate`, so promoting a model is moving an alias, not copying files.
"""

from __future__ import annotations

import os

from lmforge.jobs.common import StageResult, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.platform import registry, storage, tracking
from lmforge.platform.config import ConfigError


def validate(recipe: Recipe) -> None:
    path = recipe.register.input
    assert path is not None
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(
            f"register.input: not a Hugging Face model folder (no config.json): {path}"
        )


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.register
    assert cfg.input is not None
    validate(recipe)
    model_dir = storage.absolute(cfg.input)
    with stage_context("register", recipe, cfg.model_dump(), parent_run_id=parent_run_id) as run_id:
        # the pretrain output folder (holding the manifest) produced the model
        tracking.record_inputs([os.path.dirname(model_dir)])
        reg = registry.register(model_dir, name=cfg.model_name, alias=cfg.alias)
        tracking.set_tags(
            {"lmforge.model_uri": reg.model_uri, "lmforge.model_version": reg.version}
        )
        tracking.log_metrics({"model_version": float(reg.version)})
    info = {"name": reg.name, "version": reg.version, "alias": reg.alias, "uri": reg.model_uri}
    return StageResult("register", run_id, reg.model_uri, {}, info)


if __name__ == "__main__":
    from lmforge.jobs.command import stage_main

    stage_main("register")
