"""Document steps of the curate stage: extract the text, normalize it, filter by length.

Thin first versions of datatrove's steps; the quality filters (Gopher, C4, FineWeb),
language ID and PII come in later work and plug in as more `Filter`s.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from lmforge.pipelines.steps import Filter, Step, quarantine
from lmforge.pipelines.words import words

# C0/C1 control characters except tab and newline (the Debian manuals carry backspaces)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# horizontal whitespace runs, including no-break and ideographic spaces
_HSPACE = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")


class ExtractText(Step):
    """Parse `raw` into text, id and meta; a record without string text is quarantined."""

    name = "extract"

    def __init__(self, text_field: str = "text", id_field: str = "id") -> None:
        self.text_field, self.id_field = text_field, id_field

    def apply(self, row: dict[str, Any]) -> None:
        record = json.loads(row["raw"])
        if not isinstance(record, dict):
            quarantine(row, self.name, f"record is a JSON {type(record).__name__}, not an object")
            return
        text = record.get(self.text_field)
        if text is None:
            quarantine(row, self.name, f"missing text field {self.text_field!r}")
            return
        if not isinstance(text, str):
            kind = type(text).__name__
            quarantine(row, self.name, f"text field {self.text_field!r} is {kind}, not a string")
            return
        lang = record.get("lang")
        row["text"] = text
        row["chars_in"] = len(text)
        row["lang"] = lang if isinstance(lang, str) else None
        skip = {self.text_field, self.id_field, "source", "lang"}
        meta = {k: v for k, v in record.items() if k not in skip}
        row["meta"] = json.dumps(meta, ensure_ascii=False, default=str) if meta else None
        row["raw"] = None  # the text is in `text` now; do not carry it twice


def normalize_text(text: str) -> str:
    """NFC, no control characters, single spaces, at most one blank line, stripped."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_HSPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


class Normalize(Step):
    """normalize_text, after an optional mojibake repair (UTF-8 read as Latin-1 or
    cp1252, "cafÃ©" -> "café") by ftfy, which changes nothing in text that is fine."""

    name = "normalize"

    def __init__(self, fix_mojibake: bool = False) -> None:
        self.fix = None
        if fix_mojibake:
            import ftfy

            self.fix = ftfy.fix_encoding

    def apply(self, row: dict[str, Any]) -> None:
        text = self.fix(row["text"]) if self.fix else row["text"]
        row["text"] = normalize_text(text)


@dataclass(kw_only=True)
class LengthConfig:
    """min_chars: fewest characters a kept document has; min_words: fewest words, counted
    by `words.words` (script runs for Japanese and Chinese, which use no spaces)."""

    min_chars: int = 200
    min_words: int = 20


class LengthFilter(Filter):
    name = "length"

    def __init__(self, cfg: LengthConfig) -> None:
        self.cfg = cfg

    def filter(self, row: dict[str, Any]) -> bool | tuple[bool, str]:
        text = row["text"]
        if not text:
            return False, "empty"
        if len(text) < self.cfg.min_chars:
            return False, "too_short"
        if len(words(text, row["lang"])) < self.cfg.min_words:
            return False, "too_few_words"
        return True
