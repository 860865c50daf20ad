"""The whole pipeline, smallest recipe, as the README runs it: `lmforge run` in a process
of its own, on the real parts (local Ray, DeepSpeed ZeRO-3 over gloo under Ray Train, an
MLflow server on loopback), left serving on Ray Serve and called with `openai`, then
stopped with Ctrl-C (SIGINT) as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import requests
import torch
from mlflow.tracking import MlflowClient

from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.platform.hf_model import load_tokenizer

from conftest import ROOT, free_port, lmforge_cmd

STAGES = ["curate", "filter-synthetic", "tokenize", "pretrain", "register", "serve"]
RUN_TIMEOUT_S = 1800  # the whole pipeline on 2 cores takes 3-6 minutes


@dataclass
class Run:
    """What `lmforge run` printed: the pipeline's MLflow run, the endpoint, its output."""

    run_id: str
    base_url: str
    output: str

    def child_runs(self, recipe: Recipe) -> dict[str, str]:
        """stage -> the run id of its child run."""
        client = MlflowClient(tracking_uri=recipe.mlflow.tracking_uri)
        parent = client.get_run(self.run_id)
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{self.run_id}'"
        )
        return {c.data.tags["lmforge.stage"]: c.info.run_id for c in children}


@pytest.fixture(scope="module")
def pipeline(
    mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Recipe, Run]]:
    work = tmp_path_factory.mktemp("e2e")
    sets = [
        f"workdir={work}",
        f"mlflow.tracking_uri={mlflow_server}",
        f"serve.port={free_port()}",
        "serve.blocking=true",  # serve until Ctrl-C, as `make demo` does
    ]
    config = ROOT / "configs" / "pretrain-cpu-smoke.yaml"
    cmd = [*lmforge_cmd(), "run", "--config", str(config)]
    cmd += [arg for item in sets for arg in ("--set", item)]
    log = work / "lmforge-run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work, start_new_session=True
        )
    try:
        text = wait_for_line(proc, log, "MLflow UI:")
        run_id = re.search(r"pipeline MLflow run: (\w+)", text)
        base_url = re.search(r"\[lmforge serve\] \S+ at (\S+)", text)
        assert run_id and base_url, text[-3000:]
        yield load_recipe(config, overrides=sets), Run(run_id[1], base_url[1], text)
    finally:
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: Serve shuts down, Ray with the driver
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            raise AssertionError(
                f"lmforge run did not stop on Ctrl-C:\n{log.read_text()[-2000:]}"
            ) from None
        assert code == 0, log.read_text()[-2000:]


def wait_for_line(proc: subprocess.Popen, log: Path, marker: str) -> str:
    deadline = time.time() + RUN_TIMEOUT_S
    while True:
        text = log.read_text(errors="replace")
        if marker in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"lmforge run exited {proc.returncode}:\n{text[-4000:]}")
        if time.time() > deadline:
            raise AssertionError(
                f"lmforge run did not finish in {RUN_TIMEOUT_S} s:\n{text[-4000:]}"
            )
        time.sleep(2)


def test_run_prints_the_answer_and_where_to_look(pipeline: tuple[Recipe, Run]) -> None:
    recipe, run = pipeline
    assert re.search(r"served answer \(lmforge-smoke\): '.*'", run.output)
    assert f"MLflow UI: open {recipe.mlflow.tracking_uri} in a browser" in run.output
    for stage in STAGES:
        assert f"=== lmforge: {stage} ===" in run.output


def test_model_registered_with_alias(pipeline: tuple[Recipe, Run]) -> None:
    recipe, run = pipeline
    client = MlflowClient(tracking_uri=recipe.mlflow.tracking_uri)
    mv = client.get_model_version_by_alias(recipe.register.model_name, "candidate")
    runs = run.child_runs(recipe)
    register = client.get_run(runs["register"])
    assert float(mv.version) == register.data.metrics["model_version"]
    # the pretrain run logged the model; the version is of that LoggedModel, so its run
    # is the run that trained it
    manifest = json.loads((Path(recipe.pretrain.output) / "manifest.json").read_text())
    assert mv.run_id == runs["pretrain"]
    assert mv.source == f"models:/{manifest['model_id']}"
    assert client.get_logged_model(manifest["model_id"]).source_run_id == runs["pretrain"]
    assert [m.model_id for m in register.inputs.model_inputs] == [manifest["model_id"]]
    assert mv.tags["lmforge.register_run_id"] == runs["register"]
    exp = client.get_experiment_by_name(recipe.mlflow.experiment)
    assert exp is not None and exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_lineage_names_the_shards_and_the_raw_input(pipeline: tuple[Recipe, Run]) -> None:
    recipe, run = pipeline
    cmd = [*lmforge_cmd(), "lineage", f"models:/{recipe.register.model_name}@candidate"]
    cmd += ["--set", f"mlflow.tracking_uri={recipe.mlflow.tracking_uri}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    tokens = json.loads((Path(recipe.tokenize.output) / "manifest.json").read_text())
    assert f"input   {recipe.tokenize.output}  digest {tokens['digest']}" in out
    assert "input   builtin:python-docs" in out and "builtin:synthetic-examples" in out
    assert f"endpoint  {run.base_url}" in out
    assert run.child_runs(recipe)["pretrain"] in out
    for folder in (recipe.curate.output, recipe.synthetic.output, recipe.pretrain.output):
        m = json.loads((Path(folder) / "manifest.json").read_text())
        assert len(m["digest"]) == 32 and m["recipe_digest"] and all(m["input_digests"].values())


def test_parent_run_has_one_finished_child_per_stage(pipeline: tuple[Recipe, Run]) -> None:
    recipe, run = pipeline
    client = MlflowClient(tracking_uri=recipe.mlflow.tracking_uri)
    parent = client.get_run(run.run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run.run_id}'"
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


def test_counts_reconcile_in_every_data_stage(pipeline: tuple[Recipe, Run]) -> None:
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


def test_exported_model_is_hugging_face_format(pipeline: tuple[Recipe, Run]) -> None:
    from transformers import AutoModelForCausalLM

    from lmforge.train.loop import probe_ids

    recipe, run = pipeline
    model_dir = Path(recipe.pretrain.output) / "model"
    assert (model_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.config.model_type == "llama"
    assert load_tokenizer(str(model_dir)).eos_token == "<|endoftext|>"
    # the weights ZeRO-3 gathered are the trained ones: the loss the engine measured on
    # a fixed probe after the last step is what the loaded export gives
    x = probe_ids(model.config.vocab_size, recipe.tokenize.seq_len)
    with torch.no_grad():
        exported = float(model(input_ids=x, labels=x).loss)
    client = MlflowClient(tracking_uri=recipe.mlflow.tracking_uri)
    logged = client.get_run(run.child_runs(recipe)["pretrain"]).data.metrics["final_probe_loss"]
    assert exported == pytest.approx(logged, rel=1e-5, abs=1e-5)


def test_registered_pyfunc_model_predicts_what_the_exported_model_generates(
    pipeline: tuple[Recipe, Run],
) -> None:
    """`mlflow.pyfunc.load_model("models:/NAME@candidate").predict` works for any MLflow
    tool, and answers as the Hugging Face folder does (greedy, same weights)."""
    import mlflow
    from transformers import AutoModelForCausalLM

    recipe, _ = pipeline
    mlflow.set_tracking_uri(recipe.mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{recipe.register.model_name}@candidate")
    prompts = ["Return the number of items", "def join(a, b):"]
    got = model.predict(prompts)
    model_dir = Path(recipe.pretrain.output) / "model"
    tok = load_tokenizer(str(model_dir))
    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    for prompt, answer in zip(prompts, got, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = hf.generate(ids, max_new_tokens=32, do_sample=False)
        assert answer == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_served_model_answers_through_openai_client(
    pipeline: tuple[Recipe, Run],
) -> None:
    recipe, run = pipeline
    client = openai.OpenAI(base_url=run.base_url, api_key="unused")
    name = recipe.serve.served_model_name
    assert [m.id for m in client.models.list().data] == [name]
    # the served model says which registry version and training run it is
    mv = MlflowClient(recipe.mlflow.tracking_uri).get_model_version_by_alias(
        recipe.register.model_name, "candidate"
    )
    card = client.models.list().data[0].model_extra or {}
    assert card["lmforge_registry_version"] == mv.version
    assert card["lmforge_run_id"] == mv.run_id
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


def test_http_errors_follow_openai_format(pipeline: tuple[Recipe, Run]) -> None:
    _, run = pipeline
    client = openai.OpenAI(base_url=run.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    r = requests.post(f"{run.base_url}/chat/completions", json={"model": "x"}, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "messages"
