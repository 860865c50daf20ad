"""Perplexity scoring with a real (tiny) Llama trained here on fluent answers, run through a
real Ray Data actor pool on the local 2-CPU Ray."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from lmforge.pipelines.records import DROPPED, KEPT, QUARANTINED, empty_row, to_table
from lmforge.pipelines.scoring import PerplexityScorer, ScoringConfig, score_rows
from lmforge.pipelines.tokenizer import train_tokenizer
from lmforge.platform import chat

SENTENCES = [
    "The cat sat on the warm mat.",
    "The dog ran across the green field.",
    "We read a good book every night.",
    "The sun rises in the east each morning.",
    "Rain falls softly on the old roof.",
    "She made a cup of hot tea.",
    "The children play in the park after school.",
    "A small bird sang in the tall tree.",
    "He walked to the market with his friend.",
    "The river flows slowly to the sea.",
    "They planted flowers in the garden.",
    "The train leaves the station at noon.",
    "My brother likes to cook pasta.",
    "The moon is bright tonight.",
    "We went to the beach last summer.",
    "The teacher wrote a word on the board.",
    "Fresh bread smells very good.",
    "The wind blew the leaves away.",
    "Our family eats dinner together.",
    "The old man told a long story.",
    "A cold wind came from the north.",
    "The shop opens early on Monday.",
    "She painted the door bright blue.",
    "The baby slept in the quiet room.",
]
QUESTIONS = ["Tell me something.", "What happened?", "Say a few words.", "Can you help me?"]


def conversation(answer: str, question: str = "Tell me something.") -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def render(conv: list[dict[str, str]]) -> str:
    return chat.render(conv)


def training_conversations(n: int, rng: random.Random) -> list[list[dict[str, str]]]:
    return [
        conversation(" ".join(rng.sample(SENTENCES, 3)), rng.choice(QUESTIONS)) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer Llama and a BPE tokenizer, trained for a few seconds on conversations whose
    answers are fluent English sentences, saved as a Hugging Face model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rng = random.Random(0)
    torch.manual_seed(0)
    texts = [render(c) for c in training_conversations(64, rng)]
    tok = train_tokenizer(SENTENCES + QUESTIONS + texts, vocab_size=400)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        batch = tok(
            [render(c) for c in training_conversations(16, rng)],
            padding=True,
            return_tensors="pt",
        )
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels
        ).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def gibberish(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("qxzjkvwy#%&@!0123456789 ") for _ in range(n))


FLUENT = "The sun rises in the east each morning. The cat sat on the warm mat."


def sample_rows() -> list[dict[str, Any]]:
    """Two conversations to score, and a dropped and a quarantined row to pass through."""
    return [
        empty_row(id="fluent", messages=conversation(FLUENT), meta=json.dumps({"src": "a"})),
        empty_row(id="gibberish", messages=conversation(gibberish(len(FLUENT), seed=1))),
        empty_row(
            id="dropped",
            messages=conversation(gibberish(40, seed=2)),
            fate=DROPPED,
            step="refusal",
            reason="refusal/apology",
        ),
        empty_row(id="quarantined", fate=QUARANTINED, step="read", error="bad json", raw="{"),
    ]


def run_on_ray(cfg: ScoringConfig) -> dict[str, dict[str, Any]]:
    import ray.data

    ds = ray.data.from_arrow(to_table(sample_rows()))
    return {row["id"]: row for row in score_rows(ds, cfg, model_dir=cfg.model or "").take_all()}


def ppl(row: dict[str, Any]) -> float:
    return float(json.loads(row["meta"])["perplexity"])


@pytest.mark.usefixtures("ray_local")
def test_fluent_answer_scores_lower_than_gibberish(model_dir: str) -> None:
    out = run_on_ray(ScoringConfig(model=model_dir, batch_size=2))
    assert len(out) == 4
    fluent, junk = out["fluent"], out["gibberish"]
    assert fluent["fate"] == junk["fate"] == KEPT  # no threshold: annotate only
    assert json.loads(fluent["meta"])["src"] == "a"  # merged into the existing meta
    assert 1 <= ppl(fluent) * 5 < ppl(junk), (ppl(fluent), ppl(junk))
    # rows that are not kept come out as they went in
    original = {r["id"]: r for r in to_table(sample_rows()).to_pylist()}
    assert out["dropped"] == original["dropped"]
    assert out["quarantined"] == original["quarantined"]


@pytest.mark.usefixtures("ray_local")
def test_threshold_drops_high_perplexity_rows(model_dir: str) -> None:
    # the two perplexities, measured in this process one row at a time (no padding), put
    # the threshold between them
    scorer = PerplexityScorer({"batch_size": 1}, model_dir)
    measured = {r["id"]: r for r in scorer(to_table(sample_rows())).to_pylist()}
    threshold = math.sqrt(ppl(measured["fluent"]) * ppl(measured["gibberish"]))

    out = run_on_ray(ScoringConfig(model=model_dir, max_perplexity=threshold))
    assert len(out) == 4
    assert out["fluent"]["fate"] == KEPT
    # scored beside the longer gibberish row, right-padded: the same perplexity
    assert ppl(out["fluent"]) == pytest.approx(ppl(measured["fluent"]), rel=1e-3)
    junk = out["gibberish"]
    assert (junk["fate"], junk["step"], junk["reason"]) == (DROPPED, "score", "perplexity")
    assert ppl(junk) > threshold  # a dropped row still says by how much
    assert out["dropped"]["step"] == "refusal"
    assert out["quarantined"]["fate"] == QUARANTINED


def test_rows_without_an_answer_are_kept_unscored(model_dir: str) -> None:
    cfg = ScoringConfig(model=model_dir, max_perplexity=1.0, max_tokens=16)
    scorer = PerplexityScorer(cfg.model_dump(), model_dir)
    long_question = " ".join(SENTENCES[:6])
    rows = [
        empty_row(id="no_assistant", messages=[{"role": "user", "content": "Hello there."}]),
        empty_row(id="empty_answer", messages=conversation("")),
        empty_row(id="no_messages", text="a plain document"),
        empty_row(id="cut", messages=conversation("The moon is bright.", long_question)),
        empty_row(id="short", messages=conversation("The moon is bright.", "Hi")),
    ]
    out = {r["id"]: r for r in scorer(to_table(rows)).to_pylist()}
    expected = {
        "no_assistant": "no_answer",
        "empty_answer": "no_answer",
        "no_messages": "no_answer",
        "cut": "answer_beyond_max_tokens",
    }
    for rid, why in expected.items():
        assert out[rid]["fate"] == KEPT, rid
        assert json.loads(out[rid]["meta"]) == {"perplexity_skipped": why}
    # scored in the same batch; a threshold of 1 drops every scored row
    assert ppl(out["short"]) > 1
    assert (out["short"]["fate"], out["short"]["reason"]) == (DROPPED, "perplexity")


def test_config_rejects_impossible_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_perplexity"):
        ScoringConfig(model=str(tmp_path), max_perplexity=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        ScoringConfig(model=str(tmp_path), batch_size=0)


@pytest.mark.parametrize("where", ["folder", "registry"])
@pytest.mark.usefixtures("ray_local")
def test_filter_synthetic_stage_scores_with_the_recipes_model(
    model_dir: str, tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """`synthetic.scoring` in a recipe: the stage drops what the model finds unlikely; the
    model is a local folder, or `models:/NAME@ALIAS` registered on an MLflow server."""
    from lmforge.jobs import filter_synthetic
    from lmforge.jobs.recipe import load_recipe

    tracking_uri, model = f"sqlite:///{tmp_path}/m.db", model_dir
    if where == "registry":
        import mlflow

        from lmforge.platform import registry

        tracking_uri = request.getfixturevalue("mlflow_server")
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment("scoring-registry")  # not the experiment an earlier store had
        with mlflow.start_run():
            model = registry.register(model_dir, name="scorer", alias="candidate").model_uri
        assert model == "models:/scorer@candidate"

    chats = {  # two prompts: the same one twice would be a duplicate prompt
        "fluent": conversation(FLUENT, "Tell me something."),
        "gibberish": conversation(gibberish(len(FLUENT), seed=1), "Say a few words."),
    }
    scorer = PerplexityScorer({"batch_size": 1}, model_dir)
    table = to_table([empty_row(id=i, messages=m) for i, m in chats.items()])
    measured = {r["id"]: r for r in scorer(table).to_pylist()}
    threshold = math.sqrt(ppl(measured["fluent"]) * ppl(measured["gibberish"]))
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"id": i, "messages": m}) + "\n" for i, m in chats.items()))
    recipe = load_recipe(
        None,
        stage="filter-synthetic",
        input=[str(data)],
        output=str(tmp_path / "out"),
        overrides=[
            f"workdir={tmp_path / 'work'}",
            f"mlflow.tracking_uri={tracking_uri}",
            'synthetic.filters.enabled=["malformed_turns"]',  # scoring alone decides
            f"synthetic.scoring.model={model}",
            f"synthetic.scoring.max_perplexity={threshold}",
        ],
    )
    result = filter_synthetic.run(recipe)
    manifest = result.info["manifest"]
    assert manifest["counts"] == {"read": 2, "kept": 1, "dropped": 1, "quarantined": 0}
    assert manifest["dropped_by_reason"] == {"score/perplexity": 1}
    kept = [json.loads(x) for f in (tmp_path / "out" / "kept").glob("*.jsonl") for x in f.open()]
    assert [r["id"] for r in kept] == ["fluent"]
    assert json.loads(kept[0]["meta"])["perplexity"] < threshold


def test_a_recipe_naming_a_missing_model_fails_before_ray(tmp_path: Path) -> None:
    from lmforge.jobs import filter_synthetic
    from lmforge.jobs.recipe import load_recipe
    from lmforge.platform.config import ConfigError

    data = tmp_path / "chats.jsonl"
    data.write_text("{}\n")
    recipe = load_recipe(
        None,
        stage="filter-synthetic",
        input=[str(data)],
        overrides=[f"workdir={tmp_path}", f"synthetic.scoring.model={tmp_path / 'nope'}"],
    )
    with pytest.raises(ConfigError, match=r"synthetic\.scoring\.model: not a Hugging Face model"):
        filter_synthetic.validate(recipe)
