"""`pretrain`: token shards -> a Llama-style model, trained with DeepSpeed on Ray Train.

    python -m lmforge.jobs.pretrain --input TOKENS --output DIR [--set pretrain.preset=demo]

The driver validates, sizes the model and runs `lmforge.train.trainer.fit`; this module
wires it to MLflow (params, final metrics, the loss curves), logs the exported Hugging Face
folder as the run's LoggedModel (what `register` makes a version of) and writes the
manifest (the model id, the export's content digest).
"""

from __future__ import annotations

import os
from typing import Any

from lmforge.jobs import reuse
from lmforge.jobs.common import StageResult, check_inputs, stage_context
from lmforge.jobs.recipe import Recipe
from lmforge.platform import digest, registry, storage, tracking
from lmforge.platform.config import ConfigError
from lmforge.train import trainer
from lmforge.train.presets import get_preset


def validate(recipe: Recipe) -> None:
    cfg = recipe.pretrain
    assert cfg.input is not None
    check_inputs([cfg.input], what="pretrain")
    manifest = storage.read_manifest(cfg.input)
    if not storage.is_remote(cfg.input) and manifest is None:
        raise ConfigError(f"pretrain.input: {cfg.input} has no manifest.json; run `tokenize` first")
    _check_local_cpus(recipe)
    if manifest is not None:  # the shape, batch and memory checks need the shards' manifest
        trainer.check_shape(cfg, manifest)
        _check_memory(recipe, manifest)


def _check_memory(recipe: Recipe, manifest: dict[str, Any]) -> None:
    """With `pretrain.gpu` named, the planner's per-GPU memory (model states under the
    ZeRO stage, activations with or without checkpointing) must fit that GPU."""
    cfg = recipe.pretrain
    if cfg.gpu is None or "seq_len" not in manifest:
        return
    from lmforge.train.planner import memory_fit

    fit = memory_fit(
        preset=cfg.preset,
        vocab_size=int(manifest.get("vocab_size", recipe.tokenize.vocab_size)),
        seq_len=int(manifest["seq_len"]),
        micro_batch_size=cfg.micro_batch_size,
        gpu=cfg.gpu,
        gpus=cfg.num_workers,
        zero_stage=cfg.zero_stage,
        activation_checkpointing=cfg.activation_checkpointing,
    )
    if not fit.fits:
        raise ConfigError(
            f"pretrain.gpu: {cfg.preset} needs {fit.per_gpu_gib:.1f} GiB per {cfg.gpu} "
            f"({fit.capacity_gib:.0f} GiB usable) with zero_stage {cfg.zero_stage}, "
            f"{cfg.num_workers} workers, micro_batch_size {cfg.micro_batch_size} and "
            f"activation_checkpointing {cfg.activation_checkpointing} ({fit.summary}); "
            "`lmforge plan` shows the breakdown"
        )


def _check_local_cpus(recipe: Recipe) -> None:
    """On a Ray this process starts itself, the workers must fit its CPUs and leave one
    for the driver's own tasks (without a CPU Ray waits for one forever: 2 workers x
    1 CPU on a 2-CPU laptop hung silently). A cluster's resources are its own business:
    an autoscaler may add nodes."""
    cfg = recipe.pretrain
    if recipe.ray.address or os.environ.get("RAY_ADDRESS"):
        return
    import sys

    ray = sys.modules.get("ray")  # an in-process Ray already running counts as it is
    if ray is not None and ray.is_initialized():
        cpus = float(ray.cluster_resources().get("CPU", 0))
    else:
        cpus = float(recipe.ray.num_cpus or os.cpu_count() or 1)
    reserved = cfg.num_workers * cfg.cpus_per_worker
    if reserved > cpus - 1:
        raise ConfigError(
            f"pretrain.cpus_per_worker: {cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPU "
            f"reserve {reserved:g} of the local Ray's {cpus:g} CPUs and leave less than one for "
            "the rest of the job (the run would hang); lower pretrain.cpus_per_worker "
            f"to {max(cpus - 1, 0.1) / cfg.num_workers:g} or pretrain.num_workers"
        )


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    cfg = recipe.pretrain
    assert cfg.input is not None and cfg.output is not None
    validate(recipe)
    tokens, output = storage.absolute(cfg.input), storage.absolute(cfg.output)
    plan = trainer.plan(cfg, tokens)
    shape = {"preset_shape": get_preset(cfg.preset).as_dict()}
    params = {**cfg.model_dump(), **shape, "params": plan.sizing.params}
    name = trainer.run_name(recipe.name)
    resume = trainer.unfinished_run(cfg, output, name)  # a resubmitted job continues
    if resume:
        print(f"[lmforge pretrain] resuming {name} (MLflow run {resume}) from its checkpoints")
    else:
        trainer.reset_run(cfg, output, name)
    fp = reuse.fingerprint("pretrain", recipe)
    reuse.begin(output)

    with stage_context(
        "pretrain", recipe, params, parent_run_id=parent_run_id, resume_run_id=resume
    ) as run_id:
        if not resume:
            tracking.record_inputs([tokens], digests=fp.input_digests)
        trainer.mark_run(cfg, output, name, run_id, "running")
        model_dir, metrics = trainer.fit(
            cfg,
            plan,
            tokens=tokens,
            output=output,
            tracking_uri=recipe.mlflow.tracking_uri,
            run_id=run_id,
            name=name,
        )
        trainer.mark_run(cfg, output, name, run_id, "finished")
        curves = {k: tracking.metric_history(run_id, k) for k in ("train_loss", "val_loss")}
        tracking.log_figure(trainer.loss_figure(curves), "loss_curve.png")
        manifest = publish(
            model_dir,
            output=output,
            tokens=tokens,
            run_id=run_id,
            fp=fp,
            metrics={**metrics, "params": float(plan.sizing.params)},
            about={"preset": cfg.preset, "params": plan.sizing.params, "metrics": metrics},
        )
    info = {"manifest": manifest, "model_uri": manifest["model_uri"]}
    return StageResult("pretrain", run_id, model_dir, metrics, info)


def publish(
    model_dir: str,
    *,
    output: str,
    tokens: str,
    run_id: str,
    fp: reuse.Fingerprint,
    metrics: dict[str, float],
    about: dict[str, Any],
) -> dict[str, Any]:
    """The end of the stage, inside its run: the export (local or a URI) logged as the
    run's LoggedModel, the final metrics logged on the run and linked to that model and
    the token shards (the model's page in the MLflow UI shows both), the manifest written
    with the model id and the export's content digest, and the fingerprint last."""
    model_digest = digest.of_files(model_dir)
    model_id = registry.log_model(
        model_dir, tags={"lmforge.stage": "pretrain", "lmforge.digest": model_digest}
    )
    shards = tracking.dataset(tokens, fp.input_digests.get(tokens))
    tracking.log_metrics(metrics, model_id=model_id, dataset=shards)
    tracking.record_output(output, model_digest)
    tracking.set_tags({"lmforge.output": model_dir, "lmforge.model_id": f"models:/{model_id}"})
    manifest = {
        "stage": "pretrain",
        "inputs": [tokens],
        "mlflow_run_id": run_id,
        "model": model_dir,
        "model_id": model_id,
        "model_uri": f"models:/{model_id}",
        "digest": model_digest,
        **about,
    }
    return reuse.finish(output, manifest, fp)


if __name__ == "__main__":
    from lmforge.jobs.command import stage_main

    stage_main("pretrain")
