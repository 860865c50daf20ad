"""`filter-synthetic`: GPT-4-style instruction data -> conversations fit for pretraining.

    python -m lmforge.jobs.filter_synthetic --input DATA.json --output DIR

Records of Alpaca, ShareGPT or OpenAI-messages shape become one conversation schema;
a record of unknown shape is quarantined with the error; filters drop refusals,
other vendors' identity claims, empty answers and malformed turn orders, with reasons.
"""

from __future__ import annotations

import json
from typing import Any

from lmforge.jobs.common import StageResult, check_inputs, log_data_stage, stage_context
from lmforge.pipelines.dedup import exact_dedup
from lmforge.pipelines.outputs import write_stage_output
from lmforge.pipelines.readers import read_rows
from lmforge.pipelines.steps import Filter, Pipeline, Step, quarantine
from lmforge.pipelines.synthetic import (
    RecordError,
    SyntheticFilterConfig,
    default_filters,
    detect_format,
    first_failure,
    render_text,
    to_conversation,
)
from lmforge.platform import storage, tracking
from lmforge.platform.config import Recipe

KEPT_COLUMNS = ["id", "messages", "text", "source", "lang", "meta"]


class ExtractConversation(Step):
    """Parse `raw` into `messages` (role/content turns) and its rendered `text`."""

    name = "extract"

    def apply(self, row: dict[str, Any]) -> None:
        record = json.loads(row["raw"])
        try:
            conv = to_conversation(record)
            fmt = detect_format(record)
        except RecordError as e:
            quarantine(row, self.name, str(e))
            return
        row["messages"] = [{"role": t["role"], "content": t["content"]} for t in conv]
        row["text"] = render_text(conv)
        row["meta"] = json.dumps({"format": fmt})
        row["raw"] = None


class ConversationFilters(Filter):
    """All conversation filters; the first that objects gives the reason."""

    name = "synthetic_filter"

    def __init__(self, cfg: SyntheticFilterConfig) -> None:
        self.filters = default_filters(cfg)

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        reason = first_failure(row["messages"], self.filters)
        return True if reason is None else (False, reason)


def validate(recipe: Recipe) -> None:
    check_inputs(recipe.synthetic.input, what="synthetic")


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.synthetic
    assert cfg.output is not None
    inputs = [storage.absolute(u) for u in cfg.input]
    output = storage.absolute(cfg.output)
    validate(recipe)
    with stage_context(
        "filter-synthetic", recipe, cfg.model_dump(), parent_run_id=parent_run_id
    ) as run_id:
        tracking.record_inputs(inputs)
        rows = read_rows(inputs, id_field="id", max_record_bytes=recipe.curate.max_record_bytes)
        steps = Pipeline([ExtractConversation(), ConversationFilters(cfg.filters)])
        rows = exact_dedup(rows.map_batches(steps, batch_format="pyarrow"))
        manifest = write_stage_output(
            rows,
            output,
            stage="filter-synthetic",
            inputs=inputs,
            run_id=run_id,
            kept_columns=KEPT_COLUMNS,
        )
        metrics = log_data_stage(manifest, output)
    return StageResult("filter-synthetic", run_id, output, metrics, {"manifest": manifest})


if __name__ == "__main__":
    from lmforge.cli import stage_main

    stage_main("filter-synthetic")
