"""`register`: the trained model -> a version in the MLflow Model Registry.

    python -m lmforge.jobs.register --input MODEL_DIR [--set register.model_name=NAME]

The pretrain run logged its export as a LoggedModel (its manifest names it): this stage
makes a version of that model, so the version's run is the run that trained it; the
register run records the pretrain output and the LoggedModel as its inputs. A folder no
pretrain run logged (`--input DIR` of any Hugging Face folder) is logged here first. The
new version gets the recipe's alias (`candidate` by default); serving resolves
`models:/NAME@candidate`, so promoting a model is moving an alias, not copying files.
"""

from __future__ import annotations

from lmforge.jobs import reuse
from lmforge.jobs.common import StageResult, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.platform import registry, storage, tracking
from lmforge.platform.config import ConfigError


def validate(recipe: Recipe) -> None:
    path = recipe.register.input
    assert path is not None
    if storage.is_remote(path):
        return  # read with the cluster's credentials
    if not storage.exists(storage.join(path, "config.json")):
        raise ConfigError(
            f"register.input: not a Hugging Face model folder (no config.json): {path}"
        )


def logged_model(model_dir: str) -> str | None:
    """The LoggedModel id that the pretrain run wrote into its manifest for `model_dir`,
    when it is in this tracking store."""
    source = reuse.register_source(model_dir)
    manifest = storage.read_manifest(source) if source != model_dir else None
    if not manifest or manifest.get("model") != model_dir or not manifest.get("model_id"):
        return None
    model_id = str(manifest["model_id"])
    return model_id if registry.logged_model_exists(model_id) else None


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.register
    assert cfg.input is not None
    validate(recipe)
    model_dir = storage.absolute(cfg.input)
    fp = reuse.fingerprint("register", recipe)
    model_id = logged_model(model_dir)
    with stage_context("register", recipe, cfg.model_dump(), parent_run_id=parent_run_id) as run_id:
        # the pretrain output folder (holding the manifest) produced the model
        tracking.record_inputs(list(fp.input_digests), digests=fp.input_digests)
        if model_id is None:  # no pretrain run logged it: this run does
            model_id = registry.log_model(model_dir)
        else:
            tracking.record_model_input(model_id)
        tags = {registry.REGISTER_RUN_TAG: run_id, **reuse.version_tags(fp)}
        reg = registry.register(name=cfg.model_name, alias=cfg.alias, model_id=model_id, tags=tags)
        tracking.set_tags(
            {
                "lmforge.model_uri": reg.model_uri,
                "lmforge.model_version": reg.version,
                "lmforge.model_id": f"models:/{model_id}",
            }
        )
        tracking.log_metrics({"model_version": float(reg.version)})
    info = {
        "name": reg.name,
        "version": reg.version,
        "alias": reg.alias,
        "uri": reg.model_uri,
        "model_id": reg.model_id,
        "source_run_id": reg.run_id,
    }
    return StageResult("register", run_id, reg.model_uri, {}, info)


if __name__ == "__main__":
    from lmforge.jobs.command import stage_main

    stage_main("register")
