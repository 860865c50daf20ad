"""`lmforge plan` against published training budgets, and its memory, communication and
checkpoint arithmetic against the formulas it cites.

Budgets are predicted, never fitted: each MFU comes from a source other than the budget
it is checked against, and is stated where it is used. Tolerance is 25%: the planner
knows nothing of a run's restarts, evaluation or stragglers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lmforge.jobs.cli import app
from lmforge.train import hardware, memory
from lmforge.train.planner import (
    PlanError,
    PlanInput,
    memory_fit,
    parse_count,
    plan,
    zero_comm_bytes,
)

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["plan", *args])


def cli_json(*args: str) -> dict[str, Any]:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# --- published budgets ------------------------------------------------------------------


def test_llama31_405b_gpu_hours_match_the_model_card() -> None:
    """Llama 3.1 405B: 15.6T tokens on 16,384 H100s at 400 TFLOP/s per GPU (Llama 3
    paper, Table 4: TP 8, PP 16, seq 8192, 16M-token batches); the model card gives
    30.84M H100-hours. 6·N alone would give 26.3M; the attention term brings it to 28.4M."""
    p = plan(
        PlanInput(
            preset="405b",
            tokens=15.6e12,
            seq_len=8192,
            global_batch_tokens=16 * 2**20,
            gpu="H100-SXM",
            gpus=16384,
            tp=8,
            pp=16,
            zero_stage=1,
            mfu=400 / 989,
        )
    )
    d = p.as_dict()
    assert d["tflops_per_gpu"] == pytest.approx(400)
    assert d["dp"] == 128 and d["grad_accum_steps"] == 16
    # N of 6·N is all but the input embedding (405.85B - 128,256 x 16,384)
    assert d["flops_params"] == pytest.approx(405.85e9 - 128256 * 16384, rel=1e-3)
    assert d["gpu_hours"] == pytest.approx(30.84e6, rel=0.25), d["gpu_hours"]
    # the attention term is in: 6·N alone is 7% lower
    assert d["gpu_hours"] > 6 * d["flops_params"] * 15.6e12 / 400e12 / 3600 * 1.05
    # hours, days and GPUs agree
    assert d["days"] * 24 * 16384 == pytest.approx(d["gpu_hours"], rel=1e-9)


def test_llama2_70b_gpu_hours_through_the_cli() -> None:
    """Llama 2 70B: 1,720,320 A100-80GB hours for 2T tokens at 4,096 (Llama 2 paper,
    Table 2). The `70b` preset is Llama 3 70B's shape; at Llama 2's 32,000-token
    vocabulary it is Llama 2 70B, 68.98B parameters. MFU: Llama 1's published throughput
    on the same hardware, 380 tokens/s/GPU for 65B at 2,048 on A100-80GB (Touvron et al.
    2023a, section 2.4), which is 49% MFU by the same FLOP count."""
    mfu = 380 * hardware.flops_per_token(65.2e9 - 32000 * 8192, 80, 8192, 2048) / 312e12
    assert mfu == pytest.approx(0.49, abs=0.01)
    d = cli_json(
        "--preset", "70b", "--vocab-size", "32000", "--tokens", "2e12", "--seq-len", "4096",
        "--global-batch", "4M", "--gpu", "A100-SXM-80GB", "--gpus", "2048", "--tp", "8",
        "--zero-stage", "1", "--mfu", str(mfu),
    )  # fmt: skip
    assert d["params"] == pytest.approx(68.98e9, rel=1e-3)
    assert d["gpu_hours"] == pytest.approx(1_720_320, rel=0.25), d["gpu_hours"]


def test_bloom_176b_gpu_hours_through_the_cli() -> None:
    """BLOOM 176B: 1,082,990 A100-80GB hours for 366B tokens at 2,048 (BLOOM paper,
    section 3.5; 70 layers, d_model 14,336, 250,880-token padded vocabulary). The paper's
    156 TFLOP/s per GPU is Megatron-DeepSpeed's count, which includes the recomputed
    forward of activation checkpointing (factor 4 rather than 3): model FLOPs are 3/4 of
    it, 117 TFLOP/s. BLOOM ties its embeddings, which `--params` does not know: N is then
    2% low, and the budget includes 3.5 months of restarts: the planner comes in under."""
    d = cli_json(
        "--params", "176.247B", "--layers", "70", "--d-model", "14336", "--vocab-size",
        "250880", "--tokens", "366e9", "--seq-len", "2048", "--global-batch", "4194304",
        "--gpu", "A100-80GB", "--gpus", "384", "--tp", "4", "--pp", "12",
        "--zero-stage", "1", "--mfu", str(156 * 3 / 4 / 312),
    )  # fmt: skip
    assert (d["layers"], d["d_model"], d["heads"]) == (70, 14336, 112)
    assert d["gpu_hours"] == pytest.approx(1_082_990, rel=0.25), d["gpu_hours"]


# --- memory -------------------------------------------------------------------------------


def test_zero3_model_states_scale_as_one_over_gpus_and_zero1_only_the_optimizer() -> None:
    def states(stage: int, gpus: int) -> dict[str, float]:
        inp = PlanInput(preset="70b", gpus=gpus, zero_stage=stage)
        return plan(inp).as_dict()["memory_gib"]

    a, b = states(3, 64), states(3, 128)
    for part in ("weights", "gradients", "optimizer"):
        assert b[part] == pytest.approx(a[part] / 2, rel=1e-9), part
    params = plan(PlanInput(preset="70b", gpus=64)).model.params
    assert a["weights"] + a["gradients"] + a["optimizer"] == pytest.approx(
        16 * params / 64 / 2**30, rel=1e-9
    )
    # ZeRO-1: the 12 bytes of Adam sharded, the 2 + 2 of weights and gradients not
    z1a, z1b = states(1, 64), states(1, 128)
    assert z1b["optimizer"] == pytest.approx(z1a["optimizer"] / 2, rel=1e-9)
    assert z1b["weights"] == z1a["weights"] == pytest.approx(2 * params / 2**30, rel=1e-9)
    assert z1b["gradients"] == z1a["gradients"]


def test_activations_follow_korthikanti_and_checkpointing_reduces_them() -> None:
    s, b, h, a, L = 1024, 2, 512, 8, 4
    kw: dict[str, Any] = dict(seq_len=s, micro_batch_size=b, d_model=h, heads=a, layers=L)
    full = memory.activation_bytes(**kw, activation_checkpointing=False, flash_attention=False)
    assert full == L * s * b * h * (34 + 5 * a * s / h)
    # tensor + sequence parallelism divide both terms by t
    tp2 = memory.activation_bytes(**kw, tp=2, activation_checkpointing=False, flash_attention=False)
    assert tp2 == full / 2
    # full recomputation: each layer's input, plus one layer's activations
    ckpt = memory.activation_bytes(**kw, activation_checkpointing=True, flash_attention=False)
    assert ckpt == L * 2 * s * b * h + s * b * h * (34 + 5 * a * s / h)
    # FlashAttention stores no a×s×s scores
    flash = memory.activation_bytes(**kw, activation_checkpointing=False)
    assert flash == L * s * b * h * 34
    # 1F1B: the first stage holds pp micro-batches of L/pp layers, L layers' worth
    pp2 = memory.activation_bytes(**kw, pp=2, activation_checkpointing=False, flash_attention=False)
    assert pp2 == full

    on = plan(PlanInput(preset="8b", activation_checkpointing=True)).as_dict()
    off = plan(PlanInput(preset="8b", activation_checkpointing=False)).as_dict()
    assert on["memory_gib"]["activations"] < off["memory_gib"]["activations"] / 5
    assert on["activations_gib"] == off["activations_gib"]
    assert on["memory_per_gpu_gib"] < off["memory_per_gpu_gib"]


def test_405b_does_not_fit_on_one_node_and_min_gpus_is_the_fewest_that_do() -> None:
    p = plan(PlanInput(preset="405b", gpu="H100-SXM", gpus=8, zero_stage=3))
    assert not p.fits and p.memory_per_gpu_gib > 80
    assert p.min_gpus is not None and p.min_gpus > 8 and p.min_gpus % 8 == 0
    at_min = plan(PlanInput(preset="405b", gpus=p.min_gpus, zero_stage=3))
    below = plan(PlanInput(preset="405b", gpus=p.min_gpus - 8, zero_stage=3))
    assert at_min.fits and not below.fits
    assert at_min.min_gpus == p.min_gpus  # the answer does not depend on --gpus
    # ZeRO-0 shards nothing: no number of GPUs makes 405B fit
    assert plan(PlanInput(preset="405b", gpus=64, zero_stage=0)).min_gpus is None


def test_memory_fit_agrees_with_plan_and_names_its_parts() -> None:
    kw: dict[str, Any] = dict(preset="70b", gpus=64, zero_stage=3, seq_len=8192)
    p = plan(PlanInput(**kw, micro_batch_size=2, activation_checkpointing=False))
    fit = memory_fit(
        **kw,
        vocab_size=128256,
        micro_batch_size=2,
        gpu="H100-SXM",
        activation_checkpointing=False,
    )
    fits, per_gpu, capacity, parts = fit  # a named tuple: unpacked or by field
    assert (fit.fits, fit.per_gpu_gib, fit.capacity_gib) == (fits, per_gpu, capacity)
    assert (fits, per_gpu, capacity) == (p.fits, p.memory_per_gpu_gib, p.capacity_gib)
    assert fit.summary.startswith(f"activations {parts['activations']:.1f}, ")
    assert capacity == 80 * memory.MEMORY_HEADROOM and fits == (per_gpu <= capacity)
    assert set(parts) >= {"weights", "gradients", "optimizer", "activations", "total"}
    assert parts["total"] == pytest.approx(per_gpu)
    with pytest.raises(PlanError) as e:
        memory_fit(**{**kw, "gpus": 12}, vocab_size=128256, micro_batch_size=1, gpu="H100",
                   activation_checkpointing=True, tp=8)  # fmt: skip
    assert e.value.field == "gpus"
    # a count passed with the preset (as recipe validation does) must be that preset's
    common: dict[str, Any] = dict(vocab_size=128256, seq_len=8192, micro_batch_size=1,
                                  gpu="H100-SXM", gpus=64, zero_stage=3,
                                  activation_checkpointing=True)  # fmt: skip
    same = memory_fit(preset="70b", params=p.model.params, **common)
    assert same == memory_fit(preset="70b", **common)
    with pytest.raises(PlanError) as e:
        memory_fit(preset="70b", params=8e9, **common)
    assert e.value.field == "params"


def test_the_500b_plan_recipe_fits_on_h100() -> None:
    """`configs/500b-plan.yaml` (or `plan-500b.yaml`), loaded as `lmforge` loads it, fits
    the H100s it is written for with its own pretrain and tokenize sections."""
    from lmforge.jobs.recipe import load_recipe

    found = sorted(ROOT.glob("configs/500b-plan.yaml")) + sorted(
        ROOT.glob("configs/plan-500b.yaml")
    )
    assert found, "configs/500b-plan.yaml (or plan-500b.yaml) is missing"
    r = load_recipe(found[0])
    p = r.pretrain
    assert p.precision == "bf16", "the memory model is mixed-precision Adam"
    gpu = getattr(p, "gpu", None) or "H100-SXM"
    fits, per_gpu, capacity, parts = memory_fit(
        preset=p.preset,
        vocab_size=r.tokenize.vocab_size,
        seq_len=r.tokenize.seq_len,
        micro_batch_size=p.micro_batch_size,
        gpu=gpu,
        gpus=p.num_workers,
        zero_stage=p.zero_stage,
        activation_checkpointing=p.activation_checkpointing,
    )
    largest = ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if k != "total"
    )
    assert fits, (
        f"{found[0].name}: {per_gpu:.1f} GiB per GPU does not fit the {capacity:.1f} GiB "
        f"usable on {gpu} ({p.num_workers} GPUs, ZeRO-{p.zero_stage}); GiB by part: {largest}"
    )
    # ZeRO-3 over its GPUs: 16 bytes of model states per parameter, sharded
    states = parts["weights"] + parts["gradients"] + parts["optimizer"]
    assert states == pytest.approx(16 * 501.48e9 / p.num_workers / 2**30, rel=1e-3)


# --- communication, failures, checkpoints ---------------------------------------------------


def test_zero_communication_volume_and_which_link_carries_it() -> None:
    one = 1e9  # parameters per model-parallel rank
    ddp = zero_comm_bytes(one, 64, 1, grad_accum=1)
    assert ddp == pytest.approx(2 * 63 / 64 * 2 * one)  # ring all-reduce of bf16 grads
    assert zero_comm_bytes(one, 64, 2, grad_accum=1) == pytest.approx(ddp)
    assert zero_comm_bytes(one, 64, 3, grad_accum=1) == pytest.approx(1.5 * ddp)  # 3Ψ vs 2Ψ
    assert zero_comm_bytes(one, 64, 3, grad_accum=4) == pytest.approx(6 * ddp)
    assert zero_comm_bytes(one, 64, 1, grad_accum=4) == pytest.approx(ddp)
    assert zero_comm_bytes(one, 1, 3, grad_accum=4) == 0.0

    node = plan(PlanInput(preset="8b", gpus=8, global_batch_tokens=8 * 8192))
    short = dict(seq_len=2048, global_batch_tokens=64 * 2048)
    cluster = plan(PlanInput(preset="8b", gpus=64, **short))
    assert node.comm_bandwidth_gbps == hardware.get_gpu("H100-SXM").intra_node_gbps
    assert cluster.comm_bandwidth_gbps == hardware.get_gpu("H100-SXM").inter_node_gbps
    assert cluster.communication_bound == (cluster.step_comm_s > cluster.step_compute_s)
    # ZeRO-3 with one 2,048-token micro-batch per GPU: 8B's 47 GB of traffic per GPU per
    # step (3 passes x 2 bytes x 8.03B) take 0.95 s at 50 GB/s, its compute 0.25 s
    assert cluster.communication_bound
    assert cluster.step_comm_s == pytest.approx(3 * 63 / 64 * 2 * cluster.model.params / 50e9)
    # 16 micro-steps: ZeRO-1 reduces once per step and hides behind 16x the compute;
    # ZeRO-3 gathers and reduce-scatters at every micro-step and stays bound
    accum = dict(seq_len=2048, global_batch_tokens=16 * 64 * 2048)
    assert not plan(PlanInput(preset="8b", gpus=64, zero_stage=1, **accum)).communication_bound
    assert plan(PlanInput(preset="8b", gpus=64, zero_stage=3, **accum)).communication_bound


def test_young_daly_interval_and_the_llama3_failure_rate() -> None:
    p = plan(PlanInput(preset="8b", gpus=64, mtbf_hours=2.0, checkpoint_write_s=30.0))
    assert p.checkpoint_interval_s == math.sqrt(2 * 30.0 * 2.0 * 3600)
    assert p.as_dict()["checkpoint_interval_min"] == p.checkpoint_interval_s / 60
    tau, mtbf = p.checkpoint_interval_s, 2.0 * 3600
    lost = (tau + 30.0) / 2 + 300.0
    assert p.overhead_fraction == pytest.approx(30.0 / tau + lost / mtbf)
    days_s = p.days * 86400
    assert p.expected_failures == pytest.approx(days_s * (1 + p.overhead_fraction) / mtbf)

    def mtbf_at(gpus: int) -> float:
        return plan(PlanInput(preset="8b", gpus=gpus, global_batch_tokens=gpus * 8192)).mtbf_hours

    assert mtbf_at(16384) == 54 * 24 / 419  # 419 interruptions in 54 days on 16,384 GPUs
    assert mtbf_at(1024) == pytest.approx(16 * 54 * 24 / 419)


# --- the command line ---------------------------------------------------------------------------


def test_json_has_the_keys_and_the_table_says_the_same() -> None:
    args = ("--preset", "70b", "--tokens", "15T", "--gpus", "512", "--global-batch", "16M")
    d = cli_json(*args)
    for key in (
        "gpu_hours", "days", "memory_per_gpu_gib", "fits", "min_gpus",
        "checkpoint_interval_min", "tokens_per_s", "step_compute_s", "step_comm_s",
        "communication_bound", "memory_gib", "expected_failures", "overhead_fraction",
    ):  # fmt: skip
        assert key in d, key
    assert d["tokens"] == 15e12
    # 16M is rounded to whole micro-steps: 4 x (512 GPUs x 8,192 tokens)
    assert (d["global_batch_tokens"], d["grad_accum_steps"]) == (16 * 2**20, 4)
    assert d["steps"] == 15e12 / 2**24 and any("rounded" in n for n in d["notes"])
    human = cli(*args)
    assert human.exit_code == 0, human.output
    out = human.stdout
    for text in (
        f"{d['gpu_hours'] / 1e6:.2f}M GPU-hours",
        f"{d['days']:.1f} days",
        f"{d['memory_per_gpu_gib']:.1f} GiB of {d['capacity_gib']:.1f} usable",
        f"every {d['checkpoint_interval_min']:.1f} min",
        f"compute {d['step_compute_s']:.2f} s, ZeRO comm {d['step_comm_s']:.2f} s",
        f"{d['min_gpus']:,}",
        "fits             yes" if d["fits"] else "fits             no",
    ):
        assert text in out, (text, out)


def test_bad_input_names_the_option() -> None:
    cases = {
        ("--params", "405x"): "--params",
        ("--preset", "405b", "--gpus", "12", "--tp", "8"): "--gpus",
        ("--preset", "405b", "--gpu", "V100"): "--gpu",
        ("--preset", "405b", "--mfu", "1.5"): "--mfu",
        ("--preset", "8b", "--global-batch", "1000"): "--global-batch",
        ("--tokens", "1T",): "--preset / --params",
    }  # fmt: skip
    for args, option in cases.items():
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert option in r.output, (args, r.output)
    listing = cli("--list-gpus", "--json")
    assert listing.exit_code == 0
    assert json.loads(listing.stdout)["B200"]["peak_bf16_tflops"] == 2250


def test_parse_count_and_shape_from_the_nearest_preset() -> None:
    assert parse_count("405e9") == parse_count("4.05e11") == parse_count("405B") == 405e9
    assert parse_count("7b") == 7e9 and parse_count("15.6T") == 15.6e12
    assert parse_count("16M") == 16e6 and parse_count("2_000") == 2000
    with pytest.raises(ValueError):
        parse_count("seven")
    d = cli_json("--params", "70e9")
    assert (d["layers"], d["d_model"], d["heads"]) == (80, 8192, 64)
    assert d["model"] == "nearest preset 70b"


# --- the GPU table ------------------------------------------------------------------------------


def test_gpu_names_aliases_and_device_strings() -> None:
    assert hardware.get_gpu("h100").name == hardware.get_gpu("H100 SXM").name == "H100-SXM"
    assert hardware.get_gpu("a100-sxm4-80gb").name == "A100-SXM-80GB"
    with pytest.raises(ValueError, match=r"H100-SXM, .*MI300X"):
        hardware.get_gpu("TPU-v5p")
    peaks = {
        "NVIDIA H100 80GB HBM3": 989.0,
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H100 NVL": 835.0,
        "NVIDIA H200": 989.0,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA A100-SXM4-40GB": 312.0,
        "NVIDIA L40S": 362.0,
        "NVIDIA B200": 2250.0,
        "AMD Instinct MI300X": 1307.4,
        # lookalikes with other peaks: unknown, so MFU is left out rather than wrong
        "NVIDIA GB200": None,
        "NVIDIA L40": None,
        "NVIDIA H200 NVL": None,
        "NVIDIA GH200 480GB": None,
        "Tesla V100-SXM2-32GB": None,
    }
    for name, peak in peaks.items():
        assert hardware.peak_tflops_for_device(name) == peak, name
    spec = hardware.gpu_for_device("NVIDIA A100-SXM4-40GB")
    assert spec is not None and spec.name == "A100-40GB"


def test_flops_per_token_is_palms() -> None:
    assert hardware.flops_per_token(1e9, 10, 1000, 2000) == 6e9 + 12 * 10 * 1000 * 2000
