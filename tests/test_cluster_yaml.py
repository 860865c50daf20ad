"""cluster.yaml: valid for the installed Ray's cluster launcher, and right for lmforge.

The schema is the one `ray up` itself validates against (ray/autoscaler/ray-schema.json in the
installed ray package). The other tests check what a schema cannot: a GPU pool that scales from
zero, a head that takes no work, token auth on every node, and an image that matches the Ray pin.
No Ray is started and nothing touches AWS.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
PROJECT_DIR = "/home/ray/lmforge"  # where file_mounts puts the working tree in the container


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    with CLUSTER_YAML.open() as f:
        loaded = yaml.safe_load(f)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(
        resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text(encoding="utf-8")
    )
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def node_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["available_node_types"]


def gpu_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in node_types(config).items() if v["resources"].get("GPU", 0) > 0}


def start_commands(config: dict[str, Any], key: str) -> list[str]:
    """The commands in `key` that run `ray start` (not `ray stop`)."""
    cmds = [c for c in config[key] if re.search(r"\bray start\b", c)]
    assert cmds, f"{key} never runs `ray start`"
    return cmds


def test_matches_the_installed_ray_schema(config, validator):
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("path", "bad_value"),
    [
        (["max_workers"], "many"),  # not an integer
        (["available_node_types", "worker.gpu.8xh100", "resources", "GPU"], 8.5),
        (["docker", "pull_before_run"], "yes"),  # not a boolean
        (["max_worker"], 16),  # a typo: unknown top-level keys are rejected
    ],
)
def test_the_same_validator_rejects_a_broken_copy(config, validator, path, bad_value):
    broken = copy.deepcopy(config)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad_value
    assert not validator.is_valid(broken)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_rays_own_config_pipeline_accepts_it(config):
    # What `ray up` runs before launching anything: merge the AWS defaults, then validate
    # (schema + head_node_type + min/max workers). Private API, stable under the 2.60 pin.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    # nothing from aws/defaults.yaml sneaks into the command lists
    assert prepared["initialization_commands"] == config["initialization_commands"]
    assert prepared["head_start_ray_commands"] == config["head_start_ray_commands"]
    assert prepared["worker_start_ray_commands"] == config["worker_start_ray_commands"]


def test_cluster_basics(config):
    assert config["cluster_name"] == "lmforge"
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"] == "us-west-2"
    assert config["provider"]["cache_stopped_nodes"] is False
    assert config["idle_timeout_minutes"] > 0
    for name, spec in node_types(config).items():
        if name != config["head_node_type"]:
            assert spec["max_workers"] <= config["max_workers"], name


def test_head_type_exists_and_takes_no_work(config):
    head = node_types(config).get(config["head_node_type"])
    assert head is not None, "head_node_type is not one of available_node_types"
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0


def test_an_8_gpu_worker_type_scales_from_zero(config):
    gpus = gpu_types(config)
    assert gpus, "no worker type offers GPUs"
    eight = {
        name: spec
        for name, spec in gpus.items()
        if spec["resources"]["GPU"] == 8 and spec.get("min_workers", 0) == 0
    }
    assert eight, f"no 8-GPU type with min_workers 0 among {sorted(gpus)}"
    for name, spec in eight.items():
        assert name != config["head_node_type"]
        assert spec["max_workers"] >= 1, name
        assert spec["node_config"]["InstanceType"] == "p5.48xlarge", name
        root = spec["node_config"]["BlockDeviceMappings"][0]["Ebs"]
        assert root["VolumeSize"] >= 500, f"{name}: root volume too small for image + wheels"


def test_docker_image_matches_the_installed_ray_minor(config):
    docker = config["docker"]
    images = [docker[k] for k in ("image", "head_image", "worker_image") if k in docker]
    assert images
    installed = tuple(ray.__version__.split(".")[:2])
    for image in images:
        m = re.fullmatch(r"rayproject/ray(?:-ml)?:(\d+)\.(\d+)\.\d+(?:-[\w.]+)*", image)
        assert m, f"not a versioned rayproject image: {image}"
        assert m.groups() == installed, f"{image} vs installed ray {ray.__version__}"
    assert docker["pull_before_run"] is True
    options = " ".join(docker["run_options"])
    assert "--ulimit nofile=65536:65536" in options
    assert "--shm-size" in options


def test_the_auth_token_is_mounted_on_every_node(config):
    mounts = config["file_mounts"]
    token = {remote: local for remote, local in mounts.items() if local == "~/.ray/auth_token"}
    # ~/.ray/auth_token is where Ray looks when RAY_AUTH_TOKEN(_PATH) are unset; /home/ray is
    # the container user's home in rayproject images
    assert token == {"/home/ray/.ray/auth_token": "~/.ray/auth_token"}


@pytest.mark.parametrize("key", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_start_commands_run_with_token_auth(config, key):
    for cmd in start_commands(config, key):
        assert re.search(r"\bRAY_AUTH_MODE=token\s+ray start\b", cmd), cmd
    # and the container environment carries it for every other process too
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]


def test_start_commands_shape(config):
    (head,) = start_commands(config, "head_start_ray_commands")
    assert "--head" in head
    assert "--port=6379" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "--dashboard-host=0.0.0.0" in head
    (worker,) = start_commands(config, "worker_start_ray_commands")
    assert "--address=$RAY_HEAD_IP:6379" in worker


def test_setup_commands_install_the_project(config):
    assert config["file_mounts"].get(PROJECT_DIR) == ".", "the working tree is not mounted"
    installs = [
        c
        for c in config["setup_commands"]
        if re.search(rf"\bpip install\b.*\s-e\s+{re.escape(PROJECT_DIR)}(\s|$)", c)
    ]
    assert installs, "no setup command runs `pip install -e` on the mounted project"
    assert all("DS_BUILD_OPS=0" in c for c in installs)
