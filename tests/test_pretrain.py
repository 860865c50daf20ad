"""Pretraining on the real parts (Ray Train V2, DeepSpeed over gloo, 2 CPU workers) under
the ZeRO stages the recipes use: 1 (the 1B recipe), 2 (the demo recipe) and 2 with the
optimizer offloaded to the CPU; ZeRO-3 runs in the end-to-end test. Each run must export
the weights it trained: the exported Hugging Face model reproduces the loss the engine
measured on a fixed probe at the end of training, and that loss is not the untrained one.

Also here: a stage that fails inside its MLflow run leaves that run FAILED.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from lmforge.jobs.recipe import Recipe, load_recipe


def recipe(work: Path, stage: str, inputs: list[str], output: str, *sets: str) -> Recipe:
    return load_recipe(
        None,
        stage=stage,
        input=inputs,
        output=output,
        overrides=[f"workdir={work}", "mlflow.experiment=test-pretrain", *sets],
    )


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmforge.pipelines.builtin_corpus import iter_docstrings

    folder = tmp_path_factory.mktemp("docs")
    kept = [d for d in iter_docstrings(1500) if len(d["text"]) >= 120]
    table = pa.table({"id": [d["id"] for d in kept], "text": [d["text"] for d in kept]})
    pq.write_table(table, folder / "part-0.parquet")
    return folder


@pytest.fixture(scope="module")
def tokens(ray_local: None, docs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmforge.jobs import tokenize

    work = tmp_path_factory.mktemp("tok")
    sets = ("tokenize.vocab_size=512", "tokenize.seq_len=64", "tokenize.val_fraction=0.1")
    tokenize.run(recipe(work, "tokenize", [str(docs)], str(work / "tokens"), *sets))
    return work / "tokens"


@pytest.mark.usefixtures("ray_local")
def test_a_stage_that_fails_in_its_run_marks_the_run_failed(docs: Path, tmp_path: Path) -> None:
    from lmforge.jobs import tokenize

    r = recipe(tmp_path, "tokenize", [str(docs)], str(tmp_path / "t"), "tokenize.seq_len=500000")
    with pytest.raises(RuntimeError, match="no training sequence of 500000 tokens"):
        tokenize.run(r)
    client = MlflowClient(tracking_uri=r.mlflow.tracking_uri)
    exp = client.get_experiment_by_name("test-pretrain")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id], "tags.`lmforge.stage` = 'tokenize'")
    assert run.info.status == "FAILED"


def exported_probe_loss(model_dir: Path, *, trained: bool) -> float:
    """The probe loss of the exported weights, or (trained=False) of the same model freshly
    initialized with the run's seed, as every rank starts."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from lmforge.train.loop import probe_ids

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if not trained:
        torch.manual_seed(1234)
        model = LlamaForCausalLM(model.config)
    model.eval()
    x = probe_ids(model.config.vocab_size, 64)
    with torch.no_grad():
        return float(model(input_ids=x, labels=x).loss)


@pytest.mark.parametrize(
    ("zero_stage", "offload"),
    [(1, False), (2, False), (2, True)],
    ids=["zero1", "zero2", "offload"],
)
@pytest.mark.usefixtures("ray_local")
def test_zero_stage_trains_and_exports_the_trained_weights(
    tokens: Path, tmp_path: Path, zero_stage: int, offload: bool
) -> None:
    from lmforge.jobs import pretrain

    r = recipe(
        tmp_path,
        "pretrain",
        [str(tokens)],
        str(tmp_path / "pretrain"),
        "pretrain.preset=tiny",
        "pretrain.num_workers=2",
        "pretrain.cpus_per_worker=0.5",
        f"pretrain.zero_stage={zero_stage}",
        f"pretrain.offload_optimizer={str(offload).lower()}",
        "pretrain.micro_batch_size=4",
        "pretrain.max_steps=3",
        "pretrain.warmup_steps=1",
        "pretrain.lr=0.01",
        "pretrain.log_every=1",
        "pretrain.eval_every=3",
        "pretrain.eval_batches=1",
        "pretrain.checkpoint_every=100",
    )
    result = pretrain.run(r)
    m = result.metrics
    assert m["steps"] == 3 and m["final_train_loss"] > 0
    model_dir = Path(result.output or "")
    assert (model_dir / "model.safetensors").is_file()
    trained = exported_probe_loss(model_dir, trained=True)
    assert trained == pytest.approx(m["final_probe_loss"], rel=1e-5, abs=1e-5)
    # the probe tells trained weights from the initial ones: exporting those would fail
    assert abs(exported_probe_loss(model_dir, trained=False) - trained) > 1e-3
    client = MlflowClient(tracking_uri=r.mlflow.tracking_uri)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    history = client.get_metric_history(result.run_id, "train_loss")
    assert [h.step for h in history] == [1, 2, 3]
