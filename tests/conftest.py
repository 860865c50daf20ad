"""Shared fixtures: a real local Ray, a real MLflow server on loopback, the shared data."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_llama(
    path: Path,
    texts: list[str],
    *,
    vocab_size: int,
    seed: int,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 4,
    max_positions: int = 256,
) -> Path:
    """A randomly initialised two-layer Llama (safetensors) and a byte-level BPE tokenizer
    trained on `texts`, saved in `path`, for serving tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmforge.pipelines.tokenizer import train_tokenizer

    tok = train_tokenizer(texts, vocab_size=vocab_size)
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def shared(relpath: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relpath
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder is not beside this checkout)")
    return path


@contextmanager
def moto_s3(*buckets: str, endpoint_in_env: bool) -> Iterator[tuple[str, Any]]:
    """moto's S3 server on loopback with `buckets`; yields (host:port, a boto3 client).
    Test credentials are in the environment meanwhile (Ray's workers inherit them, as a
    cluster's nodes have their own); `endpoint_in_env` also sets AWS_ENDPOINT_URL, which
    pyarrow reads, and otherwise removes it."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            if endpoint_in_env:
                env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
            else:
                env.delenv("AWS_ENDPOINT_URL", raising=False)
            client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
            yield f"127.0.0.1:{port}", client
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray with 2 CPUs for this module, never attached to another cluster."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on loopback with a SQLite store and served artifacts."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=open(root / "server.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # the server's job runner (4 huey consumers) is not used here: spare the 2 cores
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/health", proc, root / "server.log")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll `url` until it answers (any HTTP status: 401 means up and asking for a token);
    fail with the server's log if the process dies or time runs out."""
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def lmforge_cmd() -> list[str]:
    exe = shutil.which("lmforge", path=str(BIN))
    return [exe] if exe else [sys.executable, "-m", "lmforge.jobs.cli"]
