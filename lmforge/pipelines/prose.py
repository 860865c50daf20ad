"""What language ID may read: a text's prose paragraphs, and whether a text is long enough.

Language ID on a few letters is noise: fastText lid.176 names `x+y = 4z, x*y = 4z^2,
express x-y in z` Spanish. `too_short` is the abstention rule both language checks use
(curation's `LanguageID`, synthetic `language_mismatch`): fewer than `MIN_LETTERS` letters,
or, outside CJK text, fewer than `MIN_WORDS` words of two letters or more (CJK: half the
letters). The thresholds are where the errors fall under 1% on the Debian corpus: 466
random en/de spans of k words were named right 84% of the time at 1 word, 95% at 2, 98.7%
at 3 and 99.4% at 4; by letters, 90% at 5-9, 98-99% at 10-19, 99.6% at 20-24. A formula
prompt ("express x-y in z": 18 letters, 2 words) falls below both.

`prose_paragraphs` keeps the paragraphs of a document without the lines that look like
code, shell commands or tables, so that a translated manual's English commands do not
decide its language (`LanguageID` weights the paragraphs' verdicts by their letters).
"""

from __future__ import annotations

import re

from lmforge.pipelines.writing_systems import cjk_share

MIN_LETTERS = 20
MIN_WORDS = 4
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[^\W\d_]{2,}")
_PARAGRAPH = re.compile(r"\n\s*\n")
# a shell prompt or variable assignment, a table row or rule, a line mostly of symbols
_PROMPT = re.compile(r"^\s*(?:[$#%]|\S+@\S+[:$#]|>>>|\.\.\.)\s+\S|^[A-Za-z_][\w.]*=\S")
_TABLE = re.compile(r"\|.*\||^\s*[+|]?[-=+:| ]{3,}$|\t")
_COMMAND = re.compile(
    r"^\s*(?:sudo|apt|apt-get|apt-cache|aptitude|dpkg(?:-\S+)?|debuild|dh_\S+|dch|dput|"
    r"lintian|git|pip3?|python3?|export|chmod|chown|tar|wget|curl|ssh|systemctl|mkdir|"
    r"cd|ls|rm|cp|mv|ln|sed|awk|gpg|modprobe|update-\S+|reportbug|grep|cat|echo|alias|"
    r"complete|source|quilt|debsign|pbuilder|sbuild)(?:\s|$)"
)
_CODE_CHARS = frozenset("{}[]()<>=;$&|\\/*_`~#@%^+")


def letters(text: str) -> int:
    return len(_LETTER.findall(text))


def weight(text: str) -> int:
    """A paragraph's say in its document's language: its letters, CJK ones counted twice
    (one carries about two Latin letters' worth of a word, as `too_short` assumes)."""
    n = letters(text)
    return 2 * n if cjk_share(text) > 0.3 else n


def too_short(text: str, min_letters: int = MIN_LETTERS, min_words: int = MIN_WORDS) -> str | None:
    """Why `text` is too short for language ID ("17 letters < 20", "2 words < 4"), or None
    when it is long enough. CJK text has no spaces and a character carries about a word's
    syllables: its letters alone are counted, against half of `min_letters`."""
    n = letters(text)
    cjk = cjk_share(text) > 0.3
    least = min_letters // 2 if cjk else min_letters
    if n < least:
        return f"{n} letters < {least}"
    if not cjk and (w := len(_WORD.findall(text))) < min_words:
        return f"{w} words < {min_words}"
    return None


def is_code_line(line: str) -> bool:
    """A line of code, a command, a table row: a prompt, `|` columns, a command name at
    its start in an ASCII line with no sentence end, or a quarter of symbols."""
    s = line.strip()
    if not s:
        return False
    if _PROMPT.match(s) or _TABLE.search(line):
        return True
    if s.isascii() and _COMMAND.match(s) and not s.endswith((".", "?", "!", ":")):
        return True
    marks = sum(c in _CODE_CHARS for c in s)
    return marks * 4 > len(s.replace(" ", ""))


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs (blank-line separated) with code, command and table lines left out;
    paragraphs left with no line are dropped."""
    out = []
    for para in _PARAGRAPH.split(text):
        kept = [line for line in para.split("\n") if line.strip() and not is_code_line(line)]
        if kept:
            out.append("\n".join(kept))
    return out
