"""A stage submitted with `ray job submit` to a `ray start --head` cluster on loopback,
with Ray 2.60's token authentication on, as a user on a laptop would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, free_port, wait_for_http

# What `ray job submit` prints (Ray 2.60) when the cluster wants a token it did not send.
REFUSED = (
    "ray.exceptions.AuthenticationError: Authentication required: Unauthorized: "
    "Missing authentication token"
)
# The cluster's jobs, asked with the job SDK (which sends the token under RAY_AUTH_MODE).
LIST_JOBS = """
import json, sys
from ray.job_submission import JobSubmissionClient
jobs = JobSubmissionClient(sys.argv[1]).list_jobs()
print(json.dumps({j.submission_id: {"status": j.status.value, "entrypoint": j.entrypoint,
                  "driver_exit_code": j.driver_exit_code} for j in jobs}))
"""


def list_jobs(address: str, env: dict[str, str]) -> dict[str, dict]:
    """submission id -> status, entrypoint and driver exit code of every job."""
    proc = subprocess.run(
        [sys.executable, "-c", LIST_JOBS, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def ray_head(tmp_path: Path):
    gcs, dash = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # the documented first step: a token in ~/.ray/auth_token (kept if one exists); with
    # it, `ray start --head` turns token authentication on
    subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_raylet_start_wait_time_s"] = "120"  # 30 s by default: too short on a loaded machine
    # --block keeps the head in this process group, so the test stops exactly this cluster
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            # not the fixed default (52365): another Ray on this machine may hold it, and
            # then the job agent never starts ("No available agent to submit job")
            f"--dashboard-agent-listen-port={free_port()}",
            "--num-cpus=2",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=open(tmp_path / "ray-head.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    wait_for_http(f"{address}/api/version", proc, tmp_path / "ray-head.log")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)


def test_curate_submitted_as_a_ray_job(ray_head, tmp_path: Path) -> None:
    """Without the token the submission is refused with Ray's authentication error and no
    job exists; with it the job SUCCEEDED (driver exit 0) and its manifest accounts for
    every record (30 kept, the broken line quarantined)."""
    address, env = ray_head
    corpus = tmp_path / "corpus.jsonl"
    text = "A document long enough to be kept by the curate stage of lmforge. " * 5
    corpus.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": f"{i} {text}"}) + "\n" for i in range(30))
        + "{broken\n"
    )
    out = tmp_path / "curated"
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(ROOT),
        "--",
        "python",
        "-m",
        "lmforge.jobs.curate",
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--set",
        f"workdir={tmp_path / 'work'}",
        "--set",
        f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        # 30 near-identical toy documents: the quality and near-dup rules would drop them
        "--set",
        "curate.quality={gopher_repetition: false, gopher_quality: false, c4: false, "
        "fineweb: false}",
        "--set",
        "curate.minhash.enabled=false",
    ]
    # without RAY_AUTH_MODE=token the CLI does not send the token and is refused, before
    # any job is created
    no_mode = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    refused = subprocess.run(
        [*cmd[:3], "--submission-id", "lmforge-refused", *cmd[3:]],
        env=no_mode,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 1, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert REFUSED in refused.stderr, refused.stderr[-2000:]
    assert list_jobs(address, env) == {}
    assert not out.exists()

    # the dashboard answers before the head's job agent is ready: retry only that case
    for attempt in range(30):
        job_id = f"lmforge-curate-{attempt}"
        proc = subprocess.run(
            [*cmd[:3], "--submission-id", job_id, *cmd[3:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "No available agent to submit job" not in proc.stderr:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    job = list_jobs(address, env)[job_id]
    assert job["status"] == "SUCCEEDED", job
    assert job["driver_exit_code"] == 0, job
    assert job["entrypoint"].startswith("python -m lmforge.jobs.curate --input "), job
    # the CLI's own verdict, colours stripped: "... SUCC cli.py:67 -- Job '...' succeeded"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in proc.stdout.splitlines()]
    assert any(line.endswith(f" -- Job '{job_id}' succeeded") for line in lines), lines[-5:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"read": 31, "kept": 30, "dropped": 0, "quarantined": 1}
    assert manifest["resumed_groups"] == 0
    assert list((out / "kept").glob("*.parquet"))
