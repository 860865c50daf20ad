"""`tokenize.loss_on: assistant`: which tokens are targets, on real GPTeacher conversations
and multi-turn OpenAI-messages records with system turns; and the mask reaching the loss
through the real path (the tokenize stage's shards, the training data reader, Ray Train
with two DeepSpeed ranks over gloo): the logged first-step loss is the mean over the
assistant targets of both ranks, recomputed here from the initial weights."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from lmforge.jobs.recipe import load_recipe
from lmforge.pipelines.mixture import SOURCE, TokenizeDocs
from lmforge.pipelines.packing import LOSS_MASK, chat_token_ids
from lmforge.pipelines.synthetic.formats import to_conversation
from lmforge.pipelines.tokenizer import train_tokenizer
from lmforge.platform import chat

from conftest import shared

MULTI_TURN = [
    {
        "messages": [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris is the capital of France."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "Rome.\n\nIt has been since 1871."},
        ]
    },
    {  # ends on the user's turn: its end-of-text is not a target
        "messages": [
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Another one?"},
        ]
    },
]


def conversations(n: int) -> list[list[dict[str, str]]]:
    records = json.loads(shared("synthetic/gpteacher_roleplay_gpt4.json").read_text())[:n]
    return [to_conversation(r) for r in MULTI_TURN + records]


def web_docs(n: int) -> list[str]:
    out = []
    with shared("corpus/debian_docs_en_ja_de.jsonl").open(encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"][:2000])
            if len(out) == n:
                break
    return out


def test_only_assistant_turns_and_their_closing_tokens_are_targets() -> None:
    convs = conversations(60)
    web = web_docs(20)
    texts = [chat.render(c) for c in convs] + web
    tok = train_tokenizer(texts, 600)
    step = TokenizeDocs(
        tok.backend_tokenizer.to_str(), tok.eos_token_id, 0.0, 0, chat_token_ids(tok)
    )
    ids = [f"d{i}" for i in range(len(texts))]
    out = step(pa.table({"id": ids, "text": texts, SOURCE: ["s"] * len(texts)})).to_pylist()
    for conv, row in zip(convs, out[: len(convs)], strict=True):
        trained = [t for t, keep in zip(row["input_ids"], row[LOSS_MASK], strict=True) if keep]
        expected = "".join(m["content"] + chat.TURN_END for m in conv if m["role"] == "assistant")
        if conv[-1]["role"] == "assistant":
            expected += chat.EOS  # the model learns to stop after answering
        assert tok.decode(trained) == expected
        assert row["n_loss"] == len(trained) < row["n_tokens"] == len(row["input_ids"])
    for row in out[len(convs) :]:  # web text has no role token: every token is a target
        assert all(row[LOSS_MASK]) and row["n_loss"] == row["n_tokens"]


@pytest.mark.usefixtures("ray_local")
def test_the_mask_reaches_the_loss_of_two_deepspeed_ranks(tmp_path: Path) -> None:
    from transformers import AutoConfig, LlamaForCausalLM

    from lmforge.jobs import pretrain, tokenize
    from lmforge.train.data import TrainBatches
    from lmforge.train.sharding import target_loss_sum

    convs = conversations(400)
    docs = [{"id": f"c{i}", "text": chat.render(c)} for i, c in enumerate(convs)]
    docs += [{"id": f"w{i}", "text": t} for i, t in enumerate(web_docs(30))]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.Table.from_pylist(docs), tmp_path / "in" / "part-0.parquet")

    def recipe(stage: str, inputs: list[str], output: Path, *sets: str):  # type: ignore[no-untyped-def]
        return load_recipe(
            None,
            stage=stage,
            input=inputs,
            output=str(output),
            overrides=[f"workdir={tmp_path}", "mlflow.experiment=test-mask", *sets],
        )

    tokens = tmp_path / "tokens"
    tok_sets = ("tokenize.vocab_size=512", "tokenize.seq_len=64", "tokenize.loss_on=assistant")
    tokenize.run(recipe("tokenize", [str(tmp_path / "in")], tokens, *tok_sets))
    manifest = json.loads((tokens / "manifest.json").read_text())
    assert manifest["loss_on"] == "assistant"
    split = manifest["splits"]["train"]
    assert 0 < split["loss_tokens"] < split["tokens"]
    (figures,) = manifest["sources"]["train"].values()  # one source: counted in the shards
    assert (figures["loss_tokens"], figures["tokens"]) == (split["loss_tokens"], split["tokens"])

    train_recipe = recipe(
        "pretrain",
        [str(tokens)],
        tmp_path / "pretrain",
        "pretrain.preset=tiny",
        "pretrain.num_workers=2",
        "pretrain.cpus_per_worker=0.5",
        "pretrain.zero_stage=2",
        "pretrain.micro_batch_size=4",
        "pretrain.max_steps=1",
        "pretrain.warmup_steps=0",
        "pretrain.log_every=1",
        "pretrain.eval_every=1",
        "pretrain.eval_batches=1",
        "pretrain.checkpoint_every=100",
    )
    result = pretrain.run(train_recipe)
    client = MlflowClient(tracking_uri=train_recipe.mlflow.tracking_uri)
    (logged,) = client.get_metric_history(result.run_id, "train_loss")

    # the same step recomputed: each rank's first batch, the initial weights (the run's seed)
    config = AutoConfig.from_pretrained(result.output)
    torch.manual_seed(1234)
    model = LlamaForCausalLM(config).eval()
    sums, targets, plain = [], [], []
    for rank in (0, 1):
        data = TrainBatches(
            str(tokens / "train"),
            seq_len=64,
            seed=1234,
            rank=rank,
            world=2,
            micro_batch_size=4,
            grad_accum_steps=1,
        )
        (x,), labels = data.step(0)
        assert labels is not None
        with torch.no_grad():
            logits = model(input_ids=x).logits
            sums.append(float(target_loss_sum(logits, labels[0])))
            targets.append(int((labels[0][:, 1:] != -100).sum()))
            plain.append(float(model(input_ids=x, labels=x).loss))
    assert 0 < targets[0] < x[:, 1:].numel() and targets[0] != targets[1]
    masked = sum(sums) / sum(targets)  # every target of the step weighs the same
    mean_of_means = (sums[0] / targets[0] + sums[1] / targets[1]) / 2
    assert logged.value == pytest.approx(masked, rel=1e-6)
    # what a dropped mask, or a mean of the ranks' means, would have logged instead: both
    # outside that tolerance (by 660x and 11x here), so the check can see them
    assert abs(sum(plain) / 2 - masked) > 5e-6 * masked
    assert abs(mean_of_means - masked) > 5e-6 * masked
