"""Input discovery: the files behind each input, and the URIs rows name them by.

Inputs: a file, a folder (searched recursively), or a glob; local, `s3://` or `gs://`.

Object stores take their credentials and endpoint from the usual variables
(AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL for an S3-compatible server, ...) or from the URI's
query, as pyarrow's `FileSystem.from_uri` reads it:
`s3://bucket/data/*.jsonl?endpoint_override=127.0.0.1:9000&scheme=http`. Rows name
their file without query or user info (`s3://bucket/data/a.jsonl`).
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from lmforge.pipelines.readers.formats import ALL_SUFFIXES
from lmforge.platform import storage

HF_STATE, HF_INFO, HF_DICT = "state.json", "dataset_info.json", "dataset_dict.json"


def expand(inputs: list[str]) -> list[str]:
    """Files behind each input (a file, a folder searched recursively, a glob, or
    `hf:PATH[:split]` of a saved dataset), sorted, so the same inputs always give the
    same row order and ids. Remote files keep their input's query, so each can be
    opened again on its own."""
    files: list[str] = []
    for uri in inputs:
        split = None
        if uri.startswith("hf:"):
            uri, split = split_hf(uri)
        fs, path = storage.filesystem(uri)
        if any(c in path for c in "*?["):
            base = path[: min(path.find(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
            found = [i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path)]
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise FileNotFoundError(f"input not found: {public_uri(uri)}")
            found = [path] if info.type == pafs.FileType.File else _folder_files(fs, path)
        if split is not None:
            found = [f for f in found if f.startswith(f"{path}/{split}/")]
            if not found:
                raise FileNotFoundError(f"no split {split!r} in {public_uri(uri)}")
        files += [_file_uri(uri, f) for f in sorted(found)]
    if not files and inputs:
        raise FileNotFoundError(f"no readable files in {', '.join(map(public_uri, inputs))}")
    return files


def _folder_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Readable files under `folder`: by suffix, except hidden and `_private` ones; a
    stage output's kept Parquet only; a saved dataset's Arrow data files only."""
    infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
    files = [i.path for i in infos if i.is_file]
    if f"{folder}/{storage.MANIFEST}" in files and _read_json(fs, f"{folder}/{storage.MANIFEST}"):
        return [f for f in files if "/kept/" in f and f.endswith(".parquet")]
    saved = {posixpath.dirname(f) for f in files if f.endswith(f"/{HF_STATE}")}
    saved &= {posixpath.dirname(f) for f in files if f.endswith(f"/{HF_INFO}")}
    found = []
    for f in files:
        relative = f[len(folder) + 1 :].split("/")
        if any(part.startswith((".", "_")) for part in relative):
            continue  # .git, _progress, _SUCCESS: not inputs
        if any(f.startswith(d + "/") for d in saved) or relative[-1] == HF_DICT:
            continue
        if f.endswith(ALL_SUFFIXES):
            found.append(f)
    for d in saved:
        state = _read_json(fs, f"{d}/{HF_STATE}") or {}
        found += [f"{d}/{entry['filename']}" for entry in state.get("_data_files", [])]
    return found


def _read_json(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(path) as f:
            data = json.loads(bytes(f.read()).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def split_hf(uri: str) -> tuple[str, str | None]:
    """`hf:PATH_OR_NAME[:split]` -> (PATH_OR_NAME, split or None). A URI's query stays
    with the path: `hf:s3://b/ds:train?endpoint_override=h:9000`."""
    rest, sep, query = uri.removeprefix("hf:").partition("?")
    head, colon, tail = rest.rpartition(":")
    if colon and head and re.fullmatch(r"[\w.-]+", tail):
        return head + sep + query, tail
    return rest + sep + query, None


def _file_uri(input_uri: str, path: str) -> str:
    """The URI of `path`, a file in the filesystem of `input_uri`, with that input's
    user info and query (how to reach the store)."""
    if not storage.is_remote(input_uri):
        return path
    parts = urlsplit(input_uri)
    user = parts.netloc.rpartition("@")[0]
    return f"{parts.scheme}://{user + '@' if user else ''}{path}" + (
        f"?{parts.query}" if parts.query else ""
    )


def public_uri(uri: str) -> str:
    """A file's URI without user info or query: the name rows and markers use."""
    if not storage.is_remote(uri):
        return uri
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def by_filesystem(files: list[str]) -> list[tuple[str, pafs.FileSystem | None, list[str]]]:
    """Files grouped by the store that holds them: (prefix, filesystem, paths in it).
    prefix + path is the file's public URI (the prefix is "" for local files, whose
    filesystem is left to Ray)."""
    groups: dict[tuple[str, str], tuple[str, pafs.FileSystem | None, list[str]]] = {}
    for uri in files:
        if not storage.is_remote(uri):
            groups.setdefault(("", ""), ("", None, []))[2].append(uri)
            continue
        parts = urlsplit(uri)
        key = (f"{parts.scheme}://{parts.netloc}", parts.query)
        if key not in groups:  # one filesystem per bucket and settings, not per file
            root = f"{key[0]}/" + (f"?{parts.query}" if parts.query else "")
            groups[key] = (f"{parts.scheme}://", storage.filesystem(root)[0], [])
        groups[key][2].append(parts.netloc.rpartition("@")[2] + parts.path)
    return list(groups.values())
