"""`curate`: raw documents -> clean, deduplicated Parquet, every record accounted for.

    python -m lmforge.jobs.curate --input DATA --output DIR [--eval-set EVAL]... [--set K=V]

Two phases. Per group of input files (resumable): read, extract, normalize, language
ID, length and quality filters (Gopher, C4, FineWeb), PII redaction, decontamination;
each group's rows are staged under `<output>/_staging/` and a done-marker is written, so
a killed job started again with the same output skips the finished groups. Then over
all staged rows: exact dedup, MinHash near-dedup, the outputs by fate, the manifest and
the HTML report.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lmforge.jobs.common import StageResult, check_inputs, log_data_stage, stage_context
from lmforge.pipelines import resume
from lmforge.pipelines.dedup import exact_dedup
from lmforge.pipelines.outputs import parquet_dataset, write_stage_output
from lmforge.pipelines.readers import expand, read_rows, split_hf
from lmforge.pipelines.records import conform
from lmforge.pipelines.steps import Pipeline, Step
from lmforge.platform import storage, tracking
from lmforge.platform.config import ConfigError, CurateConfig, Recipe

STAGING = "_staging"


def build_steps(cfg: CurateConfig) -> list[Step]:
    """The per-document steps of a recipe, in order (heavy models load here)."""
    from lmforge.pipelines.text import ExtractText, LengthConfig, LengthFilter, Normalize

    steps: list[Step] = [ExtractText(cfg.text_field, cfg.id_field)]
    if cfg.normalize:
        steps.append(Normalize(fix_mojibake=cfg.fix_mojibake))
    if cfg.language.enabled:
        from lmforge.pipelines.langid import (
            LanguageFilter,
            LanguageFilterConfig,
            LanguageID,
            LanguageIDConfig,
        )

        lang = cfg.language
        steps.append(LanguageID(LanguageIDConfig(trust_input_lang=lang.trust_input_lang)))
        steps.append(
            LanguageFilter(LanguageFilterConfig(languages=lang.languages, min_score=lang.min_score))
        )
    if cfg.min_chars or cfg.min_words:
        steps.append(LengthFilter(LengthConfig(min_chars=cfg.min_chars, min_words=cfg.min_words)))
    q = cfg.quality
    if q.gopher_repetition or q.gopher_quality or q.c4 or q.fineweb:
        from lmforge.pipelines import quality

        if q.gopher_repetition:
            steps.append(quality.GopherRepetitionFilter())
        if q.gopher_quality:
            steps.append(quality.GopherQualityFilter())
        if q.c4:
            c4 = quality.C4QualityConfig(filter_no_terminal_punct=q.c4_filter_no_terminal_punct)
            steps.append(quality.C4QualityFilter(c4))
        if q.fineweb:
            steps.append(quality.FineWebQualityFilter())
    if cfg.pii:
        from lmforge.pipelines.pii import PIIRedactor

        steps.append(PIIRedactor())
    if cfg.decontam.eval_sets:
        from lmforge.pipelines.decontam import DecontamConfig, Decontaminate

        d = cfg.decontam
        dc = DecontamConfig(n_words=d.n_words, n_chars=d.n_chars)
        steps.append(Decontaminate([storage.absolute(p) for p in d.eval_sets], dc))
    return steps


class DocumentSteps:
    """Ray Data callable class: builds the steps once per actor from the (small) config,
    so models and n-gram indexes are never pickled into every task."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.pipeline = Pipeline(build_steps(CurateConfig.model_validate(cfg)))

    def __call__(self, batch: Any) -> Any:
        return self.pipeline(batch)


@dataclass
class Unit:
    """A resumable group of inputs: its key names its done-marker and staging folder."""

    inputs: list[str]

    @property
    def key(self) -> str:
        return "\n".join(self.inputs)

    @property
    def folder(self) -> str:
        return hashlib.sha1(self.key.encode("utf-8")).hexdigest()[:20]


def plan_units(inputs: list[str], per_group: int) -> list[Unit]:
    """Built-in and Hub inputs alone, files in sorted groups: the same inputs give the
    same units."""
    whole = [u for u in inputs if u.startswith("builtin:") or _on_hub(u)]
    units = [Unit([u]) for u in whole]
    files = expand([u for u in inputs if u not in whole])
    units += [Unit(files[i : i + per_group]) for i in range(0, len(files), per_group)]
    return units


def _on_hub(uri: str) -> bool:
    return uri.startswith("hf:") and not storage.exists(split_hf(uri)[0])


def validate(recipe: Recipe) -> None:
    check_inputs(recipe.curate.input, what="curate")
    for path in recipe.curate.decontam.eval_sets:
        if not storage.is_remote(path) and not storage.exists(path):
            raise ConfigError(f"curate.decontam.eval_sets: file not found: {path}")


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.curate
    assert cfg.output is not None
    inputs = [storage.absolute(u) for u in cfg.input]
    output = storage.absolute(cfg.output)
    validate(recipe)
    with stage_context("curate", recipe, cfg.model_dump(), parent_run_id=parent_run_id) as run_id:
        tracking.record_inputs(inputs + [storage.absolute(p) for p in cfg.decontam.eval_sets])
        units = plan_units(inputs, cfg.files_per_group)
        done = resume.finished(output, [u.key for u in units])
        print(f"[lmforge curate] {len(units)} input groups, {len(done)} already done", flush=True)
        for i, unit in enumerate(units):
            if unit.key in done:
                continue
            print(f"[lmforge curate] group {i + 1}/{len(units)}: {len(unit.inputs)} inputs")
            _stage_unit(unit, cfg, output)

        staged = [storage.join(output, STAGING, u.folder) for u in units]
        rows = _read_staged(staged)
        if cfg.exact_dedup:
            # materialized: MinHash plans its shuffles with another strategy, which an
            # unexecuted hash-shuffle groupby upstream of it cannot run under
            rows = exact_dedup(rows).materialize()
        if cfg.minhash.enabled:
            rows = _near_dedup(rows, cfg)
        rows = rows.materialize()
        manifest = write_stage_output(rows, output, stage="curate", inputs=inputs, run_id=run_id)
        manifest["resumed_groups"] = len(done)
        manifest["groups"] = len(units)
        storage.write_manifest(output, manifest)
        metrics = log_data_stage(manifest, output)
        if cfg.report:
            _report(rows, manifest, cfg)
        # finished: the next run starts afresh
        storage.remove(storage.join(output, STAGING))
        storage.remove(storage.join(output, resume.PROGRESS))
    return StageResult("curate", run_id, output, metrics, {"manifest": manifest})


def _stage_unit(unit: Unit, cfg: CurateConfig, output: str) -> None:
    """Read and run the per-document steps on one group; stage its rows; mark it done."""
    import ray
    import ray.data

    folder = storage.join(output, STAGING, unit.folder)
    storage.remove(folder)  # a half-written folder of a killed run
    rows = read_rows(
        unit.inputs,
        id_field=cfg.id_field,
        max_record_bytes=cfg.max_record_bytes,
        max_builtin_docs=cfg.builtin_max_docs,
    )
    cpus = max(1, int(ray.available_resources().get("CPU", 1)))
    rows = rows.map_batches(
        DocumentSteps,
        fn_constructor_kwargs={"cfg": cfg.model_dump()},
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpus),
    )
    rows.write_parquet(folder, min_rows_per_file=100_000)
    dataset = parquet_dataset(folder)
    n = dataset.count_rows() if dataset is not None else 0
    resume.mark_done(output, unit.key, {"read": n})


def _read_staged(folders: list[str]) -> Any:
    import ray.data

    existing = [f for f in folders if parquet_dataset(f) is not None]
    if not existing:
        raise RuntimeError("curate: the inputs held no records")
    ds = ray.data.read_parquet(existing, file_extensions=["parquet"])
    return ds.map_batches(conform, batch_format="pyarrow", zero_copy_batch=True)


def _near_dedup(rows: Any, cfg: CurateConfig) -> Any:
    from lmforge.pipelines.minhash import MinHashConfig, minhash_dedup

    m = cfg.minhash
    mc = MinHashConfig(
        ngram=m.ngram, char_ngram=m.char_ngram, num_bands=m.num_bands, rows_per_band=m.rows_per_band
    )
    return minhash_dedup(rows, mc)


def _report(rows: Any, manifest: dict[str, Any], cfg: CurateConfig) -> None:
    from lmforge.pipelines.report import collect_stats, render_html

    stats = collect_stats(rows)
    if cfg.minhash.enabled:
        from lmforge.pipelines.minhash import cluster_sizes

        stats["cluster"] = {str(k): v for k, v in cluster_sizes(rows).items()}
    tracking.log_text(render_html("lmforge curate", manifest, stats), "report.html")
    tracking.log_dict(stats, "report_stats.json")
    for group in ("pii",):
        tracking.log_metrics({f"{group}.{k}": float(v) for k, v in stats.get(group, {}).items()})


if __name__ == "__main__":
    from lmforge.jobs.cli import stage_main

    stage_main("curate")
