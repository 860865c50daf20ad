"""`filter-synthetic`: GPT-4-style instruction data -> conversations fit for training.

    python -m lmforge.jobs.filter_synthetic --input DATA.json --output DIR [--eval-set EVAL]...

Records of Alpaca, ShareGPT, OpenAI-messages or MT-Bench-answer shape become one
conversation schema (a record of unknown shape is quarantined with the error). Then, each
drop with its reason and the evidence in `meta`:

1. per conversation (one Ray Data actor pool): malformed turn order, empty / short / long
   answers, truncation, repetition loops, other vendors' identity claims, refusals and AI
   disclaimers, language mismatch between question and answer;
2. decontamination against evaluation sets (the curation stage's 13-gram index, plus a
   user turn equal to an evaluation question after normalization);
3. exact and near-duplicate prompts (the curation stage's groupby and MinHash LSH, on the
   user and system turns);
4. optionally, perplexity under a local Hugging Face model (an actor pool, GPU if any).

Kept rows carry `messages` (role/content turns, ready for the tokenizer's chat template)
and `text` (the same rendered with the template's role tokens), as Parquet and JSONL.
"""

from __future__ import annotations

from typing import Any

from lmforge.jobs import reuse
from lmforge.jobs.common import StageResult, check_inputs, log_data_stage, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.pipelines.config import SyntheticConfig
from lmforge.pipelines.decontam import load_eval_set
from lmforge.pipelines.dedup import exact_dedup
from lmforge.pipelines.outputs import write_stage_output
from lmforge.pipelines.readers import ReadTally, read_rows
from lmforge.pipelines.steps import StepsActor
from lmforge.pipelines.synthetic.formats import load_questions
from lmforge.pipelines.synthetic.steps import (
    CONVERSATION_COLUMNS,
    PROMPT_STEP,
    prompt_texts,
    synthetic_steps,
)
from lmforge.platform import storage, tracking
from lmforge.platform.config import ConfigError


def validate(recipe: Recipe) -> None:
    cfg = recipe.synthetic
    check_inputs(cfg.input, what="synthetic")
    for field, paths in (
        ("mtbench_questions", cfg.mtbench_questions),
        ("decontam.eval_sets", cfg.decontam.eval_sets),
    ):
        for path in paths:
            if not storage.is_remote(path) and not storage.exists(path):
                raise ConfigError(f"synthetic.{field}: file not found: {path}")
    model = cfg.scoring.model
    if model and not model.startswith("models:/") and not storage.exists(f"{model}/config.json"):
        raise ConfigError(
            f"synthetic.scoring.model: not a Hugging Face model folder (no config.json): {model}"
        )


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.synthetic
    assert cfg.output is not None
    inputs = [storage.absolute(u) for u in cfg.input]
    output = storage.absolute(cfg.output)
    validate(recipe)
    questions = load_questions([storage.absolute(p) for p in cfg.mtbench_questions])
    fp = reuse.fingerprint("filter-synthetic", recipe)
    reuse.begin(output)
    with stage_context(
        "filter-synthetic", recipe, cfg.model_dump(), parent_run_id=parent_run_id
    ) as run_id:
        import ray
        import ray.data

        tracking.record_inputs(
            inputs + [storage.absolute(p) for p in cfg.decontam.eval_sets],
            digests=fp.input_digests,
        )
        tally = ReadTally()
        rows = read_rows(
            inputs, id_field="id", max_record_bytes=recipe.curate.max_record_bytes, tally=tally
        )
        cpus = max(1, int(ray.available_resources().get("CPU", 1)))
        rows = rows.map_batches(
            StepsActor,
            fn_constructor_kwargs={
                "build": synthetic_steps,
                "cfg": cfg.model_dump(),
                "questions": questions,
                # read here, sent as data: a worker never opens a path of the driver's
                "eval_sets": [load_eval_set(storage.absolute(p)) for p in cfg.decontam.eval_sets],
            },
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpus),
        )
        if cfg.dedup_prompts:
            # materialized: MinHash plans its shuffles with another strategy, which an
            # unexecuted hash-shuffle groupby upstream of it cannot run under
            rows = exact_dedup(
                rows, text_of=prompt_texts, step=PROMPT_STEP, reason="duplicate_prompt"
            ).materialize()
        if cfg.near_dedup.enabled:
            from lmforge.pipelines.minhash import minhash_dedup

            near = cfg.near_dedup.dedup_config(
                step=PROMPT_STEP, reason="near_duplicate_prompt", text_of=prompt_texts
            )
            rows = minhash_dedup(rows, near)
        if cfg.scoring.model:
            rows = _score(rows, cfg)
        rows = rows.materialize()  # written and reported from, computed once
        manifest = write_stage_output(
            rows,
            output,
            stage="filter-synthetic",
            inputs=inputs,
            run_id=run_id,
            read_by_file=tally.counts(),  # complete: `rows` has run to the end above
            kept_columns=CONVERSATION_COLUMNS,
            kept_jsonl=True,
        )
        metrics = log_data_stage(manifest, output)
        if cfg.report:
            _report(rows, manifest, output)
        reuse.finish(output, manifest, fp)
    return StageResult("filter-synthetic", run_id, output, metrics, {"manifest": manifest})


def _score(rows: Any, cfg: SyntheticConfig) -> Any:
    from lmforge.pipelines.scoring import score_rows
    from lmforge.platform.registry import resolve_model_dir

    assert cfg.scoring.model is not None
    return score_rows(rows, cfg.scoring, model_dir=resolve_model_dir(cfg.scoring.model))


def _report(rows: Any, manifest: dict[str, Any], output: str) -> None:
    from lmforge.pipelines.report import synthetic_report

    html, examples = synthetic_report(rows, manifest, output)
    tracking.log_text(html, "report.html")
    tracking.log_dict(examples, "drop_examples.json")


if __name__ == "__main__":
    from lmforge.jobs.command import stage_main

    stage_main("filter-synthetic")
