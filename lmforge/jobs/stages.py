"""The one table of stages: the command line, `lmforge run` and the docs read it.

A stage is a module under `lmforge.jobs` with two functions:

    validate(recipe) -> None            raise ConfigError naming the field; touches no cluster
    run(recipe, *, parent_run_id=None)  -> StageResult; one MLflow run (a child when given)

and the recipe section it reads (`Recipe.<section>`). Modules are named, not imported,
so that reading the table costs nothing and no entry point imports another at load time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Stage:
    """name: the subcommand (`lmforge curate`). module: what `python -m` runs.
    section: the recipe section. help: one line for `--help` and the README table.
    decontaminates: takes `--eval-set` (appended to `<section>.decontam.eval_sets`).
    input_field: the section field `--input` sets. many_inputs: `--input` is repeatable
    (a list field) rather than one path."""

    name: str
    module: str
    section: str
    help: str
    decontaminates: bool = False
    input_field: str = "input"
    many_inputs: bool = False


STAGES: tuple[Stage, ...] = (
    Stage(
        name="curate",
        module="lmforge.jobs.curate",
        section="curate",
        help="Read raw documents, normalize, filter and deduplicate them (Ray Data).",
        decontaminates=True,
        many_inputs=True,
    ),
    Stage(
        name="filter-synthetic",
        module="lmforge.jobs.filter_synthetic",
        section="synthetic",
        help="Filter GPT-4-style instruction data: refusals, identity claims, "
        "malformed turns (Ray Data).",
        decontaminates=True,
        many_inputs=True,
    ),
    Stage(
        name="tokenize",
        module="lmforge.jobs.tokenize",
        section="tokenize",
        help="Train a byte-level BPE tokenizer and pack token shards (Ray Data).",
        many_inputs=True,
    ),
    Stage(
        name="pretrain",
        module="lmforge.jobs.pretrain",
        section="pretrain",
        help="Pretrain a Llama-style model with DeepSpeed ZeRO on Ray Train.",
    ),
    Stage(
        name="register",
        module="lmforge.jobs.register",
        section="register",
        help="Log the trained model to MLflow and register it with an alias.",
    ),
    Stage(
        name="serve",
        module="lmforge.jobs.serve",
        section="serve",
        help="Serve a model behind an OpenAI-compatible API on Ray Serve.",
        input_field="model",
    ),
)
BY_NAME = {s.name: s for s in STAGES}
# `lmforge run` validates these before Ray starts: the later stages read what they make
FIRST_STAGES = ("curate", "filter-synthetic")


def get_stage(name: str) -> Stage:
    return BY_NAME[name]
