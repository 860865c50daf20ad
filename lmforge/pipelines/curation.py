"""The curation chain: the per-document steps of a recipe, and its resumable groups.

`curate_steps` builds the steps in order (extract, normalize, language ID, length,
Gopher, C4, FineWeb, PII, decontamination); `stage_group` runs them over one group of
input files on Ray Data and stages the rows with a done-marker (see `resume.py`), so a
killed job started again skips finished groups. Dedup runs over all staged rows later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from lmforge.pipelines import resume
from lmforge.pipelines.config import CurateConfig
from lmforge.pipelines.outputs import AccountingError, parquet_dataset
from lmforge.pipelines.readers import ReadTally, expand, read_rows, split_hf
from lmforge.pipelines.records import conform
from lmforge.pipelines.steps import Step, StepsActor
from lmforge.platform import storage

STAGING = "_staging"


def curate_steps(cfg: dict[str, Any], eval_sets: list[Any] | None = None) -> list[Step]:
    """The per-document steps of a `curate` section (as a dict), in order. Heavy models
    and indexes load here, once per Ray Data actor.

    eval_sets: the `decontam.eval_sets` files already read (`EvalSet`s, by the driver, so
    a worker never opens a path of the driver's); None reads them here."""
    from lmforge.pipelines.text import ExtractText, LengthConfig, LengthFilter, Normalize

    c = CurateConfig.model_validate(cfg)
    steps: list[Step] = [ExtractText(c.text_field, c.id_field)]
    if c.normalize:
        steps.append(Normalize(fix_mojibake=c.fix_mojibake))
    if c.language.enabled:
        from lmforge.pipelines.langid import (
            LanguageFilter,
            LanguageFilterConfig,
            LanguageID,
            LanguageIDConfig,
        )

        lang = c.language
        lid = LanguageIDConfig(trust_input_lang=lang.trust_input_lang, by_prose=lang.by_prose)
        steps.append(LanguageID(lid))
        steps.append(
            LanguageFilter(LanguageFilterConfig(languages=lang.languages, min_score=lang.min_score))
        )
    if c.min_chars or c.min_words:
        steps.append(LengthFilter(LengthConfig(min_chars=c.min_chars, min_words=c.min_words)))
    q = c.quality
    if q.gopher_repetition or q.gopher_quality or q.c4 or q.fineweb:
        from lmforge.pipelines import quality

        if q.gopher_repetition:
            steps.append(quality.GopherRepetitionFilter())
        if q.gopher_quality:
            gq = quality.GopherQualityConfig(alpha_words=q.gopher_alpha_words)
            steps.append(quality.GopherQualityFilter(gq))
        if q.c4:
            c4 = quality.C4QualityConfig(filter_no_terminal_punct=q.c4_filter_no_terminal_punct)
            steps.append(quality.C4QualityFilter(c4))
        if q.fineweb:
            steps.append(quality.FineWebQualityFilter())
    if c.pii:
        from lmforge.pipelines.pii import PIIRedactor

        steps.append(PIIRedactor())
    if c.decontam.eval_sets:
        from lmforge.pipelines.decontam import Decontaminate

        sets = eval_sets or [storage.absolute(p) for p in c.decontam.eval_sets]
        steps.append(Decontaminate(sets, c.decontam.index_config()))
    return steps


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


def stage_group(unit: Unit, cfg: CurateConfig, output: str) -> None:
    """Read and run the per-document steps on one group; stage its rows; mark it done."""
    import ray
    import ray.data

    folder = storage.join(output, STAGING, unit.folder)
    storage.remove(folder)  # a half-written folder of a killed run
    tally = ReadTally()
    rows = read_rows(
        unit.inputs,
        id_field=cfg.id_field,
        max_record_bytes=cfg.max_record_bytes,
        max_builtin_docs=cfg.builtin_max_docs,
        tally=tally,
    )
    cpus = max(1, int(ray.available_resources().get("CPU", 1)))
    from lmforge.pipelines.decontam import load_eval_set

    # the evaluation sets travel to the actors as data, read here once
    eval_sets = [load_eval_set(storage.absolute(p)) for p in cfg.decontam.eval_sets]
    rows = rows.map_batches(
        StepsActor,
        fn_constructor_kwargs={
            "build": curate_steps,
            "cfg": cfg.model_dump(),
            "eval_sets": eval_sets,
        },
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cpus),
    )
    rows.write_parquet(folder, min_rows_per_file=100_000)
    dataset = parquet_dataset(folder)
    staged = dataset.count_rows() if dataset is not None else 0
    read = tally.counts()
    if staged != sum(read.values()):  # a step lost (or made up) rows: stop here
        raise AccountingError(
            f"curate: the readers read {sum(read.values())} records from {len(read)} files "
            f"but {staged} rows were staged"
        )
    resume.mark_done(output, unit.key, {"read": staged}, read_by_file=read)


def read_by_file(output: str, units: list[Unit]) -> dict[str, int]:
    """Input file -> records the readers read, over every staged group."""
    return resume.read_by_file(output, [u.key for u in units])


def read_staged(output: str, units: list[Unit]) -> Any:
    """Every staged row of the groups, as one dataset in ROW_SCHEMA."""
    import ray.data

    folders = [storage.join(output, STAGING, u.folder) for u in units]
    existing = [f for f in folders if parquet_dataset(f) is not None]
    if not existing:
        raise RuntimeError("curate: the inputs held no records")
    ds = ray.data.read_parquet(existing, file_extensions=["parquet"])
    return ds.map_batches(conform, batch_format="pyarrow", zero_copy_batch=True)


def finish(output: str) -> None:
    """Staged rows and markers removed once the outputs are written: a rerun starts afresh."""
    storage.remove(storage.join(output, STAGING))
    storage.remove(storage.join(output, resume.PROGRESS))
