"""Packing and the learning-rate schedule: pure logic, checked against hand-worked cases."""

from __future__ import annotations

import itertools
import math

from lmforge.train.loop import LoopConfig, lr_factor
from lmforge.pipelines.packing import is_validation, pack


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
    cfg = LoopConfig(
        llama_config={},
        tokenizer_files={},
        ds_config={},
        use_gpu=False,
        micro_batch_size=1,
        grad_accum_steps=1,
        seq_len=8,
        max_steps=110,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=10,
        weight_decay=0.0,
        log_every=1,
        eval_every=1,
        eval_batches=1,
        checkpoint_every=1,
        seed=0,
        activation_checkpointing=False,
        tracking_uri=None,
        run_id=None,
    )
    lrs = [cfg.lr * lr_factor(s, cfg) for s in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] < cfg.lr  # warm-up rises
    assert math.isclose(lrs[10], cfg.lr)  # peak right after warm-up
    assert math.isclose(lrs[60], (cfg.lr + cfg.min_lr) / 2)  # cosine midpoint
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:110]))
    assert math.isclose(lrs[115], cfg.min_lr)


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
