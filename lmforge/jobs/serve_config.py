"""`lmforge serve-config`: a recipe's Serve config file, for `serve deploy` on a cluster.

    lmforge serve-config --config configs/plan-500b.yaml --out serve.yaml
    serve deploy serve.yaml          # or: serve run serve.yaml

The file names `lmforge.serve.deploy:app_builder` with the recipe's serve section as
`args`, and carries `proxy_location` and `http_options` (host, port, the proxy's request
timeout); it is checked against Serve's own schema before it is written. The RayService
of `lmforge kube` embeds the same file (`lmforge.serve.deployment.serve_config_file`).
No key is in it: replicas read LMFORGE_API_KEYS of their node or `serve.api_keys_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from lmforge.jobs.command import SetOpt, fail
from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.platform.config import ConfigError
from lmforge.serve.deployment import serve_config_file


def serve_config(recipe: Recipe, *, address: bool = True) -> dict[str, Any]:
    """The recipe's Serve config file as a dict, validated by `ServeDeploySchema`."""
    from ray.serve.schema import ServeDeploySchema

    found = serve_config_file(recipe.serve, address=address)
    ServeDeploySchema.model_validate(found)
    return found


def serve_config_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Recipe YAML (see configs/).")],
    out: Annotated[Path, typer.Option("--out", help="The Serve config file to write.")],
    set_: SetOpt = None,
) -> None:
    """Write the recipe's Serve config file (`serve deploy FILE`, `serve run FILE`)."""
    try:
        found = serve_config(load_recipe(config, overrides=set_ or []))
    except ConfigError as e:
        fail(str(e))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(found, sort_keys=False), encoding="utf-8")
    typer.echo(str(out))
