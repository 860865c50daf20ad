"""The whole pipeline, smallest recipe, on the real parts: local Ray, DeepSpeed ZeRO-3 over
gloo under Ray Train, an MLflow server on loopback, Ray Serve called with `openai`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from mlflow.tracking import MlflowClient

from lmforge.jobs.pipeline import PipelineResult, run_pipeline
from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.platform.hf_model import load_tokenizer

from conftest import ROOT, free_port

STAGES = ["curate", "filter-synthetic", "tokenize", "pretrain", "register", "serve"]


@pytest.fixture(scope="module")
def pipeline(
    mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Recipe, PipelineResult]]:
    import ray
    from ray import serve

    work = tmp_path_factory.mktemp("e2e")
    recipe = load_recipe(
        ROOT / "configs" / "cpu-smoke.yaml",
        overrides=[
            f"workdir={work}",
            f"mlflow.tracking_uri={mlflow_server}",
            f"serve.port={free_port()}",
        ],
    )
    result = run_pipeline(recipe, keep_serving=True)
    yield recipe, result
    serve.shutdown()
    ray.shutdown()


def test_model_registered_with_alias(pipeline: tuple[Recipe, PipelineResult]) -> None:
    recipe, result = pipeline
    client = MlflowClient(tracking_uri=recipe.mlflow.tracking_uri)
    mv = client.get_model_version_by_alias(recipe.register.model_name, "candidate")
    assert mv.version == result.stages["register"].info["version"]
    assert mv.run_id == result.stages["register"].run_id


def test_parent_run_has_one_finished_child_per_stage(
    pipeline: tuple[Recipe, PipelineResult],
) -> None:
    recipe, result = pipeline
    client = MlflowClient(tracking_uri=recipe.mlflow.tracking_uri)
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    by_stage = {c.data.tags["lmforge.stage"]: c for c in children}
    assert sorted(by_stage) == sorted(STAGES) and len(children) == len(STAGES)
    assert all(c.info.status == "FINISHED" for c in children)
    m = {s: c.data.metrics for s, c in by_stage.items()}
    assert m["curate"]["rows_read"] > 0 and m["filter-synthetic"]["rows_read"] == 49
    assert m["tokenize"]["tokens"] > 0
    assert m["pretrain"]["final_train_loss"] > 0 and m["pretrain"]["steps"] == 6
    assert m["register"]["model_version"] >= 1
    assert m["serve"]["demo_completion_tokens"] >= 1
    # lineage: each stage names the run whose output it consumed
    runs = {s: c.info.run_id for s, c in by_stage.items()}
    consumed = {s: c.data.tags.get("lmforge.consumed_runs", "") for s, c in by_stage.items()}
    assert set(consumed["tokenize"].split(",")) == {runs["curate"], runs["filter-synthetic"]}
    assert consumed["pretrain"] == runs["tokenize"]
    assert consumed["register"] == runs["pretrain"]
    assert consumed["serve"] == runs["register"]
    # the loss curve is an artifact people can look at
    names = [a.path for a in client.list_artifacts(runs["pretrain"])]
    assert "loss_curve.png" in names
    history = client.get_metric_history(runs["pretrain"], "train_loss")
    assert [h.step for h in history] == [2, 4, 6]


def test_counts_reconcile_in_every_data_stage(pipeline: tuple[Recipe, PipelineResult]) -> None:
    recipe, _ = pipeline
    for folder in (recipe.curate.output, recipe.synthetic.output):
        m = json.loads((Path(folder) / "manifest.json").read_text())
        c = m["counts"]
        assert c["read"] == c["kept"] + c["dropped"] + c["quarantined"]
        assert sum(m["dropped_by_reason"].values()) == c["dropped"]
    tok = json.loads((Path(recipe.tokenize.output) / "manifest.json").read_text())
    kept = sum(
        json.loads((Path(f) / "manifest.json").read_text())["counts"]["kept"]
        for f in (recipe.curate.output, recipe.synthetic.output)
    )
    assert tok["documents"] == kept
    assert tok["splits"]["train"]["documents"] + tok["splits"]["val"]["documents"] == kept


def test_exported_model_is_hugging_face_format(pipeline: tuple[Recipe, PipelineResult]) -> None:
    from transformers import AutoModelForCausalLM

    recipe, _ = pipeline
    model_dir = Path(recipe.pretrain.output) / "model"
    assert (model_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.model_type == "llama"
    assert load_tokenizer(str(model_dir)).eos_token == "<|endoftext|>"


def test_served_model_answers_through_openai_client(
    pipeline: tuple[Recipe, PipelineResult],
) -> None:
    recipe, result = pipeline
    assert result.base_url is not None
    client = openai.OpenAI(base_url=result.base_url, api_key="unused")
    name = recipe.serve.served_model_name
    assert [m.id for m in client.models.list().data] == [name]
    tok = load_tokenizer(str(Path(recipe.pretrain.output) / "model"))

    prompt = "Return the number of items in a container"
    comp = client.completions.create(
        model=name, prompt=prompt, max_tokens=8, temperature=1.0, seed=7
    )
    assert comp.choices[0].text != ""
    assert comp.usage.prompt_tokens == len(tok(prompt).input_ids)
    assert 1 <= comp.usage.completion_tokens <= 8
    assert comp.usage.total_tokens == comp.usage.prompt_tokens + comp.usage.completion_tokens

    messages = [{"role": "user", "content": "What does os.path.join do?"}]
    chat = client.chat.completions.create(
        model=name, messages=messages, max_tokens=8, temperature=1.0, seed=7
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    templ = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert chat.usage.prompt_tokens == len(templ["input_ids"])
    assert 1 <= chat.usage.completion_tokens <= 8


def test_http_errors_follow_openai_format(pipeline: tuple[Recipe, PipelineResult]) -> None:
    _, result = pipeline
    assert result.base_url is not None
    client = openai.OpenAI(base_url=result.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    r = requests.post(f"{result.base_url}/chat/completions", json={"model": "x"}, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "messages"
