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

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PY=""
for candidate in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3 python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        >/dev/null 2>&1; then
        PY="$candidate"
        break
    fi
done
if [ -z "$PY" ]; then
    echo "no GPU"
    exit 0
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/lmforge-site "$ROOT"/.whl/*.whl
    export PYTHONPATH="/tmp/lmforge-site:$PYTHONPATH"
fi
"$PY" - <<'EOF'
import importlib.util, sys, torch
missing = [m for m in ("transformers", "ray", "vllm", "pydantic", "openai") if importlib.util.find_spec(m) is None]
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, "
      f"{torch.cuda.get_device_name()}; missing: {', '.join(missing) or 'nothing'}", flush=True)
EOF
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec timeout "${GPU_SERVE_TIMEOUT:-540}" "$PY" "$ROOT/benchmarks/gpu_serve.py" "$@"
