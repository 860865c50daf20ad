"""The serving configuration built from recipes, without a Serve app: API keys, the
engine switch, the vLLM `LLMConfig`, the Serve config file of `lmforge serve-config`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT


def test_api_keys_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.serve.auth import ApiKeys, bearer_token, client_key, load_keys, warn_if_open

    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\n  k-file  \n\n", encoding="utf-8")
    monkeypatch.setenv("LMFORGE_API_KEYS", " k-env, ,k-env2")
    assert load_keys(str(keys_file)) == ["k-env", "k-env2", "k-file"]
    assert client_key() == "k-env"
    keys = ApiKeys(load_keys(str(keys_file)))
    assert keys.allows("Bearer k-file") and keys.allows("bearer  k-env2 ")
    assert not keys.allows("Bearer k-env2x") and not keys.allows("k-env") and not keys.allows("")
    assert bearer_token("Basic abc") is None
    assert warn_if_open("0.0.0.0", keys) is None
    monkeypatch.delenv("LMFORGE_API_KEYS")
    assert ApiKeys(load_keys()).allows(None)  # no key configured: open
    assert "no API key" in (warn_if_open("0.0.0.0", ApiKeys([])) or "")
    assert warn_if_open("127.0.0.1", ApiKeys([])) is None


def test_hf_engine_with_several_gpus_is_a_config_error() -> None:
    from lmforge.jobs.recipe import load_recipe
    from lmforge.platform.config import ConfigError

    with pytest.raises(ConfigError, match=r"serve\.num_gpus"):
        load_recipe(ROOT / "configs/plan-500b.yaml", overrides=["serve.engine=hf"])
    recipe = load_recipe(ROOT / "configs/plan-500b.yaml", overrides=["serve.engine=hf",
                         "serve.num_gpus=1"])  # fmt: skip
    assert recipe.serve.num_gpus == 1


def test_vllm_llm_config_from_the_500b_recipe() -> None:
    from lmforge.jobs.recipe import load_recipe
    from lmforge.serve.vllm_app import llm_config, model_source

    scale = "serve.autoscaling={min_replicas: 1, max_replicas: 4, target_ongoing_requests: 24}"
    recipe = load_recipe(ROOT / "configs/plan-500b.yaml", overrides=[scale])
    cfg = recipe.serve
    assert cfg.engine == "vllm"
    config = llm_config(cfg, source="/models/lmforge-500b")
    assert type(config).__name__ == "LLMConfig"
    assert config.engine_kwargs["tensor_parallel_size"] == 8
    assert config.accelerator_type == "H100"
    assert config.model_loading_config.model_id == "lmforge-500b"
    deployment = config.deployment_config
    assert deployment["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 24,
    }
    assert deployment["max_ongoing_requests"] == cfg.max_ongoing_requests
    assert deployment["max_queued_requests"] == cfg.max_queued_requests
    assert model_source("s3://bucket/models/500b/") == {"bucket_uri": "s3://bucket/models/500b"}
    with pytest.raises(ValueError, match="accelerator"):
        cfg.accelerator_type = "no-such-gpu"
        llm_config(cfg, source="/models/x")


def test_building_the_vllm_app_without_vllm_says_how_to_install() -> None:
    pytest.importorskip("ray")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed: the app would really be built")
    except ImportError:
        pass
    from lmforge.serve.config import ServeConfig
    from lmforge.serve.vllm_app import build_vllm_app

    cfg = ServeConfig(engine="vllm", num_gpus=2, model="/m", served_model_name="m")
    with pytest.raises(ImportError, match=r"lmforge\[vllm\]"):
        build_vllm_app(cfg)


def test_serve_config_file_is_what_serve_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema
    from typer.testing import CliRunner

    from lmforge.jobs.cli import app

    monkeypatch.setenv("LMFORGE_API_KEYS", "sk-never-in-a-file")
    out = tmp_path / "serve.yaml"
    result = CliRunner().invoke(
        app,
        ["serve-config", "--config", str(ROOT / "configs/demo.yaml"), "--out", str(out),
         "--set", "serve.host=0.0.0.0", "--set", "serve.proxy_location=HeadOnly",
         "--set", "serve.autoscaling={max_replicas: 3}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sk-never-in-a-file" not in out.read_text(encoding="utf-8")
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    ServeDeploySchema.model_validate(config)
    assert config["proxy_location"] == "HeadOnly"
    assert config["http_options"]["host"] == "0.0.0.0"
    (application,) = config["applications"]
    assert application["import_path"] == "lmforge.serve.deploy:app_builder"
    args = application["args"]
    assert args["model"].startswith("models:/") and args["autoscaling"]["max_replicas"] == 3
    assert "demo_prompt" not in args and "host" not in args
    module, _, attr = application["import_path"].partition(":")
    built = getattr(importlib.import_module(module), attr)(args)
    assert isinstance(built, Application)
    # the deployment Serve would run: limits and scaling from the recipe
    from lmforge.serve.config import ServeConfig
    from lmforge.serve.deployment import ADMISSION_HEADROOM, deployment_options

    cfg = ServeConfig.model_validate(args)
    options = deployment_options(cfg)
    assert options["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in options
    assert options["max_ongoing_requests"] == (
        cfg.max_ongoing_requests + cfg.max_queued_requests + ADMISSION_HEADROOM
    )


def test_the_request_log_line_names_tokens_ttft_and_status() -> None:
    import logging

    from lmforge.serve.metrics import RequestRecord, log_request

    record = RequestRecord("req-1", "/v1/chat/completions", started=10.0)
    record.tokens([1, 2, 3], [])  # a delta without tokens: no first token yet
    assert record.ttft_s is None
    record.tokens([1, 2, 3], [7, 8])
    record.first_token = 10.25  # the clock, fixed for the line below
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            seen.append(rec.getMessage())

    logger = logging.getLogger("ray.serve")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_request(record, 200, 0.5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == [
        "request id=req-1 route=/v1/chat/completions status=200 prompt_tokens=3 "
        "completion_tokens=2 ttft_ms=250.0 latency_ms=500.0"
    ]
