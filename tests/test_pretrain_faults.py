"""A pretraining run that loses workers: real Ray Train V2 workers SIGKILLed mid-run, with
its checkpoints on S3 (moto's server on loopback).

One run, three submissions' worth of trouble: the first worker killed is replaced by Ray
Train (`FailureConfig(max_failures=1)`) from the latest checkpoint; the second kill
exhausts it and the job fails; the job submitted again with the same recipe name and
storage resumes from the latest checkpoint into the same MLflow run. It must end with
exactly `max_steps` optimizer steps, one MLflow value per step, both restarts recorded,
and the same weights as an uninterrupted run with the same seed (the data order is a
function of the step, and every rank's RNG and data position ride in the checkpoint).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from lmforge.jobs.recipe import Recipe, load_recipe

from conftest import moto_s3

MAX_STEPS = 18
CHECKPOINT_EVERY = 3


@pytest.fixture(scope="module")
def s3_ray() -> Iterator[str]:
    """A moto S3 server with bucket `ckpt`, then a local Ray whose workers find it through
    the environment (AWS_ENDPOINT_URL, read by pyarrow), as a cluster's nodes would."""
    pytest.importorskip("moto.server")
    import ray

    with moto_s3("ckpt", endpoint_in_env=True):
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        yield "s3://ckpt"
        ray.shutdown()


def recipe(work: Path, stage: str, inputs: list[str], output: str, *sets: str) -> Recipe:
    return load_recipe(
        None,
        stage=stage,
        input=inputs,
        output=output,
        overrides=[f"workdir={work}", "mlflow.experiment=test-faults", *sets],
    )


@pytest.fixture(scope="module")
def tokens(s3_ray: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmforge.jobs import tokenize
    from lmforge.pipelines.builtin_corpus import iter_docstrings

    work = tmp_path_factory.mktemp("tok")
    kept = [d for d in iter_docstrings(1500) if len(d["text"]) >= 120]
    (work / "docs").mkdir()
    table = pa.table({"id": [d["id"] for d in kept], "text": [d["text"] for d in kept]})
    pq.write_table(table, work / "docs" / "part-0.parquet")
    sets = ("tokenize.vocab_size=512", "tokenize.seq_len=64", "tokenize.val_fraction=0.1")
    tokenize.run(recipe(work, "tokenize", [str(work / "docs")], str(work / "tokens"), *sets))
    return work / "tokens"


def pretrain_recipe(work: Path, tokens: Path, name: str, *sets: str) -> Recipe:
    return recipe(
        work,
        "pretrain",
        [str(tokens)],
        str(work / "pretrain"),
        f"name={name}",
        "pretrain.preset=tiny",
        "pretrain.num_workers=2",
        "pretrain.cpus_per_worker=0.5",
        "pretrain.zero_stage=2",
        "pretrain.micro_batch_size=4",
        "pretrain.grad_accum_steps=2",
        f"pretrain.max_steps={MAX_STEPS}",
        "pretrain.warmup_steps=2",
        "pretrain.lr=0.005",
        "pretrain.log_every=1",
        f"pretrain.eval_every={MAX_STEPS}",
        "pretrain.eval_batches=1",
        f"pretrain.checkpoint_every={CHECKPOINT_EVERY}",
        *sets,
    )


def steps_logged(client: MlflowClient, run_id: str, key: str = "train_loss") -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def wait_for(predicate: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def registered_steps(storage: str, name: str) -> list[int]:
    """Steps of the checkpoints Ray Train's controller has registered (its snapshot in
    storage): a worker killed before a reported checkpoint is registered restarts from
    the one before."""
    import json

    from lmforge.platform import storage as st

    uri = st.join(storage, name, "checkpoint_manager_snapshot.json")
    if not st.exists(uri):
        return []
    found: list[int] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if "step" in x and isinstance(x["step"], int | float):
                found.append(int(x["step"]))
            for v in x.values():
                walk(json.loads(v) if isinstance(v, str) and v.startswith("{") else v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(json.loads(st.read_text(uri)))
    return found


def kill_a_training_worker() -> int:
    """SIGKILL one live Ray Train worker process (found by the process title Ray gives
    its actors, `ray::RayTrainWorker...`; the state API needs the dashboard)."""
    import psutil

    workers = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::RayTrainWorker"):
            workers.append(proc.info["pid"])
    assert workers, "no live training worker to kill"
    pid = max(workers)
    os.kill(pid, signal.SIGKILL)
    return pid


def final_weights(model_dir: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(os.path.join(model_dir, "model.safetensors"))


def test_killed_workers_and_a_resubmitted_job_resume_to_the_uninterrupted_weights(
    s3_ray: str, tokens: Path, tmp_path: Path
) -> None:
    from lmforge.jobs import pretrain

    storage = f"pretrain.storage_path={s3_ray}/ray-train"
    r = pretrain_recipe(tmp_path / "a", tokens, "fault-drill", storage, "pretrain.max_failures=1")
    client = MlflowClient(tracking_uri=r.mlflow.tracking_uri)
    outcome: dict[str, Any] = {}

    def submit() -> None:
        try:
            outcome["result"] = pretrain.run(r)
        except Exception as e:  # the second kill exhausts max_failures
            outcome["error"] = e

    job = threading.Thread(target=submit, daemon=True)
    job.start()

    def run_id() -> str | None:
        exp = client.get_experiment_by_name("test-faults")
        runs = (
            client.search_runs([exp.experiment_id], "tags.`lmforge.stage` = 'pretrain'")
            if exp
            else []
        )
        return runs[0].info.run_id if runs else None

    wait_for(lambda: run_id() is not None, "the MLflow run")
    rid = run_id()
    assert rid is not None
    ray_storage = f"{s3_ray}/ray-train"

    def registered(step: int) -> bool:
        return max(registered_steps(ray_storage, "pretrain-fault-drill"), default=0) >= step

    # 1) past the first checkpoint: kill; Ray Train restarts the group from step 3
    wait_for(lambda: registered(CHECKPOINT_EVERY), "the first checkpoint")
    kill_a_training_worker()
    wait_for(lambda: steps_logged(client, rid, "restarts"), "the restart")
    # 2) past a later checkpoint: kill again; max_failures=1 is spent, the job fails
    wait_for(lambda: registered(2 * CHECKPOINT_EVERY), "the second checkpoint")
    kill_a_training_worker()
    job.join(timeout=300)
    assert "error" in outcome, f"the run should have failed at the second kill: {outcome}"
    assert client.get_run(rid).info.status == "FAILED"
    assert max(steps_logged(client, rid)) < MAX_STEPS

    # 3) the same job submitted again resumes in the same MLflow run
    result = pretrain.run(r)
    assert result.run_id == rid
    assert client.get_run(rid).info.status == "FINISHED"
    assert result.metrics["steps"] == MAX_STEPS
    assert steps_logged(client, rid) == list(range(1, MAX_STEPS + 1))  # one value per step
    restarts = client.get_metric_history(rid, "restarts")
    assert sorted(m.value for m in restarts) == [1.0, 2.0]
    resumed = [m.value for m in client.get_metric_history(rid, "resumed_from_step")]
    assert sorted(resumed) == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY], resumed
    (replay,) = client.get_metric_history(rid, "resume_replay_max_diff")[-1:]
    tokens_per_step = 2 * 4 * 2 * 64  # workers x micro-batch x accumulation x seq_len
    assert result.metrics["final_tokens"] == MAX_STEPS * tokens_per_step

    # 4) the uninterrupted run with the same seed ends with the same weights
    u = pretrain.run(pretrain_recipe(tmp_path / "b", tokens, "uninterrupted"))
    assert u.metrics["steps"] == MAX_STEPS
    a, b = final_weights(result.output or ""), final_weights(u.output or "")
    assert a.keys() == b.keys()
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    print(
        f"\nresumed vs uninterrupted: max |weight diff| = {diff:.3e}; replay diff {replay.value:.3e}"
    )
    assert diff <= 1e-6, diff
    assert replay.value <= 1e-6
