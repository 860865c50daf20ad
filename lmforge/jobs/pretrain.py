"""`pretrain`: token shards -> a Llama-style model, trained with DeepSpeed on Ray Train.

    python -m lmforge.jobs.pretrain --input TOKENS --output DIR [--set pretrain.preset=demo]

The driver validates, sizes the model, streams the shards to the workers through Ray
Data, and downloads the final Hugging Face export (the last checkpoint Ray Train
holds) to `<output>/model`. The per-worker loop is in `train_loop.py`.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from lmforge.train import sharding
from lmforge.jobs.common import StageResult, check_inputs, stage_context
from lmforge.train.loop import LoopConfig, train_loop_per_worker
from lmforge.platform import storage, tracking
from lmforge.platform.config import ConfigError, Recipe
from lmforge.train.presets import estimate, get_preset


def validate(recipe: Recipe) -> None:
    cfg = recipe.pretrain
    assert cfg.input is not None
    check_inputs([cfg.input], what="pretrain")
    if not storage.is_remote(cfg.input) and storage.read_manifest(cfg.input) is None:
        raise ConfigError(f"pretrain: {cfg.input} has no manifest.json; run `tokenize` first")


def run(recipe: Recipe, *, parent_run_id: str | None = None) -> StageResult:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = recipe.pretrain
    assert cfg.input is not None and cfg.output is not None
    validate(recipe)
    tokens, output = storage.absolute(cfg.input), storage.absolute(cfg.output)
    manifest = storage.read_manifest(tokens) or {}
    preset = get_preset(cfg.preset)
    seq_len = int(manifest["seq_len"])
    if seq_len > preset.max_seq_len:
        raise ConfigError(f"pretrain.preset: {cfg.preset} allows {preset.max_seq_len} tokens")
    tok = _load_tokenizer(storage.join(tokens, "tokenizer"))
    llama = preset.llama_config(
        vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    sizing = estimate(preset, vocab_size=len(tok), num_gpus=cfg.num_workers)
    params = {**cfg.model_dump(), "preset_shape": preset.as_dict(), "params": sizing.params}

    with stage_context("pretrain", recipe, params, parent_run_id=parent_run_id) as run_id:
        tracking.record_inputs([tokens])
        train = _read_split(tokens, "train")
        datasets = {"train": train}
        if manifest["splits"]["val"]["sequences"] > 0:
            datasets["val"] = _read_split(tokens, "val")
        loop = LoopConfig(
            llama_config=llama.to_dict(),
            tokenizer_files=_tokenizer_files(storage.join(tokens, "tokenizer")),
            ds_config=sharding.deepspeed_config(
                zero_stage=cfg.zero_stage,
                precision=cfg.precision,
                micro_batch_size=cfg.micro_batch_size,
                grad_accum_steps=cfg.grad_accum_steps,
                grad_clip=cfg.grad_clip,
                offload_optimizer=cfg.offload_optimizer,
                use_gpu=cfg.use_gpu,
            ),
            use_gpu=cfg.use_gpu,
            micro_batch_size=cfg.micro_batch_size,
            grad_accum_steps=cfg.grad_accum_steps,
            seq_len=seq_len,
            max_steps=cfg.max_steps,
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay,
            log_every=cfg.log_every,
            eval_every=cfg.eval_every,
            eval_batches=cfg.eval_batches,
            checkpoint_every=cfg.checkpoint_every,
            seed=cfg.seed,
            activation_checkpointing=cfg.activation_checkpointing,
            tracking_uri=recipe.mlflow.tracking_uri,
            run_id=run_id,
        )
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=asdict(loop),
            scaling_config=ScalingConfig(
                num_workers=cfg.num_workers,
                use_gpu=cfg.use_gpu,
                resources_per_worker={"CPU": cfg.cpus_per_worker},
            ),
            run_config=RunConfig(
                name=f"pretrain-{run_id}",
                storage_path=cfg.storage_path or storage.join(output, "ray_train"),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                # DeepSpeed reads these in every worker; gloo on CPU, NCCL on GPUs
                worker_runtime_env={"env_vars": _worker_env(cfg.use_gpu)},
            ),  # type: ignore[call-arg]  # mypy sees Train V1's RunConfig; V2 runs
            datasets=datasets,
        )
        result = trainer.fit()
        model_dir = storage.join(output, "model")
        storage.remove(model_dir)
        if result.checkpoint is None:
            raise RuntimeError("pretrain: training ended without the final model checkpoint")
        result.checkpoint.to_directory(model_dir)
        metrics = _final_metrics(result)
        tracking.log_metrics({**metrics, "params": float(sizing.params)})
        _log_loss_plot(run_id)
        storage.write_manifest(
            output,
            {
                "stage": "pretrain",
                "inputs": [tokens],
                "mlflow_run_id": run_id,
                "model": model_dir,
                "preset": cfg.preset,
                "params": sizing.params,
                "metrics": metrics,
            },
        )
        tracking.set_tags({"lmforge.output": model_dir})
    return StageResult("pretrain", run_id, model_dir, metrics)


def _read_split(tokens: str, split: str) -> Any:
    import ray.data

    folder = storage.join(tokens, split)
    return ray.data.read_parquet(folder, file_extensions=["parquet"]).select_columns(["input_ids"])


def _worker_env(use_gpu: bool) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def _load_tokenizer(uri: str) -> Any:
    from lmforge.pipelines.tokenizer import load_tokenizer

    return load_tokenizer(uri)


def _tokenizer_files(uri: str) -> dict[str, str]:
    """Tokenizer files as text: they ride in the loop config to whichever node exports."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(uri)
    names = [os.path.basename(f.path) for f in fs.get_file_info(pafs.FileSelector(path))]
    return {name: storage.read_text(storage.join(uri, name)) for name in names}


def _final_metrics(result: Any) -> dict[str, float]:
    """The last value of each training metric, which the final (export) report carries."""
    m = result.metrics or {}
    out: dict[str, float] = {"steps": float(m.get("step", 0))}
    for key in ("train_loss", "val_loss", "tokens", "tokens_per_s"):
        if key in m:
            out[f"final_{key}"] = float(m[key])
    return out


def _log_loss_plot(run_id: str) -> None:
    """The loss curves as a PNG artifact: people look at curves, they don't read them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_loss", "val_loss"):
        points = tracking.metric_history(run_id, key)
        if points:
            ax.plot(*zip(*points, strict=True), label=key, marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    tracking.log_figure(fig, "loss_curve.png")
    plt.close(fig)


if __name__ == "__main__":
    from lmforge.jobs.cli import stage_main

    stage_main("pretrain")
