"""The driver side of pretraining: size the model, start Ray Train, bring the export back.

`fit` turns the recipe's `pretrain` section and a token-shard folder into a Ray Train
V2 `TorchTrainer` run of `loop.train_loop_per_worker`, with the shards streamed to the
workers through Ray Data, and downloads the final Hugging Face export (the last
checkpoint Ray Train holds) to `<output>/model`. It never touches MLflow: the workers'
rank 0 logs into the run it is given, and the caller logs what `fit` returns.
"""

from __future__ import annotations

import os
import signal
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


def plan(cfg: PretrainConfig, tokens: str) -> Plan:
    """The model config for the shards' tokenizer and sequence length; ConfigError when
    the preset cannot take them."""
    manifest = storage.read_manifest(tokens) or {}
    preset = get_preset(cfg.preset)
    seq_len = int(manifest["seq_len"])
    if seq_len > preset.max_seq_len:
        raise ConfigError(f"pretrain.preset: {cfg.preset} allows {preset.max_seq_len} tokens")
    tok = load_tokenizer(storage.join(tokens, "tokenizer"))
    llama = preset.llama_config(
        vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    sizing = estimate(preset, vocab_size=len(tok), num_gpus=cfg.num_workers)
    has_val = manifest["splits"]["val"]["sequences"] > 0
    return Plan(llama.to_dict(), sizing, seq_len, has_val)


def fit(
    cfg: PretrainConfig,
    p: Plan,
    *,
    tokens: str,
    output: str,
    tracking_uri: str | None,
    run_id: str,
) -> tuple[str, dict[str, float]]:
    """Train; returns (the exported model folder, the final metrics)."""
    datasets = {"train": _read_split(tokens, "train")}
    if p.has_val:
        datasets["val"] = _read_split(tokens, "val")
    loop = LoopConfig(
        pretrain=cfg.model_dump(),
        llama_config=p.llama_config,
        tokenizer_files=_tokenizer_files(storage.join(tokens, "tokenizer")),
        ds_config=sharding.deepspeed_config(cfg),
        seq_len=p.seq_len,
        tracking_uri=tracking_uri,
        run_id=run_id,
    )
    # Ray Train takes over SIGINT for the run ("gracefully aborting") and leaves its
    # handler behind: Ctrl-C would then never stop a `lmforge run` that serves afterwards
    sigint = signal.getsignal(signal.SIGINT)
    try:
        result = _run_trainer(cfg, loop, datasets, output=output, run_id=run_id)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)
    model_dir = storage.join(output, "model")
    storage.remove(model_dir)
    if result.checkpoint is None:
        raise RuntimeError("pretrain: training ended without the final model checkpoint")
    result.checkpoint.to_directory(model_dir)
    return model_dir, _final_metrics(result)


def _run_trainer(
    cfg: PretrainConfig, loop: LoopConfig, datasets: dict[str, Any], *, output: str, run_id: str
) -> Any:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
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
            name=f"pretrain-{run_id}",
            storage_path=cfg.storage_path or storage.join(output, "ray_train"),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # DeepSpeed reads these in every worker; gloo on CPU, NCCL on GPUs
            worker_runtime_env={"env_vars": _worker_env(cfg.use_gpu)},
        ),  # type: ignore[call-arg]  # mypy sees Train V1's RunConfig; V2 runs
        datasets=datasets,
    )
    return trainer.fit()


def _read_split(tokens: str, split: str) -> Any:
    import ray.data

    folder = storage.join(tokens, split)
    return ray.data.read_parquet(folder, file_extensions=["parquet"]).select_columns(["input_ids"])


def _worker_env(use_gpu: bool) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


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
    for key in ("train_loss", "val_loss", "probe_loss", "tokens", "tokens_per_s"):
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
