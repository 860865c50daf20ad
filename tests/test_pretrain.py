"""Pretraining on the real parts (Ray Train V2, DeepSpeed over gloo, 2 CPU workers) under
the ZeRO stages the recipes use: 1 (the 1B recipe), 2 (the demo recipe), 2 with the
optimizer offloaded to the CPU, and 3 (the 8B and 500B recipes), whose model must be built
partitioned: each of the 2 ranks holds about half of the parameters right after
construction. Each run must export the weights it trained: the exported Hugging Face model
reproduces the loss the engine measured on a fixed probe at the end of training, and that
loss is not the untrained one. A run whose loss turns non-finite skips steps, then stops
with an error naming the step.

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
    [(1, False), (2, False), (2, True), (3, False)],
    ids=["zero1", "zero2", "offload", "zero3"],
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
    run = client.get_run(result.run_id).data.metrics
    for key in ("lr", "grad_norm", "tokens_per_s", "tflops_per_device", "val_perplexity"):
        assert run[key] > 0, key
    assert "mfu" not in run  # no peak FLOP/s on a CPU: omitted, not invented
    assert run["tokens"] == 3 * 2 * 4 * 64  # steps x workers x micro-batch x seq_len
    held = [run[f"params_held_fraction_rank{r}"] for r in (0, 1)]
    if zero_stage == 3:  # partitioned at construction (ZeRO pads each tensor to 2 parts)
        assert held == [pytest.approx(0.5, abs=0.05)] * 2
    else:
        assert held == [1.0, 1.0]


@pytest.mark.usefixtures("ray_local")
def test_a_non_finite_loss_skips_steps_then_stops_naming_the_step(
    tokens: Path, tmp_path: Path
) -> None:
    """The fault drill makes rank 0's loss NaN at steps 2 and 4-7 (after its backward pass):
    the all-reduced loss is NaN on every rank, so all skip the update together. Step 3 is
    finite and resets the count; with max_skipped_steps 3, step 7 (the 4th in a row) stops
    the run with an error naming it, and no export is made."""
    from lmforge.jobs import pretrain

    r = recipe(
        tmp_path,
        "pretrain",
        [str(tokens)],
        str(tmp_path / "pretrain"),
        "pretrain.preset=tiny",
        "pretrain.num_workers=2",
        "pretrain.cpus_per_worker=0.5",
        "pretrain.micro_batch_size=4",
        "pretrain.max_steps=20",
        "pretrain.warmup_steps=0",
        "pretrain.log_every=1",
        "pretrain.max_skipped_steps=3",
        "pretrain.fault_nan_steps=[2,4,5,6,7]",
    )
    with pytest.raises(FloatingPointError, match="non-finite loss at step 7, 4 steps in a row"):
        pretrain.run(r)
    client = MlflowClient(tracking_uri=r.mlflow.tracking_uri)
    exp = client.get_experiment_by_name("test-pretrain")
    assert exp is not None
    run = client.search_runs([exp.experiment_id], order_by=["start_time DESC"])[0]
    assert run.info.status == "FAILED"
    skipped = client.get_metric_history(run.info.run_id, "skipped_steps")
    assert [(h.step, h.value) for h in sorted(skipped, key=lambda h: h.step)] == [
        (1, 0.0),
        (2, 1.0),
        (3, 1.0),
        (4, 2.0),
        (5, 3.0),
        (6, 4.0),
        (7, 5.0),
    ]
    # a skipped step adds nothing to the window loss: only steps 1 and 3 have one
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(h.step for h in losses) == [1, 3]
    assert not (tmp_path / "pretrain" / "model").exists()
