"""`lmforge lineage models:/NAME@ALIAS`: where a registered model came from, run by run.

    lmforge lineage models:/lmforge-demo@candidate [--config FILE] [--json]

Prints the chain `platform.lineage.trace` walks in the recipe's MLflow store: the endpoint
that served the version, the version, its LoggedModel, the pretrain run, the token
shards, the curated and synthetic data with the runs that made them, and the raw inputs,
each with its URI and content digest.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lmforge.jobs.command import ConfigOpt, SetOpt, fail
from lmforge.jobs.recipe import load_recipe
from lmforge.platform.config import ConfigError

ModelArg = Annotated[
    str, typer.Argument(help="A registered model: models:/NAME@ALIAS or models:/NAME/VERSION.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="The chain as one JSON object.")]


def lineage_command(
    model: ModelArg, config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False
) -> None:
    """Trace a registered model back to its data: endpoint, version, LoggedModel, the
    runs that made it, and every dataset on the way (URI and digest)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from lmforge.platform import lineage

    if not model.startswith("models:/"):
        fail(f"lineage: not a registered model URI (models:/NAME@ALIAS): {model}")
    try:
        recipe = load_recipe(config, overrides=set_ or [])
    except ConfigError as e:
        fail(str(e))
        return
    assert recipe.mlflow.tracking_uri is not None
    mlflow.set_tracking_uri(recipe.mlflow.tracking_uri)
    try:
        tree = lineage.trace(model)
    except (MlflowException, ValueError) as e:
        fail(f"lineage: {model}: {str(e).splitlines()[0]}")
        return
    typer.echo(json.dumps(tree, indent=2) if as_json else "\n".join(lineage.render(tree)))
