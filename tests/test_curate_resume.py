"""A curate job killed mid-run and started again with the same output skips the finished
input groups and ends with the same output as an uninterrupted run: no duplicates."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmforge.pipelines import curation, resume
from lmforge.pipelines.builtin_corpus import iter_docstrings
from lmforge.pipelines.outputs import parquet_dataset

from conftest import ROOT

# documents per input file, one file a group: a tiny first group, a large second one (it
# runs for seconds after the first group's marker appears, so the kill lands inside it)
GROUP_DOCS = (5, 3000, 60)
LARGE_REPEATS = 4  # the second group holds each of its documents this many times
FILES = len(GROUP_DOCS)


def curate_cmd(src: Path, out: Path, work: Path) -> list[str]:
    return [
        sys.executable, "-m", "lmforge.jobs.curate", "--input", str(src), "--output", str(out),
        "--set", f"workdir={work}",
        "--set", f"mlflow.tracking_uri=sqlite:///{work}/mlflow.db",
        "--set", "ray.num_cpus=2",
        "--set", "curate.files_per_group=1",
        "--set", "curate.min_chars=100",
        "--set", "curate.language.enabled=false",
        "--set", "curate.quality={gopher_repetition: false, gopher_quality: false, "
        "c4: false, fineweb: false}",
    ]  # fmt: skip


def kept_column(out: Path, column: str) -> list[str]:
    ds = parquet_dataset(str(out / "kept"))
    assert ds is not None
    return sorted(ds.to_table(columns=[column])[column].to_pylist())


def kept_ids(out: Path) -> list[str]:
    return kept_column(out, "id")


def test_killed_curate_resumes_without_duplicates(tmp_path: Path) -> None:
    """Killed right after its first group's done-marker appears, while the second (large)
    group is still running, a curate job started again into the same output skips exactly
    that group and ends with the counts and kept ids of an uninterrupted run."""
    src = tmp_path / "raw"
    src.mkdir()
    docs = [d for d in iter_docstrings(8000) if len(d["text"]) > 100][: sum(GROUP_DOCS)]
    assert len(docs) == sum(GROUP_DOCS)
    start, records = 0, 0
    for i, n in enumerate(GROUP_DOCS):
        part = docs[start : start + n]
        start += n
        if i == 1:  # the large group: more rows to process, by exact repeats (new ids)
            part = [dict(d, id=f"{d['id']}~{k}") for k in range(LARGE_REPEATS) for d in part]
        part.append(dict(docs[0], id=f"copy-{i}"))  # the same text in every file
        records += len(part)
        with (src / f"part-{i}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(d) + "\n" for d in part)
    # the groups in the order the job runs them (one file each, sorted) and their markers
    units = curation.plan_units([str(src)], 1)
    assert [Path(u.key).name for u in units] == [f"part-{i}.jsonl" for i in range(FILES)]
    markers = [resume.marker_name(u.key) for u in units]

    out, work = tmp_path / "out", tmp_path / "work"
    progress = out / resume.PROGRESS
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        curate_cmd(src, out, work),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while not (progress / markers[0]).exists():
        assert first.poll() is None, "the first run ended before its first group was done"
        assert time.time() < deadline, "the first group took more than 10 minutes"
        time.sleep(0.02)
    # frozen at once (the driver writes the markers), then killed with the Ray it started
    os.killpg(first.pid, signal.SIGSTOP)
    done = sorted(p.name for p in progress.glob("*.json"))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    # the large second group was still running (it takes seconds): only the first is done
    assert done == [markers[0]], "the second group finished before the kill: enlarge it"
    assert not (out / "manifest.json").exists()

    second = subprocess.run(
        curate_cmd(src, out, work), env=env, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{FILES} input groups, 1 already done" in second.stdout
    # the finished group was not run again; every other group was
    ran = re.findall(r"group (\d+)/\d+:", second.stdout)
    assert ran == [str(i + 1) for i in range(1, FILES)], second.stdout
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["resumed_groups"] == 1
    assert resumed["groups"] == FILES
    assert not progress.exists()  # a finished job leaves no resume state

    clean_out = tmp_path / "clean"
    third = subprocess.run(
        curate_cmd(src, clean_out, work), env=env, capture_output=True, text=True, timeout=900
    )
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"{FILES} input groups, 0 already done" in third.stdout
    clean = json.loads((clean_out / "manifest.json").read_text())
    assert clean["resumed_groups"] == 0
    assert resumed["counts"] == clean["counts"]
    assert resumed["dropped_by_reason"] == clean["dropped_by_reason"]
    assert resumed["counts"]["read"] == records
    assert kept_ids(out) == kept_ids(clean_out)
    # the same kept rows, written in other files and another order: the same digest
    assert resumed["digest"] == clean["digest"]
    assert len(set(kept_ids(out))) == len(kept_ids(out))
    # the planted copies and repeats: each text kept once, the others dropped as duplicates
    texts = kept_column(out, "text")
    assert len(set(texts)) == len(texts)
    assert resumed["dropped_by_reason"].get("exact_dedup/exact_duplicate", 0) >= FILES
