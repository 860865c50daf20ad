"""The options every stage takes, and the command that runs one stage from the table.

Every stage takes the same options (--config, --input, --output, --set; --eval-set where
it decontaminates) and runs the same code as `lmforge <stage>` and as
`python -m lmforge.jobs.<stage>`, which is what `ray job submit` calls. Configuration
errors print one line naming the problem and exit 2 before Ray starts.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.jobs.stages import FIRST_STAGES, get_stage
from lmforge.platform.config import ConfigError

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


def fail(message: str) -> None:
    """One line on stderr and exit status 2: the user's input is at fault, not lmforge."""
    typer.echo(f"lmforge: error: {message}", err=True)
    raise typer.Exit(2)


def stage_module(name: str) -> Any:
    """The entry-point module of a stage (its `validate` and `run`)."""
    return importlib.import_module(get_stage(name).module)


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
        for name in [stage] if stage else FIRST_STAGES:
            stage_module(name).validate(recipe)
    except ConfigError as e:
        fail(str(e))
        raise AssertionError from None  # unreachable: fail() exits
    return recipe


def with_eval_sets(
    stage: str, config: Path | None, sets: list[str], eval_sets: list[str]
) -> list[str]:
    """`--eval-set` files appended to the recipe's own `<section>.decontam.eval_sets`."""
    section = get_stage(stage).section
    try:
        current = getattr(load_recipe(config, overrides=sets), section).decontam.eval_sets
    except ConfigError:
        current = []  # `prepare` reports the error properly
    return [*sets, f"{section}.decontam.eval_sets={json.dumps(current + eval_sets)}"]


def stage_command(stage: str) -> Callable[..., None]:
    """The typer command of one stage: options parsed, recipe validated, stage run."""

    def run_stage(
        config: Path | None,
        input: list[str] | None,
        output: str | None,
        sets: list[str] | None,
        eval_sets: list[str] | None = None,
    ) -> None:
        sets = list(sets or [])
        if eval_sets:
            sets = with_eval_sets(stage, config, sets, eval_sets)
        recipe = prepare(stage, config, input, output, sets)
        result = stage_module(stage).run(recipe)
        if result is not None:
            summary(result)

    if get_stage(stage).decontaminates:

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

    command.__doc__ = get_stage(stage).help
    return command


def summary(result: Any) -> None:
    typer.echo(f"[lmforge {result.stage}] MLflow run {result.run_id}")
    if result.output:
        typer.echo(f"[lmforge {result.stage}] output: {result.output}")
    for key, value in sorted(result.metrics.items()):
        if key.startswith("rows_") or key in ("tokens", "sequences", "final_train_loss"):
            typer.echo(f"  {key}: {value:g}")


def run_single(command: Callable[..., None], *, help: str, prog_name: str) -> None:
    """Run one command as a whole program (`python -m lmforge.jobs.<stage>`)."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(help=help)(command)
    single(prog_name=prog_name)


def stage_main(stage: str) -> None:
    """Entry point of `python -m lmforge.jobs.<stage>`: the same options as the CLI."""
    s = get_stage(stage)
    run_single(stage_command(stage), help=s.help, prog_name=f"python -m {s.module}")
