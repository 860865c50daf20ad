"""What every conversation filter shares: the `Finding` it returns and its small contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmforge.pipelines.synthetic.formats import Turn


@dataclass(frozen=True)
class Finding:
    """Why a conversation is dropped.

    reason: the filter's name, or "name/kind" where a filter has several kinds
        ("truncated/code_fence"); this is what the manifest and MLflow count.
    evidence: the words that made the call (clipped), shown in the report so a person can
        judge the drop without opening the record.
    """

    reason: str
    evidence: str = ""


def clip(text: str, start: int = 0, end: int | None = None, *, width: int = 160) -> str:
    """`text[start:end]` on one line, at most `width` characters, with ellipses where cut."""
    end = len(text) if end is None else end
    piece = " ".join(text[start:end].split())
    if len(piece) > width:
        piece = piece[: width - 1] + "…"
    return ("…" if start > 0 else "") + piece + ("…" if end < len(text) else "")


class ConversationFilter:
    """`inspect(conv)` returns a Finding to drop the conversation, None to keep it."""

    name = "filter"

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        raise NotImplementedError

    def check(self, conv: Sequence[Turn]) -> str | None:
        """The reason code alone (None keeps the conversation)."""
        found = self.inspect(conv)
        return None if found is None else found.reason
