"""The MLflow Model Registry: register a Hugging Face folder, resolve an alias back.

The pretrain run logs its export as a LoggedModel (`log_model`: the model's source run is
the run that trained it); the register run makes a version of that model (`register`),
so the version's `run_id` is the training run. The model is logged as an `mlflow.pyfunc` model from code (`pyfunc_model.py`, nothing
pickled) with the Hugging Face folder as its artifact `hf_model`. A server reads the
weights back with `download_artifacts("models:/NAME@ALIAS")` and loads them with
transformers, without unpickling anything. (`mlflow.transformers.log_model` fails with
transformers 5 on a checkpoint path, so it is not used.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from lmforge.platform.config import Section
from lmforge.platform.hf_model import check_model_dir


class RegisterConfig(Section):
    """The `register` recipe section."""

    input: str | None = Field(
        None, description="Hugging Face model folder (default: <workdir>/pretrain/model)."
    )
    model_name: str = Field("lmforge-model", description="Registered model name in MLflow.")
    alias: str = Field("candidate", description="Alias set on the new model version.")


HF_ARTIFACT = "hf_model"
REGISTER_RUN_TAG = "lmforge.register_run_id"  # version tag: the run that registered it
PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
# the one module the pyfunc model imports, shipped inside the model (it imports no lmforge)
HF_MODEL_CODE = str(Path(__file__).with_name("hf_model.py"))


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME@ALIAS
    run_id: str  # the run that logged the model (its source run)
    model_id: str = ""  # the LoggedModel: models:/<model_id>


def log_model(hf_dir: str, *, tags: dict[str, str] | None = None) -> str:
    """Log `hf_dir` (a local folder or a URI) as a LoggedModel of the active run (its
    source run); returns the model id (`m-...`). A URI is downloaded first: MLflow logs
    local files only."""
    import tempfile

    import mlflow

    from lmforge.platform import storage

    with tempfile.TemporaryDirectory(prefix="lmforge-model-") as tmp:
        local = storage.download_dir(hf_dir, tmp) if storage.is_remote(hf_dir) else hf_dir
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=PYFUNC_CODE,
            artifacts={HF_ARTIFACT: local},
            code_paths=[HF_MODEL_CODE],
            # listed, not inferred: inference would import and load the model to trace it
            pip_requirements=["torch", "transformers>=5", "safetensors", "tokenizers"],
            tags=tags,
        )
    return str(info.model_id)


def register(
    hf_dir: str | None = None,
    *,
    name: str,
    alias: str,
    model_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Registered:
    """Register a new version of `name` from the LoggedModel `model_id` (logged by
    another run: the version's run is that model's source run), or else log `hf_dir` to
    the active run first; set `alias` on the version. `tags`: on the version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if model_id is None:
        if hf_dir is None:
            raise ValueError("register: give a model folder or a logged model id")
        model_id = log_model(hf_dir)
    mv = mlflow.register_model(f"models:/{model_id}", name, tags=tags)
    version = str(mv.version)
    MlflowClient().set_registered_model_alias(name, alias, version)
    return Registered(name, version, alias, f"models:/{name}@{alias}", mv.run_id or "", model_id)


def get_version(model: str) -> Any:
    """The registered version behind `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""
    from mlflow.tracking import MlflowClient

    ref = model.removeprefix("models:/")
    client = MlflowClient()
    if "@" in ref:
        name, _, alias = ref.partition("@")
        return client.get_model_version_by_alias(name, alias)
    name, _, version = ref.rpartition("/")
    if not name or not version.isdigit():
        raise ValueError(f"not a registered model URI (models:/NAME@ALIAS or NAME/N): {model}")
    return client.get_model_version(name, version)


def version_model_id(mv: Any) -> str | None:
    """The LoggedModel behind a version: its `model_id`, which MLflow's own stores leave
    empty, else its source `models:/m-...`."""
    source = str(mv.source or "")
    ref = source.removeprefix("models:/")
    return mv.model_id or (ref if source.startswith("models:/m-") else None)


def logged_model_exists(model_id: str) -> bool:
    """Whether this tracking store holds the LoggedModel `model_id`."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().get_logged_model(model_id)
    except MlflowException:
        return False
    return True


def find_version(model: str) -> Any | None:
    """The registered version behind a `models:/` URI, or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return get_version(model)
    except MlflowException:
        return None


def resolve_model_dir(model: str) -> str:
    """A local Hugging Face folder for `model`: a local path as is, or `models:/...`
    downloaded from the registry (uses MLFLOW_TRACKING_URI)."""
    if not model.startswith("models:/"):
        check_model_dir(model)  # config.json and safetensors, or a clear error
        return model
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
    # the MLmodel file says where the `hf_model` artifact landed inside the model
    mlmodel = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
    try:
        rel = mlmodel["flavors"]["python_function"]["artifacts"][HF_ARTIFACT]["path"]
    except (KeyError, TypeError):
        raise FileNotFoundError(f"{model} has no {HF_ARTIFACT!r} artifact") from None
    check_model_dir(str(local / rel))
    return str(local / rel)


def model_version_info(model: str) -> dict[str, str]:
    """Name, version, the source run and LoggedModel behind a `models:/NAME@ALIAS` (or
    `models:/NAME/VERSION`) URI, and the run that registered it (for lineage tags)."""
    mv = get_version(model)
    return {
        "name": mv.name,
        "version": str(mv.version),
        "run_id": mv.run_id or "",
        "model_id": version_model_id(mv) or "",
        "register_run_id": (mv.tags or {}).get(REGISTER_RUN_TAG, ""),
    }
