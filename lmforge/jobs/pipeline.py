"""`run`: every stage of the table in order, one MLflow parent run with a child per stage.

    lmforge run --config configs/demo.yaml
    python -m lmforge.jobs.pipeline --config configs/demo.yaml     (under `ray job submit`)

Each stage reads the previous stage's output and records that stage's run as its input,
so the served model links back, run by run, to the raw data it came from.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from lmforge.jobs import serve
from lmforge.jobs.command import ConfigOpt, SetOpt, prepare, run_single, stage_module
from lmforge.jobs.common import StageResult, init_ray
from lmforge.jobs.recipe import Recipe
from lmforge.jobs.stages import STAGES
from lmforge.platform import tracking
from lmforge.serve.deploy import serve_forever


@dataclass
class PipelineResult:
    run_id: str
    stages: dict[str, StageResult] = field(default_factory=dict)
    base_url: str | None = None


def run_pipeline(recipe: Recipe, *, keep_serving: bool | None = None) -> PipelineResult:
    """Run every stage of the table (curate ... register), then serve and ask.

    keep_serving: leave the Serve app up and return (tests call it); None follows
    `serve.blocking` (block until Ctrl-C). False shuts Serve down after the demo answer.
    """
    assert recipe.mlflow.tracking_uri is not None
    tracking.setup(recipe.mlflow.tracking_uri, recipe.mlflow.experiment)
    init_ray(recipe)
    with tracking.pipeline_run(recipe.name, params=recipe.model_dump(mode="json")) as parent:
        result = PipelineResult(parent)
        for stage in STAGES:
            print(f"\n=== lmforge: {stage.name} ===", flush=True)
            if stage.name == "serve":  # the last stage: it keeps running
                result.stages["serve"] = serve.run(recipe, parent_run_id=parent, block=False)
            else:
                result.stages[stage.name] = stage_module(stage.name).run(
                    recipe, parent_run_id=parent
                )
        result.base_url = result.stages["serve"].output
    _closing_lines(recipe, result)
    if keep_serving is None and recipe.serve.blocking:
        serve_forever()
    elif not keep_serving:
        from ray import serve as ray_serve

        ray_serve.shutdown()
    return result


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
        print(f"  {name:17} run {st.run_id}  -> {st.output}")
    answer = " ".join(result.stages["serve"].info["answer"].split())
    print(f"served answer ({recipe.serve.served_model_name}): {answer!r}")
    print(f"MLflow UI: {ui}")
    sys.stdout.flush()


def run_command(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Run every stage as one MLflow pipeline run, then serve the model and ask it."""
    run_pipeline(prepare(None, config, None, None, set_))


if __name__ == "__main__":
    run_single(
        run_command, help=run_command.__doc__ or "", prog_name="python -m lmforge.jobs.pipeline"
    )
