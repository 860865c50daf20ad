"""`run`: every stage of the table in order, one MLflow parent run with a child per stage.

    lmforge run --config configs/demo.yaml
    python -m lmforge.jobs.pipeline --config configs/demo.yaml     (under `ray job submit`)

Each stage reads the previous stage's output and records that stage's run as its input,
so the served model links back, run by run, to the raw data it came from.

A stage whose recipe section and input digests are those its finished output recorded is
not run again (`reuse.py`): it gets a small child run tagged `lmforge.skipped` that names
the run whose output is reused. `--force STAGE` runs it anyway; serve always runs.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated

import typer

from lmforge.jobs import reuse, serve
from lmforge.jobs.command import ConfigOpt, SetOpt, fail, prepare, run_single, stage_module
from lmforge.jobs.common import StageResult, init_ray
from lmforge.jobs.recipe import Recipe
from lmforge.jobs.stages import BY_NAME, STAGES
from lmforge.platform import tracking
from lmforge.serve.deploy import serve_forever


@dataclass
class PipelineResult:
    run_id: str
    stages: dict[str, StageResult] = field(default_factory=dict)
    base_url: str | None = None


ForceOpt = Annotated[
    list[str] | None,
    typer.Option("--force", help="Run this stage even if its output is up to date (repeatable)."),
]


def run_pipeline(
    recipe: Recipe, *, keep_serving: bool | None = None, force: Collection[str] = ()
) -> PipelineResult:
    """Run every stage of the table (curate ... register), then serve and ask.

    keep_serving: leave the Serve app up and return (tests call it); None follows
    `serve.blocking` (block until Ctrl-C). False shuts Serve down after the demo answer.
    force: stages run even when their output is up to date.
    """
    assert recipe.mlflow.tracking_uri is not None
    tracking.setup(recipe.mlflow.tracking_uri, recipe.mlflow.experiment)
    init_ray(recipe)
    with tracking.pipeline_run(recipe.name, params=recipe.model_dump(mode="json")) as parent:
        result = PipelineResult(parent)
        names = [s.name for s in STAGES if s.name != "serve"]
        result.stages = run_stages(recipe, names, parent_run_id=parent, force=force)
        print("\n=== lmforge: serve ===", flush=True)  # the last stage: it keeps running
        result.stages["serve"] = serve.run(recipe, parent_run_id=parent, block=False)
        result.base_url = result.stages["serve"].output
    _closing_lines(recipe, result)
    if keep_serving is None and recipe.serve.blocking:
        serve_forever()
    elif not keep_serving:
        from ray import serve as ray_serve

        ray_serve.shutdown()
    return result


def run_stages(
    recipe: Recipe, names: list[str], *, parent_run_id: str, force: Collection[str] = ()
) -> dict[str, StageResult]:
    """Run `names` in order as children of the pipeline run, each one skipped when its
    output is up to date (and it is not in `force`)."""
    results: dict[str, StageResult] = {}
    for name in names:
        print(f"\n=== lmforge: {name} ===", flush=True)
        done = None if name in force else reuse.find_done(name, recipe)
        if done is not None:
            results[name] = reuse.skip(name, done, parent_run_id=parent_run_id)
        else:
            results[name] = stage_module(name).run(recipe, parent_run_id=parent_run_id)
    return results


def _closing_lines(recipe: Recipe, result: PipelineResult) -> None:
    uri = recipe.mlflow.tracking_uri or ""
    ui = (
        f"mlflow ui --backend-store-uri {uri} --port 5000"
        if uri.startswith("sqlite:")
        else f"open {uri} in a browser"
    )
    print("\n=== lmforge: done ===")
    print(f"pipeline MLflow run: {result.run_id} (experiment {recipe.mlflow.experiment!r})")
    for name, st in result.stages.items():
        reused = f" (reused run {st.info['reused_run_id']})" if st.info.get("skipped") else ""
        print(f"  {name:17} run {st.run_id}{reused}  -> {st.output}")
    answer = " ".join(result.stages["serve"].info["answer"].split())
    print(f"served answer ({recipe.serve.served_model_name}): {answer!r}")
    print(f"MLflow UI: {ui}")
    sys.stdout.flush()


def run_command(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = None) -> None:
    """Run every stage as one MLflow pipeline run, then serve the model and ask it; a stage
    whose recipe and inputs are unchanged since its output was made is skipped."""
    unknown = [f for f in force or [] if f not in BY_NAME]
    if unknown:
        fail(f"--force: unknown stage {unknown[0]!r}; choose one of {', '.join(BY_NAME)}")
    run_pipeline(prepare(None, config, None, None, set_), force=set(force or []))


if __name__ == "__main__":
    run_single(
        run_command, help=run_command.__doc__ or "", prog_name="python -m lmforge.jobs.pipeline"
    )
