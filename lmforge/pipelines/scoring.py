"""Model scoring of synthetic conversations: perplexity of the assistant turns.

An optional step after the rule-based filters. A local Hugging Face causal LM reads each
kept conversation in the project's turn format ("<|user|>\\n...\\n<|assistant|>\\n...",
the format `render_text` writes for pretraining) and the row's `meta` gets
`{"perplexity": p}`, where p = exp(mean negative log-likelihood, in nats per token) of the
assistant turns' tokens given everything before them. With `max_perplexity` set, rows
above it are dropped with step "score" and reason "perplexity"; without it rows are only
annotated. A row with no assistant token to score is kept and its `meta` says why
(`perplexity_skipped`: "no_answer" or "answer_beyond_max_tokens").

The model is loaded once per Ray Data actor, on a GPU in bfloat16 when the cluster has
GPUs (one per actor), else on the CPU in float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lmforge.pipelines.config import ScoringConfig
from lmforge.pipelines.records import KEPT, conform, to_table
from lmforge.pipelines.steps import drop, update_meta
from lmforge.platform import chat

if TYPE_CHECKING:
    import ray.data

IGNORE = -100  # the label of a token that is read but not scored (cross-entropy's default)


class PerplexityScorer:
    """Ray Data callable class: loads the model once per actor, scores kept rows of each
    batch (a pyarrow Table in ROW_SCHEMA) and passes the other rows through unchanged."""

    name = "score"

    def __init__(self, cfg: dict[str, Any], model_dir: str) -> None:
        from lmforge.platform.hf_model import load_causal_lm

        self.cfg = ScoringConfig.model_validate(cfg)
        self.model, self.tok = load_causal_lm(model_dir)
        self.device = self.model.device
        if self.tok.pad_token_id is None:
            # padded positions are masked and never scored: any known id will do
            self.tok.pad_token = self.tok.eos_token or self.tok.convert_ids_to_tokens(0)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.max_tokens = min(self.cfg.max_tokens, limit or self.cfg.max_tokens)
        # the BOS a Llama-style tokenizer puts before a text; the project's adds none
        bos = self.tok.bos_token_id
        self.prefix = [bos] if bos is not None and self.tok("a").input_ids[:1] == [bos] else []

    def encode(self, messages: list[dict[str, str]] | None) -> tuple[list[int], list[int], bool]:
        """(ids, labels, answered) of one conversation, cut to `max_tokens`.

        labels[t] is ids[t] on an assistant turn's content, IGNORE on headers, separators
        and other turns. `answered`: an assistant turn has content, cut off or not.
        """
        ids, labels = list(self.prefix), [IGNORE] * len(self.prefix)
        answered = False
        for i, turn in enumerate(messages or []):
            # tokenized piece by piece so every token is on one side of a label boundary;
            # headers and contents are split apart by the byte-level pre-tokenizer anyway
            # the previous turn's end and this turn's header, as `chat.render` writes them
            header = self._ids((chat.TURN_END if i else "") + chat.turn_header(turn["role"]))
            content = self._ids(turn["content"] or "")
            scored = turn["role"] == "assistant"
            answered = answered or (scored and bool(content))
            ids += header + content
            labels += [IGNORE] * len(header) + (content if scored else [IGNORE] * len(content))
        return ids[: self.max_tokens], labels[: self.max_tokens], answered

    def _ids(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False).input_ids)

    def perplexities(self, ids: list[list[int]], labels: list[list[int]]) -> list[float]:
        """Perplexity of each conversation's labelled tokens; each has at least one
        labelled token after the first position."""
        import torch
        import torch.nn.functional as F

        width = max(len(x) for x in ids)

        def right_pad(seqs: list[list[int]], value: int) -> torch.Tensor:
            rows = [s + [value] * (width - len(s)) for s in seqs]
            return torch.tensor(rows, device=self.device)  # (B, T)

        input_ids = right_pad(ids, self.tok.pad_token_id)
        mask = right_pad([[1] * len(x) for x in ids], 0)
        targets = right_pad(labels, IGNORE)[:, 1:]  # (B, T-1): position t predicts t+1
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits  # (B, T, V)
            scored = targets != IGNORE  # (B, T-1)
            # only the scored positions go to float32, never the whole (B, T, V) tensor
            nll = F.cross_entropy(
                logits[:, :-1][scored].float(), targets[scored], reduction="none"
            )  # (N,) nats, N = scored tokens in the batch
            per_row = torch.zeros(len(ids), device=self.device)
            per_row.index_add_(0, scored.nonzero()[:, 0], nll)
            mean_nll = per_row / scored.sum(dim=1)  # (B,)
        return [float(p) for p in torch.exp(mean_nll).tolist()]

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = conform(batch).to_pylist()
        todo: list[tuple[dict[str, Any], list[int], list[int]]] = []
        for row in rows:
            if row["fate"] != KEPT:
                continue
            ids, labels, answered = self.encode(row["messages"])
            if any(label != IGNORE for label in labels[1:]):
                todo.append((row, ids, labels))
            else:
                skipped = "answer_beyond_max_tokens" if answered else "no_answer"
                update_meta(row, perplexity_skipped=skipped)
        todo.sort(key=lambda t: len(t[1]))  # similar lengths share a batch: little padding
        for start in range(0, len(todo), self.cfg.batch_size):
            chunk = todo[start : start + self.cfg.batch_size]
            ppls = self.perplexities([t[1] for t in chunk], [t[2] for t in chunk])
            for (row, _, _), ppl in zip(chunk, ppls, strict=True):
                update_meta(row, perplexity=round(ppl, 3))
                if self.cfg.max_perplexity is not None and ppl > self.cfg.max_perplexity:
                    drop(row, self.name, "perplexity")
        return to_table(rows)


def score_rows(ds: ray.data.Dataset, cfg: ScoringConfig, *, model_dir: str) -> ray.data.Dataset:
    """Score the kept rows of `ds` (ROW_SCHEMA) with a fixed pool of `PerplexityScorer`
    actors loading `model_dir` (a local HF folder), each holding one GPU when the cluster
    has GPUs."""
    import ray
    import ray.data

    gpus = ray.cluster_resources().get("GPU", 0)
    on_gpu = gpus >= 1
    actors = cfg.num_actors or (int(gpus) if on_gpu else 1)
    return ds.map_batches(
        PerplexityScorer,
        fn_constructor_kwargs={"cfg": cfg.model_dump(), "model_dir": model_dir},
        batch_size=cfg.batch_size * 4,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if on_gpu else 0,
    )
