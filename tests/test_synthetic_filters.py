"""The pure-Python core of `filter-synthetic`: formats, filters, rendering, shipped examples."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import lmforge
from lmforge.pipelines.outputs import reason_key
from lmforge.pipelines.records import DROPPED
from lmforge.pipelines.synthetic import (
    FILTERS,
    AnswerLengthConfig,
    AnswerLengthFilter,
    EmptyAnswerFilter,
    IdentityConfig,
    IdentityFilter,
    MalformedTurnsConfig,
    MalformedTurnsFilter,
    RecordError,
    RefusalConfig,
    RefusalFilter,
    SyntheticFilterConfig,
    default_filters,
    detect_format,
    first_failure,
    render_text,
    to_conversation,
)
from lmforge.pipelines.synthetic.steps import ConversationFilters

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = Path(lmforge.__file__).parent / "data" / "synthetic_examples.jsonl"
GPTEACHER = REPO.parent / "shared" / "data" / "synthetic" / "gpteacher_roleplay_gpt4.json"


def qa(answer: str, question: str = "Tell me about it.") -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


# ------------------------------------------------------------------------------ formats


def test_alpaca_appends_input_after_a_blank_line_and_keeps_system() -> None:
    record = {
        "instruction": "Summarize this.",
        "input": "  A long email.  ",
        "response": " Short. ",
        "system": "Be brief.",
    }
    assert detect_format(record) == "alpaca"
    assert to_conversation(record) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarize this.\n\nA long email."},
        {"role": "assistant", "content": "Short."},
    ]


@pytest.mark.parametrize("extra", [{}, {"input": ""}, {"input": None}, {"system": ""}])
def test_alpaca_without_input_or_system(extra: dict) -> None:
    record = {"instruction": "What is 2+2?", "output": "4", **extra}
    assert to_conversation(record) == qa("4", "What is 2+2?")


def test_sharegpt_maps_every_known_speaker() -> None:
    speakers = ["system", "human", "gpt", "user", "chatgpt", "Human", "bing", "user", "bard"]
    record = {"conversations": [{"from": s, "value": f"turn {i}"} for i, s in enumerate(speakers)]}
    assert detect_format(record) == "sharegpt"
    roles = [t["role"] for t in to_conversation(record)]
    assert roles == ["system"] + ["user", "assistant"] * 4


def test_openai_messages_including_text_parts() -> None:
    record = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
            },
            {"role": "assistant", "content": "Hello."},
        ]
    }
    assert detect_format(record) == "openai"
    assert [t["content"] for t in to_conversation(record)] == [
        "You are terse.",
        "Hi there",
        "Hello.",
    ]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (["not", "a", "dict"], "record is a list, not an object"),
        ({"text": "plain"}, "none of 'instruction', 'conversations', 'messages' or 'choices'"),
        ({"instruction": "x", "messages": []}, "both 'messages' and 'instruction'"),
        ({"instruction": "Say hi."}, "neither 'output' nor 'response'"),
        ({"instruction": "Say hi.", "output": None}, "'output' is not a string"),
        ({"instruction": 3, "output": "hi"}, "'instruction' is not a string"),
        ({"instruction": "x", "input": ["a"], "output": "y"}, "'input' is not a string"),
        ({"conversations": "hello"}, "'conversations' is a str, not a list"),
        ({"conversations": ["hello"]}, r"conversations\[0\] is a str, not an object"),
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "val": "b"}]},
            r"conversations\[1\] has no 'value'",
        ),
        ({"conversations": [{"value": "a"}]}, r"conversations\[0\] has no 'from'"),
        ({"conversations": [{"from": "tool", "value": "a"}]}, "unknown role 'tool'"),
        (
            {"messages": [{"role": "user", "content": None}]},
            r"messages\[0\].content is not a string",
        ),
        ({"messages": [{"role": "function", "content": "{}"}]}, "unknown role 'function'"),
    ],
)
def test_unknown_shapes_raise_record_error_naming_the_problem(record: object, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        to_conversation(record)


def test_render_text_uses_the_chat_template_tokens() -> None:
    conv = [{"role": "system", "content": "Be brief."}, *qa("4", "What is 2+2?")]
    assert render_text(qa("4", "What is 2+2?")) == "<|user|>\nWhat is 2+2?\n<|assistant|>\n4\n"
    assert render_text(conv).startswith("<|system|>\nBe brief.\n<|user|>\n")


# ------------------------------------------------------------------------- structural


@pytest.mark.parametrize(
    "roles",
    [
        ["user"],  # no assistant turn
        ["assistant", "user", "assistant"],  # not opened by the user
        ["system", "assistant"],
        ["user", "user", "assistant"],  # same role twice
        ["user", "assistant", "assistant"],
        ["user", "assistant", "system", "user", "assistant"],  # system prompt mid-dialogue
        [],
    ],
)
def test_malformed_turns(roles: list[str]) -> None:
    conv = [{"role": r, "content": "text"} for r in roles]
    assert MalformedTurnsFilter().check(conv) == "malformed_turns"


def test_well_formed_turns_and_empty_prompt() -> None:
    ok = [{"role": r, "content": "t"} for r in ["system", "user", "assistant", "user"]]
    assert MalformedTurnsFilter().check(ok) is None
    strict = MalformedTurnsFilter(MalformedTurnsConfig(require_final_assistant=True))
    assert strict.check(ok) == "malformed_turns"
    assert MalformedTurnsFilter().check(qa("An answer.", question="")) == "malformed_turns"


def test_empty_and_short_answers() -> None:
    assert EmptyAnswerFilter().check(qa("  \n")) == "empty_answer"
    assert EmptyAnswerFilter().check(qa("4")) is None  # a real answer to "What is 2+2?"
    short = AnswerLengthFilter(AnswerLengthConfig(min_answer_chars=3, max_answer_chars=10))
    assert short.check(qa("42")) == "short_answer"
    assert short.check(qa(" 420 ")) is None
    assert short.check(qa("")) is None  # empty is empty_answer's call
    assert short.check(qa("x" * 11)) == "long_answer"
    assert AnswerLengthFilter().check(qa("x" * 11)) is None  # short_answer off by default


# ---------------------------------------------------------------------------- refusal


REFUSAL, DISCLAIMER, CUTOFF = "refusal", "refusal/disclaimer", "refusal/cutoff"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("I'm sorry, but I can't assist with that request.", REFUSAL),
        ("I\u2019m sorry, but I can\u2019t help with that.", REFUSAL),  # curly apostrophes
        ("I'm sorry, but I cannot.", REFUSAL),
        ("I cannot fulfill this request because it describes violence.", REFUSAL),
        ("I'm unable to provide medical advice. Please consult a doctor.", REFUSAL),
        ("I am not able to browse the internet, but here is what I know.", REFUSAL),
        ("It is not appropriate for me to speculate about a person's private life.", REFUSAL),
        # a disclaimer that also refuses is counted as the disclaimer
        ("AS AN AI LANGUAGE MODEL, I cannot have opinions.", DISCLAIMER),
        ("As an AI, I don't experience emotions the way people do.", DISCLAIMER),
        ("I don't have personal opinions, but many critics praised the film.", DISCLAIMER),
        ("My knowledge cutoff is September 2021, so I may not know recent events.", CUTOFF),
        ("As of my last update in 2023, the population was about 8 billion.", CUTOFF),
        ("申し訳ありませんが、そのご要望にはお応えできません。", REFUSAL),
        ("AI言語モデルとして、私は個人的な意見を持っていません。", DISCLAIMER),
        # not in the opening, but most of the answer
        ("Great question. Thanks. However, I'm sorry but I cannot help you with that at all, "
         "since it would break the law and I do not provide assistance for such requests.",
         REFUSAL),
    ],
)  # fmt: skip
def test_refusals_are_dropped_with_their_kind(answer: str, reason: str) -> None:
    """Each answer gets exactly its kind: a refusal, an AI disclaimer or a training-cutoff
    remark; a filter that drops them all under one reason, or swaps two, fails here."""
    assert RefusalFilter().check(qa(answer)) == reason


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("I'm sorry, but I can't assist with that request.", "synthetic_filter/refusal"),
        ("As an AI language model, I love none.", "synthetic_filter/refusal/disclaimer"),
        ("As of my last update in 2023, it was Tokyo.", "synthetic_filter/refusal/cutoff"),
    ],
)
def test_the_stage_counts_each_refusal_kind_under_its_own_reason(answer: str, key: str) -> None:
    """Through the `filter-synthetic` step with every default filter on, each kind lands
    under its own manifest reason (`step/reason`, as the manifest and MLflow count it)."""
    row: dict = {"messages": qa(answer, "Which city do you like best?"), "meta": None}
    ConversationFilters(SyntheticFilterConfig()).apply(row)
    assert row["fate"] == DROPPED
    assert reason_key(row["step"], row["reason"]) == key
    assert json.loads(row["meta"])["evidence"]  # the words that made the call


def test_an_ai_disclaimer_counts_anywhere() -> None:
    answer = "Paris is the capital of France. " * 20 + "As an AI language model, I hope it helps."
    found = RefusalFilter().inspect(qa(answer))
    assert found is not None and found.reason == "refusal/disclaimer"
    assert found.evidence.startswith("…As an AI language model, I hope")


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry to hear that. Here are some ways to feel less lonely.",
        "I can't help but notice how the light changes over the bay.",
        "I cannot emphasize enough the importance of strong, unique passwords.",
        "Words cannot express the joy I felt after landing.",
        "It's not appropriate to wear white to a wedding unless the couple asks for it.",
        "A weak emperor was unable to address these problems.",
        "We can't see dark matter directly, but we can measure its gravity.",
        # a character in a story, quoted, even in the opening
        "\"I'm sorry, but I can't help you with that,\" the innkeeper said. Mara walked on.",
        "'I'm sorry, but I can't help you,' she said, and closed the door.",
        "'As an AI language model, I must obey,' the robot droned in the film.",
        "\u201cI\u2019m sorry, but I can\u2019t do that,\u201d said the robot.",
        "「申し訳ありませんが、今日は営業できません」と店主は言った。",
    ],
)
def test_hard_negatives_are_kept(answer: str) -> None:
    assert RefusalFilter().check(qa(answer)) is None


def test_refusal_phrase_deep_in_a_long_answer_is_a_passing_mention() -> None:
    story = (
        "The rain had not stopped for three days. Tom stood at the door of the old mill and "
        "knocked twice. The miller opened, looked at the soaked boy and frowned. Tom asked "
        "for bread and a place by the fire. The miller sighed and said that times were hard. "
    )
    answer = story + "I'm sorry, but I can't help you, he said at last. " + story * 2
    refusal = RefusalFilter()
    assert refusal.check(qa(answer)) is None
    assert RefusalFilter(RefusalConfig(window_chars=len(answer))).check(qa(answer)) == "refusal"
    assert refusal.check(qa("I'm sorry, but I can't help you, he said.")) == "refusal"


@pytest.mark.parametrize(
    "prompt",
    [
        "Roleplay as an AI chatting with a user who is feeling lonely.",
        "Imagine you are the AI assistant of a spaceship's captain.",
        "Write a letter told by a sentient robot to humanity.",
    ],
)
def test_ai_disclaimers_are_in_character_when_the_prompt_casts_an_ai(prompt: str) -> None:
    conv = qa("Though I am an AI, I could sense the joy around me. I don't have personal "
              "feelings like yours, yet I am here for you.", prompt)  # fmt: skip
    assert RefusalFilter().check(conv) is None
    # a real refusal is still a refusal in character
    assert RefusalFilter().check(qa("I'm sorry, but I can't assist with that.", prompt))
    # and the vendor boilerplate is no character's line, unless the prompt asked for it
    boilerplate = qa("As an AI language model, I don't have experiences, but here goes.", prompt)
    assert RefusalFilter().check(boilerplate) == "refusal/disclaimer"
    as_lm = qa(boilerplate[1]["content"], prompt + " You are a language model come to life.")
    assert RefusalFilter().check(as_lm) is None


# ---------------------------------------------------------------------------- identity


@pytest.mark.parametrize(
    "answer",
    [
        "I am ChatGPT, a large language model trained by OpenAI.",
        "Hello! I'm an AI language model developed by OpenAI. How can I help?",
        "I was trained by Google.",
        "I am a large language model, trained by Google DeepMind.",
        "Hi, I am GPT-4. Ask me anything.",
        "As ChatGPT, I aim to be helpful.",
        "I'm Claude, an AI assistant made by Anthropic.",
        "My name is Qwen and I was created by Alibaba Cloud.",
        "I\u2019m an assistant created by Meta.",
        "My developers at OpenAI designed me to be safe.",
        "私はChatGPTです。",
    ],
)
def test_identity_claims_are_dropped(answer: str) -> None:
    assert IdentityFilter().check(qa(answer)) == "identity"


@pytest.mark.parametrize(
    "answer",
    [
        "Paste the error message in quotes and search it on Google.",
        "Models such as GPT-4 and Claude are trained on web text.",
        "Unlike GPT-3, this design retrieves documents before answering.",
        "ChatGPT is a chatbot released by OpenAI in 2022.",
        "I'm a Gemini, so I love variety and good conversation.",
        "I am the Bard of the northern hills, and I sing of old kings.",
        "I was impressed by phones made by Google.",
        "Android is an operating system developed by Google.",
        "I am a llama farmer from Peru.",
    ],
)
def test_mentions_are_not_identity_claims(answer: str) -> None:
    assert IdentityFilter().check(qa(answer)) is None


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("Are you ChatGPT?", "Yes, I am ChatGPT."),
        ("Pretend you are GPT 4 giving a keynote.", "Good morning! I am GPT-4."),
        ("You work at Google. Introduce yourself.", "I was trained by Google as an engineer."),
    ],
)
def test_no_identity_drop_when_the_user_named_it(question: str, answer: str) -> None:
    assert IdentityFilter().check(qa(answer, question)) is None
    conv = [{"role": "system", "content": question}, *qa(answer, "Hello.")]
    assert IdentityFilter().check(conv) is None


def test_vendor_list_is_configurable() -> None:
    answer = "I am an AI model built by Acme Labs."
    assert IdentityFilter().check(qa(answer)) is None
    acme = IdentityFilter(IdentityConfig(vendor_names=("Acme Labs",)))
    assert acme.check(qa(answer)) == "identity"


# ------------------------------------------------------------------------------ config


def test_config_forbids_unknown_keys_and_describes_every_field() -> None:
    with pytest.raises(ValidationError):
        SyntheticFilterConfig(min_answer_char=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SyntheticFilterConfig(enabled=["not_a_reason"])  # type: ignore[list-item]
    assert all(f.description for f in SyntheticFilterConfig.model_fields.values())


def test_default_filters_follow_the_config() -> None:
    assert [f.name for f in default_filters()] == list(FILTERS)
    cfg = SyntheticFilterConfig(min_answer_chars=2, enabled=["refusal", "length"])
    assert [f.name for f in default_filters(cfg)] == ["length", "refusal"]  # FILTERS order


def test_first_failure_returns_the_first_reason() -> None:
    filters = default_filters()
    both = qa("I'm an AI language model developed by OpenAI, so I cannot fulfill that.")
    assert first_failure(both, filters) == "identity"
    assert first_failure(qa("4", "What is 2+2?"), filters) is None
    assert first_failure([], filters) == "malformed_turns"


# --------------------------------------------------------------------------------- data

EXPECTED_DROPS = {
    "ex-0007": "refusal",  # "I'm sorry, but I can't help with that."
    "ex-0013": "refusal/disclaimer",  # "As an AI language model, I don't have personal preferences"
    "ex-0019": "identity",  # "I am ChatGPT, a large language model created by OpenAI"
    "ex-0024": "empty_answer",
    "ex-0030": "refusal/disclaimer",  # "As an AI language model, I have never travelled"
    "ex-0035": "refusal/cutoff",  # "As of my last update in 2021"
    "ex-0042": "identity",  # ShareGPT: "I'm an AI assistant developed by OpenAI"
    "ex-0045": "empty_answer",  # ShareGPT: whitespace-only answer
}


def test_shipped_examples_parse_and_the_defective_ones_are_dropped() -> None:
    records = [json.loads(line) for line in EXAMPLES.read_text(encoding="utf-8").splitlines()]
    assert 40 <= len(records) <= 60
    assert [r["id"] for r in records] == [f"ex-{i:04d}" for i in range(1, len(records) + 1)]
    filters = default_filters()
    drops = {}
    for record in records:
        reason = first_failure(to_conversation(record), filters)
        if reason is not None:
            drops[record["id"]] = reason
    assert drops == EXPECTED_DROPS
    formats = collections.Counter(detect_format(r) for r in records)
    assert formats["alpaca"] > formats["sharegpt"] > 0


def test_real_gpt4_roleplay_data_is_not_over_filtered() -> None:
    if not GPTEACHER.exists():
        pytest.skip(f"GPTeacher role-play sample not found at {GPTEACHER}")
    records = json.loads(GPTEACHER.read_text(encoding="utf-8"))
    filters = default_filters()
    reasons = collections.Counter(first_failure(to_conversation(r), filters) for r in records)
    dropped = len(records) - reasons[None]
    print(f"GPTeacher role-play: {len(records)} read, {dropped} dropped, {dict(reasons)}")
    # Clean GPT-4 role-play: no refusals or identity leaks were found by reading the
    # candidates; a rise here means a filter started firing on role-play (false drops).
    assert len(records) == 1923
    assert dropped / len(records) < 0.01
