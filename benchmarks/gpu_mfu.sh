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
missing = [m for m in ("transformers", "deepspeed", "pydantic") if importlib.util.find_spec(m) is None]
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, "
      f"{torch.cuda.get_device_name()}; missing: {', '.join(missing) or 'nothing'}", flush=True)
EOF
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec timeout "${GPU_MFU_TIMEOUT:-480}" "$PY" "$ROOT/benchmarks/gpu_mfu.py" "$@"
