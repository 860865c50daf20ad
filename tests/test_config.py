"""Recipes: every shipped recipe validates; bad input fails in one line before Ray starts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from lmforge.jobs.command import with_eval_sets
from lmforge.jobs.recipe import load_recipe
from lmforge.platform.config import ConfigError
from lmforge.train.presets import PRESETS, estimate

from conftest import ROOT, lmforge_cmd

RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_validate(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # as on a cluster's nodes: cluster-s3's workdir is on S3, where no SQLite store can be
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    recipe = load_recipe(path)
    assert recipe.pretrain.preset in PRESETS
    # each stage reads what the one before it writes
    assert recipe.tokenize.input == [recipe.curate.output, recipe.synthetic.output]
    assert recipe.pretrain.input == recipe.tokenize.output
    assert recipe.serve.model == f"models:/{recipe.register.model_name}@{recipe.register.alias}"


def test_workdir_on_s3_needs_a_tracking_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=r"^mlflow.tracking_uri: not set, .* s3://lmforge/work"):
        load_recipe(ROOT / "configs" / "cluster-s3.yaml")


def test_gpu_recipes_fit_h100_memory() -> None:
    """The GPU recipes' model states fit 80 GB H100s under their ZeRO stage."""
    for name in ("pretrain-1b-1gpu", "pretrain-8b-8xh100", "plan-500b"):
        r = load_recipe(ROOT / "configs" / f"{name}.yaml")
        assert r.pretrain.use_gpu and r.pretrain.precision == "bf16"
        s = estimate(
            PRESETS[r.pretrain.preset],
            vocab_size=r.tokenize.vocab_size,
            num_gpus=r.pretrain.num_workers,
        )
        assert s.bytes_per_gpu[r.pretrain.zero_stage] < 40 * 2**30, name


def test_preset_sizes_match_the_models_they_copy() -> None:
    assert estimate(PRESETS["7b"], vocab_size=32000, num_gpus=1).params == 6_738_415_616
    assert abs(estimate(PRESETS["1b"], vocab_size=128256, num_gpus=1).params_b - 1.236) < 0.01
    assert 450 < estimate(PRESETS["500b"], vocab_size=128256, num_gpus=1).params_b < 550


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pretrain.max_steps=abc"], "config field 'pretrain.max_steps'"),
        (["pretrain.preset=huge"], "unknown preset 'huge'"),
        (["pretrain.zero_stage=5"], "config field 'pretrain.zero_stage'"),
        (["curate.min_chars=-1"], "config field 'curate.min_chars'"),
        (["pretrain.nonsense=1"], "config field 'pretrain.nonsense': unknown field"),
        (["pretrain"], "expected KEY=VALUE"),
    ],
)
def test_bad_fields_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_recipe(ROOT / "configs" / "demo.yaml", overrides=overrides)


def test_eval_set_is_appended_to_the_recipes_list(tmp_path: Path) -> None:
    """`--eval-set B` adds B to the recipe's `curate.decontam.eval_sets` (A stays), and to
    what a `--set` of that list put there: the flag never replaces the recipe's sets."""
    a, b, c = (str(tmp_path / f"{n}.jsonl") for n in "abc")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"curate:\n  min_chars: 50\n  decontam:\n    eval_sets: [{a}]\n")

    sets = with_eval_sets("curate", recipe, ["curate.min_chars=60"], [b])
    final = load_recipe(recipe, overrides=sets)
    assert final.curate.decontam.eval_sets == [a, b]
    assert final.curate.min_chars == 60  # the other --set still applies
    assert final.synthetic.decontam.eval_sets == []  # another stage's list is not touched

    sets = with_eval_sets("curate", recipe, [f"curate.decontam.eval_sets=[{c}]"], [b])
    assert load_recipe(recipe, overrides=sets).curate.decontam.eval_sets == [c, b]
    sets = with_eval_sets("filter-synthetic", recipe, [], [b, c])
    final = load_recipe(recipe, overrides=sets)
    assert final.synthetic.decontam.eval_sets == [b, c]
    assert final.curate.decontam.eval_sets == [a]


@pytest.mark.parametrize(
    "args",
    [
        ["--vocab-size", "32000", "--gpus", "8"],  # the defaults, spelled out
        ["--vocab-size", "128256", "--gpus", "2"],
    ],
    ids=["defaults", "llama3-vocab-2-gpus"],
)
def test_presets_lists_every_preset_with_its_sizing(tmp_path: Path, args: list[str]) -> None:
    """`lmforge presets` prints one row per preset of PRESETS, in order, with the parameter
    count and the per-GPU GiB of ZeRO-0..3 that `estimate` gives for those options."""
    vocab_size, gpus = int(args[1]), int(args[3])
    proc = subprocess.run(
        [*lmforge_cmd(), "presets", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    header, columns, *rows = proc.stdout.splitlines()
    assert f"on {gpus} GPUs" in header
    assert columns.split() == ["ZeRO-0", "ZeRO-1", "ZeRO-2", "ZeRO-3"]
    printed = {}
    for row in rows:
        m = re.fullmatch(r"(\S+) +([\d.]+)B((?: +[\d.]+){4})", row)
        assert m is not None, row
        printed[m[1]] = (m[2], m[3].split())
    assert list(printed) == list(PRESETS)
    for name, preset in PRESETS.items():
        s = estimate(preset, vocab_size=vocab_size, num_gpus=gpus)
        gib = [f"{s.bytes_per_gpu[z] / 2**30:.1f}" for z in range(4)]
        assert printed[name] == (f"{s.params / 1e9:.3f}", gib), name


# Files each case needs, made under `given/` before the command runs.
TOKENS_MANIFEST = (
    '{{"seq_len": {seq_len}, "vocab_size": 128256, '
    '"splits": {{"train": {{"sequences": {train}}}, "val": {{"sequences": 0}}}}}}'
)
PICKLE_ONLY = {"pickle-model/config.json": "{}", "pickle-model/pytorch_model.bin": "not opened"}
EVAL_RECIPE = {
    "corpus.jsonl": '{"id": "d1", "text": "a document"}\n',
    "eval-a.jsonl": '{"question": "What is two plus two, written out?", "answer": "4"}\n',
    "recipe.yaml": "curate:\n  decontam:\n    eval_sets: [GIVEN/eval-a.jsonl]\n",
}


@pytest.mark.parametrize(
    ("args", "given", "message"),
    [
        (["curate", "--input", "/nonexistent/corpus.jsonl", "--output", "OUT"], {},
         "curate.input: input not found: /nonexistent/corpus.jsonl"),
        (["pretrain", "--set", "pretrain.max_steps=lots"], {}, "config field 'pretrain.max_steps'"),
        (["pretrain", "--set", "pretrain.preset=gpt5"], {}, "unknown preset 'gpt5'"),
        (["tokenize", "--config", "missing.yaml"], {}, "config file not found"),
        (["tokenize", "--input", "GIVEN/missing.jsonl", "--output", "OUT"], {},
         "tokenize.input: input not found: GIVEN/missing.jsonl"),
        (["pretrain", "--input", "GIVEN/tokens", "--output", "OUT"], {"tokens/train/x": ""},
         "pretrain.input: GIVEN/tokens has no manifest.json; run `tokenize` first"),
        (["register", "--input", "GIVEN/model"], {"model/model.safetensors": ""},
         "register.input: not a Hugging Face model folder (no config.json): GIVEN/model"),
        (["serve", "--input", "GIVEN/pickle-model"], PICKLE_ONLY,
         "serve.model: GIVEN/pickle-model holds only pickle weights (pytorch_model.bin); "
         "lmforge loads safetensors only"),
        (["curate", "--config", "GIVEN/recipe.yaml", "--input", "GIVEN/corpus.jsonl",
          "--output", "OUT", "--eval-set", "GIVEN/eval-b.jsonl"], EVAL_RECIPE,
         "curate.decontam.eval_sets: file not found: GIVEN/eval-b.jsonl"),
        (["pretrain", "--input", "GIVEN/tokens", "--output", "OUT", "--set", "ray.num_cpus=2",
          "--set", "pretrain.num_workers=2", "--set", "pretrain.cpus_per_worker=1"],
         {"tokens/manifest.json": '{"seq_len": 64}'},
         "pretrain.cpus_per_worker: 2 workers x 1 CPU reserve 2 of the local Ray's 2 CPUs"),
        (["pretrain", "--input", "GIVEN/tokens", "--output", "OUT", "--set", "ray.num_cpus=2",
          "--set", "pretrain.num_workers=1", "--set", "pretrain.preset=70b",
          "--set", "pretrain.gpu=H100-SXM"],
         {"tokens/manifest.json": TOKENS_MANIFEST.format(seq_len=8192, train=10**6)},
         "pretrain.gpu: 70b needs"),
        (["pretrain", "--set", "pretrain.gpu=H900"], {}, "config field 'pretrain.gpu'"),
        (["pretrain", "--input", "GIVEN/tokens", "--output", "OUT", "--set", "ray.num_cpus=2",
          "--set", "pretrain.preset=tiny", "--set", "pretrain.cpus_per_worker=0.5"],
         {"tokens/manifest.json": TOKENS_MANIFEST.format(seq_len=1024, train=10**6)},
         "pretrain.preset: tiny allows sequences of 512 tokens, the token shards hold 1024"),
        (["pretrain", "--input", "GIVEN/tokens", "--output", "OUT", "--set", "ray.num_cpus=2",
          "--set", "pretrain.preset=tiny", "--set", "pretrain.cpus_per_worker=0.5",
          "--set", "pretrain.grad_accum_steps=4"],
         {"tokens/manifest.json": TOKENS_MANIFEST.format(seq_len=64, train=40)},
         "pretrain.micro_batch_size: one global batch is 64 sequences"),
    ],
    ids=["curate-input", "pretrain-field", "pretrain-preset", "tokenize-config",
         "tokenize-input", "pretrain-no-manifest", "register-no-config", "serve-pickle",
         "curate-eval-set", "pretrain-cpus", "pretrain-memory", "pretrain-gpu-name",
         "pretrain-seq-len", "pretrain-global-batch"],
)  # fmt: skip
def test_cli_fails_in_one_line_before_ray(
    tmp_path: Path, args: list[str], given: dict[str, str], message: str
) -> None:
    """Each mistake exits 2 with one line naming the field (or stage) and the path, before
    Ray starts and before anything is written."""
    work, folder = tmp_path / "work", tmp_path / "given"
    work.mkdir()
    for name, text in given.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text.replace("GIVEN", str(folder)))
    before = sorted(folder.rglob("*"))

    def fill(a: str) -> str:
        return a.replace("OUT", str(tmp_path / "out")).replace("GIVEN", str(folder))

    proc = subprocess.run(
        [*lmforge_cmd(), *map(fill, args)], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lmforge: error: ") and fill(message) in lines[0], lines[0]
    # nothing was started or written: no Ray session, no output, no MLflow store
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert list(work.iterdir()) == []
    assert not (tmp_path / "out").exists()
    assert sorted(folder.rglob("*")) == before


def test_presets_json_counts_the_built_model_and_matches_llama_3(tmp_path: Path) -> None:
    """`lmforge presets --json`: counts from the model built on the meta device; the Llama 3
    shapes give Meta's published sizes and the MAI-1 plan is 500B within 2%, at the
    128,256-token vocabulary of Llama 3 and `configs/plan-500b.yaml`."""
    import json

    proc = subprocess.run(
        [*lmforge_cmd(), "presets", "--json", "--vocab-size", "128256", "--gpus", "1024"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == list(PRESETS)
    published = {"8b": 8.03e9, "70b": 70.55e9, "405b": 405.85e9}  # Llama 3 / 3.1 model cards
    for name, params in published.items():
        assert out[name]["params"] == pytest.approx(params, rel=0.005), name
    assert out["500b"]["params"] == pytest.approx(500e9, rel=0.02)
    # ZeRO-3 on the plan's 1,024 GPUs: 16 bytes of model states per parameter, sharded
    zero3 = out["500b"]["model_states_gib_per_gpu"]["zero3"]
    assert zero3 == pytest.approx(16 * out["500b"]["params"] / 1024 / 2**30, abs=1e-3)
    assert out["tiny"]["params"] == estimate(PRESETS["tiny"], vocab_size=128256, num_gpus=1).params


def test_gpu_recipes_configure_deepspeed_for_gpus_and_mfu_has_a_peak() -> None:
    """The GPU path, checked where there is no GPU: the 8B recipe's DeepSpeed config is
    bf16 ZeRO-3 with communication overlap and the 4M-token step its comment states, and
    the device names CUDA reports map to the peaks MFU divides by (unknown ones to None:
    MFU is then omitted, not invented)."""
    from lmforge.train.hardware import peak_tflops_for_device
    from lmforge.train.sharding import deepspeed_config

    r = load_recipe(ROOT / "configs" / "pretrain-8b-8xh100.yaml")
    ds = deepspeed_config(r.pretrain)
    assert ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["overlap_comm"]
    assert zero["stage3_gather_16bit_weights_on_model_save"]  # the export gathers weights
    step = ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"]
    assert step * r.pretrain.num_workers * r.tokenize.seq_len == 4 * 2**20
    assert peak_tflops_for_device("NVIDIA H100 80GB HBM3") == 989
    assert peak_tflops_for_device("NVIDIA A100-SXM4-80GB") == 312
    assert peak_tflops_for_device("Some Future GPU") is None
