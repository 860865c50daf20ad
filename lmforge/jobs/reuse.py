"""Stages that are not redone: an output is reused when the stage would make it again.

A stage's fingerprint is its recipe section (as canonical JSON, hashed) and the content
digest of each of its inputs (`platform.digest`: a stage output's manifest `digest`, a
raw input's listing). A stage that finishes writes its fingerprint into the manifest of
its output (`recipe_digest`, `input_digests`); a stage that starts removes it first, so
an output that a killed run left half-written is never taken as finished. `lmforge run`
skips a stage whose output carries the fingerprint the stage has now (Marin's rule: a
step named by its config and its inputs' versions is found done). Register has no
output folder: its fingerprint is on the model version it made, as tags.

An earlier stage that reruns and makes the same content leaves the next stage's input
digests as they were, so that stage is still skipped; different content reruns it. An
input whose digest cannot be computed here (a `models:/` scoring model, a URI without
credentials) makes the stage always run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from lmforge.jobs.common import StageResult
from lmforge.jobs.recipe import Recipe
from lmforge.jobs.stages import get_stage
from lmforge.platform import digest, registry, storage, tracking

RECIPE_TAG, INPUTS_TAG = "lmforge.recipe_digest", "lmforge.input_digests"
NEVER_SKIPPED = ("serve",)


@dataclass(frozen=True)
class Fingerprint:
    recipe_digest: str
    input_digests: dict[str, str | None]

    @property
    def known(self) -> bool:
        """Every input's digest could be computed (otherwise the stage always runs)."""
        return all(self.input_digests.values())

    def fields(self) -> dict[str, Any]:
        return {"recipe_digest": self.recipe_digest, "input_digests": self.input_digests}

    def matches(self, recipe_digest: Any, input_digests: Any) -> bool:
        return (
            self.known
            and recipe_digest == self.recipe_digest
            and input_digests == self.input_digests
        )


def section(stage: str, recipe: Recipe) -> dict[str, Any]:
    """The recipe a stage runs by: its section (plus the one field it reads elsewhere)."""
    config: dict[str, Any] = getattr(recipe, get_stage(stage).section).model_dump(mode="json")
    if stage == "filter-synthetic":
        config["curate.max_record_bytes"] = recipe.curate.max_record_bytes
    return config


def register_source(model_dir: str) -> str:
    """What `register` records as its input: the pretrain output folder holding the
    model folder (its manifest names the producing run), or the model folder itself."""
    parent = os.path.dirname(model_dir.rstrip("/"))
    return parent if storage.read_manifest(parent) is not None else model_dir


def stage_inputs(stage: str, recipe: Recipe) -> list[str]:
    """Every input whose content makes the stage's output, as absolute URIs."""
    if stage == "curate":
        uris = [*recipe.curate.input, *recipe.curate.decontam.eval_sets]
    elif stage == "filter-synthetic":
        s = recipe.synthetic
        scorer = [s.scoring.model] if s.scoring.model else []
        uris = [*s.input, *s.decontam.eval_sets, *s.mtbench_questions, *scorer]
    elif stage == "tokenize":
        uris = list(recipe.tokenize.input or [])
    elif stage == "pretrain":
        uris = [recipe.pretrain.input or ""]
    elif stage == "register":
        return [register_source(storage.absolute(recipe.register.input or ""))]
    else:
        raise ValueError(f"stage {stage!r} has no fingerprint")
    return [storage.absolute(u) for u in uris]


def fingerprint(stage: str, recipe: Recipe) -> Fingerprint:
    inputs = stage_inputs(stage, recipe)
    return Fingerprint(
        digest.of_config(section(stage, recipe)), {u: digest.of_input(u) for u in inputs}
    )


def begin(output: str) -> None:
    """A stage starts: its output is not finished any more (if it has a manifest)."""
    manifest = storage.read_manifest(output)
    if manifest is not None and "recipe_digest" in manifest:
        for key in ("recipe_digest", "input_digests"):
            manifest.pop(key, None)
        storage.write_manifest(output, manifest)


def finish(output: str, manifest: dict[str, Any], fp: Fingerprint) -> dict[str, Any]:
    """A stage finished: its manifest, with the fingerprint, written last."""
    manifest.update(fp.fields())
    storage.write_manifest(output, manifest)
    return manifest


def version_tags(fp: Fingerprint) -> dict[str, str]:
    """Register's fingerprint, as tags of the version it makes."""
    return {RECIPE_TAG: fp.recipe_digest, INPUTS_TAG: json.dumps(fp.input_digests)}


@dataclass(frozen=True)
class Done:
    """A finished output the stage would make again: the run that made it."""

    run_id: str
    output: str
    info: dict[str, Any]


def find_done(stage: str, recipe: Recipe) -> Done | None:
    """The earlier run whose output `stage` can reuse, or None when it must run."""
    if stage in NEVER_SKIPPED:
        return None
    fp = fingerprint(stage, recipe)
    if not fp.known:
        return None
    if stage == "register":
        return _registered(recipe, fp)
    out = getattr(recipe, get_stage(stage).section).output
    manifest = storage.read_manifest(storage.absolute(out or ""))
    if manifest is None or not manifest.get("digest"):
        return None
    if not fp.matches(manifest.get("recipe_digest"), manifest.get("input_digests")):
        return None
    run_id = str(manifest.get("mlflow_run_id") or "")
    if not run_id or not tracking.run_exists(run_id):
        return None  # made under another tracking store: run it, so lineage holds here
    output = storage.absolute(out or "")
    if stage == "pretrain":
        output = str(manifest.get("model") or "")
        if not manifest.get("model_id") or not storage.exists(storage.join(output, "config.json")):
            return None
    return Done(run_id, output, {"manifest": manifest})


def _registered(recipe: Recipe, fp: Fingerprint) -> Done | None:
    cfg = recipe.register
    uri = f"models:/{cfg.model_name}@{cfg.alias}"
    mv = registry.find_version(uri)
    if mv is None:
        return None
    tags = mv.tags or {}
    try:
        inputs = json.loads(tags.get(INPUTS_TAG, "null"))
    except ValueError:
        return None
    run_id = tags.get(registry.REGISTER_RUN_TAG, "")
    if not fp.matches(tags.get(RECIPE_TAG), inputs) or not run_id:
        return None
    info = {"name": cfg.model_name, "version": str(mv.version), "alias": cfg.alias, "uri": uri}
    return Done(run_id, uri, info)


def skip(stage: str, done: Done, *, parent_run_id: str) -> StageResult:
    """Say so in one line, and record a small child run that links the earlier one."""
    print(
        f"lmforge: {stage} unchanged (recipe + inputs as run {done.run_id[:8]}…), skipped",
        flush=True,
    )
    run_id = tracking.skipped_run(
        stage, parent_run_id=parent_run_id, reused_run_id=done.run_id, output=done.output
    )
    info = {**done.info, "skipped": True, "reused_run_id": done.run_id}
    return StageResult(stage, run_id, done.output, {}, info)
