"""Truncation, repetition loops, language mismatch, Japanese identity claims and MT-Bench
answer files: the filters and the reader added for real GPT-4 data's failure modes."""

from __future__ import annotations

import pytest

from lmforge.pipelines.synthetic import (
    IdentityFilter,
    RecordError,
    RepetitionFilter,
    TruncationFilter,
    to_conversation,
)
from lmforge.pipelines.synthetic.language import LanguageMismatchFilter


def qa(answer: str, question: str = "Tell me about it.") -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


STORY = (
    "The lighthouse keeper climbed the stairs at dusk. He trimmed the wick and wiped the "
    "glass until it shone. Far out, a fishing boat turned toward the light."
)

# -------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (STORY + " Then the keeper opened the logbook and wrote that the wind was", "mid_sentence"),
        (STORY + "\n\nThe next morning, when the", "mid_sentence"),  # a dangling word
        (STORY + " He listed what he needed: oil, wicks, matches,", "mid_sentence"),
        (STORY + "\n\n```python\ndef light(lamp):\n    lamp.on(", "code_fence"),
        ("Here are five tips:\n\n1. Sleep well.\n2. Eat well.\n3. Walk daily.", "list"),
        (STORY + "\n\n1. Oil the hinges.\n2. Check the", "list"),
        (
            STORY + "\n\n1. Oil the hinges.\n2. Clean the lens.\n3. Check the fuel line and the",
            "mid_sentence",
        ),
        ("こんにちは。灯台守は夕暮れに階段を上り、ランプの芯を整えてガラスを磨き", "mid_sentence"),
    ],
)
def test_truncated_answers_are_dropped_with_their_kind(answer: str, kind: str) -> None:
    found = TruncationFilter().inspect(qa(answer))
    assert found is not None and found.reason == f"truncated/{kind}"


# No function word ("the", "and"), no sign-off word, no punctuation: an unpunctuated end
# that only its length can call cut off.
PLAIN_WORDS = [
    "keepers",
    "watch",
    "ships",
    "sail",
    "past",
    "black",
    "rocks",
    "storms",
    "roll",
    "grey",
    "waves",
    "crash",
]
# Japanese sentences, then a short unpunctuated last line (under
# `min_cjk_line_chars`, so not a cut sentence): again only the length can decide.
JA_LINE = "灯台守は夕暮れに階段を上りました。"
JA_LAST = "灯台守の日記"
LIMITS = (256, 512, 1024, 2048, 4096)  # the README's round token counts


def plain_prose(chars: int) -> str:
    """Unpunctuated English of about `chars` characters (at most 15 fewer), ending on a word."""
    words, n = [], -1
    while n + 1 + len(PLAIN_WORDS[len(words) % len(PLAIN_WORDS)]) <= chars:
        words.append(PLAIN_WORDS[len(words) % len(PLAIN_WORDS)])
        n += 1 + len(words[-1])
    return " ".join(words)


def japanese(chars: int) -> str:
    """Japanese of exactly `chars` characters: one paragraph of sentences closed by "。",
    then JA_LAST on a line of its own."""
    body = (JA_LINE * (chars // len(JA_LINE) + 1))[: chars - len(JA_LAST) - 2]
    return body + "。\n" + JA_LAST


@pytest.mark.parametrize("limit", LIMITS)
def test_an_unpunctuated_end_at_a_round_token_count(limit: int) -> None:
    """An answer that stops without punctuation about `limit` tokens in (4 characters a
    token for English, 1 a character for Japanese; 4% past the limit, inside its 8%
    tolerance) is `truncated/token_limit`: no other rule could call it cut off."""
    for answer, tokens in [
        (plain_prose(round(4 * limit * 1.04)), lambda a: len(a) / 4),
        (japanese(round(limit * 1.04)), len),
    ]:
        assert abs(tokens(answer) / (limit * 1.04) - 1) < 0.015, len(answer)
        found = TruncationFilter().inspect(qa(answer))
        assert found is not None and found.reason == "truncated/token_limit", (limit, answer[-40:])


@pytest.mark.parametrize("limit", LIMITS)
def test_the_same_end_off_any_round_token_count_is_whole(limit: int) -> None:
    """The same answers 12% past the limit (off every limit of the config, 500, 1000, ...
    included) are kept: the rule counts tokens, it does not drop every unpunctuated end."""
    for answer in (plain_prose(round(4 * limit * 1.12)), japanese(round(limit * 1.12))):
        assert TruncationFilter().check(qa(answer)) is None, (limit, len(answer))
    # a short unpunctuated last line far from any limit is a sign-off, not a cut
    assert TruncationFilter().check(qa("The keeper wrote.\nGood night")) is None


@pytest.mark.parametrize(
    "answer",
    [
        STORY,
        STORY + "\n\nYours sincerely,\nIsaac Newton",
        STORY + " Yours sincerely, Dr. Jane Goodall",
        STORY + " Best of luck! - Harry",
        STORY + " See you on tour! #AllHailRockNRoll",
        "Never Too Late for the Kitchen: Learning to Cook at Thirty-Five",  # a title
        "Day 1: Arrive in Tokyo\nDay 2: Visit Asakusa and Ueno Park\nDay 3: Day trip to Nikko",
        "Ingredients:\n1. Two cups of flour\n2. One cup of sugar\n3. Three large fresh eggs",
        STORY + "\n\n```python\nprint('done')\n```",
        "42",
        STORY + " 😊",
        "灯台守は夕暮れに階段を上りました。",
    ],
)
def test_whole_answers_are_not_truncated(answer: str) -> None:
    assert TruncationFilter().check(qa(answer)) is None


# -------------------------------------------------------------------------- repetition


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (STORY + " The wind howled." * 6, "tail"),
        ("The wind howled all night over the rocks. " * 5 + STORY, "ngram"),
        (STORY + "\n\n" + "\n\n".join([STORY] * 3), "paragraph"),
        (STORY + "\n" + "\n".join(["He waited for the dawn to come."] * 3), "line"),
        (STORY + " and the light, and the light, and the light, and the light, and the light",
         "tail"),
        ("灯台守は夕暮れに階段を上りました。" + "光が海を照らしました。" * 8, "tail"),
        ("光が海を静かに照らしました。" * 6 + "灯台守は夕暮れに階段を上りました。", "ngram"),
    ],
)  # fmt: skip
def test_loops_are_dropped(answer: str, kind: str) -> None:
    found = RepetitionFilter().inspect(qa(answer))
    assert found is not None and found.reason == f"repetition/{kind}"


def test_short_emphatic_repeats_are_not_loops() -> None:
    assert RepetitionFilter().check(qa(STORY + " Ha! Ha! Ha! Ha!")) is None
    assert RepetitionFilter().check(qa(STORY + " Yarrr!" * 8)) == "repetition/tail"


def test_a_chorus_is_not_a_loop() -> None:
    chorus = "Oh the light, the light, it guides us home tonight\nAcross the sea we roam"
    verses = [
        "The keeper climbs the stairs at dusk\nHe trims the wick and wipes the glass",
        "The boats come in from far away\nThey follow beams across the bay",
        "And when the morning breaks at last\nThe keeper sleeps, the night has passed",
    ]
    song = "\n\n".join(f"{v}\n\n{chorus}" for v in verses)
    assert RepetitionFilter().check(qa(song, "Write a song about a lighthouse.")) is None
    assert RepetitionFilter().check(qa(STORY)) is None


# ----------------------------------------------------------------------------- language

EN_ANSWER = (
    "The lighthouse keeper climbed the stairs at dusk and trimmed the wick carefully, "
    "then watched the boats come home."
)
JA_ANSWER = "灯台守は夕暮れに階段を上り、ランプの芯を整えてガラスを磨きました。遠くで漁船が光に向かって進みました。"


@pytest.fixture(scope="module")
def language() -> LanguageMismatchFilter:
    return LanguageMismatchFilter()


def test_a_question_answered_in_another_language(language: LanguageMismatchFilter) -> None:
    found = language.inspect(qa(EN_ANSWER, "灯台守の一日について説明してください。"))
    assert found is not None and found.reason == "language_mismatch"
    assert "answered in en" in found.evidence
    assert language.check(qa(JA_ANSWER, "Describe a day in the life of a lighthouse keeper.")) == (
        "language_mismatch"
    )
    german = "Der Leuchtturmwärter stieg in der Dämmerung die Treppe hinauf und putzte das Glas."
    assert language.check(qa(german, "Describe a day in the life of a lighthouse keeper.")) == (
        "language_mismatch"
    )


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("Translate into Japanese: The keeper climbed the stairs.", JA_ANSWER),
        ("Describe a lighthouse keeper's day, in Japanese please.", JA_ANSWER),
        ("次の文を英語に翻訳してください：灯台守は階段を上った。", EN_ANSWER),
        ("灯台について英語で説明してください。", EN_ANSWER),
        ("Describe a day in the life of a lighthouse keeper.", EN_ANSWER),
        ("Write a function that adds two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"),
        ("What does this mean?\nDer Mensch ist, was er isst, sagte Feuerbach einmal.",
         "It means that people are shaped by what they eat: Feuerbach's saying is about diet."),
        ("Hi", "Hello! How can I help you today with your lighthouse questions?"),
    ],
)  # fmt: skip
def test_language_changes_that_were_asked_for(
    language: LanguageMismatchFilter, question: str, answer: str
) -> None:
    assert language.check(qa(answer, question)) is None


# ----------------------------------------------------------------------------- identity


@pytest.mark.parametrize(
    "answer",
    ["私はOpenAIによって開発されたChatGPTです。", "私はGoogleが開発したAIアシスタントです。"],
)
def test_japanese_identity_claims(answer: str) -> None:
    assert IdentityFilter().check(qa(answer, "あなたは誰ですか？")) == "identity"


def test_japanese_mentions_are_not_claims() -> None:
    answer = "これはGoogleが開発した技術です。私は灯台守です。"
    assert IdentityFilter().check(qa(answer, "この技術について教えてください。")) is None


# ----------------------------------------------------------------------------- MT-Bench

QUESTIONS = {"81": ["Write a travel blog post about Hawaii.", "Rewrite it starting each sentence with A."]}  # fmt: skip
ANSWER = {
    "question_id": 81,
    "answer_id": "abc",
    "model_id": "gpt-4",
    "choices": [{"index": 0, "turns": ["Aloha! Hawaii is...", "A trip to Hawaii..."]}],
    "tstamp": 1687221890.0,
}


def test_mtbench_answers_are_joined_with_their_questions() -> None:
    conv = to_conversation(ANSWER, QUESTIONS)
    assert [t["role"] for t in conv] == ["user", "assistant", "user", "assistant"]
    assert conv[0]["content"] == QUESTIONS["81"][0]
    assert conv[3]["content"] == "A trip to Hawaii..."


@pytest.mark.parametrize(
    ("record", "questions", "message"),
    [
        (ANSWER, None, "set synthetic.mtbench_questions"),
        ({**ANSWER, "question_id": 99}, QUESTIONS, "99 is not in synthetic.mtbench_questions"),
        ({**ANSWER, "choices": []}, QUESTIONS, "'choices' is not a non-empty list"),
        ({**ANSWER, "choices": [{"turns": ["only one"]}]}, QUESTIONS, "has 2 turns but the answer has 1"),
        ({"question_id": 81, "category": "writing", "turns": ["q"]}, QUESTIONS, "MT-Bench question"),
    ],
)  # fmt: skip
def test_mtbench_records_that_cannot_be_read(
    record: dict, questions: dict | None, message: str
) -> None:
    with pytest.raises(RecordError, match=message):
        to_conversation(record, questions)
