"""Lineage a user can click, on a real MLflow server: the real curate, filter-synthetic,
tokenize and register stages on tiny inputs, with the pretrain stage's own ending
(`pretrain.publish`: the LoggedModel, its metrics, the manifest) over a tiny Llama built
here instead of trained; then `lmforge lineage` walks from the registered version back to
the raw input, URI and digest at each step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lmforge.jobs import pretrain, register, reuse
from lmforge.jobs.cli import app
from lmforge.jobs.common import stage_context
from lmforge.jobs.pipeline import run_stages
from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.platform import lineage, registry, tracking
from lmforge.platform.hf_model import load_tokenizer

pytestmark = pytest.mark.usefixtures("ray_local")

NAME = "lineage-test"
TEXT = "Ray Data streams blocks of rows between tasks running on the cluster. "


@dataclass
class Chain:
    recipe: Recipe
    runs: dict[str, str]  # stage -> run id
    model_id: str


def tiny_model(tokenizer_dir: str, out: str) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)


@pytest.fixture(scope="module")
def chain(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("lineage")
    raw = tmp / "raw.jsonl"
    raw.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"Doc {i}. " + TEXT * 4}) + "\n"
                for i in range(40)),
        encoding="utf-8",
    )  # fmt: skip
    r = load_recipe(
        None,
        overrides=[
            f"workdir={tmp / 'work'}",
            f"mlflow.tracking_uri={mlflow_server}",
            "mlflow.experiment=lineage-test",
            f"curate.input={json.dumps([str(raw)])}",
            "curate.min_chars=50",
            "curate.quality={gopher_repetition: false, gopher_quality: false, c4: false, "
            "fineweb: false}",
            "curate.language.enabled=false",
            "curate.exact_dedup=false",
            "curate.minhash.enabled=false",
            "curate.report=false",
            "synthetic.input=[builtin:synthetic-examples]",
            "synthetic.report=false",
            "tokenize.vocab_size=300",
            "tokenize.seq_len=32",
            f"register.model_name={NAME}",
        ],
    )
    assert r.mlflow.tracking_uri and r.pretrain.output and r.tokenize.output
    tracking.setup(r.mlflow.tracking_uri, r.mlflow.experiment)
    with tracking.pipeline_run(r.name, params={}) as parent:
        results = run_stages(r, ["curate", "filter-synthetic", "tokenize"], parent_run_id=parent)
        runs = {name: res.run_id for name, res in results.items()}
        # the pretrain stage's ending, in a pretrain run, over a model built here
        output, tokens = r.pretrain.output, r.tokenize.output
        fp = reuse.fingerprint("pretrain", r)
        with stage_context("pretrain", r, {}, parent_run_id=parent) as run_id:
            tracking.record_inputs([tokens], digests=fp.input_digests)
            tiny_model(f"{tokens}/tokenizer", f"{output}/model")
            m = pretrain.publish(
                f"{output}/model",
                output=output,
                tokens=tokens,
                run_id=run_id,
                fp=fp,
                metrics={"final_train_loss": 5.0},
                about={"preset": "tiny-test"},
            )
        runs["pretrain"] = run_id
        runs["register"] = register.run(r, parent_run_id=parent).run_id
    yield Chain(r, runs, m["model_id"])


def test_the_version_is_the_pretrain_runs_logged_model(chain: Chain) -> None:
    client = MlflowClient(chain.recipe.mlflow.tracking_uri)
    mv = client.get_model_version_by_alias(NAME, "candidate")
    # the version points at the LoggedModel (MLflow's stores keep it as the source)
    assert mv.run_id == chain.runs["pretrain"] and mv.source == f"models:/{chain.model_id}"
    assert registry.model_version_info(f"models:/{NAME}@candidate")["model_id"] == chain.model_id
    logged = client.get_logged_model(chain.model_id)
    assert logged.source_run_id == chain.runs["pretrain"]
    tokens = json.loads((Path(chain.recipe.tokenize.output or "") / "manifest.json").read_text())
    # the model's metrics name the token shards they were measured on (the UI links both)
    assert {(m.key, m.dataset_digest) for m in logged.metrics} == {
        ("final_train_loss", tokens["digest"])
    }
    assert client.get_run(chain.runs["pretrain"]).data.metrics["final_train_loss"] == 5.0
    reg = client.get_run(chain.runs["register"])
    assert [i.model_id for i in reg.inputs.model_inputs] == [chain.model_id]
    assert reg.data.tags["lmforge.consumed_runs"] == chain.runs["pretrain"]
    assert mv.tags[registry.REGISTER_RUN_TAG] == chain.runs["register"]
    by_number = registry.model_version_info(f"models:/{NAME}/{mv.version}")
    assert by_number["register_run_id"] == chain.runs["register"]
    # the registry URI still resolves to the Hugging Face folder
    local = registry.resolve_model_dir(f"models:/{NAME}@candidate")
    assert (Path(local) / "config.json").is_file()
    exp = client.get_experiment_by_name("lineage-test")
    assert exp is not None and exp.tags[tracking.KIND_TAG] == "custom_model_development"


def test_lineage_walks_back_to_the_raw_input(chain: Chain) -> None:
    r, runs = chain.recipe, chain.runs
    tree = lineage.trace(f"models:/{NAME}@candidate")
    assert tree == lineage.trace(f"models:/{NAME}/{tree['version']['version']}") | {
        "model": f"models:/{NAME}@candidate"
    }
    assert tree["logged_model"]["model_id"] == chain.model_id
    top = tree["run"]
    assert (top["stage"], top["run_id"]) == ("pretrain", runs["pretrain"])
    digest_of = {
        f: json.loads((Path(f or "") / "manifest.json").read_text())["digest"]
        for f in (r.curate.output, r.synthetic.output, r.tokenize.output, r.pretrain.output)
    }
    assert top["outputs"] == [{"uri": r.pretrain.output, "digest": digest_of[r.pretrain.output]}]
    [shards] = top["inputs"]
    assert shards["uri"] == r.tokenize.output and shards["digest"] == digest_of[r.tokenize.output]
    tok = shards["produced_by"]
    assert (tok["stage"], tok["run_id"]) == ("tokenize", runs["tokenize"])
    by_uri = {i["uri"]: i for i in tok["inputs"]}
    assert set(by_uri) == {r.curate.output, r.synthetic.output}
    for folder, stage in ((r.curate.output, "curate"), (r.synthetic.output, "filter-synthetic")):
        assert by_uri[folder]["digest"] == digest_of[folder]
        assert by_uri[folder]["produced_by"]["run_id"] == runs[stage]
    [raw] = by_uri[r.curate.output]["produced_by"]["inputs"]
    assert raw["uri"] == r.curate.input[0] and raw["raw"] and len(raw["digest"]) == 32
    [builtin] = by_uri[r.synthetic.output]["produced_by"]["inputs"]
    assert builtin["uri"] == "builtin:synthetic-examples" and builtin["raw"]

    cli = CliRunner()
    sets = ["--set", f"mlflow.tracking_uri={r.mlflow.tracking_uri}"]
    text = cli.invoke(app, ["lineage", f"models:/{NAME}@candidate", *sets])
    assert text.exit_code == 0, text.output
    for needle in (runs["pretrain"], r.tokenize.output, digest_of[r.tokenize.output], raw["uri"]):
        assert needle in text.output
    as_json = cli.invoke(app, ["lineage", f"models:/{NAME}@candidate", "--json", *sets])
    assert json.loads(as_json.output)["run"]["run_id"] == runs["pretrain"]
    missing = cli.invoke(app, ["lineage", "models:/no-such-model@candidate", *sets])
    assert missing.exit_code == 2 and "lmforge: error: lineage:" in missing.output


def test_register_and_pretrain_are_found_done(chain: Chain, tmp_path: Path) -> None:
    r = chain.recipe
    done = reuse.find_done("register", r)
    assert done is not None and done.run_id == chain.runs["register"]
    assert reuse.find_done("register", r.model_copy(update={"register": r.register.model_copy(
        update={"alias": "other"})})) is None  # fmt: skip
    done = reuse.find_done("pretrain", r)
    assert done is not None and done.run_id == chain.runs["pretrain"]
    assert done.output == f"{r.pretrain.output}/model"

    # a folder no pretrain run logged: the register run logs it itself
    folder = tmp_path / "hf"
    tiny_model(f"{r.tokenize.output}/tokenizer", str(folder))
    alone = load_recipe(
        None,
        stage="register",
        input=[str(folder)],
        overrides=[
            f"workdir={tmp_path}",
            f"mlflow.tracking_uri={r.mlflow.tracking_uri}",
            "mlflow.experiment=lineage-test",
            "register.model_name=lineage-alone",
        ],
    )
    result = register.run(alone)
    mv = MlflowClient(r.mlflow.tracking_uri).get_model_version_by_alias(
        "lineage-alone", "candidate"
    )
    assert mv.run_id == result.run_id
    assert lineage.trace("models:/lineage-alone@candidate")["run"]["stage"] == "register"
