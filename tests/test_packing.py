"""Packing and the learning-rate schedule: pure logic, checked against hand-worked cases."""

from __future__ import annotations

import itertools
import math

from lmforge.pipelines.packing import is_validation, pack
from lmforge.train.config import PretrainConfig
from lmforge.train.loop import lr_schedule


def test_pack_separates_documents_and_records_their_starts() -> None:
    eos = 0
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15]]  # 4 + 3 + 7 = 14 tokens with EOS
    t = pack(docs, eos, seq_len=4).to_pydict()
    assert t["input_ids"] == [[5, 6, 7, 0], [8, 9, 0, 10], [11, 12, 13, 14]]  # tail [15, 0] cut
    assert t["doc_starts"] == [[0], [0, 3], []]
    assert pack([[1]], eos, seq_len=4).num_rows == 0  # too short for one row: nothing packed


def test_validation_split_is_by_document_and_stable() -> None:
    ids = [f"doc-{i}" for i in range(20_000)]
    val = [i for i in ids if is_validation(i, 0.05)]
    assert 0.04 < len(val) / len(ids) < 0.06
    assert val == [i for i in ids if is_validation(i, 0.05)]
    assert not any(is_validation(i, 0.0) for i in ids)


def test_lr_schedule_warms_up_then_decays_to_min() -> None:
    import torch

    p = PretrainConfig(max_steps=110, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=p.lr)
    sched = lr_schedule(opt, p)
    lrs = []
    for _ in range(p.max_steps + 1):  # the LR of each optimizer step 0..max_steps
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[5] < lrs[9] < p.lr  # warm-up rises
    assert math.isclose(lrs[10], p.lr)  # peak right after warm-up
    assert math.isclose(lrs[60], (p.lr + p.min_lr) / 2)  # cosine midpoint
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:111]))
    assert math.isclose(lrs[110], p.min_lr)  # min_lr at max_steps


def test_normalize_repairs_mojibake_only_when_asked() -> None:
    from lmforge.pipelines.text import Normalize

    row = {
        "text": "The caf\u00c3\u00a9 serves cr\u00c3\u00a8me br\u00c3\u00bbl\u00c3\u00a9e.\u00a0 Fine  text."
    }
    Normalize(fix_mojibake=True).apply(row)
    assert row["text"] == "The café serves crème brûlée. Fine text."
    plain = {"text": "caf\u00c3\u00a9"}
    Normalize().apply(plain)
    assert plain["text"] == "caf\u00c3\u00a9"


def test_chat_render_is_what_the_tokenizers_template_renders() -> None:
    """Training text (`chat.render`) and serving (the tokenizer's template) agree."""
    from lmforge.pipelines.tokenizer import train_tokenizer
    from lmforge.platform import chat

    tok = train_tokenizer(["Hello there, how are you today?"] * 20, vocab_size=300)
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?\nThink."},
        {"role": "assistant", "content": "4"},
    ]
    for gen in (False, True):
        shown = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        assert shown == chat.render(conv, add_generation_prompt=gen)
    assert chat.render(conv[1:2], add_generation_prompt=True).endswith("<|assistant|>\n")


def test_block_tails_are_carried_so_a_split_loses_less_than_one_row() -> None:
    """Blocks packed one by one, then their tails packed together (as `TokenPool.pack`
    does): every token is written exactly once except the last tail, under one row; the
    loss mask travels with its token; a document start is recorded only where a document
    really starts (a piece continuing one cut by a row is no start)."""
    import numpy as np
    import pyarrow as pa

    from lmforge.pipelines import mixture
    from lmforge.pipelines.packing import LOSS_MASK

    rng = np.random.default_rng(3)
    seq_len, pos = 64, 0
    blocks, firsts, source_of = [], set(), {}
    for b in range(7):  # short documents: each block holds a few rows, each tail counts
        docs = []
        for _ in range(int(rng.integers(1, 12))):
            n = int(rng.integers(1, 40))
            docs.append(list(range(pos, pos + n)))  # a token's value is its place
            firsts.add(pos)
            source_of.update({t: f"s{b % 2}" for t in range(pos, pos + n)})
            pos += n
        ids = pa.array(docs, pa.list_(pa.int32()))
        blocks.append(
            pa.table(
                {
                    "input_ids": ids,
                    "n_tokens": pa.array([len(d) for d in docs], pa.int64()),
                    mixture.SOURCE: [f"s{b % 2}"] * len(docs),
                    LOSS_MASK: pa.array([[t % 3 == 0 for t in d] for d in docs]),
                }
            )
        )
    outs = [mixture.pack_part(t, seq_len) for t in blocks]
    last = mixture.pack_part(pa.concat_tables([o[2] for o in outs]), seq_len)
    rows = pa.concat_tables([o[1] for o in outs] + [last[1]])
    written = np.concatenate([np.asarray(r) for r in rows["input_ids"].to_pylist()])
    left = np.concatenate([np.asarray(r) for r in last[2]["input_ids"].to_pylist()])
    assert len(left) < seq_len and rows.num_rows == pos // seq_len
    assert sorted(written.tolist() + left.tolist()) == list(range(pos))
    flags = np.concatenate([np.asarray(m) for m in rows[LOSS_MASK].to_pylist()])
    assert (flags == (written % 3 == 0)).all()
    starts = {
        int(ids[s])
        for ids, row in zip(
            rows["input_ids"].to_pylist(), rows["doc_starts"].to_pylist(), strict=True
        )
        for s in row
    }
    assert starts == {t for t in firsts if t in set(written.tolist())}
    kept = {}
    for o in [*outs, last]:
        for s, (n, targets) in o[0].items():
            kept[s] = [kept.get(s, [0, 0])[0] + n, kept.get(s, [0, 0])[1] + targets]
    for s in ("s0", "s1"):  # each source's tokens and targets in the rows, counted
        mine = np.array([source_of[int(t)] == s for t in written])
        assert kept[s] == [int(mine.sum()), int(flags[mine].sum())]


def test_interleaved_spreads_each_source_over_the_split() -> None:
    from lmforge.pipelines import mixture

    blocks = [{"a": [100, 0]}] * 4 + [{"b": [400, 0]}] * 2  # read one source after the other
    order = mixture.interleaved(blocks)
    assert sorted(order) == list(range(6))
    assert [("a" if b < 4 else "b") for b in order] == ["a", "b", "a", "a", "b", "a"]
