"""`HFEngine`: a Hugging Face causal LM served with transformers' continuous batching.

    engine = HFEngine("/models/tiny", kv_cache_blocks=128)
    async for delta in engine.generate_stream(ids, SamplingParams(max_tokens=32)): ...

One `ContinuousBatchingManager` (`model.init_continuous_batching`) runs the model in a
background thread: every request in flight joins the next forward pass, so concurrent
requests share passes over the weights (a paged KV cache of `kv_cache_blocks` x
`kv_page_size` tokens, sized here, never "90% of free memory"). Each request registers a
result handler that the manager calls on this event loop with the tokens so far; the
text is assembled by `engine.TextStream`. A request that ends early (a stop string, a
client that went away) is cancelled in the manager, which frees its cache blocks.

Sampling is per request: `SeededSampler`, the manager's one logits processor, applies
each request's temperature and top-p and draws with the Gumbel-max trick from the
request's own seeded generator, so the manager's argmax picks a sample whose value
depends only on (seed, position), never on which requests share the batch. Greedy
requests (temperature 0) keep the model's logits as they are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import threading
from collections.abc import AsyncGenerator
from typing import Any

import torch
from transformers import ContinuousBatchingConfig, GenerationConfig
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.logits_process import LogitsProcessorList

from lmforge.serve.engine import (
    GenerationDelta,
    GenerationResult,
    SamplingParams,
    TextStream,
    TokenLogprob,
    generate,
)

logger = logging.getLogger("ray.serve")

# (token id, logprob, [(id, logprob) of the top alternatives]) recorded per sampled token
Record = tuple[int, float, list[tuple[int, float]]]


def token_rules(model: Any, tokenizer: Any) -> tuple[set[int], list[int], list[int]]:
    """(EOS ids, ids never sampled, ids not sampled first) of a model and its tokenizer.

    Padding is never a meaningful output token. The first token must carry text, so an
    undertrained model cannot answer with nothing (EOS) or with a special token that
    decodes to "" (added tokens flagged special, such as chat-role markers, count too:
    decode skips them). `model.generate` does the same with `suppress_tokens=never` and
    `begin_suppress_tokens=first` (benchmarks/serve_load.py compares the two).
    """
    vocab = model.config.vocab_size
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    eos_ids = {i for i in eos_ids if i is not None and i < vocab}
    pad = tokenizer.pad_token_id
    never = [pad] if pad is not None and pad not in eos_ids else []
    special = set(tokenizer.all_special_ids) | {
        i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special
    }
    first = sorted({i for i in special if i < vocab} | eos_ids)
    return eos_ids, never, first


def _position(state: Any) -> int:
    """Index of the token a request samples now, among its generated tokens. A request the
    manager evicted and restarted carries its earlier tokens in its prompt (beyond
    `_true_initial_tokens`): they count, so the seed sequence and first-token rule hold."""
    restarted = len(state.initial_tokens) - state._true_initial_tokens
    return int(state.generated_len() + (restarted if state._true_initial_tokens else 0))


class SeededSampler(ContinuousBatchingLogitsProcessor):
    """Per-request sampling inside the manager's batched step (scores are (B, V) fp32).

    Request kwargs: `temperature` (0: greedy), `top_p`, `seed`, and `top_logprobs` (k;
    present only when logprobs are wanted: the chosen token's logprob and the k best
    under the unmodified distribution go to `records[request_id]`). Always: `never_ids`
    are never sampled, `first_banned` not as the first token (an answer starts with
    text, not EOS or a role marker). The rows of a batch are the requests that get a
    token, in the order `prepare_tensor_args` sees them (the manager runs one batch at a
    time: asynchronous batching is off).
    """

    def __init__(
        self, never_ids: list[int], first_banned: list[int], records: dict[str, list[Record]]
    ) -> None:
        # the request kwargs the manager lets through (it checks their types)
        self.supported_kwargs = {"temperature": float, "top_p": float, "seed": int}
        self.supported_kwargs["top_logprobs"] = int
        self.ignored_kwargs = ()
        self._never = never_ids
        self._first_banned = first_banned
        self._records = records
        self._rows: list[Any] = []  # RequestState of each row of the next scores

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)  # the real arguments are read from the request states

    def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
        self._rows = [r.state for r in requests_with_new_token]
        return torch.zeros(len(self._rows), dtype=torch.int32)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        for i, state in enumerate(self._rows):
            kw = state.logit_processor_kwargs
            step = _position(state)
            raw = scores[i].clone() if "top_logprobs" in kw else None
            scores[i, self._never] = float("-inf")
            if step == 0:
                scores[i, self._first_banned] = float("-inf")
            temperature = kw.get("temperature", 0.0)
            if temperature > 0:
                scores[i] = self._sample_scores(scores[i], temperature, kw, step)
            if raw is not None:
                self._record(state.request_id, raw, int(torch.argmax(scores[i])), kw)
        return scores

    @staticmethod
    def _sample_scores(row: torch.Tensor, temperature: float, kw: dict, step: int) -> torch.Tensor:
        """Scores whose argmax is a top-p sample of softmax(row / temperature)."""
        row = row / temperature
        top_p = kw.get("top_p", 1.0)
        if top_p < 1.0:
            probs, order = torch.sort(torch.softmax(row, -1), descending=True)
            # drop a token when the mass before it already reaches top_p (the best stays)
            drop = torch.cumsum(probs, -1) - probs >= top_p
            row[order[drop]] = float("-inf")
        generator = torch.Generator().manual_seed(hash((kw["seed"], step)) & (2**63 - 1))
        uniform = torch.rand(row.shape, generator=generator).clamp_(min=1e-20)
        return row - torch.log(-torch.log(uniform))  # + Gumbel(0, 1) noise

    def _record(self, request_id: str, raw: torch.Tensor, token: int, kw: dict) -> None:
        records = self._records.get(request_id)
        if records is None:
            return
        logprobs = torch.log_softmax(raw, -1)
        alternatives: list[tuple[int, float]] = []
        if kw["top_logprobs"]:
            top = torch.topk(logprobs, kw["top_logprobs"])
            alternatives = list(zip(top.indices.tolist(), top.values.tolist(), strict=True))
        records.append((token, float(logprobs[token]), alternatives))


class HFEngine:
    """A causal LM and its tokenizer from a local Hugging Face directory, continuously batched.

    The directory holds safetensors weights, `config.json` and the tokenizer files, as
    written by `save_pretrained`; it is loaded by `lmforge.platform.hf_model`, which
    refuses pickle-only folders and picks the dtype (bf16 on CUDA, fp32 on CPU).
    `device`: `"auto"` (CUDA when available, else CPU) or a torch device string. The KV
    cache holds `kv_cache_blocks * kv_page_size` tokens over all requests in flight; at
    most `max_batch_requests` share one forward pass.
    """

    def __init__(
        self,
        model_dir: str,
        *,
        device: str = "auto",
        kv_cache_blocks: int = 128,
        kv_page_size: int = 128,
        max_batch_requests: int = 32,
    ) -> None:
        from lmforge.platform.hf_model import load_causal_lm, pick_device

        self.device = pick_device(device)
        self.model, self.tokenizer = load_causal_lm(model_dir, device=str(self.device))
        self.eos_ids, self.never_ids, self.first_banned = token_rules(self.model, self.tokenizer)
        self._records: dict[str, list[Record]] = {}
        self._ids = itertools.count()
        self._manager = self._start_manager(kv_cache_blocks, kv_page_size, max_batch_requests)
        logger.info(
            "HFEngine loaded %s: %s, %.1fM parameters, vocab %d, %s on %s, KV cache %d x %d",
            model_dir,
            type(self.model).__name__,
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            self.model.config.vocab_size,
            self.model.dtype,
            self.device,
            kv_cache_blocks,
            kv_page_size,
        )

    def _start_manager(self, blocks: int, page_size: int, max_requests: int) -> Any:
        # do_sample=False: the manager takes the argmax of what `SeededSampler` returns.
        generation = GenerationConfig(do_sample=False, eos_token_id=sorted(self.eos_ids) or -1)
        cb_config = ContinuousBatchingConfig(
            num_blocks=blocks,
            page_size=page_size,
            max_requests_per_batch=max_requests,
            per_request_processors=True,
            use_async_batching=False,  # the sampler relies on one batch at a time
            use_cuda_graph=False,
            allow_block_sharing=False,
        )
        manager = self.model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=cb_config
        )
        sampler = SeededSampler(self.never_ids, self.first_banned, self._records)
        processors = ContinuousBatchingLogitsProcessorList(LogitsProcessorList([sampler]))
        processors.tensors_required = 1  # SeededSampler's one argument row
        manager.logit_processor = processors  # before start(): the batch processor reads it
        manager.start()
        # The manager's thread is not a daemon: stop it when the interpreter exits, before
        # non-daemon threads are joined (the hook concurrent.futures uses), or exit hangs.
        threading._register_atexit(self.close)  # type: ignore[attr-defined]
        return manager

    def in_flight(self) -> int:
        """Requests the manager holds now (decoding, prefilling or waiting for a slot)."""
        processor = self._manager.batch_processor
        if processor is None:
            return 0
        return len(processor.scheduler.active_requests) + len(processor.scheduler.waiting_requests)

    def check_health(self) -> None:
        """Raise when the generation thread is gone (it died or was stopped)."""
        if not self._manager.is_running():
            raise RuntimeError("the continuous batching thread is not running")

    def close(self) -> None:
        """Stop the generation thread (requests in flight are finished first); idempotent."""
        if self._manager.is_running():
            self._manager.stop(block=True, timeout=30)

    @property
    def max_context_length(self) -> int:
        """`max_position_embeddings` of the model config."""
        return int(self.model.config.max_position_embeddings)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids as `tokenizer(prompt)` gives them (with BOS where the tokenizer adds it)."""
        return list(self.tokenizer(prompt)["input_ids"])

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Render with the tokenizer's chat template and an open assistant turn."""
        encoded: Any = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True
        )
        # transformers 5 returns a BatchEncoding (return_dict=True by default), 4.x a list.
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return list(ids)

    def decode(self, token_ids: list[int]) -> str:
        """Text of tokens, special tokens left out."""
        return str(
            self.tokenizer.decode(
                token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )

    async def generate_stream(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[GenerationDelta]:
        """Sample up to `params.max_tokens` tokens in the shared batch, yielding final text."""
        if not prompt_ids:
            raise ValueError("the prompt has no tokens")
        request_id = f"lmforge-{next(self._ids)}"
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        kwargs: dict[str, Any] = {
            "temperature": float(params.temperature),
            "top_p": float(params.top_p),
            "seed": params.seed if params.seed is not None else random.getrandbits(63),
        }
        if params.logprobs is not None:
            kwargs["top_logprobs"] = int(params.logprobs)
            self._records[request_id] = []
        self._manager.register_result_handler(request_id, outputs.put_nowait)
        added = self._manager.add_request(
            prompt_ids,
            request_id=request_id,
            max_new_tokens=params.max_tokens,
            streaming=True,
            eos_token_id=sorted(self.eos_ids) or -1,
            **kwargs,
        )
        if added is None:  # the manager is stopping or has failed: it dropped the request
            self._cancel(request_id)
            self._records.pop(request_id, None)
            raise RuntimeError("the continuous batching manager is not accepting requests")
        text = TextStream(self.decode, params.stop, self.eos_ids)
        sent = 0  # tokens already passed to `text`
        finished = False  # the manager is done with the request
        try:
            while not text.done:
                output = await outputs.get()
                while not outputs.empty():  # outputs hold all tokens so far: take the latest
                    output = outputs.get_nowait()
                if output.error is not None:
                    raise RuntimeError(f"generation failed: {output.error}")
                finished = output.is_finished()
                start, piece, finish = sent, "", None
                for token in output.generated_tokens[start:]:
                    sent += 1
                    part, finish = text.push(token)
                    piece += part
                    if finish is not None:
                        break
                if finish is None and finished:
                    part, finish = text.finish()
                    piece += part
                taken = output.generated_tokens[start:sent]
                if piece or taken or finish:
                    logprobs = self._logprobs(request_id, start, sent)
                    yield GenerationDelta(piece, taken, finish, logprobs)
        finally:
            self._records.pop(request_id, None)
            if not finished:  # a stop string, a client gone, an error: free the slot
                self._cancel(request_id)

    def _cancel(self, request_id: str) -> None:
        """Free the request's slot and cache blocks in the manager; drop its handler."""
        self._manager.cancel_request(request_id)
        router = self._manager.output_router  # the manager forgets handlers only on finish
        with router._lock:
            router.result_handlers.pop(request_id, None)

    def _logprobs(self, request_id: str, start: int, end: int) -> list[TokenLogprob]:
        records = self._records.get(request_id)
        if not records:
            return []
        return [
            TokenLogprob(self.decode([tok]), lp, [(self.decode([i]), v) for i, v in top])
            for tok, lp, top in records[start:end]
        ]

    def generate(self, prompt_ids: list[int], **sampling: Any) -> GenerationResult:
        """A whole completion from synchronous code (a script, a benchmark); `sampling`
        are `SamplingParams` fields."""
        return asyncio.run(generate(self, prompt_ids, SamplingParams(**sampling)))
