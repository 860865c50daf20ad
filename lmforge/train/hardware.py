"""Accelerators the planner knows, and the FLOP count of one trained token.

Every figure is the vendor's datasheet value, so a plan can be checked against its source:

- `peak_bf16_tflops`: dense BF16 tensor-core peak, *without* 2:4 sparsity (datasheets
  print the sparse figure first, twice the dense one). MFU is always against this.
- `memory_gib`: the capacity the vendor sells ("80GB" HBM3 is 80 GiB of stacks; the
  driver shows a little less, 81,559 MiB = 79.6 GiB on an H100 SXM, hence the planner's
  headroom).
- `intra_node_gbps`: GPU-to-GPU bandwidth inside a node *per direction*, GB/s: half
  the bidirectional NVLink figure vendors print (H100 SXM "900 GB/s" -> 450), since a
  ring all-reduce sends and receives at once and is bound by one direction. Without
  NVLink it is PCIe x16 per direction (Gen4 32, Gen5 64 GB/s).
- `inter_node_gbps`: network bandwidth per GPU, GB/s, for the usual one NIC per GPU
  (DGX H100/H200/B200: 400 Gb/s ConnectX-7 = 50 GB/s; DGX A100: 200 Gb/s HDR = 25 GB/s).
  Entries without a reference system (H100 PCIe, L40S) state their assumption.

`peak_tflops_for_device` maps what `torch.cuda.get_device_name()` reports to a peak, and
returns None for a device it does not know: MFU is then left out, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GpuSpec:
    """One accelerator model (units in the module docstring).

    name: the table key, as `--gpu` and the recipe's `pretrain.gpu` spell it.
    peak_bf16_tflops: dense BF16 peak, TFLOP/s.
    memory_gib: device memory, GiB.
    intra_node_gbps: GPU-to-GPU in a node, GB/s per direction.
    inter_node_gbps: network per GPU, GB/s.
    aliases: other spellings accepted by `get_gpu` (compared case-insensitively).
    source: where the figures come from.
    """

    name: str
    peak_bf16_tflops: float
    memory_gib: float
    intra_node_gbps: float
    inter_node_gbps: float
    aliases: tuple[str, ...] = ()
    source: str = ""


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec(
            name="H100-SXM",
            peak_bf16_tflops=989.0,
            memory_gib=80,
            intra_node_gbps=450,  # NVLink 4: 900 GB/s bidirectional
            inter_node_gbps=50,  # DGX H100: one 400 Gb/s ConnectX-7 per GPU
            aliases=("H100", "H100-SXM5", "H100-80GB"),
            source="NVIDIA H100 datasheet (SXM5: BF16 1,979 TFLOPS with sparsity)",
        ),
        GpuSpec(
            name="H100-PCIe",
            peak_bf16_tflops=756.0,
            memory_gib=80,
            intra_node_gbps=64,  # PCIe Gen5 x16 (NVLink bridges join pairs only)
            inter_node_gbps=25,  # assumed: 200 Gb/s per GPU
            aliases=("H100-PCIE-80GB",),
            source="NVIDIA H100 datasheet (PCIe: BF16 1,513 TFLOPS with sparsity)",
        ),
        GpuSpec(
            name="H100-NVL",
            peak_bf16_tflops=835.0,
            memory_gib=94,
            intra_node_gbps=300,  # NVLink bridge: 600 GB/s bidirectional, pairs
            inter_node_gbps=25,  # assumed: 200 Gb/s per GPU
            source="NVIDIA H100 datasheet (NVL: BF16 1,671 TFLOPS with sparsity)",
        ),
        GpuSpec(
            name="H200",
            peak_bf16_tflops=989.0,
            memory_gib=141,
            intra_node_gbps=450,
            inter_node_gbps=50,  # DGX H200: one 400 Gb/s ConnectX-7 per GPU
            aliases=("H200-SXM", "H200-141GB"),
            source="NVIDIA H200 datasheet (SXM: BF16 1,979 TFLOPS with sparsity, 141 GB)",
        ),
        GpuSpec(
            name="A100-SXM-80GB",
            peak_bf16_tflops=312.0,
            memory_gib=80,
            intra_node_gbps=300,  # NVLink 3: 600 GB/s bidirectional
            inter_node_gbps=25,  # DGX A100: one 200 Gb/s HDR per GPU
            aliases=("A100", "A100-80GB", "A100-SXM4-80GB"),
            source="NVIDIA A100 datasheet (BF16 312 TFLOPS dense, 624 sparse)",
        ),
        GpuSpec(
            name="A100-40GB",
            peak_bf16_tflops=312.0,
            memory_gib=40,
            intra_node_gbps=300,
            inter_node_gbps=25,
            aliases=("A100-SXM4-40GB", "A100-SXM-40GB"),
            source="NVIDIA A100 datasheet (BF16 312 TFLOPS dense, 624 sparse)",
        ),
        GpuSpec(
            name="L40S",
            peak_bf16_tflops=362.0,
            memory_gib=48,
            intra_node_gbps=32,  # no NVLink: PCIe Gen4 x16
            inter_node_gbps=12.5,  # assumed: 100 Gb/s per GPU
            source="NVIDIA L40S datasheet (BF16 362.05 TFLOPS dense, 733 sparse)",
        ),
        GpuSpec(
            name="B200",
            peak_bf16_tflops=2250.0,
            memory_gib=180,
            intra_node_gbps=900,  # NVLink 5: 1.8 TB/s bidirectional
            inter_node_gbps=50,  # DGX B200: one 400 Gb/s ConnectX-7 per GPU
            aliases=("HGX-B200", "DGX-B200"),
            source="NVIDIA HGX B200 datasheet: FP16/BF16 4.5 PFLOPS per GPU with "
            "sparsity (36 per 8 GPUs), 180 GB HBM3e",
        ),
        GpuSpec(
            name="MI300X",
            peak_bf16_tflops=1307.4,
            memory_gib=192,
            intra_node_gbps=448,  # Infinity Fabric: 896 GB/s aggregate bidirectional
            inter_node_gbps=50,  # assumed: 400 Gb/s per GPU
            aliases=("AMD-MI300X", "INSTINCT-MI300X"),
            source="AMD Instinct MI300X datasheet (BF16 1,307.4 TFLOPS dense, 2,614.9 sparse)",
        ),
    )
}


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip()).upper()


def get_gpu(name: str) -> GpuSpec:
    """The table entry for a name or alias, case-insensitively ("h100" -> H100-SXM);
    ValueError naming the known GPUs otherwise."""
    key = _key(name)
    for g in GPUS.values():
        if key in {_key(n) for n in (g.name, *g.aliases)}:
            return g
    raise ValueError(f"unknown GPU {name!r}; choose one of {', '.join(GPUS)}")


# What `torch.cuda.get_device_name()` reports, most specific first. Lookalikes are kept
# apart on purpose: "H100 NVL" is not an SXM part, "GB200" is not a B200, "L40" is not an
# L40S, and an "H200 NVL" (a lower-clocked card) matches nothing rather than the SXM peak.
_DEVICE_PATTERNS: tuple[tuple[str, str | None], ...] = (
    (r"\bH100\b.*\bNVL\b", "H100-NVL"),
    (r"\bH100\b.*\bPCIE\b", "H100-PCIe"),
    (r"\bH100\b", "H100-SXM"),  # "NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"
    (r"\bH200\b.*\bNVL\b", None),
    (r"\bH200\b", "H200"),
    (r"\bA100\b.*\b40GB\b", "A100-40GB"),  # "NVIDIA A100-SXM4-40GB", "A100-PCIE-40GB"
    (r"\bA100\b", "A100-SXM-80GB"),  # "NVIDIA A100-SXM4-80GB", "A100 80GB PCIe": 312 too
    (r"\bL40S\b", "L40S"),
    (r"(?<![A-Z])B200\b", "B200"),
    (r"\bMI300X\b", "MI300X"),
)


def gpu_for_device(device_name: str) -> GpuSpec | None:
    """The table entry for a `torch.cuda.get_device_name()` string, or None."""
    text = device_name.upper().replace("_", " ")
    for pattern, name in _DEVICE_PATTERNS:
        if re.search(pattern, text):
            return GPUS[name] if name else None
    return None


def peak_tflops_for_device(device_name: str) -> float | None:
    """Dense BF16 peak (TFLOP/s) of the device `torch.cuda.get_device_name()` names, e.g.
    "NVIDIA H100 80GB HBM3" -> 989.0; None when the device is not in the table."""
    g = gpu_for_device(device_name)
    return g.peak_bf16_tflops if g else None


def flops_per_token(n_params: float, num_layers: int, d_model: int, seq_len: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·d·s (PaLM, Chowdhery et al. 2022, appendix B).

    6·N: forward (2 FLOPs per weight per token) plus backward (4) through every matmul
    weight. 12·L·d·s: the attention scores and the weighted sum over values, which have
    no weights (L layers, d = heads·head_dim = d_model, s = sequence length); PaLM counts
    them as if nothing were masked, and so does this.

    N, as every caller in lmforge passes it, is the parameters that take part in a
    matmul: all of them except the input embedding table, whose lookup costs no FLOPs
    (the output head is a real d·V matmul and counts; a tied table counts once, as the
    head). For Llama 3.1 405B that is 403.7B of 405.9B: within 0.6% of Meta's
    6 × 405B × 15.6T = 3.8e25 FLOPs, which used all parameters. Activation recomputation
    is not counted: these are model FLOPs, the numerator of MFU.
    """
    return 6.0 * n_params + 12.0 * num_layers * d_model * seq_len
