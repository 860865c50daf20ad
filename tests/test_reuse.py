"""Stages that are not redone: the real curate, filter-synthetic and tokenize stages on a
local Ray, run by `lmforge run`'s own loop (`run_stages`) inside a pipeline run, over and
over with one thing changed each time; a stage reruns exactly when its recipe section or
an input's content digest changed, or when it is forced."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lmforge.jobs.cli import app
from lmforge.jobs.pipeline import run_stages
from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.platform import tracking

STAGES = ["curate", "filter-synthetic", "tokenize"]
WORDS = ["ray", "data", "streams", "blocks", "between", "tasks", "on", "the", "cluster"]


def corpus(path: Path) -> None:
    """Documents of 20 to 79 words: `curate.min_words` decides how many are kept."""
    docs = []
    for i in range(60):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(20 + i)]
        docs.append({"id": f"doc-{i:02d}", "text": f"Document {i}. " + " ".join(words) + "."})
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")


def recipe(tmp: Path, *sets: str) -> Recipe:
    return load_recipe(
        None,
        overrides=[
            f"workdir={tmp / 'work'}",
            f"mlflow.tracking_uri=sqlite:///{tmp}/m.db",
            f"curate.input={json.dumps([str(tmp / 'raw.jsonl')])}",
            "curate.min_chars=50",
            "curate.min_words=10",
            "curate.quality={gopher_repetition: false, gopher_quality: false, c4: false, "
            "fineweb: false}",
            "curate.language.enabled=false",
            "curate.minhash.enabled=false",
            "curate.report=false",
            "synthetic.input=[builtin:synthetic-examples]",
            "synthetic.near_dedup.enabled=false",
            "tokenize.vocab_size=300",
            "tokenize.seq_len=32",
            *sets,
        ],
    )


def run(r: Recipe, force: tuple[str, ...] = ()) -> dict[str, tuple[str, bool]]:
    """stage -> (the run whose output the pipeline now uses, whether it was skipped)."""
    assert r.mlflow.tracking_uri is not None
    tracking.setup(r.mlflow.tracking_uri, r.mlflow.experiment)
    with tracking.pipeline_run(r.name, params={}) as parent:
        results = run_stages(r, STAGES, parent_run_id=parent, force=force)
    out = {}
    client = MlflowClient(r.mlflow.tracking_uri)
    for name, res in results.items():
        tags = client.get_run(res.run_id).data.tags
        assert tags["mlflow.parentRunId"] == parent and tags["lmforge.stage"] == name
        skipped = bool(res.info.get("skipped"))
        assert (tags.get("lmforge.skipped") == "true") == skipped
        out[name] = (tags["lmforge.reused_run_id"] if skipped else res.run_id, skipped)
    return out


def manifest(folder: str | None) -> dict:
    return json.loads((Path(folder or "") / "manifest.json").read_text())


@pytest.mark.usefixtures("ray_local")
def test_a_stage_reruns_only_when_its_recipe_or_inputs_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus(tmp_path / "raw.jsonl")
    base = recipe(tmp_path)
    first = run(base)
    assert not any(skipped for _, skipped in first.values())
    for folder in (base.curate.output, base.synthetic.output, base.tokenize.output):
        m = manifest(folder)
        assert len(m["digest"]) == 32 and len(m["recipe_digest"]) == 32
        assert all(m["input_digests"].values())
    digests = {s: manifest(getattr(base, sec).output)["digest"]
               for s, sec in zip(STAGES, ("curate", "synthetic", "tokenize"), strict=True)}  # fmt: skip

    # 1. nothing changed: every stage skipped, each linked to the run that made its output
    capsys.readouterr()
    again = run(base)
    assert again == {s: (first[s][0], True) for s in STAGES}
    said = capsys.readouterr().out
    assert f"lmforge: curate unchanged (recipe + inputs as run {first['curate'][0][:8]}" in said

    # 2. curate forced: it reruns and makes the same content, so tokenize is still skipped
    forced = run(base, force=("curate",))
    assert forced["curate"][1] is False and forced["curate"][0] != first["curate"][0]
    assert manifest(base.curate.output)["digest"] == digests["curate"]
    assert forced["filter-synthetic"] == (first["filter-synthetic"][0], True)
    assert forced["tokenize"] == (first["tokenize"][0], True)

    # 3. a curate field that changes what is kept: curate and tokenize rerun, not synthetic
    stricter = recipe(tmp_path, "curate.min_words=50")
    changed = run(stricter)
    assert changed["curate"][1] is False and changed["tokenize"][1] is False
    assert changed["filter-synthetic"] == (first["filter-synthetic"][0], True)
    assert manifest(base.curate.output)["digest"] != digests["curate"]
    assert manifest(base.tokenize.output)["digest"] != digests["tokenize"]
    tokens = manifest(base.tokenize.output)
    assert tokens["mlflow_run_id"] == changed["tokenize"][0]
    assert tokens["input_digests"][base.curate.output] == manifest(base.curate.output)["digest"]

    # 4. back to the first recipe, the raw input touched (same bytes, new mtime) and a
    # synthetic field that keeps the same rows: both data stages rerun (their recipe or
    # input changed), tokenize reruns (curate's content is the first one's again, not the
    # one tokenize last read), and then a run with nothing changed skips all three
    os.utime(tmp_path / "raw.jsonl", (1_000_000_000, 1_000_000_000))
    looser = recipe(tmp_path, "synthetic.report=false")
    last = run(looser)
    assert not any(skipped for _, skipped in last.values())
    assert manifest(base.curate.output)["digest"] == digests["curate"]
    assert manifest(base.synthetic.output)["digest"] == digests["filter-synthetic"]
    assert run(looser) == {s: (last[s][0], True) for s in STAGES}


def test_force_names_a_stage() -> None:
    result = CliRunner().invoke(app, ["run", "--force", "pretrian"])
    assert result.exit_code == 2
    assert "--force: unknown stage 'pretrian'" in result.output
