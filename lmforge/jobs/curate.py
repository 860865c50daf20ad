"""`curate`: raw documents -> clean, deduplicated Parquet, every record accounted for.

python -m lmforge.jobs.curate --input DATA --output DIR [--config RECIPE] [--set K=V]
"""

from __future__ import annotations

from lmforge.jobs.common import StageResult, check_inputs, log_data_stage, stage_context
from lmforge.pipelines.dedup import exact_dedup
from lmforge.pipelines.outputs import write_stage_output
from lmforge.pipelines.readers import read_rows
from lmforge.pipelines.steps import Pipeline
from lmforge.pipelines.text import ExtractText, LengthConfig, LengthFilter, Normalize
from lmforge.platform import storage, tracking
from lmforge.platform.config import Recipe


def validate(recipe: Recipe) -> None:
    check_inputs(recipe.curate.input, what="curate")


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.curate
    assert cfg.output is not None
    inputs = [storage.absolute(u) for u in cfg.input]
    output = storage.absolute(cfg.output)
    validate(recipe)
    params = cfg.model_dump()
    with stage_context("curate", recipe, params, parent_run_id=parent_run_id) as run_id:
        tracking.record_inputs(inputs)
        rows = read_rows(
            inputs,
            id_field=cfg.id_field,
            max_record_bytes=cfg.max_record_bytes,
            max_builtin_docs=cfg.builtin_max_docs,
        )
        steps = Pipeline(
            [
                ExtractText(cfg.text_field, cfg.id_field),
                Normalize(),
                LengthFilter(LengthConfig(min_chars=cfg.min_chars, min_words=cfg.min_words)),
            ]
        )
        rows = rows.map_batches(steps, batch_format="pyarrow")
        rows = exact_dedup(rows)
        manifest = write_stage_output(rows, output, stage="curate", inputs=inputs, run_id=run_id)
        metrics = log_data_stage(manifest, output)
    return StageResult("curate", run_id, output, metrics, {"manifest": manifest})


if __name__ == "__main__":
    from lmforge.cli import stage_main

    stage_main("curate")
