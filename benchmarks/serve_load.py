"""serve load: N concurrent clients streaming completions from the deployed endpoint (Ray
Serve, the `hf` engine's continuous batching) vs sequential `model.generate` in-process.

    python benchmarks/serve_load.py [--concurrency 16] [--requests 16] [--max-tokens 64]

Model: a byte-level BPE tokenizer (`--vocab-size`) trained on built-in docstrings and a
randomly initialised `LlamaForCausalLM` of about 58M parameters (`--hidden`, `--layers`),
saved as safetensors (not timed). lmforge: `lmforge.serve.deploy.deploy` of a
`ServeConfig` on a local Ray with 2 CPUs, one replica of `--replica-cpus` CPUs; clients:
`--concurrency` asyncio tasks with the official `AsyncOpenAI` client, each taking the
next of `--requests` fixed prompts, streaming (`stream_options.include_usage`), greedy,
`--max-tokens` new tokens. Figures: generated tokens/s over the wall time of the load,
time to first token and latency p50/p99 per request, errors. Baseline: the same prompts,
one `model.generate` after another (greedy, `max_new_tokens`, the engine's suppressed
tokens) in this process, torch limited to as many threads as the replica gets. One
warm-up request on each side is not counted. Agreement, prompt by prompt: the same text
and number of completion tokens, else the first mismatches are printed and the exit
status is 1. Speed goal: ratio >= 4 at concurrency 16 (a miss is printed, not a failure).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

MODEL_NAME = "bench-load"
SPEED_GOAL = 4.0  # lmforge / baseline generated tokens/s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_model_dir(path: Path, hidden: int, layers: int, vocab_size: int) -> int:
    """A random Llama (fp32, safetensors) and its tokenizer; returns the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmforge.pipelines.tokenizer import train_tokenizer

    tok = train_tokenizer((d["text"] for d in harness.docstrings(3000)), vocab_size)
    tok.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def prompts(k: int) -> list[str]:
    """k fixed prompts: the first sentence of k docstrings, cut to 30 words."""
    out: list[str] = []
    for d in harness.docstrings(20 * k + 20):
        first = " ".join(d["text"].split(".")[0].split()[:30])
        if len(first) > 20 and first not in out:
            out.append(first)
    step = max(1, len(out) // k)
    return out[::step][:k]


def sequential_generate(model_dir: Path, texts: list[str], max_tokens: int) -> list[Any]:
    """(seconds, text, completion tokens) of each prompt by `model.generate`, one by one."""
    import torch

    from lmforge.platform.hf_model import load_causal_lm
    from lmforge.serve.hf_engine import token_rules

    model, tok = load_causal_lm(str(model_dir), device="cpu")
    eos_ids, never, first = token_rules(model, tok)

    def one(text: str) -> tuple[float, str, int]:
        ids = torch.tensor([tok(text)["input_ids"]])
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_tokens,
                eos_token_id=sorted(eos_ids),
                pad_token_id=tok.pad_token_id,
                suppress_tokens=never or None,
                begin_suppress_tokens=first,
            )
        dt = time.perf_counter() - t
        new = out[0, ids.shape[1] :].tolist()
        text_ids = [i for i in new if i not in eos_ids]
        decoded = tok.decode(text_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return dt, decoded, len(new)

    one(texts[0])  # warm-up
    return [one(t) for t in texts]


async def load(base_url: str, texts: list[str], concurrency: int, max_tokens: int) -> Any:
    """Stream every prompt through `concurrency` clients; (wall s, per-request results)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    results: list[Any] = [None] * len(texts)
    todo = iter(range(len(texts)))

    async def request(i: int) -> tuple[float, float, str, int] | str:
        t = time.perf_counter()
        ttft, tokens, pieces = float("nan"), 0, list[str]()
        try:
            stream = await client.completions.create(
                model=MODEL_NAME,
                prompt=texts[i],
                max_tokens=max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    if not pieces:
                        ttft = time.perf_counter() - t
                    pieces.append(chunk.choices[0].text)
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
        except Exception as exc:  # counted as an error, the load goes on
            return f"{type(exc).__name__}: {exc}"
        return ttft, time.perf_counter() - t, "".join(pieces), tokens

    async def worker() -> None:
        for i in todo:
            results[i] = await request(i)

    async with client:
        await request(0)  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return wall, results


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    ap.add_argument("--requests", type=int, default=16, help="prompts (requests) in all")
    ap.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    ap.add_argument("--hidden", type=int, default=512, help="model width")
    ap.add_argument("--layers", type=int, default=12, help="model layers")
    ap.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size")
    ap.add_argument("--replica-cpus", type=float, default=1, help="CPUs of the Serve replica")
    args = ap.parse_args()

    import torch

    from lmforge.serve.config import ServeConfig
    from lmforge.serve.deploy import deploy

    threads = max(1, int(args.replica_cpus))  # Ray sets OMP_NUM_THREADS so in a replica
    torch.set_num_threads(threads)
    texts = prompts(args.requests)

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as d:
        model_dir = Path(d) / "model"
        n_params = build_model_dir(model_dir, args.hidden, args.layers, args.vocab_size)
        t0 = time.perf_counter()
        base = sequential_generate(model_dir, texts, args.max_tokens)
        t_base = time.perf_counter() - t0

        t_ray = harness.start_ray()
        try:
            t0 = time.perf_counter()
            cfg = ServeConfig(
                model=str(model_dir),
                served_model_name=MODEL_NAME,
                port=free_port(),
                num_cpus=args.replica_cpus,
                max_ongoing_requests=max(args.concurrency, 1),
                max_tokens=args.max_tokens,
                # each request needs (prompt + max_tokens) / 64 blocks, rounded up
                kv_cache_blocks=args.concurrency * (2 + args.max_tokens // 64) + 8,
                kv_page_size=64,
            )
            base_url = deploy(cfg, tracking_uri=None)
            t_deploy = time.perf_counter() - t0
            wall, lm = asyncio.run(load(base_url, texts, args.concurrency, args.max_tokens))
        finally:
            from ray import serve

            serve.shutdown()
            harness.stop_ray()

    errors = [(i, r) for i, r in enumerate(lm) if isinstance(r, str)]
    good = [r for r in lm if not isinstance(r, str)]
    tps_lm = sum(r[3] for r in good) / wall
    tps_base = sum(r[2] for r in base) / sum(r[0] for r in base)
    print(
        f"setup (not timed below): model {n_params / 1e6:.1f}M parameters; Ray startup "
        f"{t_ray:.1f} s, Serve start + deploy {t_deploy:.1f} s; {len(texts)} prompts "
        f"(e.g. {texts[0]!r}), greedy, {args.max_tokens} new tokens; torch threads "
        f"{threads} on each side; baseline run {t_base:.1f} s"
    )
    ms = 1e3
    harness.table(
        [
            (f"lmforge Serve, {args.concurrency} streaming clients", harness.fmt(tps_lm),
             harness.fmt(pct([r[0] for r in good], 0.5) * ms),
             harness.fmt(pct([r[0] for r in good], 0.99) * ms),
             harness.fmt(pct([r[1] for r in good], 0.5) * ms),
             harness.fmt(pct([r[1] for r in good], 0.99) * ms), str(len(errors))),
            ("transformers generate, sequential", harness.fmt(tps_base), "", "",
             harness.fmt(pct([r[0] for r in base], 0.5) * ms),
             harness.fmt(pct([r[0] for r in base], 0.99) * ms), "0"),
        ],
        ("", "gen tok/s", "TTFT p50 ms", "TTFT p99 ms", "latency p50 ms", "p99 ms", "errors"),
    )  # fmt: skip
    for i, err in errors[:5]:
        print(f"  ERROR prompt {i}: {err}")
    differ = [
        (texts[i], r[2:], b[1:])
        for i, (r, b) in enumerate(zip(lm, base, strict=True))
        if not isinstance(r, str) and r[2:] != b[1:]
    ]
    print(
        f"agreement: same greedy text and completion tokens for every prompt="
        f"{not differ and not errors} ({len(differ)} mismatches, {len(errors)} errors)"
    )
    for q, a, b in differ[:5]:
        print(f"  MISMATCH {q[:40]!r}: serve {a!r}\n           generate {b!r}")
    return harness.result(
        "serve_load", tps_lm, tps_base, "generated tok/s",
        agree=not differ and not errors, goal=SPEED_GOAL,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
