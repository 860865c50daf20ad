"""A stage submitted with `ray job submit` to a `ray start --head` cluster on loopback,
with Ray 2.60's token authentication on, as a user on a laptop would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, free_port, wait_for_http


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
    # without RAY_AUTH_MODE=token the CLI does not send the token and is refused
    no_mode = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    refused = subprocess.run(cmd, env=no_mode, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()

    # the dashboard answers before the head's job agent is ready: retry only that case
    for _ in range(30):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in proc.stderr:
            break
        time.sleep(5)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"read": 31, "kept": 30, "dropped": 0, "quarantined": 1}
    assert list((out / "kept").glob("*.parquet"))
