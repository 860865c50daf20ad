"""Paths and URIs: local folders, `s3://`, `gs://`, through pyarrow filesystems.

Stages take URIs and never care where they run. A stage output folder holds
`manifest.json` (counts, schema, inputs, the producing MLflow run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

MANIFEST = "manifest.json"
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "hdfs://")


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def absolute(uri: str) -> str:
    """Local paths become absolute (Ray workers run in other directories); URIs stay."""
    if is_remote(uri) or uri.startswith(("builtin:", "hf:")):
        return uri
    return str(Path(uri).absolute())


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI."""
    if is_remote(uri):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), str(Path(uri).absolute())


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def join(uri: str, *parts: str) -> str:
    """`uri/part/...`; a URI's query (`?endpoint_override=...`) stays at the end."""
    base, sep, query = uri.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(os.path.dirname(path), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode("utf-8"))


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return bytes(f.read()).decode("utf-8")


def write_manifest(folder: str, manifest: dict[str, Any]) -> None:
    write_text(join(folder, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True, default=str))


def read_manifest(folder: str) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (a raw input, not a stage output)."""
    uri = join(folder, MANIFEST)
    try:
        if not exists(uri):
            return None
        data = json.loads(read_text(uri))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove(uri: str) -> None:
    """Delete a folder if it exists (a stage rewrites its whole output)."""
    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def download_dir(uri: str, local: str) -> str:
    """Copy a folder (local or a URI) into the local folder `local`; returns `local`.
    For libraries that take only local files (MLflow's artifact logging)."""
    src_fs, src = filesystem(uri)
    os.makedirs(local, exist_ok=True)
    pafs.copy_files(
        src, local, source_filesystem=src_fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return local
