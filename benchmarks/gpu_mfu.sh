#!/usr/bin/env bash
# GPU MFU of lmforge's training step vs a plain PyTorch loop, on a lent GPU machine
# (one H100/H200; no internet; this checkout copied there without its .venv):
#
#     bash benchmarks/gpu_mfu.sh [gpu_mfu.py options]
#
# Without a GPU it prints "no GPU" and exits 0. It installs nothing from the network:
# it takes the first Python whose torch sees a CUDA device ($PYTHON, .venv/bin/python,
# python3, python: the machine's own torch first where the checkout has no .venv), and
# puts this checkout on PYTHONPATH instead of `pip install -e .` (offline, that install
# would fail on its build requirements and dependencies; lmforge's training modules
# need none of them but the ones below). lmforge's path needs deepspeed and pydantic
# (+ pydantic-core, annotated-types, typing-inspection, hjson): where the machine lacks
# them, carry their wheels in `.whl/` at the checkout's root (see the device notes) and
# they are installed into /tmp/lmforge-site first; without them gpu_mfu.py reports
# "lmforge path unavailable: ..." and still prints the baseline (exit status 2).
# The whole run is capped at GPU_MFU_TIMEOUT seconds (default 480).
set -euo pipefail

GPU_MODULES="transformers deepspeed pydantic"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_python.sh"
exec timeout "${GPU_MFU_TIMEOUT:-480}" "$PY" "$ROOT/benchmarks/gpu_mfu.py" "$@"
