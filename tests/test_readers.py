"""Readers on a real local Ray: zstd, CSV, Hugging Face saved datasets, S3 through a real
S3-compatible server on loopback (moto), and the done-markers that make curate resumable.
Every input record is one row: kept for now, or quarantined with its error and line."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import zstandard

from lmforge.pipelines import resume
from lmforge.pipelines.readers import expand, parse_file, public_uri, read_rows, split_hf

from conftest import moto_s3

LIMIT = 1_000_000


def read(inputs: list[str]) -> dict[str, dict[str, Any]]:
    rows = read_rows(inputs, id_field="id", max_record_bytes=LIMIT).take_all()
    by_id = {r["id"]: r for r in rows}
    assert len(by_id) == len(rows), "ids are unique in these inputs"
    return by_id


def quarantined(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {i: r["error"] for i, r in rows.items() if r["fate"] == "quarantined"}


def zst(data: bytes) -> bytes:
    # a streaming frame, as `zstd` and most writers make: no content size in the header
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
        w.write(data)
    return out.getvalue()


# ------------------------------------------------------------------------------ CSV, no Ray


def test_csv_rows_and_malformed_rows_each_have_a_fate() -> None:
    data = (
        b"id,text,lang\r\n"
        b"c1,plain row,en\r\n"
        b'c2,"quoted, with comma\nand a second line",en\r\n'
        b"c3,too,many,fields\r\n"
        b'"c4","bad"quote,en\r\n'
        b"\r\n"
        b"c5,last row,de\r\n"
    ) + b"c6,caf\xe9,fr\r\n"
    rows = list(parse_file("/d/t.csv", data, "id", LIMIT))
    assert [(r["id"], r["fate"], r["line"]) for r in rows] == [
        ("c1", "kept", 2),
        ("c2", "kept", 3),
        ("t.csv:5", "quarantined", 5),
        ("t.csv:6", "quarantined", 6),
        ("c5", "kept", 8),
        ("t.csv:9", "quarantined", 9),
    ]
    assert json.loads(rows[1]["raw"]) == {
        "id": "c2",
        "text": "quoted, with comma\nand a second line",
        "lang": "en",
    }
    errors = [r["error"] for r in rows if r["fate"] == "quarantined"]
    assert errors[0] == "malformed CSV: row has 4 fields, the header 3"
    assert errors[1].startswith("malformed CSV: ',' expected after '\"'")
    assert errors[2] == "invalid UTF-8"
    assert rows[2]["raw"] == "c3,too,many,fields"
    assert rows[5]["raw"] == "c6,caf\\xe9,fr"


def test_csv_without_a_usable_header_is_one_quarantined_row() -> None:
    rows = list(parse_file("/d/h.csv", b"id,id\n1,2\n", "id", LIMIT))
    assert [(r["fate"], r["line"]) for r in rows] == [("quarantined", 1)]
    assert rows[0]["error"].startswith("unreadable CSV header")


def test_hf_and_uri_helpers() -> None:
    assert split_hf("hf:/data/saved") == ("/data/saved", None)
    assert split_hf("hf:/data/saved:test") == ("/data/saved", "test")
    assert split_hf("hf:org/name:train") == ("org/name", "train")
    assert split_hf("hf:s3://b/ds") == ("s3://b/ds", None)
    q = "?endpoint_override=127.0.0.1:9000&scheme=http"
    assert split_hf(f"hf:s3://b/ds:validation{q}") == (f"s3://b/ds{q}", "validation")
    assert split_hf(f"hf:s3://b/ds{q}") == (f"s3://b/ds{q}", None)
    assert public_uri(f"s3://key:secret@b/in/a.jsonl{q}") == "s3://b/in/a.jsonl"
    assert public_uri("/local/a?.jsonl") == "/local/a?.jsonl"


# ------------------------------------------------------------------------------ Ray


@pytest.mark.usefixtures("ray_local")
def test_zstd_csv_and_corrupt_compressed_files(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    lines = [json.dumps({"id": "z1", "text": "zstd one"}), "{not json", json.dumps({"id": "z2"})]
    (src / "a.jsonl.zst").write_bytes(zst("\n".join(lines).encode()))
    (src / "b.json.zst").write_bytes(zst(json.dumps([{"id": "l1"}, {"id": "l2"}]).encode()))
    (src / "c.csv").write_text("id,text\nk1,one\nk2,two,extra\nk3,three\n", encoding="utf-8")
    (src / "d.csv.gz").write_bytes(gzip.compress(b"id,text\ng1,gz csv\n"))
    (src / "broken.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd not a zstd frame")
    (src / "broken.jsonl.gz").write_bytes(b"\x1f\x8b not a gzip stream")
    (src / ".hidden.jsonl").write_text(json.dumps({"id": "hidden"}) + "\n")

    rows = read([str(src)])
    assert set(rows) == {
        *("z1", "a.jsonl.zst:2", "z2", "l1", "l2", "k1", "c.csv:3", "k3", "g1"),
        *("broken.jsonl.zst:0", "broken.jsonl.gz:0"),
    }
    assert quarantined(rows) == {
        "a.jsonl.zst:2": "invalid JSON: Expecting property name enclosed in double quotes at column 2",
        "c.csv:3": "malformed CSV: row has 3 fields, the header 2",
        "broken.jsonl.zst:0": rows["broken.jsonl.zst:0"]["error"],
        "broken.jsonl.gz:0": rows["broken.jsonl.gz:0"]["error"],
    }
    assert rows["broken.jsonl.zst:0"]["error"].startswith("cannot decompress")
    assert rows["broken.jsonl.gz:0"]["error"].startswith("cannot decompress")
    assert rows["k3"]["file"] == str(src / "c.csv") and rows["k3"]["line"] == 4
    assert json.loads(rows["g1"]["raw"]) == {"id": "g1", "text": "gz csv"}


@pytest.mark.usefixtures("ray_local")
def test_hugging_face_saved_datasets_are_read_from_their_arrow_files(tmp_path: Path) -> None:
    import datasets

    train = datasets.Dataset.from_dict(
        {"id": [f"t{i}" for i in range(7)], "text": [f"doc {i}" for i in range(7)]}
    )
    train.save_to_disk(str(tmp_path / "single"), num_shards=2)
    test = datasets.Dataset.from_dict({"text": ["held out"], "n": [1]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    mixed = tmp_path / "mixed"
    train.select(range(2)).save_to_disk(str(mixed / "saved"))
    (mixed / "extra.jsonl").write_text(json.dumps({"id": "x1", "text": "beside"}) + "\n")

    single = expand([str(tmp_path / "single")])
    assert [Path(f).name for f in single] == [
        "data-00000-of-00002.arrow",
        "data-00001-of-00002.arrow",
    ]
    rows = read([str(tmp_path / "single")])
    assert set(rows) == {f"t{i}" for i in range(7)}
    assert json.loads(rows["t5"]["raw"]) == {"id": "t5", "text": "doc 5"}
    assert {r["fate"] for r in rows.values()} == {"kept"}
    assert rows["t0"]["line"] == 1 and rows["t0"]["file"] == single[0]

    rows = read([f"hf:{tmp_path / 'dict'}:test"])
    assert list(rows) == ["data-00000-of-00001.arrow:1"]
    assert json.loads(rows["data-00000-of-00001.arrow:1"]["raw"]) == {"text": "held out", "n": 1}
    assert len(read([f"hf:{tmp_path / 'dict'}"])) == 8  # every split when none is named
    with pytest.raises(FileNotFoundError, match="no split 'valid'"):
        expand([f"hf:{tmp_path / 'dict'}:valid"])

    # a saved dataset inside a folder: its state.json and dataset_info.json are no records
    assert set(read([str(mixed)])) == {"t0", "t1", "x1"}


# ------------------------------------------------------------------------------ S3


@pytest.fixture(scope="module", autouse=True)
def s3_server() -> Iterator[str | None]:
    """A moto S3 server on loopback with bucket `corpus`; yields its endpoint host:port
    (None where moto's server is not installed: the S3 tests then skip).

    Autouse, so it runs before `ray_local`: Ray's workers inherit the credentials from
    the environment, as on a cluster whose nodes have their own. The endpoint is not in
    the environment: the tests give it to the driver, which resolves the filesystem."""
    try:
        import moto.server  # noqa: F401
    except ImportError:  # moto[server] is a test dependency
        yield None
        return

    with moto_s3("corpus", endpoint_in_env=False) as (endpoint, client):

        def put(key: str, body: bytes) -> None:
            client.put_object(Bucket="corpus", Key=key, Body=body)

        put("in/a.jsonl", "\n".join([json.dumps({"id": "a1"}), "{oops"]).encode())
        put("in/more/b.jsonl.gz", gzip.compress(json.dumps({"id": "b1"}).encode()))
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["x", "y"]}), sink)
        put("in/more/c.parquet", sink.getvalue().to_pybytes())
        put("in/notes.csv", b"id,text\nv1,csv on s3\n")
        put("other/z.jsonl", json.dumps({"id": "z1"}).encode())
        yield endpoint


@pytest.fixture
def s3(s3_server: str | None) -> str:
    if s3_server is None:
        pytest.skip("moto[server] is not installed")
    return s3_server


@pytest.fixture
def endpoint_env(s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver finds the server through AWS_ENDPOINT_URL, which pyarrow reads."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3}")


@pytest.mark.usefixtures("ray_local", "endpoint_env")
def test_s3_folder_with_the_endpoint_from_the_environment() -> None:
    files = expand(["s3://corpus/in"])
    assert files == [
        "s3://corpus/in/a.jsonl",
        "s3://corpus/in/more/b.jsonl.gz",
        "s3://corpus/in/more/c.parquet",
        "s3://corpus/in/notes.csv",
    ]
    rows = read(["s3://corpus/in"])  # endpoint from AWS_ENDPOINT_URL
    assert set(rows) == {"a1", "a.jsonl:2", "b1", "p1", "p2", "v1"}
    assert quarantined(rows) == {"a.jsonl:2": rows["a.jsonl:2"]["error"]}
    assert rows["b1"]["file"] == "s3://corpus/in/more/b.jsonl.gz"
    assert rows["p2"]["file"] == "s3://corpus/in/more/c.parquet"
    assert json.loads(rows["p2"]["raw"]) == {"id": "p2", "text": "y"}


@pytest.mark.usefixtures("ray_local")
def test_s3_glob_with_the_endpoint_in_the_uri(s3: str) -> None:
    # the query as pyarrow's FileSystem.from_uri reads it; each file keeps it
    query = f"endpoint_override={s3}&scheme=http"
    glob = f"s3://corpus/*/*.jsonl?{query}"
    files = [f"s3://corpus/in/a.jsonl?{query}", f"s3://corpus/other/z.jsonl?{query}"]
    assert expand([glob]) == files
    rows = read([glob, f"s3://corpus/in/more/c.parquet?{query}"])
    assert set(rows) == {"a1", "a.jsonl:2", "z1", "p1", "p2"}
    assert rows["z1"]["file"] == "s3://corpus/other/z.jsonl"  # no query in rows


@pytest.mark.usefixtures("endpoint_env")
def test_progress_markers_on_s3() -> None:
    files = expand(["s3://corpus/in"])
    output = "s3://corpus/out/curate"
    assert resume.finished(output, files) == set()
    resume.mark_done(output, files[1], {"read": 1, "kept": 1})
    assert resume.finished(output, files) == {files[1]}
    assert resume.done_counts(output, files) == {files[1]: {"read": 1, "kept": 1}}


# ------------------------------------------------------------------------------ progress


def test_progress_markers(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "s3://b/c.jsonl?scheme=http"]
    assert resume.finished(out, files) == set()  # no output folder yet
    resume.mark_done(out, files[0], {"read": 3, "kept": 2, "dropped": 1, "quarantined": 0})
    resume.mark_done(out, "s3://key:secret@b/c.jsonl", {"read": 1})
    assert resume.finished(out, files) == {files[0], files[2]}  # the same public URI
    assert resume.done_counts(out, files)[files[0]]["kept"] == 2
    markers = sorted((tmp_path / "out" / "_progress").iterdir())
    assert [m.name for m in markers] == sorted(resume.marker_name(f) for f in files[::2])
    marker = json.loads((tmp_path / "out" / "_progress" / resume.marker_name(files[2])).read_text())
    assert marker["file"] == "s3://b/c.jsonl"  # no credentials written down
    resume.mark_done(out, files[0], {"read": 3})  # marking again replaces the marker
    assert resume.done_counts(out, files[:1]) == {files[0]: {"read": 3}}


@pytest.mark.usefixtures("ray_local")
def test_a_stage_writes_its_outputs_to_s3(s3: str, tmp_path: Path) -> None:
    """filter-synthetic with `--output s3://...`: every fate, the manifest and the JSONL
    land on the object store from Ray's tasks, and the counts read back reconcile."""
    from lmforge.jobs import filter_synthetic
    from lmforge.jobs.recipe import load_recipe
    from lmforge.pipelines.outputs import parquet_dataset
    from lmforge.platform import storage

    query = f"endpoint_override={s3}&scheme=http"  # the workers have no endpoint setting
    output = f"s3://corpus/stages/synthetic?{query}"
    recipe = load_recipe(
        None,
        stage="filter-synthetic",
        input=["builtin:synthetic-examples"],
        output=output,
        overrides=[f"workdir={tmp_path}"],
    )
    filter_synthetic.run(recipe)
    manifest = storage.read_manifest(output)
    assert manifest is not None
    counts = manifest["counts"]
    assert counts["read"] == 49 == counts["kept"] + counts["dropped"] + counts["quarantined"]
    for fate in ("kept", "dropped"):
        dataset = parquet_dataset(storage.join(output, fate))
        assert dataset is not None and dataset.count_rows() == counts[fate]
    fs, path = storage.filesystem(storage.join(output, "kept"))
    names = [i.path for i in fs.get_file_info(pafs.FileSelector(path))]
    jsonl = [n for n in names if n.endswith(".jsonl")]
    lines = [x for n in jsonl for x in fs.open_input_stream(n).read().decode().splitlines()]
    assert len(lines) == counts["kept"]
    assert all(json.loads(x)["messages"] for x in lines)
