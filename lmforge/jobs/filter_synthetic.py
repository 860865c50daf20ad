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

import json
from collections import defaultdict
from typing import Any

import pyarrow as pa

from lmforge.jobs.common import StageResult, check_inputs, log_data_stage, stage_context
from lmforge.pipelines.decontam import (
    DecontamConfig,
    Decontaminate,
    EvalSet,
    load_eval_set,
    words,
)
from lmforge.pipelines.dedup import exact_dedup
from lmforge.pipelines.outputs import parquet_dataset, reason_key, write_stage_output
from lmforge.pipelines.readers import read_rows
from lmforge.pipelines.steps import Filter, Pipeline, Step, quarantine, update_meta
from lmforge.pipelines.synthetic import (
    RecordError,
    SyntheticFilterConfig,
    default_filters,
    detect_format,
    first_finding,
    prompt_text,
    render_text,
    to_conversation,
)
from lmforge.platform import storage, tracking
from lmforge.platform.config import ConfigError, Recipe, SyntheticConfig

KEPT_COLUMNS = ["id", "messages", "text", "source", "lang", "meta"]
PROMPT_STEP = "prompt_dedup"
# A record's fields that hold its conversation, per format: the rest go to `meta`.
_CONTENT_KEYS = {"instruction", "input", "output", "response", "system", "conversations",
                 "messages", "choices"}  # fmt: skip


class ExtractConversation(Step):
    """Parse `raw` into `messages` (role/content turns) and its rendered `text`."""

    name = "extract"

    def __init__(self, questions: dict[str, list[str]] | None = None) -> None:
        self.questions = questions or {}

    def apply(self, row: dict[str, Any]) -> None:
        record = json.loads(row["raw"])
        try:
            conv = to_conversation(record, self.questions)
            fmt = detect_format(record)
        except RecordError as e:
            quarantine(row, self.name, str(e))
            return
        row["messages"] = conv
        row["text"] = render_text(conv)
        row["chars_in"] = len(row["text"])
        fields = {
            k: v
            for k, v in record.items()
            if k not in _CONTENT_KEYS and isinstance(v, str | int | float | bool)
        }
        update_meta(row, format=fmt, **({"record": fields} if fields else {}))
        row["raw"] = None


class ConversationFilters(Filter):
    """All conversation filters; the first that objects gives the reason, and its
    evidence goes to `meta`."""

    name = "synthetic_filter"

    def __init__(self, cfg: SyntheticFilterConfig) -> None:
        self.filters = default_filters(cfg)

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        found = first_finding(row["messages"], self.filters)
        if found is None:
            return True
        update_meta(row, evidence=found.evidence)
        return False, found.reason


def _normalized(text: str) -> str:
    return " ".join(words(text))


class ConversationDecontam(Decontaminate):
    """The curation stage's n-gram decontamination over the whole conversation, and a user
    turn (or a line of it) equal to an evaluation question of at least four words once case,
    punctuation and spacing are folded (catches questions shorter than the n-gram)."""

    def __init__(self, eval_sets: list[EvalSet | str], cfg: DecontamConfig) -> None:
        sets = [s if isinstance(s, EvalSet) else load_eval_set(s) for s in eval_sets]
        super().__init__(sets, cfg)
        self.questions: dict[str, tuple[str, str]] = {}
        shared: set[str] = set()
        for s in sets:
            for item in s.items:
                key = _normalized(item.text)
                if len(key.split()) < 4:
                    continue  # "What is 2+2?" alone is not evidence of a leak
                if self.questions.get(key, (s.name, item.id)) != (s.name, item.id):
                    shared.add(key)  # a template several items share ("Which is true?")
                self.questions.setdefault(key, (s.name, item.id))
        for key in shared:
            del self.questions[key]

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        for turn in row["messages"]:
            if turn["role"] != "user":
                continue
            # the whole turn, or one of its lines: a question with its choices under it
            keys = [turn["content"], *turn["content"].splitlines()]
            hit = next((h for k in keys if (h := self.questions.get(_normalized(k)))), None)
            if hit is not None:
                eval_set, item = hit
                update_meta(row, decontam={"eval_set": eval_set, "item": item, "match": "question"})
                return False, f"decontam/{eval_set}"
        return super().filter(row)


class SyntheticSteps:
    """Ray Data callable class: the per-conversation steps, built once per actor from the
    (small) config, so the language model and n-gram index are never pickled into tasks."""

    def __init__(self, cfg: dict[str, Any], questions: dict[str, list[str]]) -> None:
        c = SyntheticConfig.model_validate(cfg)
        steps: list[Step] = [ExtractConversation(questions), ConversationFilters(c.filters)]
        if c.decontam.eval_sets:
            dc = DecontamConfig(n_words=c.decontam.n_words, n_chars=c.decontam.n_chars)
            steps.append(
                ConversationDecontam([storage.absolute(p) for p in c.decontam.eval_sets], dc)
            )
        self.pipeline = Pipeline(steps)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.pipeline(batch)


def prompt_texts(batch: pa.Table) -> pa.Array:
    """What each conversation asks (user and system turns); None where it has none."""
    return pa.array(
        [prompt_text(conv) if conv else None for conv in batch["messages"].to_pylist()],
        pa.string(),
    )


def load_questions(paths: list[str]) -> dict[str, list[str]]:
    """MT-Bench question files -> {question_id (as text): its turns}."""
    questions: dict[str, list[str]] = {}
    for path in paths:
        for n, line in enumerate(storage.read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                questions[str(q["question_id"])] = list(q["turns"])
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"synthetic.mtbench_questions: {path}:{n} is not an MT-Bench question "
                    f"(want question_id and turns): {e}"
                ) from None
    return questions


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
    with stage_context(
        "filter-synthetic", recipe, cfg.model_dump(), parent_run_id=parent_run_id
    ) as run_id:
        import ray
        import ray.data

        tracking.record_inputs(inputs + [storage.absolute(p) for p in cfg.decontam.eval_sets])
        rows = read_rows(inputs, id_field="id", max_record_bytes=recipe.curate.max_record_bytes)
        cpus = max(1, int(ray.available_resources().get("CPU", 1)))
        rows = rows.map_batches(
            SyntheticSteps,
            fn_constructor_kwargs={"cfg": cfg.model_dump(), "questions": questions},
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
            rows = _near_dedup(rows, cfg)
        if cfg.scoring.model:
            rows = _score(rows, cfg)
        rows = rows.materialize()  # written and reported from, computed once
        manifest = write_stage_output(
            rows,
            output,
            stage="filter-synthetic",
            inputs=inputs,
            run_id=run_id,
            kept_columns=KEPT_COLUMNS,
            kept_jsonl=True,
        )
        metrics = log_data_stage(manifest, output)
        if cfg.report:
            _report(rows, manifest, output)
    return StageResult("filter-synthetic", run_id, output, metrics, {"manifest": manifest})


def _near_dedup(rows: Any, cfg: SyntheticConfig) -> Any:
    from lmforge.pipelines.minhash import MinHashConfig, minhash_dedup

    m = cfg.near_dedup
    mc = MinHashConfig(
        ngram=m.ngram,
        char_ngram=m.char_ngram,
        num_bands=m.num_bands,
        rows_per_band=m.rows_per_band,
        step=PROMPT_STEP,
        reason="near_duplicate_prompt",
        text_of=prompt_texts,
    )
    return minhash_dedup(rows, mc)


def _score(rows: Any, cfg: SyntheticConfig) -> Any:
    from lmforge.pipelines.scoring import ScoringConfig, score_rows
    from lmforge.platform.registry import resolve_model_dir

    s = cfg.scoring
    assert s.model is not None
    sc = ScoringConfig(
        model=resolve_model_dir(s.model),
        max_perplexity=s.max_perplexity,
        batch_size=s.batch_size,
        max_tokens=s.max_tokens,
        num_actors=s.num_actors,
    )
    return score_rows(rows, sc)


def examples_by_reason(
    output: str, reasons: list[str], per_reason: int = 5
) -> dict[str, list[dict[str, str]]]:
    """Up to `per_reason` dropped rows of each "step/reason": id, evidence and the start of
    the conversation. Streams the written Parquet and stops once every reason has its share."""
    found: dict[str, list[dict[str, str]]] = defaultdict(list)
    dataset = parquet_dataset(storage.join(output, "dropped"))
    if dataset is None:
        return {}
    wanted = set(reasons)
    for batch in dataset.to_batches(columns=["id", "step", "reason", "meta", "text"]):
        for r in batch.to_pylist():
            key = reason_key(r["step"], r["reason"])
            if key in wanted and len(found[key]) < per_reason:
                meta = json.loads(r["meta"]) if r["meta"] else {}
                evidence = meta.get("evidence") or _why(meta)
                found[key].append(
                    {"id": r["id"], "evidence": evidence, "text": (r["text"] or "")[:400]}
                )
        if all(len(found[k]) >= per_reason for k in wanted):
            break
    return dict(found)


def _why(meta: dict[str, Any]) -> str:
    if "duplicate_of" in meta:
        return f"duplicate of {meta['duplicate_of']}"
    if "decontam" in meta:
        d = meta["decontam"]
        return f"{d['eval_set']} item {d['item']}: {d.get('ngram') or d.get('match')}"
    if "perplexity" in meta:
        return f"perplexity {meta['perplexity']}"
    return ""


def _report(rows: Any, manifest: dict[str, Any], output: str) -> None:
    from lmforge.pipelines.report import collect_stats, render_html

    stats = collect_stats(rows)
    examples = examples_by_reason(output, list(manifest["dropped_by_reason"]))
    html = render_html("lmforge filter-synthetic", manifest, stats, examples=examples)
    tracking.log_text(html, "report.html")
    tracking.log_dict(examples, "drop_examples.json")


if __name__ == "__main__":
    from lmforge.jobs.cli import stage_main

    stage_main("filter-synthetic")
