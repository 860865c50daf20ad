"""The `lmforge` command line: one subcommand per stage, plus `run` for all of them.

Every stage takes the same options (--config, --input, --output, --set) and runs the
same code as `python -m lmforge.jobs.<stage>`, which is what `ray job submit` calls.
Configuration errors print one line naming the problem and exit 2 before Ray starts.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lmforge.platform.config import STAGE_SECTIONS, ConfigError, Recipe, load_recipe

STAGE_MODULES = {
    "curate": "lmforge.jobs.curate",
    "filter-synthetic": "lmforge.jobs.filter_synthetic",
    "tokenize": "lmforge.jobs.tokenize",
    "pretrain": "lmforge.jobs.pretrain",
    "register": "lmforge.jobs.register",
    "serve": "lmforge.jobs.serve",
}
DECONTAM_STAGES = {"curate", "filter-synthetic"}
STAGE_HELP = {
    "curate": "Read raw documents, normalize, filter and deduplicate them (Ray Data).",
    "filter-synthetic": "Filter GPT-4-style instruction data: refusals, identity claims, "
    "malformed turns (Ray Data).",
    "tokenize": "Train a byte-level BPE tokenizer and pack token shards (Ray Data).",
    "pretrain": "Pretrain a Llama-style model with DeepSpeed ZeRO on Ray Train.",
    "register": "Log the trained model to MLflow and register it with an alias.",
    "serve": "Serve a model behind an OpenAI-compatible API on Ray Serve.",
}

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Recipe YAML (see configs/).")
]
InputOpt = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="Input path or URI (repeatable); overrides the recipe."),
]
OutputOpt = Annotated[
    str | None, typer.Option("--output", "-o", help="Output folder or URI; overrides the recipe.")
]
EvalSetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--eval-set",
        help="Evaluation set to decontaminate against (repeatable): GSM8K-style JSONL, "
        "HumanEval .jsonl.gz, MMLU-style CSV; the format is recognised from the file.",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: KEY=VALUE, e.g. pretrain.max_steps=10."),
]

app = typer.Typer(
    help="lmforge: raw corpora to a served LLM on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def fail(message: str) -> None:
    """One line on stderr and exit status 2: the user's input is at fault, not lmforge."""
    typer.echo(f"lmforge: error: {message}", err=True)
    raise typer.Exit(2)


def prepare(
    stage: str | None,
    config: Path | None,
    input: list[str] | None,
    output: str | None,
    sets: list[str] | None,
) -> Recipe:
    """Load and validate the recipe and the stage's inputs, before any Ray call."""
    try:
        recipe = load_recipe(config, overrides=sets or [], stage=stage, input=input, output=output)
        # in a whole run, later stages read what earlier ones make: check the first two
        stages = [stage] if stage else ["curate", "filter-synthetic"]
        for s in stages:
            importlib.import_module(STAGE_MODULES[s]).validate(recipe)
    except ConfigError as e:
        fail(str(e))
        raise AssertionError from None  # unreachable: fail() exits
    return recipe


def _make_stage_command(stage: str) -> Any:
    def run_stage(
        config: Path | None,
        input: list[str] | None,
        output: str | None,
        sets: list[str] | None,
        eval_sets: list[str] | None = None,
    ) -> None:
        sets = list(sets or [])
        if eval_sets:  # appended to the recipe's own list
            section = STAGE_SECTIONS[stage]
            base = load_recipe_quietly(config, sets)
            current = getattr(base, section).decontam.eval_sets if base else []
            sets.append(f"{section}.decontam.eval_sets={json.dumps(current + eval_sets)}")
        recipe = prepare(stage, config, input, output, sets)
        result = importlib.import_module(STAGE_MODULES[stage]).run(recipe)
        if result is not None:
            _summary(result)

    if stage in DECONTAM_STAGES:

        def command(
            config: ConfigOpt = None,
            input: InputOpt = None,
            output: OutputOpt = None,
            set_: SetOpt = None,
            eval_set: EvalSetOpt = None,
        ) -> None:
            run_stage(config, input, output, set_, eval_set)

    else:

        def command(  # type: ignore[misc]
            config: ConfigOpt = None,
            input: InputOpt = None,
            output: OutputOpt = None,
            set_: SetOpt = None,
        ) -> None:
            run_stage(config, input, output, set_)

    command.__doc__ = STAGE_HELP[stage]
    return command


def load_recipe_quietly(config: Path | None, sets: list[str]) -> Recipe | None:
    """The recipe as far as it loads; `prepare` reports any error properly."""
    try:
        return load_recipe(config, overrides=sets)
    except ConfigError:
        return None


def _summary(result: Any) -> None:
    typer.echo(f"[lmforge {result.stage}] MLflow run {result.run_id}")
    if result.output:
        typer.echo(f"[lmforge {result.stage}] output: {result.output}")
    for key, value in sorted(result.metrics.items()):
        if key.startswith("rows_") or key in ("tokens", "sequences", "final_train_loss"):
            typer.echo(f"  {key}: {value:g}")


for _stage in STAGE_MODULES:
    app.command(_stage, help=STAGE_HELP[_stage])(_make_stage_command(_stage))


@app.command("run")
def run_all(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Run every stage as one MLflow pipeline run, then serve the model and ask it."""
    recipe = prepare(None, config, None, None, set_)
    from lmforge.jobs.pipeline import run_pipeline

    run_pipeline(recipe)


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


def stage_main(stage: str) -> None:
    """Entry point of `python -m lmforge.jobs.<stage>`: the same options as the CLI."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(help=STAGE_HELP[stage])(_make_stage_command(stage))
    single(prog_name=f"python -m {STAGE_MODULES[stage]}")


def main() -> None:
    app(prog_name="lmforge")


if __name__ == "__main__":
    main()
