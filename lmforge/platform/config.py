"""Recipe machinery that every part shares: base classes, YAML, overrides, error messages.

A recipe is a YAML file under `configs/`. It is loaded, overridden from the command
line (`--set pretrain.max_steps=10`, `--input`, `--output`), and validated before any
cluster resource is requested; a mistake fails with one line naming the field. Each part
(`pipelines`, `train`, `serve`, `platform`) owns the typed sections of its stages; the
recipe that assembles them is built where the stages are (`lmforge.jobs.recipe`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A recipe that cannot run; the message is one line and names the field."""


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


PathList = Annotated[list[str], BeforeValidator(_as_list)]


class Section(BaseModel):
    """A recipe section: unknown fields are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RayConfig(Section):
    address: str | None = Field(
        None,
        description="Ray cluster to join. None: the RAY_ADDRESS environment variable if set "
        "(as under `ray job submit`), otherwise a new local Ray started in-process.",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs for an in-process local Ray (None: all of this machine)."
    )


class MlflowConfig(Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. None: MLFLOW_TRACKING_URI if set, otherwise a local "
        "SQLite store `mlflow.db` in the recipe's workdir.",
    )
    experiment: str = Field("lmforge", description="MLflow experiment name.")


def resolve_tracking_uri(uri: str | None, workdir: str) -> str:
    """An absolute tracking URI, so Ray workers with another cwd find the same store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        if "://" in workdir:  # s3://...: a SQLite file cannot live on object storage
            raise ConfigError(
                f"mlflow.tracking_uri: not set, and the default SQLite store cannot be in "
                f"workdir {workdir}; set mlflow.tracking_uri or MLFLOW_TRACKING_URI to the "
                "team's MLflow server"
            )
        uri = f"sqlite:///{workdir}/mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri.removeprefix("sqlite:///")).absolute()
        uri = f"sqlite:///{path}"
    return uri


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a", "b", "c"], VALUE parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. pretrain.max_steps=10")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def set_path(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """data[k0][k1]...[kn] = value, creating sections on the way."""
    node = data
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def read_recipe_data(
    path: str | os.PathLike[str] | None, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """The recipe file as a dict (empty without a file), `--set` overrides applied."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {str(e).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        data = loaded or {}
    for item in overrides:
        keys, value = parse_override(item)
        set_path(data, keys, value)
    return data


def first_error(e: ValidationError) -> str:
    """Pydantic's first error as one line: `config field 'a.b': message (got X)`."""
    err = e.errors()[0]
    field = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    got = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {err['input']!r})"
    more = f" [+{e.error_count() - 1} more]" if e.error_count() > 1 else ""
    return f"config field '{field}': {msg}{got}{more}"
