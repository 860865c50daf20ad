"""Everything lmforge says to MLflow goes through this module (plus `registry.py`).

A stage runs inside `stage_run(...)`: one MLflow run, a child of the pipeline run when
there is one. Inputs are recorded with their producing run (read from the input's
`manifest.json`), so any output can be traced back to the data and run that made it;
inputs and outputs are MLflow datasets carrying the content digest of `digest.py`.
Training workers log from rank 0 only, through `RunLogger`, by run id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from lmforge.platform import storage
from lmforge.platform.digest import of_input
from lmforge.platform.storage import read_manifest

PARENT_TAG = "mlflow.parentRunId"
# the experiment tag that opens the MLflow UI on its model-training view (runs, models,
# datasets) rather than the GenAI one (traces); read from MLflow's UI source
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
OUTPUT_CONTEXT = "output"  # the `mlflow.data.context` of a stage's output dataset


def setup(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        if KIND_TAG not in exp.tags:  # a kind someone chose stays
            MlflowClient().set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        mlflow.set_experiment(experiment)
        return str(exp.experiment_id)
    location = None
    if tracking_uri.startswith("sqlite:///"):
        # keep a local store's artifacts beside its database, not in ./mlruns of the cwd
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        location = (db.parent / "mlartifacts").as_uri()
    exp_id = mlflow.create_experiment(experiment, artifact_location=location, tags={KIND_TAG: KIND})
    mlflow.set_experiment(experiment)
    return str(exp_id)


@contextmanager
def stage_run(
    stage: str,
    *,
    params: dict[str, Any],
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """An MLflow run for one stage; yields its run id. Failures mark the run FAILED.
    `resume_run_id`: continue that run (a resubmitted job), its params already logged."""
    parent = parent_run_id or os.environ.get("LMFORGE_PARENT_RUN_ID")
    if resume_run_id:
        with mlflow.start_run(run_id=resume_run_id, nested=bool(parent)) as run:
            mlflow.set_tag("lmforge.resumed", "true")
            yield run.info.run_id
        return
    tags = {"lmforge.stage": stage}
    if parent:
        tags[PARENT_TAG] = parent
    with mlflow.start_run(run_name=stage, tags=tags, nested=bool(parent)) as run:
        mlflow.log_params(_flatten(params))
        yield run.info.run_id


@contextmanager
def pipeline_run(name: str, *, params: dict[str, Any]) -> Iterator[str]:
    """The parent run of `lmforge run`; stages started inside become its children."""
    with mlflow.start_run(run_name=name, tags={"lmforge.stage": "pipeline"}) as run:
        mlflow.log_params(_flatten(params))
        yield run.info.run_id


def log_metrics(
    metrics: dict[str, float],
    step: int | None = None,
    *,
    model_id: str | None = None,
    dataset: Any = None,
) -> None:
    """`model_id`, `dataset`: the LoggedModel and the dataset the values are about (the
    MLflow UI shows them on the model's page)."""
    mlflow.log_metrics(
        {k: float(v) for k, v in metrics.items()}, step=step, model_id=model_id, dataset=dataset
    )


def log_artifact(path: str, artifact_path: str | None = None) -> None:
    """Log a file or folder, local or on object storage (`s3://...`: copied through a
    local temporary folder, as MLflow logs only local files)."""
    if storage.is_remote(path):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            fs, inner = storage.filesystem(path)
            if fs.get_file_info(inner).is_file:
                local = os.path.join(tmp, os.path.basename(inner))
                with fs.open_input_stream(inner) as src, open(local, "wb") as dst:
                    dst.write(src.read())
            else:
                local = storage.download_dir(path, os.path.join(tmp, "dir"))
            log_artifact(local, artifact_path)
        return
    if Path(path).is_dir():
        mlflow.log_artifacts(path, artifact_path)
    else:
        mlflow.log_artifact(path, artifact_path)


def log_dict(data: dict[str, Any], name: str) -> None:
    mlflow.log_dict(data, name)


def log_figure(figure: Any, name: str) -> None:
    """Log a matplotlib figure as an image artifact, then close it (frees its memory)."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, name)
    plt.close(figure)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric of a run."""
    return [(m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key)]


def log_text(text: str, name: str) -> None:
    mlflow.log_text(text, name)


def set_tags(tags: dict[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def record_inputs(
    uris: list[str],
    *,
    context: str = "input",
    digests: Mapping[str, str | None] | None = None,
) -> list[str]:
    """Tag the active run with each input and the run that produced it; log them as
    MLflow dataset inputs with their content digest (`digest.of_input`, unless given in
    `digests`). Returns the producing run ids that were found."""
    producers: list[str] = []
    for i, uri in enumerate(uris):
        manifest = read_manifest(uri) if not uri.startswith(("builtin:", "hf:")) else None
        producer = (manifest or {}).get("mlflow_run_id")
        tags = {f"lmforge.input.{i}.uri": uri}
        if producer:
            tags[f"lmforge.input.{i}.run_id"] = producer
            producers.append(producer)
        set_tags(tags)
        found = digests.get(uri) if digests is not None and uri in digests else of_input(uri)
        mlflow.log_input(dataset(uri, found), context=context)
    if producers:
        set_tags({"lmforge.consumed_runs": ",".join(producers)})
    return producers


def dataset(uri: str, digest: str | None) -> Any:
    """An MLflow dataset naming `uri` (its folder name) with its content digest."""
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    # HTTPDatasetSource only stores the string: it is the one source type that
    # accepts local paths and s3:// alike without reading them.
    name = Path(uri.rstrip("/")).name
    return MetaDataset(HTTPDatasetSource(uri), name=name, digest=digest)  # type: ignore[abstract]


def record_output(uri: str, digest: str | None) -> None:
    """Log a stage's output as a dataset of its run. MLflow 3 has run outputs for models
    only (`log_outputs`), so a data output is a dataset input with context "output"."""
    mlflow.log_input(dataset(uri, digest), context=OUTPUT_CONTEXT)
    set_tags({"lmforge.output_digest": digest or ""})


def record_model_input(model_id: str) -> None:
    """Link a LoggedModel to the active run as its input (the register run)."""
    from mlflow.entities import LoggedModelInput

    mlflow.log_input(model=LoggedModelInput(model_id))


def skipped_run(stage: str, *, parent_run_id: str, reused_run_id: str, output: str) -> str:
    """A finished child run that says the pipeline reused `reused_run_id`'s output for
    `stage` instead of running it again; returns its id."""
    tags = {
        "lmforge.stage": stage,
        PARENT_TAG: parent_run_id,
        "lmforge.skipped": "true",
        "lmforge.reused_run_id": reused_run_id,
        "lmforge.output": output,
        "mlflow.note.content": f"unchanged: the output of run {reused_run_id} was reused",
    }
    with mlflow.start_run(run_name=f"{stage} (reused)", tags=tags, nested=True) as run:
        return str(run.info.run_id)


def run_exists(run_id: str) -> bool:
    """Whether the tracking store has that run (and it is not deleted)."""
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


class RunLogger:
    """Logs metrics to an existing run by id, from a process without an active run
    (rank 0 of a Ray Train worker group)."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of a metric already in the run, by step."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(self.run_id, key))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            text = json.dumps(v) if isinstance(v, list) else str(v)
            out[key] = text[:6000]  # MLflow's limit on a param value
    return out
