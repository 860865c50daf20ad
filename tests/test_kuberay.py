"""`lmforge kube`: the KubeRay manifests of a recipe are valid for KubeRay's own CRDs, and
right for lmforge.

The schemas are the `openAPIV3Schema` of version v1 in KubeRay's CRDs (../shared/kuberay,
the files the operator installs). jsonschema checks types, enums, required fields and
quantity patterns; it cannot see a misspelt field, because a CRD schema allows any key
and the API server silently prunes the ones it does not know (`rayStartParam` would
vanish and Ray would start with defaults). `unknown_fields` walks each manifest against
the schema and fails on those. The schemas' CEL rules (`x-kubernetes-validations`, on
managedBy, deletionStrategy, the GCS backend) are not evaluated here; no manifest sets
those fields. No cluster and no Ray is started.
"""

from __future__ import annotations

import copy
import importlib
import math
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from lmforge.jobs import kube
from lmforge.jobs.cli import app
from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.platform import kuberay
from lmforge.platform.config import ConfigError

from conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parent.parent
KUBERAY = SHARED_DATA.parent / "kuberay"  # beside shared/data, as conftest.shared() finds it
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
S3_DEMO = ["workdir=s3://my-lmforge-bucket/runs/demo", "mlflow.tracking_uri=http://mlflow:5000"]
# (recipe, overrides): the GPU recipes, and the CPU-only demo moved onto S3 and a server
CASES = {
    "8b": ("configs/pretrain-8b-8xh100.yaml", []),
    "500b": ("configs/plan-500b.yaml", []),
    "1b": ("configs/pretrain-1b-1gpu.yaml", []),
    "demo-s3": ("configs/demo.yaml", S3_DEMO),
}
SECRET_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "RAY_AUTH_TOKEN",
}
JOB_WORKER = ["spec", "rayClusterSpec", "workerGroupSpecs", 0]
DEMO = ["--config", "configs/demo.yaml"]
EIGHT_B = ["--config", "configs/pretrain-8b-8xh100.yaml"]
METADATA_FIELDS = {"name", "namespace", "labels", "annotations"}  # ObjectMeta: not in the CRD


def load_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=loader)


@pytest.fixture(scope="module")
def schemas() -> dict[str, dict[str, Any]]:
    """kind -> the v1 openAPIV3Schema of its CRD."""
    out = {}
    for kind, name in CRD_FILES.items():
        path = KUBERAY / name
        if not path.exists():
            pytest.skip(f"{path} is absent (the shared folder is not beside this checkout)")
        crd = load_yaml(path)
        assert crd["spec"]["names"]["kind"] == kind
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[kind] = v1["schema"]["openAPIV3Schema"]
    return out


def validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Paths in `value` that `schema` does not list: where a node has `properties` and
    does not preserve unknown fields, every key must be one of them (what the API server
    would otherwise prune). Maps (`additionalProperties`) and lists are walked into."""
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        values = schema.get("additionalProperties")
        if props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key, child in value.items():
                if key not in props:
                    found.append(f"{path}.{key}")
                else:
                    found += unknown_fields(child, props[key], f"{path}.{key}")
        elif isinstance(values, dict):
            for key, child in value.items():
                found += unknown_fields(child, values, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            found += unknown_fields(child, schema["items"], f"{path}[{i}]")
    return found


def recipe_of(case: str) -> tuple[Recipe, list[str]]:
    config, overrides = CASES[case]
    return load_recipe(ROOT / config, overrides=overrides), overrides


def generate(case: str, **options: Any) -> dict[str, dict[str, Any]]:
    recipe, overrides = recipe_of(case)
    return kube.manifests(
        recipe,
        recipe_in_image=f"{kube.PROJECT_DIR}/{CASES[case][0]}",
        overrides=overrides,
        options=kube.KubeOptions(**options),
    )


def cluster_of(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def groups(manifest: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(rayStartParams, pod spec) of the head and of every worker group."""
    cluster = cluster_of(manifest)
    found = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [(g["rayStartParams"], g["template"]["spec"]) for g in found]


def worker_group(manifest: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = [g for g in cluster_of(manifest)["workerGroupSpecs"] if g["groupName"] == name]
    return found[0] if found else None


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for _, pod in groups(manifest) for c in pod["containers"]]


ALL = [(case, kind) for case in CASES for kind in ("rayjob", "rayservice", "raycluster")]


@pytest.mark.parametrize(("case", "key"), ALL)
def test_each_manifest_matches_its_crd_schema(schemas, case, key):
    built = generate(case)[key]
    manifest = yaml.safe_load(kuberay.to_yaml(built))  # what kubectl will send
    assert manifest == built
    assert manifest["apiVersion"] == kuberay.API_VERSION
    schema = schemas[manifest["kind"]]
    errors = sorted(validator(schema).iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(("case", "key"), ALL)
def test_no_field_is_unknown_to_the_schema(schemas, case, key):
    manifest = generate(case)[key]
    assert unknown_fields(manifest, schemas[manifest["kind"]]) == []
    assert set(manifest["metadata"]) <= METADATA_FIELDS


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (["spec", "rayClusterSpec", "headGroupSpec"], ("rayStartParams", "rayStartParam")),
        (JOB_WORKER, ("replicas", "replica")),
        ([*JOB_WORKER, "template", "spec", "containers", 0], ("resources", "resource")),
        (["spec"], ("shutdownAfterJobFinishes", "shutdownAfterJobFinish")),
    ],
)
def test_the_walker_catches_a_typo_that_the_schema_lets_through(schemas, path, typo):
    manifest = copy.deepcopy(generate("8b")["rayjob"])
    node = manifest
    for key in path:
        node = node[key]
    right, wrong = typo
    node[wrong] = node.pop(right)
    schema = schemas["RayJob"]
    assert validator(schema).is_valid(manifest)  # why the walker exists: pruned, not refused
    (found,) = unknown_fields(manifest, schema)
    assert found.endswith(f".{wrong}")


def test_the_schema_refuses_a_wrong_type(schemas):
    """rayStartParams are strings in the CRD: an int (num-gpus: 8) is refused."""
    manifest = copy.deepcopy(generate("8b")["rayjob"])
    group = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    group["rayStartParams"]["num-gpus"] = 8
    assert not validator(schemas["RayJob"]).is_valid(manifest)


@pytest.mark.parametrize(("case", "key"), ALL)
def test_pods_request_what_ray_is_told(case, key):
    for params, pod in groups(generate(case)[key]):
        (ray,) = pod["containers"]
        res = ray["resources"]
        assert res["requests"] == res["limits"]
        limits = res["limits"]
        gpus = int(limits.get(kuberay.GPU_RESOURCE, 0))
        assert gpus == int(params["num-gpus"])
        assert int(params["memory"]) == int(limits["memory"].removesuffix("Gi")) * 2**30
        if ray["name"] == "ray-head":
            assert params["num-cpus"] == "0"  # the head takes no tasks (as in cluster.yaml)
        else:
            assert int(params["num-cpus"]) == int(limits["cpu"])
        if gpus:
            assert pod["nodeSelector"] == {kuberay.GPU_PRODUCT_LABEL: kuberay.H100_PRODUCT}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
                "tolerations"
            ]
        else:
            assert "nodeSelector" not in pod and "tolerations" not in pod


@pytest.mark.parametrize("case", ["8b", "500b", "1b"])
def test_the_training_gpus_are_the_recipes_workers(case):
    recipe, _ = recipe_of(case)
    found = generate(case)
    job = worker_group(found["rayjob"], "gpu")
    assert job is not None
    gpus = int(job["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert job["replicas"] == job["minReplicas"] == job["maxReplicas"]
    assert job["replicas"] * gpus == recipe.pretrain.num_workers
    assert gpus == min(8, recipe.pretrain.num_workers)  # an 8xH100 node at most
    # the long-lived cluster: from zero up to the same size, the autoscaler on
    elastic = found["raycluster"]
    assert elastic["spec"]["enableInTreeAutoscaling"] is True
    gpu, cpu = worker_group(elastic, "gpu"), worker_group(elastic, "cpu")
    assert gpu is not None and cpu is not None
    assert (gpu["minReplicas"], gpu["replicas"], gpu["maxReplicas"]) == (0, 0, job["replicas"])
    assert cpu["minReplicas"] == 0


def test_a_cpu_only_recipe_gets_no_gpu_group_in_its_job():
    found = generate("demo-s3")
    assert worker_group(found["rayjob"], "gpu") is None
    assert worker_group(found["rayjob"], "cpu") is not None
    assert worker_group(found["raycluster"], "gpu") is not None  # the H100 group, at 0


def test_options_override_the_recipe():
    found = generate("8b", gpu_workers=2, gpus_per_worker=4, cpu_workers=5, namespace="ml")
    job = found["rayjob"]
    gpu, cpu = worker_group(job, "gpu"), worker_group(job, "cpu")
    assert gpu is not None and cpu is not None
    assert (gpu["replicas"], gpu["rayStartParams"]["num-gpus"]) == (2, "4")
    assert cpu["replicas"] == 5
    assert {m["metadata"]["namespace"] for m in found.values()} == {"ml"}


@pytest.mark.parametrize(("case", "key"), ALL)
def test_token_auth_on_every_ray_container(case, key):
    manifest = generate(case)[key]
    cluster = cluster_of(manifest)
    secret = cluster["authOptions"]["secretName"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "lmforge-ray-token"}
    major, minor = (int(x) for x in cluster["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52)  # KubeRay refuses authOptions below Ray 2.52
    for c in containers(manifest):
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret, "key": kuberay.AUTH_TOKEN_KEY}


@pytest.mark.parametrize(("case", "key"), ALL)
def test_secrets_come_by_reference(case, key):
    recipe, _ = recipe_of(case)
    names = set(vars(kuberay.Secrets()).values())
    for c in containers(generate(case)[key]):
        env = {e["name"]: e for e in c["env"]}
        assert set(env) >= SECRET_ENV
        for name in SECRET_ENV:
            assert "value" not in env[name], name
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] in names and ref["key"], name  # `name` is optional in the CRD
        assert env["MLFLOW_TRACKING_URI"] == {
            "name": "MLFLOW_TRACKING_URI",
            "value": recipe.mlflow.tracking_uri,
        }


def test_no_secret_value_reaches_the_yaml(monkeypatch, tmp_path):
    fakes = {
        "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID0000000",
        "AWS_SECRET_ACCESS_KEY": "fake-aws-secret-9b1d",
        "MLFLOW_TRACKING_USERNAME": "fake-mlflow-user",
        "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-77",
        "RAY_AUTH_TOKEN": "fake-ray-token-3c5e",
    }
    for name, value in fakes.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(
        app, ["kube", "--config", "configs/pretrain-8b-8xh100.yaml", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    text = "".join(p.read_text() for p in sorted(tmp_path.glob("*.yaml")))
    assert "secretKeyRef" in text
    for value in fakes.values():
        assert value not in text


@pytest.mark.parametrize(
    "uri", ["http://admin:fake-pw-5f@mlflow.internal:5000", "https://tok@mlflow.example.com"]
)
def test_a_tracking_uri_with_credentials_is_refused(uri):
    recipe = load_recipe(ROOT / CASES["8b"][0], overrides=[f"mlflow.tracking_uri={uri}"])
    with pytest.raises(ConfigError, match=r"^mlflow\.tracking_uri: holds credentials"):
        kube.manifests(recipe, recipe_in_image="/x.yaml")


@pytest.mark.parametrize("case", ["8b", "500b", "demo-s3"])
def test_the_service_serves_the_registered_model(case):
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    recipe, _ = recipe_of(case)
    service = generate(case)["rayservice"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)  # what KubeRay hands Serve's REST API
    (application,) = config["applications"]
    args = application["args"]
    assert args["model"] == recipe.serve.model
    assert args["model"] == f"models:/{recipe.register.model_name}@{recipe.register.alias}"
    module, _, attr = application["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attr)
    if args.get("engine") == "vllm":
        # vLLM (a CUDA-only wheel) is not installed here: its LLMConfig is still validated
        from lmforge.serve.config import ServeConfig
        from lmforge.serve.vllm_app import llm_config

        config = llm_config(ServeConfig.model_validate(args), source="/models/hf")
        assert config.engine_kwargs["tensor_parallel_size"] == recipe.serve.num_gpus
    else:
        # what Serve does with import_path and args; builds the app, starts nothing
        built = call_user_app_builder_with_args_if_necessary(builder, args)
        assert isinstance(built, Application)
    # one pod per replica, with the GPUs a replica asks for
    (group,) = cluster_of(service)["workerGroupSpecs"]
    assert group["replicas"] == recipe.serve.num_replicas
    assert int(group["rayStartParams"]["num-gpus"]) == math.ceil(recipe.serve.num_gpus)


def test_the_job_runs_the_pipeline_on_the_recipe_in_the_image():
    job = generate("demo-s3")["rayjob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:5] == [
        "python",
        "-m",
        "lmforge.jobs.pipeline",
        "--config",
        f"{kube.PROJECT_DIR}/configs/demo.yaml",
    ]
    sets = argv[6::2]
    assert argv[5::2] == ["--set"] * len(sets)
    assert sets == [*S3_DEMO, "serve.blocking=false"]  # the job ends; the RayService serves
    # the same recipe, read the way the job will read it
    recipe = load_recipe(ROOT / argv[4].removeprefix(f"{kube.PROJECT_DIR}/"), overrides=sets)
    assert recipe.serve.blocking is False
    assert recipe.pretrain.output == "s3://my-lmforge-bucket/runs/demo/pretrain"


def test_cli_writes_the_three_files(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "k8s"
    argv = ["kube", "--config", "configs/pretrain-8b-8xh100.yaml", "--out", str(out)]
    result = CliRunner().invoke(
        app, [*argv, "--image", "reg.example/lmforge:test", "--namespace", "ml"]
    )
    assert result.exit_code == 0, result.output
    paths = result.stdout.split()
    assert paths == [str(out / n) for n in ("rayjob.yaml", "rayservice.yaml", "raycluster.yaml")]
    kinds = [load_yaml(Path(p))["kind"] for p in paths]
    assert kinds == ["RayJob", "RayService", "RayCluster"]
    job = load_yaml(Path(paths[0]))
    assert (job["metadata"]["name"], job["metadata"]["namespace"]) == ("pretrain-8b-8xh100", "ml")
    assert {c["image"] for c in containers(job)} == {"reg.example/lmforge:test"}


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (DEMO, "curate.output"),
        ([*DEMO, "--set", S3_DEMO[0]], "mlflow.tracking_uri"),
        ([*EIGHT_B, "--namespace", "ML_Team"], "--namespace"),
        ([*EIGHT_B, "--set", "name=My_Run"], "name"),
        ([*EIGHT_B, "--gpu-workers", "1", "--gpus-per-worker", "4"], "pretrain.num_workers"),
        ([*EIGHT_B, "--gpus-per-worker", "0"], "--gpus-per-worker"),
        ([*EIGHT_B, "--set", "serve.model=/models/8b"], "serve.model"),
        ([*EIGHT_B, "--set", "pretrain.gpu=A100"], "pretrain.gpu"),
        ([*EIGHT_B, "--set", "ray.address=auto"], "ray.address"),
        ([*EIGHT_B, "--s3-secret", "S3!"], "--s3-secret"),
        ([*EIGHT_B, "--set", "mlflow.tracking_uri=http://localhost:5000"], "mlflow.tracking_uri"),
        (["--config", "configs/nope.yaml"], "config file not found"),
    ],
)
def test_bad_input_fails_in_one_line_naming_the_field(monkeypatch, tmp_path, args, field):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the demo's default: SQLite
    result = CliRunner().invoke(app, ["kube", *args, "--out", str(tmp_path / "k8s")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"lmforge: error: {field}"), lines[0]
    assert not (tmp_path / "k8s").exists()  # nothing written
