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
) -> None:
    """List model presets with parameter counts and per-GPU memory by ZeRO stage."""
    from lmforge.train.presets import PRESETS, estimate

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
