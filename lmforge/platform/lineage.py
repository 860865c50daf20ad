"""The lineage of a registered model, from the endpoint that served it to the raw data.

    tree = trace("models:/lmforge-demo@candidate")    # or models:/NAME/VERSION
    print("\\n".join(render(tree)))                   # `lmforge lineage URI [--json]`

Read from MLflow alone (the files need not be reachable from here): the serve runs that
served the version (their `lmforge.endpoint` tag) -> the registered version -> its
LoggedModel -> the model's source run (pretrain) -> each dataset input of that run (URI
and content digest) -> the run that produced it (the run's `lmforge.input.<i>.run_id`
tag, written from the input's manifest) -> that run's inputs, down to the raw inputs no
run produced. A run's outputs are its datasets of context "output"; pipeline runs that
skipped a stage and reused a run's output are listed under that run (`reused_by`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from lmforge.platform import registry

CONTEXT_TAG = "mlflow.data.context"
_INPUT_TAG = re.compile(r"lmforge\.input\.(\d+)\.uri")


def trace(model: str) -> dict[str, Any]:
    """The lineage tree of `models:/NAME@ALIAS` or `models:/NAME/VERSION` (JSON-ready)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    mv = registry.get_version(model)
    tags = dict(mv.tags or {})
    model_id = registry.version_model_id(mv)
    logged = client.get_logged_model(model_id) if model_id else None
    source_run = (logged.source_run_id if logged else None) or mv.run_id
    tree: dict[str, Any] = {
        "model": model,
        "version": {
            "name": mv.name,
            "version": str(mv.version),
            "aliases": list(mv.aliases or []),
            "run_id": mv.run_id,
            "register_run_id": tags.get(registry.REGISTER_RUN_TAG),
            "source": mv.source,
        },
        "logged_model": None,
        "endpoints": [],
        "run": None,
    }
    if logged is not None:
        tree["logged_model"] = {
            "model_id": logged.model_id,
            "uri": f"models:/{logged.model_id}",
            "name": logged.name,
            "source_run_id": logged.source_run_id,
            "artifact_location": logged.artifact_location,
        }
    if source_run:
        tree["run"] = _run(client, source_run, seen={source_run})
        experiments = {tree["run"].get("experiment_id")}
        if tags.get(registry.REGISTER_RUN_TAG):
            experiments.add(_experiment_of(client, tags[registry.REGISTER_RUN_TAG]))
        ids = sorted(e for e in experiments if e)
        tree["endpoints"] = _endpoints(client, ids, mv.name, str(mv.version))
    return tree


def _experiment_of(client: Any, run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_run(run_id).info.experiment_id)
    except MlflowException:
        return None


def _endpoints(client: Any, experiments: list[str], name: str, version: str) -> list[dict]:
    """The serve runs that served this version, newest first, with their endpoint."""
    if not experiments:
        return []
    query = (
        "tags.`lmforge.stage` = 'serve' and "
        f"tags.`lmforge.model.name` = '{name}' and tags.`lmforge.model.version` = '{version}'"
    )
    runs = client.search_runs(experiments, query, order_by=["attributes.start_time DESC"])
    return [
        {
            "endpoint": r.data.tags.get("lmforge.endpoint"),
            "run_id": r.info.run_id,
            "status": r.info.status,
        }
        for r in runs
        if r.data.tags.get("lmforge.endpoint")
    ]


def _run(client: Any, run_id: str, *, seen: set[str]) -> dict[str, Any]:
    """One run, its output datasets, and each input with the run that produced it."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return {"run_id": run_id, "missing": True}
    tags = run.data.tags
    producers = {}
    for key, uri in tags.items():
        m = _INPUT_TAG.fullmatch(key)
        if m and tags.get(f"lmforge.input.{m[1]}.run_id"):
            producers[uri] = tags[f"lmforge.input.{m[1]}.run_id"]
    inputs: dict[tuple[str, str], dict[str, Any]] = {}
    outputs: dict[tuple[str, str], dict[str, Any]] = {}
    for di in run.inputs.dataset_inputs if run.inputs else []:
        context = {t.key: t.value for t in di.tags}.get(CONTEXT_TAG)
        entry = {"uri": _source_uri(di.dataset), "digest": di.dataset.digest}
        (outputs if context == "output" else inputs)[(entry["uri"], entry["digest"])] = entry
    for entry in inputs.values():
        producer = producers.get(entry["uri"])
        if producer is None:
            entry["raw"] = True  # no run made it: the data the pipeline started from
        elif producer in seen:
            entry["produced_by"] = {"run_id": producer, "shown_above": True}
        else:
            seen.add(producer)
            entry["produced_by"] = _run(client, producer, seen=seen)
    model_inputs = [m.model_id for m in run.inputs.model_inputs] if run.inputs else []
    reused = client.search_runs(
        [run.info.experiment_id], f"tags.`lmforge.reused_run_id` = '{run_id}'"
    )
    return {
        "run_id": run_id,
        "stage": tags.get("lmforge.stage"),
        "status": run.info.status,
        "experiment_id": str(run.info.experiment_id),
        "outputs": sorted(outputs.values(), key=lambda e: e["uri"]),
        "inputs": sorted(inputs.values(), key=lambda e: e["uri"]),
        "model_inputs": model_inputs,
        "reused_by": [r.info.run_id for r in reused],
    }


def _source_uri(dataset: Any) -> str:
    """The URI a dataset names (lmforge logs every one with an HTTP-type source)."""
    try:
        source = json.loads(dataset.source)
    except (TypeError, ValueError):
        return str(dataset.source)
    if isinstance(source, dict):
        return str(source.get("url") or source.get("uri") or source.get("path") or source)
    return str(source)


def render(tree: dict[str, Any]) -> list[str]:
    """The tree as lines for a terminal, from the endpoint down to the raw data."""
    v = tree["version"]
    lines = [f"model     {tree['model']}"]
    for e in tree["endpoints"]:
        lines.append(f"endpoint  {e['endpoint']}  (serve run {e['run_id']}, {e['status']})")
    aliases = ", ".join(v["aliases"]) or "none"
    by = f"; registered by run {v['register_run_id']}" if v.get("register_run_id") else ""
    lines.append(f"version   {v['name']} version {v['version']}  (aliases {aliases}{by})")
    lm = tree["logged_model"]
    if lm:
        lines.append(f"logged    {lm['uri']}  (source run {lm['source_run_id']})")
    if tree["run"]:
        lines += _render_run(tree["run"], "")
    return lines


def _render_run(run: dict[str, Any], pad: str) -> list[str]:
    if run.get("missing"):
        return [f"{pad}run       {run['run_id']}  (not in this tracking store)"]
    lines = [f"{pad}run       {run['stage'] or '?'} {run['run_id']}  {run['status']}"]
    if run["reused_by"]:
        lines.append(f"{pad}  reused by  {', '.join(run['reused_by'])}")
    for out in run["outputs"]:
        lines.append(f"{pad}  output  {out['uri']}  digest {out['digest']}")
    for inp in run["inputs"]:
        lines.append(f"{pad}  input   {inp['uri']}  digest {inp['digest']}")
        producer = inp.get("produced_by")
        if inp.get("raw"):
            lines.append(f"{pad}    (raw input: no run produced it)")
        elif producer and producer.get("shown_above"):
            lines.append(f"{pad}    run       {producer['run_id']}  (shown above)")
        elif producer:
            lines += _render_run(producer, pad + "    ")
    return lines
