"""The whole pipeline as a team runs it: `ray job submit --working-dir .` from a folder of
the user's own (a recipe, nothing else) to a two-node Ray cluster, every byte on S3, MLflow
a tracking server on PostgreSQL with S3 artifacts and basic authentication.

The head node has no CPUs for work, so every task and worker runs on the worker node, and
the worker node cannot see the head's folders (its jobs' working directories, the drivers'
TMPDIR) or the user's: a stage that hands a worker a path of the driver's filesystem fails
here as it would on a real cluster. Credentials are in the nodes'
environment (as Secrets are on Kubernetes), never in the job's runtime env, the recipe,
MLflow or the logs. The commands are those of the README's "Laptop to cluster".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from team_services import TeamMlflow, postgres, ray_cluster, team_mlflow

from conftest import BIN, ROOT, free_port, moto_s3, shared

PIPELINE = ["curate", "filter-synthetic", "tokenize", "pretrain", "register", "serve"]
SECRETS = {
    "pg": "pg-" + os.urandom(6).hex(),
    "mlflow": "mlflow-" + os.urandom(6).hex(),
    # moto accepts any key pair: a random one shows where a key would leak
    "aws": "aws-" + os.urandom(6).hex(),
}


@dataclass
class ClusterRun:
    job_id: str
    submit: subprocess.CompletedProcess[str]
    job_info: dict[str, Any]
    mlflow: TeamMlflow
    s3: Any  # boto3 client
    logs: list[Path]
    user_env: dict[str, str]  # the laptop's: the Ray token mode, no S3 or MLflow secret


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRun]:
    folder = tmp_path_factory.mktemp("team")
    corpus = shared("corpus/debian_docs_en_ja_de.jsonl")
    gsm8k = shared("evals/gsm8k_test.jsonl")
    with moto_s3("lmforge", "lmforge-mlflow", endpoint_in_env=True) as (endpoint, s3):
        os.environ["AWS_SECRET_ACCESS_KEY"] = SECRETS["aws"]  # moto_s3 restores it
        s3.upload_file(str(corpus), "lmforge", "raw/corpus/debian_docs.jsonl")
        examples = ROOT / "lmforge" / "data" / "synthetic_examples.jsonl"
        s3.upload_file(str(examples), "lmforge", "raw/synthetic/examples.jsonl")
        s3.upload_file(str(gsm8k), "lmforge", "evals/gsm8k_test.jsonl")
        with (
            postgres("mlflow", "mlflow_auth", user="mlflow", password=SECRETS["pg"]) as pg,
            team_mlflow(
                pg,
                artifacts="s3://lmforge-mlflow/artifacts",
                s3_endpoint=f"http://{endpoint}",
                folder=folder,
                user=("lmforge-pipeline", SECRETS["mlflow"]),
            ) as server,
        ):
            node_env = {
                "MLFLOW_TRACKING_URI": server.url,
                "MLFLOW_TRACKING_USERNAME": server.user[0],
                "MLFLOW_TRACKING_PASSWORD": server.user[1],
            }  # the AWS_* variables are already in this process's environment
            with ray_cluster(folder, node_env=node_env, hidden=folder) as cluster:
                yield _submit(folder, cluster.dashboard, server, s3, list(cluster.logs))


def _submit(
    folder: Path, dashboard: str, server: TeamMlflow, s3: Any, logs: list[Path]
) -> ClusterRun:
    """The user's side: a folder with a recipe, the Ray token and the cluster's address;
    no S3 or MLflow credential in this environment."""
    project = folder / "my-project"
    project.mkdir()
    shutil.copy(ROOT / "configs" / "cluster-s3.yaml", project / "cluster-s3.yaml")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_ADDRESS"))
    }
    env |= {"PATH": f"{BIN}:{env['PATH']}", "RAY_AUTH_MODE": "token"}
    job_id = "lmforge-cluster-s3"
    cmd = [
        "ray", "job", "submit", "--address", dashboard, "--submission-id", job_id,
        "--working-dir", ".", "--",
        "lmforge", "run", "--config", "cluster-s3.yaml",
        # two nodes on one machine share its ports: one Serve proxy, on the head
        "--set", "serve.proxy_location=HeadOnly", "--set", f"serve.port={free_port()}",
    ]  # fmt: skip
    submit = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=2400)
    info = subprocess.run(
        [sys.executable, "-c", _JOB_INFO, dashboard, job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert info.returncode == 0, info.stderr[-3000:]
    return ClusterRun(
        job_id, submit, json.loads(info.stdout.splitlines()[-1]), server, s3, logs, env
    )


_JOB_INFO = """
import json, sys
from ray.job_submission import JobSubmissionClient
c = JobSubmissionClient(sys.argv[1])
info = c.get_job_info(sys.argv[2])
print(json.dumps({"status": info.status.value, "runtime_env": info.runtime_env,
                  "driver_exit_code": info.driver_exit_code,
                  "logs": c.get_job_logs(sys.argv[2])}))
"""


def _why(run: ClusterRun) -> str:
    tails = [f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in run.logs]
    return "\n".join([run.submit.stdout[-6000:], run.submit.stderr[-3000:], *tails])


def test_pipeline_job_succeeds_on_two_nodes_with_all_data_on_s3(cluster_run: ClusterRun) -> None:
    run = cluster_run
    assert run.submit.returncode == 0, _why(run)
    assert run.job_info["status"] == "SUCCEEDED", _why(run)
    logs = run.job_info["logs"]
    for stage in PIPELINE:
        assert f"=== lmforge: {stage} ===" in logs
    assert re.search(r"served answer \(lmforge-cluster\): '.*'", logs), logs[-3000:]
    # every stage output, the tokenizer, the checkpoints and the export are on S3
    keys = [
        o["Key"]
        for page in run.s3.get_paginator("list_objects_v2").paginate(Bucket="lmforge")
        for o in page.get("Contents", [])
    ]
    for stage_output in ("work/curated", "work/synthetic", "work/tokens", "work/pretrain"):
        assert any(k.startswith(f"{stage_output}/") for k in keys), (stage_output, keys[:20])
    assert "work/tokens/tokenizer/tokenizer.json" in keys
    assert "work/pretrain/model/model.safetensors" in keys
    assert any(k.startswith("ray-train/pretrain-cluster-s3/") and "checkpoint" in k for k in keys)
    curated = json.loads(
        run.s3.get_object(Bucket="lmforge", Key="work/curated/manifest.json")["Body"].read()
    )
    c = curated["counts"]
    assert c["read"] == 2968 and c["read"] == c["kept"] + c["dropped"] + c["quarantined"]


def test_mlflow_runs_and_artifacts_are_on_the_team_server(cluster_run: ClusterRun) -> None:
    from mlflow.tracking import MlflowClient

    run = cluster_run
    assert run.job_info["status"] == "SUCCEEDED", _why(run)
    url = run.mlflow.url
    # authentication is on: no credentials, no data
    anon = requests.get(f"{url}/api/2.0/mlflow/experiments/get-by-name",
                        params={"experiment_name": "lmforge-cluster"}, timeout=30)  # fmt: skip
    assert anon.status_code == 401
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", run.mlflow.user[0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", run.mlflow.user[1])
        client = MlflowClient(tracking_uri=url)
        exp = client.get_experiment_by_name("lmforge-cluster")
        assert exp is not None
        runs = client.search_runs([exp.experiment_id])
        by_stage = {r.data.tags.get("lmforge.stage"): r for r in runs}
        assert set(PIPELINE) | {"pipeline"} <= set(by_stage)
        assert all(r.info.status == "FINISHED" for r in runs)
        # the pretrain run's metrics came from rank 0 on the worker node, over HTTP
        pretrain = by_stage["pretrain"]
        steps = [m.step for m in client.get_metric_history(pretrain.info.run_id, "train_loss")]
        assert steps == [2, 4, 6]
        assert pretrain.info.artifact_uri.startswith("mlflow-artifacts:")
        mv = client.get_model_version_by_alias("lmforge-cluster", "candidate")
        assert mv.status == "READY"
    # ... and the artifacts themselves are in the server's S3 bucket
    listed = run.s3.list_objects_v2(Bucket="lmforge-mlflow", Prefix="artifacts/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith("/loss_curve.png") for k in keys), keys[:20]
    assert any("/tokenizer/tokenizer.json" in k for k in keys), keys[:20]


def test_no_secret_in_the_job_the_runs_or_the_logs(cluster_run: ClusterRun) -> None:
    from mlflow.tracking import MlflowClient

    run = cluster_run
    assert run.job_info["status"] == "SUCCEEDED", _why(run)
    # what the job was submitted with: the working dir, nothing else
    runtime_env = run.job_info["runtime_env"]
    assert set(runtime_env) <= {"working_dir", "_ray_commit"}, runtime_env
    places = {
        "runtime env": json.dumps(runtime_env),
        "job logs": run.job_info["logs"],
        "ray job submit output": run.submit.stdout + run.submit.stderr,
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", run.mlflow.admin[0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", run.mlflow.admin[1])
        client = MlflowClient(tracking_uri=run.mlflow.url)
        exp = client.get_experiment_by_name("lmforge-cluster")
        assert exp is not None
        for r in client.search_runs([exp.experiment_id]):
            places[f"run {r.info.run_id}"] = json.dumps([r.data.params, r.data.tags])
    for place, text in places.items():
        for name, secret in SECRETS.items():
            assert secret not in text, f"the {name} secret appears in the {place}"


def test_lineage_of_the_registered_model_from_the_laptop(cluster_run: ClusterRun) -> None:
    """`lmforge lineage` needs only the MLflow server and an account on it (no S3 key):
    version -> LoggedModel -> pretrain run -> token shards -> curated and synthetic data
    -> the raw inputs on S3, each with its digest, and the endpoint that served it."""
    run = cluster_run
    assert run.job_info["status"] == "SUCCEEDED", _why(run)
    env = {
        **run.user_env,
        "MLFLOW_TRACKING_URI": run.mlflow.url,
        "MLFLOW_TRACKING_USERNAME": run.mlflow.user[0],
        "MLFLOW_TRACKING_PASSWORD": run.mlflow.user[1],
    }
    cmd = ["lmforge", "lineage", "models:/lmforge-cluster@candidate"]
    text = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr[-3000:]
    as_json = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    tree = json.loads(as_json.stdout)
    assert tree["run"]["stage"] == "pretrain"
    assert tree["logged_model"]["source_run_id"] == tree["run"]["run_id"]
    assert tree["version"]["run_id"] == tree["run"]["run_id"]
    assert tree["endpoints"], "the serve run that served the version"

    def datasets(node: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
        for entry in node.get("inputs", []):
            yield entry["uri"], entry["digest"], bool(entry.get("raw"))
            if isinstance(entry.get("produced_by"), dict):
                yield from datasets(entry["produced_by"])

    found = {uri: (digest, raw) for uri, digest, raw in datasets(tree["run"])}
    for uri in (
        "s3://lmforge/work/tokens",
        "s3://lmforge/work/curated",
        "s3://lmforge/work/synthetic",
    ):
        assert uri in found and len(found[uri][0]) == 32 and not found[uri][1], (uri, found)
    # the stage outputs' digests are the ones their manifests on S3 carry
    tokens = json.loads(
        run.s3.get_object(Bucket="lmforge", Key="work/tokens/manifest.json")["Body"].read()
    )
    assert found["s3://lmforge/work/tokens"][0] == tokens["digest"]
    raw = {uri for uri, (_, is_raw) in found.items() if is_raw}
    assert {"s3://lmforge/raw/corpus/", "s3://lmforge/raw/synthetic/",
            "s3://lmforge/evals/gsm8k_test.jsonl"} <= raw, raw  # fmt: skip
    for uri in ("s3://lmforge/work/tokens", "s3://lmforge/raw/corpus/", tree["version"]["name"]):
        assert uri in text.stdout
