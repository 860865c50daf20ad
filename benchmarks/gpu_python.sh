# Sourced by the GPU benchmark scripts (gpu_mfu.sh, gpu_serve.sh) on a lent GPU machine:
# sets ROOT (the checkout) and PY (the first Python whose torch sees a CUDA device:
# $PYTHON, .venv/bin/python, python3, python), puts the checkout on PYTHONPATH, installs
# wheels carried in `.whl/` into /tmp/lmforge-site (offline), and prints which of
# GPU_MODULES are missing. Without a GPU it prints "no GPU" and exits 0.
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
GPU_MODULES="${GPU_MODULES:-transformers}" "$PY" - <<'PYEOF'
import importlib.util, os, sys, torch
missing = [m for m in os.environ["GPU_MODULES"].split() if importlib.util.find_spec(m) is None]
print(f"python {sys.version.split()[0]} ({sys.executable}), torch {torch.__version__}, "
      f"{torch.cuda.get_device_name()}; missing: {', '.join(missing) or 'nothing'}", flush=True)
PYEOF
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
