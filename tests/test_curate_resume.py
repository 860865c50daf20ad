"""A curate job killed mid-run and started again with the same output skips the finished
input files and ends with the same output as an uninterrupted run: no duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmforge.pipelines.builtin_corpus import iter_docstrings
from lmforge.pipelines.outputs import parquet_dataset

from conftest import ROOT

FILES = 6


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


def kept_ids(out: Path) -> list[str]:
    ds = parquet_dataset(str(out / "kept"))
    assert ds is not None
    return sorted(ds.to_table(columns=["id"])["id"].to_pylist())


def test_killed_curate_resumes_without_duplicates(tmp_path: Path) -> None:
    src = tmp_path / "raw"
    src.mkdir()
    docs = [d for d in iter_docstrings(3000) if len(d["text"]) > 100][: FILES * 60]
    for i in range(FILES):
        part = docs[i::FILES]
        part.append(dict(docs[0], id=f"copy-{i}"))  # the same text in every file
        with (src / f"part-{i}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(d) + "\n" for d in part)

    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        curate_cmd(src, out, work),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    markers = out / "_progress"
    deadline = time.time() + 600
    while len(list(markers.glob("*.json"))) < 2:
        assert first.poll() is None, "the first run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
    first.wait()
    done_before = len(list(markers.glob("*.json")))
    assert 2 <= done_before < FILES
    assert not (out / "manifest.json").exists()

    second = subprocess.run(
        curate_cmd(src, out, work), env=env, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{FILES} input groups, {done_before} already done" in second.stdout
    resumed = json.loads((out / "manifest.json").read_text())
    assert resumed["resumed_groups"] == done_before
    assert not markers.exists()  # a finished job leaves no resume state

    clean_out = tmp_path / "clean"
    third = subprocess.run(
        curate_cmd(src, clean_out, work), env=env, capture_output=True, text=True, timeout=900
    )
    assert third.returncode == 0, third.stderr[-3000:]
    clean = json.loads((clean_out / "manifest.json").read_text())
    assert resumed["counts"] == clean["counts"]
    assert resumed["counts"]["read"] == len(docs) + FILES
    assert kept_ids(out) == kept_ids(clean_out)
    assert len(set(kept_ids(out))) == len(kept_ids(out))
    # the planted copies: one kept (the smallest id), the others dropped as duplicates
    assert resumed["dropped_by_reason"].get("exact_dedup/exact_duplicate", 0) >= FILES
