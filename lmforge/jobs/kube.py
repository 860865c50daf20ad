"""`lmforge kube`: a recipe's KubeRay manifests, sized from the recipe.

    lmforge kube --config configs/pretrain-8b-8xh100.yaml --out k8s/ --image REG/lmforge:0.1.0

writes three files (the dicts come from `lmforge.platform.kuberay`):

- `rayjob.yaml`: the whole pipeline (`python -m lmforge.jobs.pipeline`) on a cluster
  KubeRay starts for it and deletes after; the Serve demo at its end does not block;
- `rayservice.yaml`: the registered model (`serve.model`, `models:/NAME@ALIAS`) behind
  Ray Serve's OpenAI-compatible app, through `lmforge.serve.deploy:app_builder` (the
  Serve config file of `lmforge serve-config`, with `proxy_location` from the recipe);
- `raycluster.yaml`: a long-lived cluster for `ray job submit` whose CPU and GPU groups
  scale from zero (KubeRay's autoscaler), like cluster.yaml on AWS.

Sizing. Training takes one GPU per Ray Train worker (`pretrain.num_workers`, when
`pretrain.use_gpu`): GPU pods of `min(8, num_workers)` GPUs (an 8xH100 node), as many as
the workers need; each pod gets `max(12, pretrain.cpus_per_worker)` CPUs and 128 GiB per
GPU. Serving takes one pod per replica with `ceil(serve.num_gpus)` GPUs (CPU pods when
0). Curation runs on `cpu_workers` CPU pods of 32 CPUs and 128 GiB. The image holds the
repository at /home/ray/lmforge (as cluster.yaml's setup does), so the job reads the
recipe there. Checked before anything is written: stage outputs are object-store URIs
(pods share no disk), MLflow is a server with no password in its URI, names are valid.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer

from lmforge.jobs.command import SetOpt, fail
from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.platform import kuberay
from lmforge.platform.config import ConfigError
from lmforge.platform.kuberay import ClusterSpec, PodShape, Secrets, WorkerGroup
from lmforge.platform.storage import is_remote
from lmforge.serve.deployment import serve_config_file
from lmforge.train.hardware import get_gpu

PROJECT_DIR = "/home/ray/lmforge"  # the repository inside the image
DEFAULT_IMAGE = f"registry.internal/lmforge:{version('lmforge')}"
HEAD = PodShape(cpus=16, memory_gib=64)  # drivers, GCS, dashboard, Serve controller
CPU_WORKER = PodShape(cpus=32, memory_gib=128)
GPUS_PER_NODE = 8
CPUS_PER_GPU = 12
GIB_PER_GPU = 128
SERVICE_SUFFIX = "-serve"  # the RayService is named after the recipe, plus this
FILES = {"rayjob": "rayjob.yaml", "rayservice": "rayservice.yaml", "raycluster": "raycluster.yaml"}
# GPU types of `lmforge plan --list-gpus` -> GPU Feature Discovery's nvidia.com/gpu.product
GPU_PRODUCTS = {"H100-SXM": kuberay.H100_PRODUCT}


@dataclass(frozen=True, kw_only=True)
class KubeOptions:
    """What the recipe does not say. None: derived from the recipe (module docstring)."""

    image: str = DEFAULT_IMAGE
    namespace: str = "default"
    cpu_workers: int = 2
    gpu_workers: int | None = None
    gpus_per_worker: int | None = None
    gpu_product: str | None = None
    secrets: Secrets = field(default_factory=Secrets)


def _check_name(what: str, value: str, *, max_len: int = 63, rule: str = "dns1035") -> None:
    try:
        kuberay.check_name(value, "the name", max_len=max_len, rule=rule)
    except ValueError as e:
        raise ConfigError(f"{what}: {e}") from None


def check_names(recipe: Recipe, options: KubeOptions) -> None:
    """The recipe's name names the three resources (KubeRay allows RayJob and RayService
    names of 47 characters; the RayService's ends in SERVICE_SUFFIX)."""
    _check_name("name", recipe.name, max_len=47 - len(SERVICE_SUFFIX))
    _check_name("--namespace", options.namespace, rule="dns1123")
    secrets = options.secrets
    _check_name("--s3-secret", secrets.s3, max_len=253, rule="subdomain")
    _check_name("--mlflow-secret", secrets.mlflow, max_len=253, rule="subdomain")
    _check_name("--ray-token-secret", secrets.ray_token, max_len=253, rule="subdomain")
    if not options.image.strip():
        raise ConfigError("--image: empty")


def check(recipe: Recipe) -> None:
    """ConfigError naming the field when the recipe cannot run on Kubernetes pods."""
    for name in ("curate", "synthetic", "tokenize", "pretrain"):
        out = getattr(recipe, name).output
        if out is not None and not is_remote(out):
            raise ConfigError(
                f"{name}.output: pods share no local disk; set workdir (or this output) "
                f"to an object-store URI such as s3://bucket/runs/{recipe.name} (got {out!r})"
            )
    storage = recipe.pretrain.storage_path
    if storage is not None and not is_remote(storage):
        raise ConfigError(f"pretrain.storage_path: must be shared by every pod (got {storage!r})")
    uri = recipe.mlflow.tracking_uri or ""
    scheme, _, rest = uri.partition("://")
    if scheme not in ("http", "https") and uri != "databricks":
        raise ConfigError(
            "mlflow.tracking_uri: pods need an MLflow server reachable from all of them: "
            f"--set mlflow.tracking_uri=http://mlflow.internal:5000 or so (got {uri!r})"
        )
    netloc = rest.split("/")[0]
    if "@" in netloc:
        raise ConfigError(
            "mlflow.tracking_uri: holds credentials; put them in the MLflow Secret "
            "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) instead"
        )
    if netloc.rsplit(":", 1)[0].strip("[]") in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
        raise ConfigError(f"mlflow.tracking_uri: {uri} is this machine, not one pods can reach")
    if not (recipe.serve.model or "").startswith("models:/"):
        raise ConfigError(
            "serve.model: the RayService serves a registered model, models:/NAME@ALIAS "
            f"(got {recipe.serve.model!r})"
        )
    if recipe.ray.address:
        raise ConfigError(
            "ray.address: a RayJob joins the cluster KubeRay starts for it (RAY_ADDRESS); "
            f"leave ray.address unset (got {recipe.ray.address!r})"
        )


def gpu_product(recipe: Recipe, options: KubeOptions) -> str:
    if options.gpu_product:
        return options.gpu_product
    gpu = recipe.pretrain.gpu
    if gpu is None:
        return kuberay.H100_PRODUCT
    name = get_gpu(gpu).name
    if name not in GPU_PRODUCTS:
        raise ConfigError(
            f"pretrain.gpu: no nvidia.com/gpu.product label known for {name}; "
            "give it with --gpu-product"
        )
    return GPU_PRODUCTS[name]


def gpu_shape(gpus: int, cpus_per_worker: float) -> PodShape:
    """A GPU pod: its GPUs, and CPUs and memory in proportion."""
    per_gpu = max(CPUS_PER_GPU, math.ceil(cpus_per_worker))
    return PodShape(cpus=gpus * per_gpu, memory_gib=gpus * GIB_PER_GPU, gpus=gpus)


def training_groups(recipe: Recipe, options: KubeOptions) -> tuple[WorkerGroup, WorkerGroup]:
    """(CPU group, GPU group) for the pipeline; the GPU group has 0 pods without GPUs."""
    cfg = recipe.pretrain
    if options.cpu_workers < 0:
        raise ConfigError(f"--cpu-workers: must be 0 or more (got {options.cpu_workers})")
    per_pod = options.gpus_per_worker
    if per_pod is None:
        per_pod = min(GPUS_PER_NODE, cfg.num_workers) if cfg.use_gpu else GPUS_PER_NODE
    if per_pod < 1:
        raise ConfigError(f"--gpus-per-worker: must be 1 or more (got {per_pod})")
    if options.gpu_workers is not None and options.gpu_workers < 0:
        raise ConfigError(f"--gpu-workers: must be 0 or more (got {options.gpu_workers})")
    need = math.ceil(cfg.num_workers / per_pod) if cfg.use_gpu else 0
    pods = need if options.gpu_workers is None else options.gpu_workers
    if cfg.use_gpu and pods * per_pod < cfg.num_workers:
        raise ConfigError(
            f"pretrain.num_workers: {cfg.num_workers} Ray Train workers take a GPU each, the "
            f"GPU group has {pods} pods x {per_pod} GPUs (--gpu-workers, --gpus-per-worker)"
        )
    if not cfg.use_gpu:
        cpus = options.cpu_workers * CPU_WORKER.cpus
        if cfg.cpus_per_worker > CPU_WORKER.cpus or cfg.num_workers * cfg.cpus_per_worker > cpus:
            raise ConfigError(
                f"pretrain.cpus_per_worker: {cfg.num_workers} workers x "
                f"{cfg.cpus_per_worker:g} CPUs do not fit {options.cpu_workers} CPU pods of "
                f"{CPU_WORKER.cpus} CPUs (--cpu-workers)"
            )
    cpu = WorkerGroup(name="cpu", shape=CPU_WORKER, replicas=options.cpu_workers)
    gpu = WorkerGroup(name="gpu", shape=gpu_shape(per_pod, cfg.cpus_per_worker), replicas=pods)
    return cpu, gpu


def serving_group(recipe: Recipe) -> WorkerGroup:
    """One pod per Serve replica: GPUs when the replica asks for them."""
    cfg = recipe.serve
    gpus = math.ceil(cfg.num_gpus)
    shape = gpu_shape(gpus, cfg.num_cpus) if gpus else CPU_WORKER
    if cfg.num_cpus > shape.cpus:
        raise ConfigError(f"serve.num_cpus: more than a pod's {shape.cpus} CPUs")
    # with autoscaling, room for the most replicas Serve may start
    replicas = cfg.autoscaling.max_replicas if cfg.autoscaling else cfg.num_replicas
    return WorkerGroup(name="gpu" if gpus else "cpu", shape=shape, replicas=replicas)


def entrypoint(recipe_in_image: str, overrides: list[str] | tuple[str, ...]) -> str:
    """The RayJob's command: the pipeline on the recipe in the image, the same `--set`s,
    and the Serve demo at its end not blocking (the RayService serves for good)."""
    sets = [*overrides, "serve.blocking=false"]
    args = ["python", "-m", "lmforge.jobs.pipeline", "--config", recipe_in_image]
    return shlex.join(args + [a for s in sets for a in ("--set", s)])


def manifests(
    recipe: Recipe,
    *,
    recipe_in_image: str,
    overrides: list[str] | tuple[str, ...] = (),
    options: KubeOptions | None = None,
) -> dict[str, dict[str, Any]]:
    """{"rayjob": ..., "rayservice": ..., "raycluster": ...} for a validated recipe."""
    options = options or KubeOptions()
    check_names(recipe, options)
    check(recipe)
    assert recipe.mlflow.tracking_uri is not None and recipe.serve.model is not None
    cpu, gpu = training_groups(recipe, options)
    base = ClusterSpec(
        image=options.image,
        ray_version=version("ray"),
        head=HEAD,
        workers=[],
        tracking_uri=recipe.mlflow.tracking_uri,
        secrets=options.secrets,
        gpu_product=gpu_product(recipe, options),
    )
    job_workers = [g for g in (cpu, gpu) if g.replicas > 0]
    # the long-lived cluster starts with no workers and grows to what the job would use
    elastic = [
        replace(g, replicas=0, min_replicas=0, max_replicas=max(g.replicas, 1)) for g in (cpu, gpu)
    ]
    # the file `lmforge serve-config` writes; KubeRay runs the proxy on its own port
    serve_config = serve_config_file(recipe.serve, address=False)
    ns = options.namespace
    return {
        "rayjob": kuberay.ray_job(
            recipe.name,
            ns,
            kuberay.cluster_spec(replace(base, workers=job_workers)),
            entrypoint=entrypoint(recipe_in_image, overrides),
        ),
        "rayservice": kuberay.ray_service(
            f"{recipe.name}{SERVICE_SUFFIX}",
            ns,
            kuberay.cluster_spec(replace(base, workers=[serving_group(recipe)])),
            serve_config=serve_config,
        ),
        "raycluster": kuberay.ray_cluster(
            recipe.name,
            ns,
            kuberay.cluster_spec(replace(base, workers=elastic, autoscaling=True)),
        ),
    }


def write_manifests(found: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """One YAML file per manifest under `out` (created); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, manifest in found.items():
        path = out / FILES[key]
        path.write_text(kuberay.to_yaml(manifest), encoding="utf-8")
        paths.append(path)
    return paths


def recipe_path_in_image(config: Path) -> str:
    """Where the image holds `config`: the same path under PROJECT_DIR as under the
    current directory (the repository root, where `lmforge kube` runs)."""
    try:
        rel = config.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        raise ConfigError(
            f"--config: {config} is outside the current directory; run `lmforge kube` from "
            f"the repository root, which the image holds at {PROJECT_DIR}"
        ) from None
    return f"{PROJECT_DIR}/{rel.as_posix()}"


def kube_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML (see configs/).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the three YAML files.")],
    image: Annotated[
        str, typer.Option(help="Image FROM rayproject/ray with lmforge at /home/ray/lmforge.")
    ] = DEFAULT_IMAGE,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    cpu_workers: Annotated[int, typer.Option(help="CPU pods (32 CPUs) for curation.")] = 2,
    gpu_workers: Annotated[
        int | None, typer.Option(help="GPU pods for training (default: from the recipe).")
    ] = None,
    gpus_per_worker: Annotated[
        int | None, typer.Option(help="GPUs per training pod (default: min(8, workers)).")
    ] = None,
    gpu_product: Annotated[
        str | None, typer.Option(help="nvidia.com/gpu.product of the GPU nodes (default: H100).")
    ] = None,
    s3_secret: Annotated[str, typer.Option(help="Secret with AWS_* keys.")] = "lmforge-s3",
    mlflow_secret: Annotated[
        str, typer.Option(help="Secret with MLFLOW_TRACKING_USERNAME/PASSWORD.")
    ] = "lmforge-mlflow",
    ray_token_secret: Annotated[
        str, typer.Option(help="Secret with the Ray token under key auth_token.")
    ] = "lmforge-ray-token",
    set_: SetOpt = None,
) -> None:
    """Write the recipe's KubeRay manifests: rayjob.yaml (the pipeline), rayservice.yaml
    (the registered model on Ray Serve), raycluster.yaml (a cluster for `ray job submit`)."""
    options = KubeOptions(
        image=image,
        namespace=namespace,
        cpu_workers=cpu_workers,
        gpu_workers=gpu_workers,
        gpus_per_worker=gpus_per_worker,
        gpu_product=gpu_product,
        secrets=Secrets(s3=s3_secret, mlflow=mlflow_secret, ray_token=ray_token_secret),
    )
    try:
        recipe = load_recipe(config, overrides=set_ or [])
        found = manifests(
            recipe,
            recipe_in_image=recipe_path_in_image(config),
            overrides=set_ or [],
            options=options,
        )
    except ConfigError as e:
        fail(str(e))
        return
    for path in write_manifests(found, out):
        typer.echo(str(path))
