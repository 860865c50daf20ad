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
