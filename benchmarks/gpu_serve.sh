#!/usr/bin/env bash
# GPU serving: the `vllm` engine (ray.serve.llm) vs the `hf` engine (transformers'
# continuous batching), both through lmforge's Ray Serve deployment, on a lent GPU machine
# (one H100/H200; no internet; this checkout copied there without its .venv):
#
#     bash benchmarks/gpu_serve.sh [gpu_serve.py options]    # default: 64 clients
#
# Without a GPU it prints "no GPU" and exits 0. It installs nothing from the network: it
# takes the first Python whose torch sees a CUDA device ($PYTHON, .venv/bin/python,
# python3, python) and puts this checkout on PYTHONPATH. It needs ray[serve] 2.60,
# transformers 5, pydantic, openai and (for the vLLM side) vllm with ray[llm]: wheels
# carried in `.whl/` at the checkout's root are installed into /tmp/lmforge-site first.
# Without vLLM it prints the hf figure and exits 2. Capped at GPU_SERVE_TIMEOUT seconds
# (default 540).
set -euo pipefail

GPU_MODULES="transformers ray vllm pydantic openai"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_python.sh"
exec timeout "${GPU_SERVE_TIMEOUT:-540}" "$PY" "$ROOT/benchmarks/gpu_serve.py" "$@"
