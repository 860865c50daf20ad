"""The MLflow Model Registry: register a Hugging Face folder, resolve an alias back.

The model is logged as an `mlflow.pyfunc` model from code (`pyfunc_model.py`, nothing
pickled) with the Hugging Face folder as its artifact `hf_model`. A server reads the
weights back with `download_artifacts("models:/NAME@ALIAS")` and loads them with
transformers, without unpickling anything. (`mlflow.transformers.log_model` fails with
transformers 5 on a checkpoint path, so it is not used.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))
# the one module the pyfunc model imports, shipped inside the model (it imports no lmforge)
HF_MODEL_CODE = str(Path(__file__).with_name("hf_model.py"))


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME@ALIAS
    run_id: str


def register(hf_dir: str, *, name: str, alias: str) -> Registered:
    """Log `hf_dir` to the active run, register a new version of `name`, set `alias`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=PYFUNC_CODE,
        artifacts={HF_ARTIFACT: hf_dir},
        code_paths=[HF_MODEL_CODE],
        # listed, not inferred: inference would import and load the model to trace it
        pip_requirements=["torch", "transformers>=5", "safetensors", "tokenizers"],
        registered_model_name=name,
    )
    client = MlflowClient()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    run = mlflow.active_run()
    return Registered(
        name, version, alias, f"models:/{name}@{alias}", run.info.run_id if run else ""
    )


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
    """Name, version and run id behind a `models:/NAME@ALIAS` URI (for lineage tags)."""
    from mlflow.tracking import MlflowClient

    name, _, alias = model.removeprefix("models:/").partition("@")
    mv = MlflowClient().get_model_version_by_alias(name, alias)
    return {"name": name, "version": str(mv.version), "run_id": mv.run_id or ""}
