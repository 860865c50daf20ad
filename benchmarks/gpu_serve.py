"""GPU serving: the `vllm` engine (`ray.serve.llm`) against the `hf` engine (transformers'
continuous batching), both through lmforge's Ray Serve deployment, same model and prompts.

    bash benchmarks/gpu_serve.sh [--concurrency 64] [--requests 256] [--max-tokens 128]

Model: a random Llama (`--hidden`, `--layers`; about 0.5B parameters by default) with a
BPE tokenizer trained on built-in docstrings, saved as safetensors (not timed). Each
engine is deployed with `lmforge.serve.deploy.deploy` on a local Ray with one GPU per
replica, then `--concurrency` streaming clients (the official `AsyncOpenAI`, greedy,
`--max-tokens`) take `--requests` prompts; one warm-up request is not counted. Figures:
generated tokens/s over the load's wall time, TTFT and latency p50/p99, errors. The vLLM
side is the lmforge figure, the `hf` engine the baseline (the comparison the issue asks).
Agreement: both sides answer every request with at least one token and no error (greedy
text is not compared: bf16 kernels of two engines break near-ties of a random model
differently). Exit 0 on agreement, 1 on disagreement, 2 when vLLM is not installed
(the `hf` figure is still printed); "no GPU" and exit 0 on a machine without one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from serve_load import MODEL_NAME, build_model_dir, free_port, load, pct, prompts


def run_engine(engine: str, model_dir: Path, texts: list[str], args: Any) -> tuple[float, list]:
    from ray import serve

    from lmforge.serve.config import ServeConfig
    from lmforge.serve.deploy import deploy

    cfg = ServeConfig(
        engine=engine,
        model=str(model_dir),
        served_model_name=MODEL_NAME,
        port=free_port(),
        num_cpus=4,
        num_gpus=1,
        max_ongoing_requests=args.concurrency,
        max_tokens=args.max_tokens,
        kv_cache_blocks=args.concurrency * (2 + args.max_tokens // 64) + 16,
        kv_page_size=64,
    )
    try:
        base_url = deploy(cfg, tracking_uri=None)
        return asyncio.run(load(base_url, texts, args.concurrency, args.max_tokens))
    finally:
        serve.shutdown()


def row(name: str, wall: float, results: list) -> tuple[tuple[str, ...], float, int]:
    good = [r for r in results if not isinstance(r, str)]
    errors = len(results) - len(good) + sum(1 for r in good if r[3] < 1)
    tps = sum(r[3] for r in good) / wall
    ms = 1e3
    cells = (
        name, harness.fmt(tps),
        harness.fmt(pct([r[0] for r in good], 0.5) * ms),
        harness.fmt(pct([r[0] for r in good], 0.99) * ms),
        harness.fmt(pct([r[1] for r in good], 0.5) * ms),
        harness.fmt(pct([r[1] for r in good], 0.99) * ms), str(errors),
    )  # fmt: skip
    return cells, tps, errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=64, help="concurrent clients")
    ap.add_argument("--requests", type=int, default=256, help="prompts (requests) in all")
    ap.add_argument("--max-tokens", type=int, default=128, help="new tokens per request")
    ap.add_argument("--hidden", type=int, default=1536, help="model width")
    ap.add_argument("--layers", type=int, default=16, help="model layers")
    ap.add_argument("--vocab-size", type=int, default=16384, help="BPE vocabulary size")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no GPU")
        return 0
    has_vllm = importlib.util.find_spec("vllm") is not None
    texts = prompts(args.requests)
    with tempfile.TemporaryDirectory(prefix="lmforge-gpu-serve-") as d:
        model_dir = Path(d) / "model"
        n_params = build_model_dir(model_dir, args.hidden, args.layers, args.vocab_size)
        print(
            f"{torch.cuda.get_device_name()}; model {n_params / 1e6:.0f}M parameters; "
            f"{len(texts)} prompts, {args.concurrency} clients, greedy, {args.max_tokens} "
            f"new tokens; vLLM {'installed' if has_vllm else 'NOT installed'}",
            flush=True,
        )
        harness.start_ray()
        try:
            t0 = time.perf_counter()
            hf = row("hf engine (continuous batching)", *run_engine("hf", model_dir, texts, args))
            print(f"hf side done in {time.perf_counter() - t0:.0f} s", flush=True)
            vl = None
            if has_vllm:
                vl = row("vllm engine (ray.serve.llm)", *run_engine("vllm", model_dir, texts, args))
        finally:
            harness.stop_ray()
    heads = ("", "gen tok/s", "TTFT p50 ms", "TTFT p99 ms", "latency p50 ms", "p99 ms", "errors")
    harness.table([hf[0], *([vl[0]] if vl else [])], heads)
    if vl is None:
        print("vLLM is not installed here (pip install 'lmforge[vllm]'): only the hf figure")
        return 2
    agree = hf[2] == 0 and vl[2] == 0
    print(f"agreement: every request answered by both engines={agree}")
    return harness.result("gpu_serve", vl[1], hf[1], "generated tok/s", agree=agree)


if __name__ == "__main__":
    raise SystemExit(main())
