"""serve latency: chat completions through lmforge's Ray Serve app (HTTP, `openai` client)
vs the same generations by `HFEngine` in this process: the cost of HTTP + Serve.

    python benchmarks/serve_latency.py [--size 20] [--max-tokens 32] [--preset tiny]

Model: a byte-level BPE tokenizer trained on built-in docstrings and a randomly
initialised `LlamaForCausalLM` of preset `--preset`, saved with `save_pretrained`
(not timed). lmforge: `build_app(dir, served_model_name="bench")` on Ray Serve, one
replica of `--replica-cpus` CPUs, called with the official `openai` client. Baseline:
`HFEngine(dir).encode_chat(...)` + `.generate(...)` in this process, torch limited to
as many threads as the replica gets. `--size` questions, each asked of both (in turn,
so both see the same machine load), greedy (temperature 0), `--max-tokens` tokens; one
warm-up request each is not counted. Agreement, request by request: the same completion
text and number of completion tokens; the script prints the first differences and exits 1
when any is found. Speed goal: mean latency through Serve at most 1.5 x in-process
(ratio <= 1.5); missing it is printed but does not fail the run.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import harness

MODEL_NAME = "bench"
LATENCY_GOAL = 1.5  # lmforge / baseline mean ms per request: HTTP + Serve add at most half


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_model_dir(path: Path, preset: str, vocab_size: int) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from lmforge.pipelines.tokenizer import train_tokenizer
    from lmforge.train.presets import get_preset

    tok = train_tokenizer((d["text"] for d in harness.docstrings(3000)), vocab_size)
    tok.save_pretrained(path)
    config = get_preset(preset).llama_config(
        vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)


def questions(k: int) -> list[str]:
    """k questions about names of the standard library: "What does os.path.join do?"."""
    names = []
    for d in harness.docstrings(50 * k + 50):
        name = d["id"].removeprefix("pydoc:").replace(":<module>", "").replace(":", ".")
        if name not in names:
            names.append(name)
    step = max(1, len(names) // (k + 1))
    return [f"What does {n} do?" for n in names[step::step][:k]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=20, help="requests timed on each side")
    ap.add_argument("--max-tokens", type=int, default=32, help="completion tokens per request")
    ap.add_argument("--preset", default="tiny", help="model preset (random weights)")
    ap.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    ap.add_argument("--replica-cpus", type=float, default=1, help="CPUs of the Serve replica")
    ap.add_argument("--num-gpus", type=float, default=0, help="GPUs of the replica (and here)")
    args = ap.parse_args()

    import torch
    from openai import OpenAI
    from ray import serve

    from lmforge.serve import HFEngine, build_app

    threads = max(1, int(args.replica_cpus))  # Ray sets OMP_NUM_THREADS so in a replica
    torch.set_num_threads(threads)
    device = "cuda" if args.num_gpus > 0 else "cpu"
    prompts = questions(args.size)

    with tempfile.TemporaryDirectory(prefix="lmforge-bench-") as d:
        model_dir = Path(d) / "model"
        build_model_dir(model_dir, args.preset, args.vocab_size)
        engine = HFEngine(str(model_dir), device=device)

        t_ray = harness.start_ray()
        port = free_port()
        try:
            t0 = time.perf_counter()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            options = {"num_cpus": args.replica_cpus, "num_gpus": args.num_gpus}
            app = build_app(str(model_dir), served_model_name=MODEL_NAME, ray_actor_options=options)
            serve.run(app, name="lmforge-bench", route_prefix="/")
            t_deploy = time.perf_counter() - t0
            client = OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300
            )

            def via_serve(q: str) -> tuple[float, str, int]:
                t = time.perf_counter()
                out = client.chat.completions.create(
                    model=MODEL_NAME,
                    messages=[{"role": "user", "content": q}],
                    max_tokens=args.max_tokens,
                    temperature=0,
                )
                dt = time.perf_counter() - t
                assert out.usage is not None
                return dt, out.choices[0].message.content or "", out.usage.completion_tokens

            def in_process(q: str) -> tuple[float, str, int]:
                t = time.perf_counter()
                ids = engine.encode_chat([{"role": "user", "content": q}])
                res = engine.generate(ids, max_tokens=args.max_tokens, temperature=0.0)
                return time.perf_counter() - t, res.text, len(res.token_ids)

            via_serve("Warm-up?"), in_process("Warm-up?")
            lm: list[tuple[float, str, int]] = []
            base: list[tuple[float, str, int]] = []
            for q in prompts:
                base.append(in_process(q))
                lm.append(via_serve(q))
        finally:
            serve.shutdown()
            harness.stop_ray()

    def figures(runs: list[tuple[float, str, int]]) -> tuple[float, float, float]:
        lat = [r[0] for r in runs]
        tokens = sum(r[2] for r in runs)
        return statistics.mean(lat), statistics.median(lat), tokens / sum(lat)

    mean_lm, med_lm, tps_lm = figures(lm)
    mean_b, med_b, tps_b = figures(base)
    print(
        f"setup (not timed below): Ray startup {t_ray:.1f} s, Serve start + deploy "
        f"{t_deploy:.1f} s; {len(prompts)} requests (e.g. {prompts[0]!r}) of up to "
        f"{args.max_tokens} tokens, "
        f"torch threads {threads} on each side, device {device}"
    )
    harness.table(
        [
            ("lmforge Ray Serve + HTTP (openai)", harness.fmt(mean_lm * 1e3),
             harness.fmt(med_lm * 1e3), harness.fmt(tps_lm)),
            ("HFEngine.generate in-process", harness.fmt(mean_b * 1e3),
             harness.fmt(med_b * 1e3), harness.fmt(tps_b)),
        ],
        ("", "mean ms", "median ms", "completion tok/s"),
    )  # fmt: skip
    print(f"overhead of HTTP + Serve: {(mean_lm - mean_b) * 1e3:,.1f} ms per request (mean)")
    differ = [(q, a, b) for q, a, b in zip(prompts, lm, base, strict=True) if a[1:] != b[1:]]
    print(
        f"agreement: same completion text and token count for every request={not differ} "
        f"({sum(r[2] for r in lm):,} vs {sum(r[2] for r in base):,} tokens)"
    )
    for q, a, b in differ[:5]:
        print(f"  MISMATCH {q!r}: serve {a[1:]!r}, in-process {b[1:]!r}")
    return harness.result(
        "serve_latency", mean_lm * 1e3, mean_b * 1e3, "ms/request",
        agree=not differ, goal=LATENCY_GOAL, lower_is_better=True,
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
