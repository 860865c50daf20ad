"""Loading a Hugging Face model directory: the one place that picks device, dtype and format.

Serving, perplexity scoring and the registered MLflow pyfunc model all load a folder that
`save_pretrained` wrote (config.json, safetensors weights, tokenizer files). Only
safetensors weights are accepted: a pickle checkpoint (`pytorch_model.bin`) can run code
when it is loaded, so a folder that has nothing else is refused with a clear error.
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")


class ModelFolderError(FileNotFoundError):
    """A folder that is not a loadable Hugging Face model; the message says why."""


def check_model_dir(model_dir: str) -> None:
    """Raise ModelFolderError unless `model_dir` holds config.json and safetensors weights."""
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ModelFolderError(f"not a Hugging Face model folder (no config.json): {model_dir}")
    if glob.glob(os.path.join(model_dir, "*.safetensors")):
        return
    pickled = [p for pat in PICKLE_WEIGHTS for p in glob.glob(os.path.join(model_dir, pat))]
    if pickled:
        raise ModelFolderError(
            f"{model_dir} holds only pickle weights ({os.path.basename(pickled[0])}); lmforge "
            "loads safetensors only: convert it with `model.save_pretrained(dir, "
            "safe_serialization=True)`"
        )
    raise ModelFolderError(f"no *.safetensors weights in {model_dir}")


def pick_device(device: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs (what the model trained in on a cluster), fp32 on CPUs (fast there)."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_tokenizer(model_dir: str) -> Any:
    """The tokenizer of a model (or tokenizer) folder written by `save_pretrained`."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def load_causal_lm(
    model_dir: str, *, device: str = "auto", dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """(model in eval mode on `device`, tokenizer) from a local Hugging Face folder."""
    from transformers import AutoModelForCausalLM

    check_model_dir(model_dir)
    dev = pick_device(device)
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype or default_dtype(dev), use_safetensors=True
    )
    return model.to(dev).eval(), load_tokenizer(model_dir)
