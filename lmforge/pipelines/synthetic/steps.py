"""The `filter-synthetic` stage's Ray Data steps: parse, filter, decontaminate a record.

`synthetic_steps(cfg, questions)` is the per-conversation chain that one actor pool runs:
`ExtractConversation` (a record of any known shape -> `messages` and rendered `text`, or
quarantined), `ConversationFilters` (the filters of `config.py`, first objection wins),
and `ConversationDecontam` (the curation stage's n-gram index over the whole
conversation, plus a user turn equal to an evaluation question). `prompt_texts` is what
prompt dedup compares.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from lmforge.pipelines.config import SyntheticConfig
from lmforge.pipelines.decontam import DecontamConfig, Decontaminate, EvalSet, load_eval_set, words
from lmforge.pipelines.steps import Filter, Step, quarantine, update_meta
from lmforge.pipelines.synthetic.config import SyntheticFilterConfig, default_filters, first_finding
from lmforge.pipelines.synthetic.formats import (
    RecordError,
    detect_format,
    prompt_text,
    render_text,
    to_conversation,
)
from lmforge.platform import storage

PROMPT_STEP = "prompt_dedup"  # the step name of exact and near-duplicate prompt drops
CONVERSATION_COLUMNS = ["id", "messages", "text", "source", "lang", "meta"]
# A record's fields that hold its conversation, per format: the rest go to `meta`.
_CONTENT_KEYS = {"instruction", "input", "output", "response", "system", "conversations",
                 "messages", "choices"}  # fmt: skip


class ExtractConversation(Step):
    """Parse `raw` into `messages` (role/content turns) and its rendered `text`."""

    name = "extract"

    def __init__(self, questions: dict[str, list[str]] | None = None) -> None:
        self.questions = questions or {}

    def apply(self, row: dict[str, Any]) -> None:
        record = json.loads(row["raw"])
        try:
            conv = to_conversation(record, self.questions)
            fmt = detect_format(record)
        except RecordError as e:
            quarantine(row, self.name, str(e))
            return
        row["messages"] = conv
        row["text"] = render_text(conv)
        row["chars_in"] = len(row["text"])
        fields = {
            k: v
            for k, v in record.items()
            if k not in _CONTENT_KEYS and isinstance(v, str | int | float | bool)
        }
        update_meta(row, format=fmt, **({"record": fields} if fields else {}))
        row["raw"] = None


class ConversationFilters(Filter):
    """All conversation filters; the first that objects gives the reason, and its
    evidence goes to `meta`."""

    name = "synthetic_filter"

    def __init__(self, cfg: SyntheticFilterConfig) -> None:
        self.filters = default_filters(cfg)

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        found = first_finding(row["messages"], self.filters)
        if found is None:
            return True
        update_meta(row, evidence=found.evidence)
        return False, found.reason


def _normalized(text: str) -> str:
    return " ".join(words(text))


class ConversationDecontam(Decontaminate):
    """The curation stage's n-gram decontamination over the whole conversation, and a user
    turn (or a line of it) equal to an evaluation question of at least four words once case,
    punctuation and spacing are folded (catches questions shorter than the n-gram)."""

    def __init__(self, eval_sets: list[EvalSet | str], cfg: DecontamConfig) -> None:
        sets = [s if isinstance(s, EvalSet) else load_eval_set(s) for s in eval_sets]
        super().__init__(sets, cfg)
        self.questions: dict[str, tuple[str, str]] = {}
        shared: set[str] = set()
        for s in sets:
            for item in s.items:
                key = _normalized(item.text)
                if len(key.split()) < 4:
                    continue  # "What is 2+2?" alone is not evidence of a leak
                if self.questions.get(key, (s.name, item.id)) != (s.name, item.id):
                    shared.add(key)  # a template several items share ("Which is true?")
                self.questions.setdefault(key, (s.name, item.id))
        for key in shared:
            del self.questions[key]

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        for turn in row["messages"]:
            if turn["role"] != "user":
                continue
            # the whole turn, or one of its lines: a question with its choices under it
            keys = [turn["content"], *turn["content"].splitlines()]
            hit = next((h for k in keys if (h := self.questions.get(_normalized(k)))), None)
            if hit is not None:
                eval_set, item = hit
                update_meta(row, decontam={"eval_set": eval_set, "item": item, "match": "question"})
                return False, f"decontam/{eval_set}"
        return super().filter(row)


def synthetic_steps(
    cfg: dict[str, Any],
    questions: dict[str, list[str]],
    eval_sets: list[EvalSet] | None = None,
) -> list[Step]:
    """The per-conversation steps of a `synthetic` section (as a dict), built once per Ray
    Data actor (`StepsActor`), so the language model and n-gram index are never pickled.

    eval_sets: the `decontam.eval_sets` files already read (by the driver, so a worker
    never opens a path of the driver's); None reads them here."""
    c = SyntheticConfig.model_validate(cfg)
    steps: list[Step] = [ExtractConversation(questions), ConversationFilters(c.filters)]
    if c.decontam.eval_sets:
        sets: list[EvalSet | str] = list(eval_sets or [])
        sets = sets or [storage.absolute(p) for p in c.decontam.eval_sets]
        steps.append(ConversationDecontam(sets, c.decontam.index_config()))
    return steps


def prompt_texts(batch: pa.Table) -> pa.Array:
    """What each conversation asks (user and system turns); None where it has none."""
    return pa.array(
        [prompt_text(conv) if conv else None for conv in batch["messages"].to_pylist()],
        pa.string(),
    )
