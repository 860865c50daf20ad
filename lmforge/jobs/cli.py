"""The `lmforge` command line: one subcommand per stage of the table, `run` for all of
them, `presets` for sizing models on paper, `plan` for a whole training run on paper and
`lineage` for where a registered model came from.

    lmforge <stage> --config FILE [--input PATH]... [--output PATH] [--set KEY=VALUE]...
"""

from __future__ import annotations

from typing import Any

import typer

from lmforge.jobs.command import stage_command
from lmforge.jobs.kube import kube_command
from lmforge.jobs.lineage import lineage_command
from lmforge.jobs.pipeline import run_command
from lmforge.jobs.serve_config import serve_config_command
from lmforge.jobs.stages import STAGES

app = typer.Typer(
    help="lmforge: raw corpora to a served LLM on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _stage in STAGES:
    app.command(_stage.name, help=_stage.help)(stage_command(_stage.name))
app.command("run")(run_command)
app.command("kube")(kube_command)
app.command("lineage")(lineage_command)
app.command("serve-config")(serve_config_command)


@app.command("presets")
def presets(
    vocab_size: int = typer.Option(32000, help="Vocabulary size for the count."),
    gpus: int = typer.Option(8, help="GPUs that shard the model states."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object, keyed by preset."),
) -> None:
    """List model presets with parameter counts (the model built on the meta device) and
    per-GPU memory of weights, gradients and Adam states by ZeRO stage."""
    import json

    from lmforge.train.presets import PRESETS, estimate

    if as_json:
        out = {}
        for name, p in PRESETS.items():
            s = estimate(p, vocab_size=vocab_size, num_gpus=gpus)
            out[name] = {
                "params": s.params,
                "params_non_embedding": s.params_non_embedding,
                "vocab_size": vocab_size,
                "gpus": gpus,
                "model_states_gib_per_gpu": {
                    f"zero{z}": round(s.bytes_per_gpu[z] / 2**30, 3) for z in range(4)
                },
                "shape": p.as_dict(),
            }
        typer.echo(json.dumps(out, indent=2))
        return

    typer.echo(f"{'preset':8} {'params':>10}  GiB/GPU of weights+grads+Adam on {gpus} GPUs")
    typer.echo(f"{'':8} {'':>10}  {'ZeRO-0':>8} {'ZeRO-1':>8} {'ZeRO-2':>8} {'ZeRO-3':>8}")
    for name, p in PRESETS.items():
        s = estimate(p, vocab_size=vocab_size, num_gpus=gpus)
        mem = " ".join(f"{s.bytes_per_gpu[z] / 2**30:8.1f}" for z in range(4))
        typer.echo(f"{name:8} {s.params / 1e9:9.3f}B  {mem}")


# PlanInput field -> the `plan` option that sets it, to name the option in an error
_PLAN_OPTIONS = {
    "preset": "--preset / --params",
    "params": "--params",
    "layers": "--layers",
    "d_model": "--d-model",
    "heads": "--heads",
    "vocab_size": "--vocab-size",
    "tokens": "--tokens",
    "seq_len": "--seq-len",
    "global_batch_tokens": "--global-batch",
    "gpu": "--gpu",
    "gpus": "--gpus",
    "zero_stage": "--zero-stage",
    "tp": "--tp",
    "pp": "--pp",
    "mfu": "--mfu",
    "micro_batch_size": "--micro-batch",
    "mtbf_hours": "--mtbf-hours",
    "checkpoint_write_s": "--checkpoint-write-s",
    "restart_s": "--restart-s",
}


def _count(text: str | None, option: str) -> float | None:
    from lmforge.train.planner import parse_count

    if text is None:
        return None
    try:
        return parse_count(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


def _si(x: float) -> str:
    """1.5e12 -> '1.50T'."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.2f}{suffix}"
    return f"{x:.3g}"


def _plan_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """The human table, made from `Plan.as_dict()` so that it says what --json says."""
    mem = d["memory_gib"]
    bound = "communication-bound" if d["communication_bound"] else "compute-bound"
    return [
        ("model", f"{d['model']}: {_si(d['params'])} params, {d['layers']} layers"),
        ("shape", f"d_model {d['d_model']}, {d['heads']} heads, seq_len {d['seq_len']:,}"),
        ("layout", f"{d['gpus']:,} x {d['gpu']} = TP {d['tp']} x PP {d['pp']} x DP {d['dp']}"),
        ("sharding", f"ZeRO-{d['zero_stage']}, micro-batch {d['micro_batch_size']}"),
        ("tokens", f"{_si(d['tokens'])} in {d['steps']:,.0f} steps"),
        ("step", f"{_si(d['global_batch_tokens'])} tokens, {d['grad_accum_steps']} micro-steps"),
        ("FLOPs/token", f"{d['flops_per_token']:.4g} (6·N + 12·L·d·s)"),
        ("throughput", f"{_si(d['tokens_per_s'])} tokens/s, {d['tflops_per_gpu']:.0f} TFLOP/s/GPU"),
        ("time", f"{d['days']:.1f} days"),
        ("GPU-hours", f"{d['gpu_hours'] / 1e6:.2f}M GPU-hours (MFU {d['mfu']:.1%})"),
        ("memory/GPU", f"{d['memory_per_gpu_gib']:.1f} GiB of {d['capacity_gib']:.1f} usable"),
        *[(f"  {k}", f"{mem[k]:.1f} GiB") for k in mem if k != "total"],
        ("fits", "yes" if d["fits"] else "no"),
        ("min GPUs", "never" if d["min_gpus"] is None else f"{d['min_gpus']:,}"),
        ("step time", f"compute {d['step_compute_s']:.2f} s, ZeRO comm {d['step_comm_s']:.2f} s"),
        ("bound", f"{bound} at {d['comm_bandwidth_gbps']:g} GB/s per GPU"),
        ("MTBF", f"{d['mtbf_hours']:.2f} h per job"),
        ("checkpoint", f"every {d['checkpoint_interval_min']:.1f} min (Young/Daly)"),
        ("failures", f"{d['expected_failures']:,.0f} expected"),
        ("overhead", f"{d['overhead_fraction']:.1%} (checkpoints, lost work, restarts)"),
    ]


@app.command("plan")
def plan(
    preset: str | None = typer.Option(None, help="Model preset (see `lmforge presets`)."),
    params: str | None = typer.Option(
        None, help="Parameter count instead of a preset: 405e9, 4.05e11, 405B, 7b."
    ),
    layers: int | None = typer.Option(
        None, help="Layers, with --params (default: nearest preset)."
    ),
    d_model: int | None = typer.Option(
        None, help="Width, with --params (default: nearest preset)."
    ),
    heads: int | None = typer.Option(None, help="Attention heads (default: d_model / 128)."),
    vocab_size: int = typer.Option(128256, help="Vocabulary size."),
    tokens: str | None = typer.Option(
        None, help="Training tokens, e.g. 15.6e12 or 15.6T (default: 20 per parameter)."
    ),
    seq_len: int = typer.Option(8192, help="Tokens per sequence."),
    global_batch: str = typer.Option("4194304", help="Tokens per optimizer step, e.g. 16M."),
    gpu: str = typer.Option("H100-SXM", help="GPU type (see --list-gpus)."),
    gpus: int = typer.Option(8, help="GPUs in the job."),
    zero_stage: int = typer.Option(3, help="DeepSpeed ZeRO stage (0-3)."),
    tp: int = typer.Option(1, help="Tensor-parallel degree."),
    pp: int = typer.Option(1, help="Pipeline-parallel degree."),
    mfu: float = typer.Option(0.4, help="Model FLOPs utilisation to assume."),
    activation_checkpointing: bool = typer.Option(True, help="Recompute layers in backward."),
    flash_attention: bool = typer.Option(True, help="Attention scores not stored (SDPA)."),
    micro_batch: int = typer.Option(1, help="Sequences per GPU per micro-step."),
    mtbf_hours: float | None = typer.Option(
        None, help="Job MTBF in hours (default: Llama 3's failure rate at --gpus)."
    ),
    checkpoint_write_s: float = typer.Option(60.0, help="Seconds to write a checkpoint."),
    restart_s: float = typer.Option(300.0, help="Seconds from a failure to training again."),
    list_gpus: bool = typer.Option(False, "--list-gpus", help="Print the GPU table and exit."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object."),
) -> None:
    """A training run on paper: GPU-hours and days at an MFU, memory per GPU (ZeRO model
    states, activations per Korthikanti et al. 2022), the fewest GPUs that fit, step
    compute against ZeRO communication, and the Young/Daly checkpoint interval."""
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from lmforge.train import hardware, planner

    if list_gpus:
        if as_json:
            typer.echo(json.dumps({n: asdict(g) for n, g in hardware.GPUS.items()}, indent=2))
            return
        table = Table(title="dense BF16 peak; bandwidths in GB/s per GPU, one direction")
        table.add_column("GPU", no_wrap=True)
        for column in ("TFLOP/s", "GiB", "in node", "network"):
            table.add_column(column, justify="right")
        table.add_column("aliases", overflow="fold")
        for g in hardware.GPUS.values():
            table.add_row(
                g.name,
                f"{g.peak_bf16_tflops:g}",
                f"{g.memory_gib:g}",
                f"{g.intra_node_gbps:g}",
                f"{g.inter_node_gbps:g}",
                ", ".join(g.aliases),
            )
        Console().print(table)
        return
    inp = planner.PlanInput(
        preset=preset,
        params=_count(params, "--params"),
        layers=layers,
        d_model=d_model,
        heads=heads,
        vocab_size=vocab_size,
        tokens=_count(tokens, "--tokens"),
        seq_len=seq_len,
        global_batch_tokens=_count(global_batch, "--global-batch") or 0.0,
        gpu=gpu,
        gpus=gpus,
        zero_stage=zero_stage,
        tp=tp,
        pp=pp,
        mfu=mfu,
        activation_checkpointing=activation_checkpointing,
        micro_batch_size=micro_batch,
        flash_attention=flash_attention,
        mtbf_hours=mtbf_hours,
        checkpoint_write_s=checkpoint_write_s,
        restart_s=restart_s,
    )
    try:
        result = planner.plan(inp).as_dict()
    except planner.PlanError as e:
        raise typer.BadParameter(str(e), param_hint=_PLAN_OPTIONS.get(e.field, e.field)) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table("", "", show_header=False, box=None, title="lmforge plan")
    for label, value in _plan_rows(result):
        table.add_row(label, value)
    Console().print(table)
    for note in result["notes"]:
        typer.echo(f"note: {note}")


def main() -> None:
    app(prog_name="lmforge")


if __name__ == "__main__":
    main()
