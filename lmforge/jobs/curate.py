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

from typing import Any

from lmforge.jobs import reuse
from lmforge.jobs.common import StageResult, check_inputs, log_data_stage, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.pipelines import curation, resume
from lmforge.pipelines.dedup import exact_dedup
from lmforge.pipelines.outputs import write_stage_output
from lmforge.platform import storage, tracking
from lmforge.platform.config import ConfigError


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
    fp = reuse.fingerprint("curate", recipe)
    reuse.begin(output)
    with stage_context("curate", recipe, cfg.model_dump(), parent_run_id=parent_run_id) as run_id:
        tracking.record_inputs(
            inputs + [storage.absolute(p) for p in cfg.decontam.eval_sets],
            digests=fp.input_digests,
        )
        units = curation.plan_units(inputs, cfg.files_per_group)
        done = resume.finished(output, [u.key for u in units])
        print(f"[lmforge curate] {len(units)} input groups, {len(done)} already done", flush=True)
        for i, unit in enumerate(units):
            if unit.key in done:
                continue
            print(f"[lmforge curate] group {i + 1}/{len(units)}: {len(unit.inputs)} inputs")
            curation.stage_group(unit, cfg, output)

        rows = curation.read_staged(output, units)
        if cfg.exact_dedup:
            # materialized: MinHash plans its shuffles with another strategy, which an
            # unexecuted hash-shuffle groupby upstream of it cannot run under
            rows = exact_dedup(rows).materialize()
        if cfg.minhash.enabled:
            from lmforge.pipelines.minhash import minhash_dedup

            rows = minhash_dedup(rows, cfg.minhash.dedup_config())
        rows = rows.materialize()
        manifest = write_stage_output(
            rows,
            output,
            stage="curate",
            inputs=inputs,
            run_id=run_id,
            read_by_file=curation.read_by_file(output, units),
        )
        manifest["resumed_groups"] = len(done)
        manifest["groups"] = len(units)
        storage.write_manifest(output, manifest)
        metrics = log_data_stage(manifest, output)
        if cfg.report:
            _report(rows, manifest, with_clusters=cfg.minhash.enabled)
        curation.finish(output)
        reuse.finish(output, manifest, fp)
    return StageResult("curate", run_id, output, metrics, {"manifest": manifest})


def _report(rows: Any, manifest: dict[str, Any], *, with_clusters: bool) -> None:
    from lmforge.pipelines.report import curate_report

    html, stats = curate_report(rows, manifest, with_clusters=with_clusters)
    tracking.log_text(html, "report.html")
    tracking.log_dict(stats, "report_stats.json")
    tracking.log_metrics({f"pii.{k}": float(v) for k, v in stats.get("pii", {}).items()})


if __name__ == "__main__":
    from lmforge.jobs.command import stage_main

    stage_main("curate")
