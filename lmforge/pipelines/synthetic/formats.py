"""Instruction-data formats -> one conversation schema.

A conversation is a list of turns `{"role": "system" | "user" | "assistant", "content": str}`.
Four shapes are read, JSON or JSONL, as their public datasets write them:

    Alpaca      {"instruction", "input"?, "output" | "response", "system"?}
    ShareGPT    {"conversations": [{"from": "human" | "gpt" | ..., "value"}]}
    OpenAI      {"messages": [{"role", "content"}]}   (content may be a list of text parts)
    MT-Bench    {"question_id", "model_id", "choices": [{"index", "turns": [answer, ...]}]}

An MT-Bench *answer* file holds only the answers; the questions live in the benchmark's
`question.jsonl` (`{"question_id", "category", "turns": [question, ...]}`), which the stage
reads as `synthetic.mtbench_questions` and passes here as `questions`. Anything else
raises `RecordError`, whose message names the field: the record is quarantined, never
silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from lmforge.platform import chat, storage
from lmforge.platform.config import ConfigError

Turn = dict[str, str]
ROLE_TOKENS = chat.ROLE_TOKENS


class RecordError(ValueError):
    """A record whose shape is none of the known formats; the message says what is wrong."""


_FORMAT_KEYS = {
    "messages": "openai",
    "conversations": "sharegpt",
    "instruction": "alpaca",
    "choices": "mtbench",
}
_SHAREGPT_ROLES = {
    **dict.fromkeys(("human", "user"), "user"),
    **dict.fromkeys(("gpt", "assistant", "chatgpt", "bing", "bard"), "assistant"),
    "system": "system",
}
_OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}  # fmt: skip


def detect_format(record: Any) -> str:
    """ "alpaca", "sharegpt", "openai" or "mtbench" from the record's keys, or RecordError."""
    if not isinstance(record, dict):
        raise RecordError(f"record is a {type(record).__name__}, not an object")
    found = [key for key in _FORMAT_KEYS if key in record]
    if not found:
        if "turns" in record and "question_id" in record:
            raise RecordError(
                "record is an MT-Bench question (it has 'turns' but no 'choices'); "
                "pass question files as synthetic.mtbench_questions, not as input"
            )
        raise RecordError(
            "record has none of 'instruction', 'conversations', 'messages' or 'choices'"
        )
    if len(found) > 1:  # guessing would silently drop half of the record
        raise RecordError(f"record has both {found[0]!r} and {found[1]!r}; its format is unclear")
    return _FORMAT_KEYS[found[0]]


def _text(value: Any, where: str) -> str:
    """A turn's text, stripped; OpenAI's list of text parts is joined."""
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        value = "".join(p["text"] for p in value)
    if not isinstance(value, str):
        raise RecordError(f"{where} is not a string (got {type(value).__name__})")
    return value.strip()


def _turns(record: dict, key: str, role_key: str, text_key: str, roles: dict) -> list[Turn]:
    turns = record[key]
    if not isinstance(turns, list):
        raise RecordError(f"{key!r} is a {type(turns).__name__}, not a list")
    conv: list[Turn] = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError(f"{where} is a {type(turn).__name__}, not an object")
        for field in (role_key, text_key):
            if field not in turn:
                raise RecordError(f"{where} has no {field!r}")
        raw = turn[role_key]
        role = roles.get(raw.strip().lower()) if isinstance(raw, str) else None
        if role is None:
            raise RecordError(f"{where} has unknown role {raw!r}")
        conv.append({"role": role, "content": _text(turn[text_key], f"{where}.{text_key}")})
    return conv


def _alpaca(record: dict) -> list[Turn]:
    instruction = _text(record["instruction"], "'instruction'")
    extra = record.get("input")
    extra = "" if extra is None else _text(extra, "'input'")
    answer_key = next((k for k in ("output", "response") if k in record), None)
    if answer_key is None:
        raise RecordError("record has 'instruction' but neither 'output' nor 'response'")
    conv: list[Turn] = []
    system = record.get("system")
    if system is not None and (system := _text(system, "'system'")):
        conv.append({"role": "system", "content": system})
    prompt = "\n\n".join(part for part in (instruction, extra) if part)
    conv.append({"role": "user", "content": prompt})
    conv.append({"role": "assistant", "content": _text(record[answer_key], repr(answer_key))})
    return conv


def _mtbench(record: dict, questions: Mapping[Any, Sequence[str]] | None) -> list[Turn]:
    """The first choice's answers interleaved with the question's turns."""
    choices = record["choices"]
    if not isinstance(choices, list) or not choices:
        raise RecordError("'choices' is not a non-empty list")
    first = choices[0]
    if not isinstance(first, dict) or not isinstance(first.get("turns"), list):
        raise RecordError("'choices[0]' has no list 'turns'")
    answers = [_text(a, f"choices[0].turns[{i}]") for i, a in enumerate(first["turns"])]
    qid = record.get("question_id")
    if qid is None:
        raise RecordError("MT-Bench answer has no 'question_id'")
    if not questions:
        raise RecordError(
            f"MT-Bench answer to question {qid!r} but no questions were given "
            "(set synthetic.mtbench_questions to the benchmark's question.jsonl)"
        )
    asked = questions.get(qid, questions.get(str(qid)))
    if asked is None:
        raise RecordError(f"MT-Bench question_id {qid!r} is not in synthetic.mtbench_questions")
    if len(asked) != len(answers):
        raise RecordError(
            f"MT-Bench question {qid!r} has {len(asked)} turns but the answer has {len(answers)}"
        )
    conv: list[Turn] = []
    for i, (q, a) in enumerate(zip(asked, answers, strict=True)):
        conv.append({"role": "user", "content": _text(q, f"question {qid!r} turns[{i}]")})
        conv.append({"role": "assistant", "content": a})
    return conv


def to_conversation(
    record: Any, questions: Mapping[Any, Sequence[str]] | None = None
) -> list[Turn]:
    """Map one Alpaca, ShareGPT, OpenAI-messages or MT-Bench record to a list of turns.

    questions: MT-Bench question id -> its turns (needed for MT-Bench answer records).
    Contents are stripped of surrounding whitespace so that `render_text` is canonical.
    Raises RecordError for a record of unknown shape (the message names the field).
    """
    fmt = detect_format(record)
    if fmt == "alpaca":
        return _alpaca(record)
    if fmt == "sharegpt":
        return _turns(record, "conversations", "from", "value", _SHAREGPT_ROLES)
    if fmt == "mtbench":
        return _mtbench(record, questions)
    return _turns(record, "messages", "role", "content", _OPENAI_ROLES)


def render_text(conv: Sequence[Turn]) -> str:
    """Plain text for pretraining, in the tokenizer's chat format (`platform.chat`):
    "<|user|>\\nWhat is 2+2?\\n<|assistant|>\\n4\\n"."""
    return chat.render(conv)


def answers(conv: Sequence[Turn]) -> list[str]:
    """The assistant turns' texts."""
    return [t["content"] for t in conv if t["role"] == "assistant"]


def prompt_text(conv: Sequence[Turn]) -> str:
    """What the assistant was asked: every user and system turn, one per line."""
    return "\n".join(t["content"] for t in conv if t["role"] != "assistant")


def exchanges(conv: Sequence[Turn]) -> list[tuple[str, str]]:
    """(the user turn, the assistant answer right after it) pairs, in order."""
    return [
        (a["content"], b["content"])
        for a, b in pairwise(conv)
        if a["role"] == "user" and b["role"] == "assistant"
    ]


def load_questions(paths: list[str]) -> dict[str, list[str]]:
    """MT-Bench question files -> {question_id (as text): its turns}."""
    questions: dict[str, list[str]] = {}
    for path in paths:
        for n, line in enumerate(storage.read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                questions[str(q["question_id"])] = list(q["turns"])
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"synthetic.mtbench_questions: {path}:{n} is not an MT-Bench question "
                    f"(want question_id and turns): {e}"
                ) from None
    return questions
