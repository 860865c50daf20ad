"""Recipes: every shipped recipe validates; bad input fails in one line before Ray starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lmforge.jobs.recipe import load_recipe
from lmforge.platform.config import ConfigError
from lmforge.train.presets import PRESETS, estimate

from conftest import ROOT, lmforge_cmd

RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.pretrain.preset in PRESETS
    # each stage reads what the one before it writes
    assert recipe.tokenize.input == [recipe.curate.output, recipe.synthetic.output]
    assert recipe.pretrain.input == recipe.tokenize.output
    assert recipe.serve.model == f"models:/{recipe.register.model_name}@{recipe.register.alias}"


def test_gpu_recipes_fit_h100_memory() -> None:
    """The GPU recipes' model states fit 80 GB H100s under their ZeRO stage."""
    for name in ("1b-1gpu", "7b-8xh100", "500b-plan"):
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["curate", "--input", "/nonexistent/corpus.jsonl", "--output", "OUT"], "input not found"),
        (["pretrain", "--set", "pretrain.max_steps=lots"], "config field 'pretrain.max_steps'"),
        (["pretrain", "--set", "pretrain.preset=gpt5"], "unknown preset 'gpt5'"),
        (["tokenize", "--config", "missing.yaml"], "config file not found"),
    ],
)
def test_cli_fails_in_one_line_before_ray(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    proc = subprocess.run(
        [*lmforge_cmd(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lmforge: error: ") and message in lines[0]
    # nothing was started or written: no Ray session, no output, no MLflow store
    assert "Started a local Ray instance" not in proc.stdout + proc.stderr
    assert list(tmp_path.iterdir()) == []
