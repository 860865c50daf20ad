"""KubeRay manifests (`ray.io/v1`) as plain dicts: a cluster spec, and the RayCluster,
RayJob and RayService that carry it. Nothing here reads a recipe; `lmforge.jobs.kube`
sizes the groups from one.

    head = PodShape(cpus=16, memory_gib=64)
    gpus = WorkerGroup(name="gpu", shape=PodShape(cpus=96, memory_gib=1024, gpus=8), replicas=1)
    spec = cluster_spec(ClusterSpec(image=..., ray_version="2.60.0", head=head,
                                    workers=[gpus], tracking_uri="http://mlflow:5000"))
    to_yaml(ray_job("demo", "ml", spec, entrypoint="python -m lmforge.jobs.pipeline ..."))

Checked against the CRDs of KubeRay (`openAPIV3Schema` of v1, tests/test_kuberay.py).

Token authentication. The CRD's `spec.authOptions` has `mode` (disabled | token),
`secretName` and `enableK8sTokenAuth`. Used: `mode: token` with `secretName`, so that
the operator itself authenticates where it talks to Ray (its dashboard/Jobs API client,
the RayJob submitter pod, the autoscaler sidecar) with the token of a Secret we name
(data key `auth_token`) instead of generating one per cluster, and `rayVersion`, which
the operator requires (>= 2.52) whenever auth is on. `secretName` needs KubeRay >= 1.6.0;
an older operator prunes it and generates its own token, which would not match.
Not used: `enableK8sTokenAuth` (Kubernetes RBAC instead of a shared token; KubeRay
rejects it for RayJob and RayService). Every Ray container also carries
`RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN` from that Secret explicitly, the two variables
Ray 2.60 reads: the operator injects exactly these and skips a name already present, so
nothing is duplicated, and the manifest says on its face that the cluster needs a token.

Secrets. S3 (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional `AWS_ENDPOINT_URL`)
and MLflow (`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`, both optional: many
MLflow servers have no auth) come from Kubernetes Secrets through `secretKeyRef`, each
key named like its variable; no secret value is ever written into a manifest.

Resources. What Ray is told (`rayStartParams` `num-cpus`, `num-gpus`, `memory` in bytes)
is what the container requests and is limited to, so Ray never schedules onto capacity
the pod does not have. The head advertises 0 CPUs (as in cluster.yaml): drivers,
controllers and the dashboard run there, tasks and replicas do not. `rayStartParams`
values are strings in the CRD; quantities are ints or strings ("64Gi").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

API_VERSION = "ray.io/v1"
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on nodes by GPU Feature Discovery
H100_PRODUCT = "NVIDIA-H100-80GB-HBM3"  # GFD's value for an H100 SXM 80 GB
AUTH_TOKEN_KEY = "auth_token"  # the data key KubeRay reads from authOptions.secretName
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000}

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# Kubernetes' name rules: resource names of KubeRay (DNS-1035), namespaces (DNS-1123
# label), Secrets (DNS-1123 subdomain); each with what its message says it wants
NAME_RULES = {
    "dns1035": (re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?"), "starting with a letter"),
    "dns1123": (re.compile(_LABEL), "starting with a letter or digit"),
    "subdomain": (re.compile(rf"{_LABEL}(\.{_LABEL})*"), "in dot-separated parts"),
}


@dataclass(frozen=True, kw_only=True)
class Secrets:
    """Names of the Kubernetes Secrets the pods read (their values never pass here)."""

    s3: str = "lmforge-s3"
    mlflow: str = "lmforge-mlflow"
    ray_token: str = "lmforge-ray-token"


@dataclass(frozen=True, kw_only=True)
class PodShape:
    """One Ray node's pod: CPUs, memory in GiB, GPUs (all requested = limits = Ray's)."""

    cpus: int
    memory_gib: int
    gpus: int = 0


@dataclass(frozen=True, kw_only=True)
class WorkerGroup:
    """A worker group: `replicas` pods of `shape`; with autoscaling, between
    `min_replicas` and `max_replicas` (both default to `replicas`)."""

    name: str
    shape: PodShape
    replicas: int
    min_replicas: int | None = None
    max_replicas: int | None = None


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """Everything a RayClusterSpec is made from. `tracking_uri` is MLflow's (plain: it is
    not a secret); `gpu_product` selects the GPU nodes; `autoscaling` turns on KubeRay's
    in-tree autoscaler, which removes workers idle for `idle_timeout_s`."""

    image: str
    ray_version: str
    head: PodShape
    workers: list[WorkerGroup]
    tracking_uri: str
    secrets: Secrets = field(default_factory=Secrets)
    gpu_product: str = H100_PRODUCT
    autoscaling: bool = False
    idle_timeout_s: int = 600


def check_name(value: str, what: str, *, max_len: int = 63, rule: str = "dns1035") -> str:
    """`value` if it is a valid Kubernetes name under `rule` (a key of NAME_RULES),
    else ValueError saying what a name may hold."""
    pattern, shape = NAME_RULES[rule]
    if len(value) > max_len or not pattern.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a Kubernetes name: at most {max_len} characters of "
            f"a-z, 0-9 and '-', {shape}, not ending with '-'"
        )
    return value


def _secret_env(name: str, secret: str, *, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": name}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def ray_env(secrets: Secrets, tracking_uri: str) -> list[dict[str, Any]]:
    """The environment of every Ray container: token auth, S3 and MLflow."""
    token = {"name": secrets.ray_token, "key": AUTH_TOKEN_KEY}
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": token}},
        _secret_env("AWS_ACCESS_KEY_ID", secrets.s3),
        _secret_env("AWS_SECRET_ACCESS_KEY", secrets.s3),
        _secret_env("AWS_ENDPOINT_URL", secrets.s3, optional=True),
        {"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
        _secret_env("MLFLOW_TRACKING_USERNAME", secrets.mlflow, optional=True),
        _secret_env("MLFLOW_TRACKING_PASSWORD", secrets.mlflow, optional=True),
    ]


def resources(shape: PodShape) -> dict[str, Any]:
    """Container requests = limits: CPUs, memory and (Kubernetes' way) GPUs."""
    amounts: dict[str, Any] = {"cpu": shape.cpus, "memory": f"{shape.memory_gib}Gi"}
    if shape.gpus:
        amounts[GPU_RESOURCE] = shape.gpus  # extended resources: limits, requests equal
    return {"requests": dict(amounts), "limits": dict(amounts)}


def ray_start_params(shape: PodShape, *, head: bool) -> dict[str, str]:
    """What `ray start` is told: the pod's resources (the head: no CPUs for work)."""
    params = {
        "num-cpus": "0" if head else str(shape.cpus),
        "num-gpus": str(shape.gpus),
        "memory": str(shape.memory_gib * 2**30),
    }
    if head:
        params["dashboard-host"] = "0.0.0.0"  # the Jobs API, reached through the head service
    return params


def pod_template(
    spec: ClusterSpec, shape: PodShape, *, container_name: str, head: bool
) -> dict[str, Any]:
    """The pod of one Ray node: one Ray container (KubeRay's index 0), /dev/shm in memory
    for the object store and NCCL, and on GPU pods the GPU nodes' selector and taint."""
    container: dict[str, Any] = {
        "name": container_name,
        "image": spec.image,
        "env": ray_env(spec.secrets, spec.tracking_uri),
        "resources": resources(shape),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if head:
        container["ports"] = [{"name": n, "containerPort": p} for n, p in HEAD_PORTS.items()]
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if shape.gpus:
        pod["nodeSelector"] = {GPU_PRODUCT_LABEL: spec.gpu_product}
        pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return {"spec": pod}


def worker_group(spec: ClusterSpec, group: WorkerGroup) -> dict[str, Any]:
    lo = group.replicas if group.min_replicas is None else group.min_replicas
    hi = group.replicas if group.max_replicas is None else group.max_replicas
    if not 0 <= lo <= group.replicas <= hi:
        raise ValueError(f"worker group {group.name}: need 0 <= min <= replicas <= max")
    out: dict[str, Any] = {
        "groupName": check_name(group.name, "worker group name", max_len=63),
        "replicas": group.replicas,
        "minReplicas": lo,
        "maxReplicas": hi,
        "rayStartParams": ray_start_params(group.shape, head=False),
        "template": pod_template(spec, group.shape, container_name="ray-worker", head=False),
    }
    if spec.autoscaling:
        out["idleTimeoutSeconds"] = spec.idle_timeout_s
    return out


def cluster_spec(spec: ClusterSpec) -> dict[str, Any]:
    """A RayClusterSpec: the head group and one group per `spec.workers`."""
    out: dict[str, Any] = {
        "rayVersion": spec.ray_version,
        "authOptions": {"mode": "token", "secretName": spec.secrets.ray_token},
        "headGroupSpec": {
            "rayStartParams": ray_start_params(spec.head, head=True),
            "template": pod_template(spec, spec.head, container_name="ray-head", head=True),
        },
        "workerGroupSpecs": [worker_group(spec, g) for g in spec.workers],
    }
    if spec.autoscaling:
        out["enableInTreeAutoscaling"] = True
        out["autoscalerOptions"] = {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": spec.idle_timeout_s,
        }
    return out


def _manifest(
    kind: str, name: str, namespace: str, spec: dict[str, Any], max_len: int
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": check_name(name, f"{kind} name", max_len=max_len),
            "namespace": check_name(namespace, "namespace", rule="dns1123"),
            "labels": {"app.kubernetes.io/name": "lmforge", "app.kubernetes.io/instance": name},
        },
        "spec": spec,
    }


def ray_cluster(name: str, namespace: str, cluster: dict[str, Any]) -> dict[str, Any]:
    """A long-lived RayCluster (KubeRay caps its name at 53 characters)."""
    return _manifest("RayCluster", name, namespace, cluster, max_len=53)


def ray_job(
    name: str,
    namespace: str,
    cluster: dict[str, Any],
    *,
    entrypoint: str,
    ttl_seconds_after_finished: int = 600,
) -> dict[str, Any]:
    """A RayJob: KubeRay starts a cluster from `cluster`, submits `entrypoint` from a
    submitter pod (K8sJobMode) and deletes the cluster `ttl_seconds_after_finished`
    after the job ends (time to read its logs)."""
    spec = {
        "entrypoint": entrypoint,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_seconds_after_finished,
        "rayClusterSpec": cluster,
    }
    return _manifest("RayJob", name, namespace, spec, max_len=47)


def ray_service(
    name: str, namespace: str, cluster: dict[str, Any], *, serve_config: dict[str, Any]
) -> dict[str, Any]:
    """A RayService: `serve_config` (Ray Serve's multi-application config) deployed on a
    cluster from `cluster`; KubeRay's `<name>-serve-svc` exposes port 8000."""
    spec = {
        "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
        "rayClusterConfig": cluster,
    }
    return _manifest("RayService", name, namespace, spec, max_len=47)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as `|` blocks, readable in the manifest."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML, keys in the order they were built (what kubectl shows)."""
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, width=100)
