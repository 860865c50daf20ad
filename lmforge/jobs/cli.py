"""The `lmforge` command line: one subcommand per stage of the table, `run` for all of
them, and `presets` for sizing models on paper.

    lmforge <stage> --config FILE [--input PATH]... [--output PATH] [--set KEY=VALUE]...
"""

from __future__ import annotations

import typer

from lmforge.jobs.command import stage_command
from lmforge.jobs.pipeline import run_command
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


def main() -> None:
    app(prog_name="lmforge")


if __name__ == "__main__":
    main()
