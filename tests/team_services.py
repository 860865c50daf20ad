"""The services a team runs, started for real on loopback: PostgreSQL, an MLflow tracking
server on it with S3 artifacts and basic authentication, and a Ray cluster of a head that
does no work and a worker node that cannot see the head's folders (the drivers' working
directories and temporary files) or the submitting user's.

Each is a context manager that stops exactly what it started. The README's "Laptop to
cluster" section shows the same commands.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from conftest import BIN, free_port, wait_for_http


def _pg_bin(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them off PATH, under /usr/lib/postgresql."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql); "
            ".ci/run installs it"
        )
    return found


@contextmanager
def postgres(*databases: str, user: str, password: str) -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with `databases` owned by `user` (password auth
    over TCP); yields `postgresql://user:password@127.0.0.1:PORT` (append `/DB`).

    PostgreSQL refuses to run as root: as root, the server runs as Debian's `postgres`
    account, in a data folder it owns."""
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = Path(tempfile.mkdtemp(prefix="lmforge-pg-"))
    if as_root:
        pw = pwd.getpwnam("postgres")
        os.chown(data, pw.pw_uid, pw.pw_gid)
    port = free_port()
    subprocess.run(
        [
            *prefix,
            _pg_bin("initdb"),
            "-D",
            str(data / "db"),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = data / "server.log"
    proc = subprocess.Popen(
        [
            *prefix,
            _pg_bin("postgres"),
            "-D",
            str(data / "db"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(data),
        ],
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        psql = [*prefix, _pg_bin("psql"), "-h", str(data), "-p", str(port), "-U", "postgres"]
        deadline = time.time() + 60
        while subprocess.run([*psql, "-c", "select 1"], capture_output=True).returncode:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        subprocess.run(
            [*psql, "-c", f"CREATE USER {user} PASSWORD '{password}'"], check=True, timeout=60
        )
        for db in databases:
            subprocess.run([*psql, "-c", f"CREATE DATABASE {db} OWNER {user}"], check=True)
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}"
    finally:
        _stop(proc)
        shutil.rmtree(data, ignore_errors=True)


@dataclass(frozen=True)
class TeamMlflow:
    url: str
    admin: tuple[str, str]
    user: tuple[str, str]  # the account the pipeline logs as
    log: Path


@contextmanager
def team_mlflow(
    pg_uri: str, *, artifacts: str, s3_endpoint: str, folder: Path, user: tuple[str, str]
) -> Iterator[TeamMlflow]:
    """`mlflow server` as a team runs it: PostgreSQL backend store (database `mlflow`),
    users in database `mlflow_auth`, artifacts in S3 served through the server, basic
    authentication on; `user` is created (a service account, not the admin)."""
    admin = ("admin", "admin-" + os.urandom(8).hex())
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {pg_uri}/mlflow_auth\nadmin_username = {admin[0]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    log = folder / "mlflow-server.log"
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        # the auth app's CSRF key, the same for every worker of the server
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # spare the 2 cores
        # in the environment, not on the command line, where `ps` shows its password
        "MLFLOW_BACKEND_STORE_URI": f"{pg_uri}/mlflow",
    }
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--app-name",
            "basic-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--artifacts-destination",
            artifacts,
        ],
        stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, log)
        r = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": user[0], "password": user[1]},
            auth=admin,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        yield TeamMlflow(url, admin, user, log)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of a server this module started, then wait."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@dataclass(frozen=True)
class RayCluster:
    gcs: str  # host:port, what `ray start --address` takes
    dashboard: str  # http://host:port, what `ray job submit --address` takes
    logs: tuple[Path, Path]  # head, worker


def _node_ports() -> list[str]:
    """Ports a node would otherwise take at fixed defaults; two nodes on one machine
    must not share them."""
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


@contextmanager
def ray_cluster(
    folder: Path, *, node_env: dict[str, str], hidden: Path | None = None, worker_cpus: int = 2
) -> Iterator[RayCluster]:
    """A head with no CPUs for work (the drivers of jobs run there) and one worker node
    with `worker_cpus`, both with `node_env` (as a pod gets its Secrets).

    The worker runs in a mount namespace of its own where the head's folder (its Ray
    --temp-dir, which holds each job's working directory, and the TMPDIR of its processes,
    the drivers among them) and `hidden` (the user's folders) are empty: a path a driver
    hands a worker does not exist there, as on a real cluster. Each node has its own
    --temp-dir."""
    env = {**os.environ, **node_env, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # the token the nodes and every client share (kept when ~/.ray/auth_token exists)
    subprocess.run(
        [str(BIN / "ray"), "get-auth-token", "--generate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    env["RAY_AUTH_MODE"] = "token"
    # a node waits 30 s by default for the GCS to list it, then exits; on a loaded 2-core
    # machine the worker took longer (CI, stop 19: "GCS cannot find the node")
    env["RAY_raylet_start_wait_time_s"] = "120"
    gcs_port, dash_port = free_port(), free_port()
    head_root = Path(tempfile.mkdtemp(prefix="lmforge-head-"))
    worker_tmp = Path(tempfile.mkdtemp(prefix="lmforge-worker-"))
    (head_root / "tmp").mkdir()
    head_env = {**env, "TMPDIR": str(head_root / "tmp")}  # the drivers' temporary files
    head_log, worker_log = folder / "ray-head.log", folder / "ray-worker.log"
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash_port}",
            f"--temp-dir={head_root / 'ray'}",
            "--num-cpus=0",
            "--disable-usage-stats",
            *_node_ports(),
        ],
        env=head_env,
        stdout=open(head_log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs = [head]
    try:
        dashboard = f"http://127.0.0.1:{dash_port}"
        wait_for_http(f"{dashboard}/api/version", head, head_log)
        start_worker = " ".join(
            [
                str(BIN / "ray"),
                "start",
                "--block",
                f"--address=127.0.0.1:{gcs_port}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={worker_cpus}",
                f"--temp-dir={worker_tmp}",
                "--disable-usage-stats",
                *_node_ports(),
            ]
        )
        # root may make a mount namespace; anyone else needs a user namespace for it
        userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        masks = [head_root, *([hidden] if hidden else [])]
        mount = " && ".join(f"mount -t tmpfs tmpfs {m}" for m in masks)
        worker = subprocess.Popen(
            [
                "unshare",
                *userns,
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"{mount} && exec {start_worker}",
            ],
            env=env,
            stdout=open(worker_log, "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(worker)
        _wait_for_worker(f"127.0.0.1:{gcs_port}", env, worker_cpus, worker, worker_log)
        yield RayCluster(f"127.0.0.1:{gcs_port}", dashboard, (head_log, worker_log))
    finally:
        for p in reversed(procs):  # the worker first, then the head
            _stop(p)
        shutil.rmtree(head_root, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)


_NODES = """
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]), ray.cluster_resources().get("CPU", 0))
"""


def _wait_for_worker(
    gcs: str, env: dict[str, str], cpus: int, proc: subprocess.Popen, log: Path
) -> None:
    """Until the worker node is alive with its CPUs (the head has none)."""
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker node exited:\n{log.read_text()[-3000:]}")
        out = subprocess.run(
            [sys.executable, "-c", _NODES, gcs],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode == 0:
            nodes, found = out.stdout.split()[-2:]
            if int(nodes) >= 2 and float(found) >= cpus:
                return
        time.sleep(2)
    raise RuntimeError(f"the worker node did not join:\n{log.read_text()[-3000:]}")
