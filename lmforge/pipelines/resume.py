"""Which input files a stage has already finished, so a restarted run can skip them.

A stage that works through its input files in groups leaves, once all rows of a file are
written, a small marker `<output>/_progress/<sha1 of the file's URI>.json` holding that
file's counts. A rerun into the same output asks `finished(output, files)` and reads only
the rest, adding `done_counts` to its own so the manifest still reconciles.

Markers are named by the file's public URI (`readers.public_uri`: no user info, no query),
so a file reached with other credentials or another endpoint setting is the same file.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow.fs as pafs

from lmforge.pipelines.readers import public_uri
from lmforge.platform import storage

PROGRESS = "_progress"


def marker_name(file: str) -> str:
    """`<sha1 of the file's public URI>.json`."""
    return hashlib.sha1(public_uri(file).encode("utf-8")).hexdigest() + ".json"


def finished(output: str, files: Iterable[str]) -> set[str]:
    """Those of `files` that have a done-marker under `output` (one listing, no reads)."""
    fs, folder = _folder(output)
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    names = {posixpath.basename(i.path) for i in infos if i.is_file}
    return {f for f in files if marker_name(f) in names}


def mark_done(
    output: str,
    file: str,
    counts: Mapping[str, int],
    *,
    read_by_file: Mapping[str, int] | None = None,
) -> None:
    """Record that every row of `file` is written, with its counts (read, kept, ...) and
    the records the readers counted per input file. Written under a temporary name and
    moved into place: a marker that exists is whole."""
    fs, folder = _folder(output)
    fs.create_dir(folder, recursive=True)
    marker = {"file": public_uri(file), "counts": dict(counts), "finished_at": time.time()}
    if read_by_file is not None:
        marker["read_by_file"] = {public_uri(f): n for f, n in read_by_file.items()}
    name = marker_name(file)
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(temporary) as f:
        f.write(json.dumps(marker, sort_keys=True).encode("utf-8"))
    fs.move(temporary, f"{folder}/{name}")


def done_counts(output: str, files: Iterable[str]) -> dict[str, dict[str, int]]:
    """file -> the counts its marker holds, for each of `files` that is finished."""
    return {file: marker["counts"] for file, marker in _markers(output, files).items()}


def read_by_file(output: str, files: Iterable[str]) -> dict[str, int]:
    """Input file -> records read, over the markers of the finished `files`."""
    out: dict[str, int] = {}
    for marker in _markers(output, files).values():
        out.update(marker.get("read_by_file", {}))
    return dict(sorted(out.items()))


def _markers(output: str, files: Iterable[str]) -> dict[str, dict[str, Any]]:
    fs, folder = _folder(output)
    markers = {}
    for file in sorted(finished(output, files)):
        with fs.open_input_stream(f"{folder}/{marker_name(file)}") as f:
            markers[file] = json.loads(bytes(f.read()).decode("utf-8"))
    return markers


def _folder(output: str) -> tuple[pafs.FileSystem, str]:
    fs, path = storage.filesystem(output)
    return fs, f"{path.rstrip('/')}/{PROGRESS}"
