"""The driver side of pretraining: size the model, start Ray Train, bring the export back.

`fit` turns the recipe's `pretrain` section and a token-shard folder into a Ray Train
V2 `TorchTrainer` run of `loop.train_loop_per_worker` (every worker reads its batches from
the shards itself, in an order fixed by the seed: `data.py`), and downloads the final
Hugging Face export (the last checkpoint Ray Train holds) to `<output>/model`. It never
touches MLflow: the workers' rank 0 logs into the run it is given.

Surviving loss: Ray Train restarts the worker group from the latest checkpoint up to
`pretrain.max_failures` times. The Ray Train run is named after the recipe
(`pretrain-<recipe name>`) in `pretrain.storage_path`, so a job that died altogether and
is submitted again with the same name and storage resumes from its latest checkpoint
too; `<storage>/pretrain-<name>.lmforge.json` remembers the MLflow run to continue.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from dataclasses import asdict, dataclass
from typing import Any

from lmforge.platform import storage
from lmforge.platform.config import ConfigError
from lmforge.platform.hf_model import load_tokenizer
from lmforge.train import sharding
from lmforge.train.config import PretrainConfig
from lmforge.train.loop import LoopConfig, train_loop_per_worker
from lmforge.train.presets import Sizing, estimate, get_preset


@dataclass(frozen=True)
class Plan:
    """What a run will build, known before any worker starts."""

    llama_config: dict[str, Any]
    sizing: Sizing
    seq_len: int
    has_val: bool
    flops_per_token: float


def check_shape(cfg: PretrainConfig, manifest: dict[str, Any]) -> None:
    """ConfigError, naming the field, when the preset cannot take the shards' sequence
    length or the train split holds less than one global batch (from the manifest of
    the token shards: called before any worker starts)."""
    preset = get_preset(cfg.preset)
    seq_len = int(manifest.get("seq_len", 0))
    if seq_len > preset.max_seq_len:
        raise ConfigError(
            f"pretrain.preset: {cfg.preset} allows sequences of {preset.max_seq_len} tokens, "
            f"the token shards hold {seq_len} (tokenize.seq_len)"
        )
    train = manifest.get("splits", {}).get("train", {}).get("sequences")
    global_batch = cfg.num_workers * cfg.micro_batch_size * cfg.grad_accum_steps
    if train is not None and int(train) < global_batch:
        raise ConfigError(
            f"pretrain.micro_batch_size: one global batch is {global_batch} sequences "
            f"(num_workers {cfg.num_workers} x micro_batch_size {cfg.micro_batch_size} x "
            f"grad_accum_steps {cfg.grad_accum_steps}), the train split holds {train}"
        )


def plan(cfg: PretrainConfig, tokens: str) -> Plan:
    """The model config for the shards' tokenizer and sequence length (`check_shape`
    first)."""
    from lmforge.train.hardware import flops_per_token

    manifest = storage.read_manifest(tokens) or {}
    check_shape(cfg, manifest)
    preset = get_preset(cfg.preset)
    seq_len = int(manifest["seq_len"])
    tok = _load_tokenizer(storage.join(tokens, "tokenizer"))
    llama = preset.llama_config(
        vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    sizing = estimate(preset, vocab_size=len(tok), num_gpus=cfg.num_workers)
    has_val = manifest["splits"]["val"]["sequences"] > 0
    # PaLM's 6N counts the matmul parameters: all but the input embedding lookup (a tied
    # head still multiplies by the embedding matrix: it counts once)
    embedding = len(tok) * preset.hidden_size
    matmul_params = sizing.params - (0 if preset.tie_embeddings else embedding)
    fpt = flops_per_token(matmul_params, preset.num_layers, preset.hidden_size, seq_len)
    return Plan(llama.to_dict(), sizing, seq_len, has_val, fpt)


def run_name(recipe_name: str) -> str:
    """The Ray Train run name: stable per recipe, so a resubmitted job finds its state."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in recipe_name)
    return f"pretrain-{safe}"


def storage_root(cfg: PretrainConfig, output: str) -> str:
    return cfg.storage_path or storage.join(output, "ray_train")


def _marker(cfg: PretrainConfig, output: str, name: str) -> str:
    return storage.join(storage_root(cfg, output), f"{name}.lmforge.json")


def unfinished_run(cfg: PretrainConfig, output: str, name: str) -> str | None:
    """The MLflow run id of an earlier submission of this run that did not finish (its
    checkpoints are in storage), or None (never run, finished, or stopped)."""
    marker = _marker(cfg, output, name)
    if storage.exists(marker):
        state = json.loads(storage.read_text(marker))
        if state.get("status") == "running" and state.get("mlflow_run_id"):  # not "stopped"
            return str(state["mlflow_run_id"])
    return None


def reset_run(cfg: PretrainConfig, output: str, name: str) -> None:
    """Remove the Ray Train state of an earlier run of this name: it starts from step 0."""
    storage.remove(storage.join(storage_root(cfg, output), name))


def mark_run(cfg: PretrainConfig, output: str, name: str, mlflow_run_id: str, status: str) -> None:
    marker = _marker(cfg, output, name)
    storage.write_text(marker, json.dumps({"mlflow_run_id": mlflow_run_id, "status": status}))


def fit(
    cfg: PretrainConfig,
    p: Plan,
    *,
    tokens: str,
    output: str,
    tracking_uri: str | None,
    run_id: str,
    name: str,
) -> tuple[str, dict[str, float]]:
    """Train; returns (the exported model folder, the final metrics)."""
    loop = LoopConfig(
        pretrain=cfg.model_dump(),
        llama_config=p.llama_config,
        tokenizer_files=_tokenizer_files(storage.join(tokens, "tokenizer")),
        ds_config=sharding.deepspeed_config(cfg),
        seq_len=p.seq_len,
        train_uri=storage.join(tokens, "train"),
        val_uri=storage.join(tokens, "val") if p.has_val else None,
        flops_per_token=p.flops_per_token,
        tracking_uri=tracking_uri,
        run_id=run_id,
    )
    # Ray Train takes over SIGINT for the run ("gracefully aborting") and leaves its
    # handler behind: Ctrl-C would then never stop a `lmforge run` that serves afterwards
    sigint = signal.getsignal(signal.SIGINT)
    try:
        result = _run_trainer(cfg, loop, output=output, name=name)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)
    stopped = (result.metrics or {}).get("nonfinite_stop")
    if stopped:
        step = int(result.metrics["step"])
        mark_run(cfg, output, name, run_id, "stopped")  # a resubmission starts afresh
        raise FloatingPointError(
            f"pretrain: non-finite loss at step {step}, {int(stopped)} steps in a row "
            f"(more than pretrain.max_skipped_steps={cfg.max_skipped_steps}): the run stopped; "
            "lower pretrain.lr or check the data"
        )
    model_dir = storage.join(output, "model")
    storage.remove(model_dir)
    if result.checkpoint is None:
        raise RuntimeError("pretrain: training ended without the final model checkpoint")
    _copy_checkpoint(result.checkpoint, model_dir)
    return model_dir, _final_metrics(result)


def _copy_checkpoint(checkpoint: Any, target: str) -> None:
    """Copy a Ray Train checkpoint (on its storage, local or `s3://`) to `target` (a local
    folder or a URI): storage to storage, never through a local folder of the driver."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(target)
    fs.create_dir(path, recursive=True)
    pafs.copy_files(
        checkpoint.path,
        path,
        source_filesystem=checkpoint.filesystem,
        destination_filesystem=fs,
    )


def _run_trainer(cfg: PretrainConfig, loop: LoopConfig, *, output: str, name: str) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(loop),
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_root(cfg, output),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            # DeepSpeed reads these in every worker; gloo on CPU, NCCL on GPUs
            worker_runtime_env={"env_vars": _worker_env(cfg.use_gpu)},
        ),  # type: ignore[call-arg]  # mypy sees Train V1's RunConfig; V2 runs
    )
    return trainer.fit()


def _worker_env(use_gpu: bool) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def _load_tokenizer(uri: str) -> Any:
    """The tokenizer of a folder, local or on object storage (transformers reads only
    local folders or the Hub: a remote one goes through a temporary folder)."""
    if not storage.is_remote(uri):
        return load_tokenizer(uri)
    with tempfile.TemporaryDirectory() as tmp:
        return load_tokenizer(storage.download_dir(uri, tmp))


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
    keys = ("train_loss", "val_loss", "val_perplexity", "probe_loss", "tokens", "tokens_per_s")
    for key in (*keys, "tflops_per_device", "mfu", "grad_norm", "skipped_steps"):
        if key in m:
            out[f"final_{key}"] = float(m[key])
    return out


def loss_figure(curves: dict[str, list[tuple[int, float]]]) -> Any:
    """The loss curves (metric -> [(step, value)]) as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, points in curves.items():
        if points:
            ax.plot(*zip(*points, strict=True), label=key, marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig
