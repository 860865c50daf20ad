"""Words and sentences: spaCy's rules for the quality filters, and the plainer tokens that
decontamination and MinHash compare.

Space-delimited text gets the tokens of spaCy's blank English tokenizer, which datatrove
runs for `split_into_words(text, "eng")` (src/datatrove/utils/word_tokenizers.py): split
on whitespace; strip prefixes (`( " $`) and suffixes (`) , . 's`) until a special case
(`don't` -> `do n't`, `e.g.`, `:)`) or a URL is left, else cut at infixes (`-` between
letters, `/`, `lower.Upper`); merge special cases the affixes split (`):`). The rules are
spaCy's (lang/punctuation.py, char_classes.py, en/tokenizer_exceptions.py) in `re`.
Sentences follow spaCy's sentencizer: one ends at a terminal punctuation token. Text in
scripts without spaces (ja, zh, th) is cut by script first (`writing_systems`).

Matching and shingling want no such rules, only words that survive re-wrapping and
punctuation: `match_words` (decontamination's n-grams) and `shingle_words` (MinHash's
shingles, which `minhash.signatures.word_tokens` computes a batch at a time in Arrow).
"""

from __future__ import annotations

import re
import string
import unicodedata
from functools import lru_cache
from itertools import pairwise

from lmforge.pipelines.writing_systems import LETTER_OR_DIGIT_RE, SCRIPT_SEGMENTS, resolve_lang

_CASED = [(0x41, 0x2AF), (0x370, 0x52F), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF)]
_CASED += [(0xFF21, 0xFF5A)]
# scripts without case that spaCy counts as both lower and upper case (char_classes._uncased)
_UNCASED = (
    "\u1200-\u137f\u0980-\u09ff\u0591-\u05f4\ufb1d-\ufb4f\u0620-\u064a\u066e-\u06d5\u06e5-\u06ff"
    "\u0750-\u077f\u08a0-\u08bd\ufb50-\ufbb1\ufbd3-\ufd3d\ufd50-\ufdc7\ufdf0-\ufdfb\ufe70-\ufefc"
    "\u0d80-\u0dff\u0900-\u097f\u0c80-\u0cff\u0b80-\u0bff\u0c00-\u0c7f\uac00-\ud7af\u1100-\u11ff"
    "\u3040-\u30ff\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\u2e80-\u2fdf\u2ff0-\u2fff\u31c0-\u31ef"
    "\u3200-\u33ff\uf900-\ufaff\ufe30-\ufe4f\U00020000-\U0002fa1f"
)
_SYMBOL_BLOCKS = [(0xA0, 0x33FF), (0xA490, 0xA4CF), (0xFFE0, 0xFFFF), (0x1D000, 0x1D24F)]
_SYMBOL_BLOCKS += [(0x1EC70, 0x1ECBF), (0x1F000, 0x1FAFF)]


def _items(text: str) -> list[str]:
    """The space-separated items of a data table (spaCy's `split_chars`)."""
    return text.split()


def _char_class(blocks: list[tuple[int, int]], test) -> str:
    """A regex class body (no brackets) of the characters in `blocks` passing `test`."""
    points = [c for lo, hi in blocks for c in range(lo, hi + 1) if test(chr(c))]
    out, start = [], 0
    for i in range(1, len(points) + 1):
        if i == len(points) or points[i] != points[i - 1] + 1:
            lo, hi = re.escape(chr(points[start])), re.escape(chr(points[i - 1]))
            out.append(lo if start == i - 1 else f"{lo}-{hi}")
            start = i
    return "".join(out)


_AL = _char_class(_CASED, str.islower) + _UNCASED  # spaCy ALPHA_LOWER
_AU = _char_class(_CASED, str.isupper) + _UNCASED  # spaCy ALPHA_UPPER
_A = _char_class(_CASED, str.isalpha) + _UNCASED  # spaCy ALPHA
# spaCy's LIST_ICONS are the "other symbols" (category So) of an older Unicode
_ICONS = _char_class(_SYMBOL_BLOCKS, lambda c: unicodedata.category(c) == "So")
_PUNCT = _items("… …… , : ; ! ? ¿ ؟ ¡ ( ) [ ] { } < > _ # * & 。 ？ ！ ， 、 ； ： ～ · । ، ۔ ؛ ٪")
_QUOTES = _items(
    "' \" ” “ ` ‘ ´ ’ ‚ , „ » « 「 」 『 』 （ ） 〔 〕 【 】 《 》 〈 〉 \u2329 \u232a ⟦ ⟧"
)
_CURRENCY = _items(
    "$ £ € ¥ ฿ US$ C$ A$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ ₭ ₮ ₯ ₰ ₱ ₲ ₳ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₾ ₿"
)
_UNITS = _items(
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz "
    "m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %"
)
_HYPHENS = ["-", "–", "—", "--", "---", "——", "~"]


_Q = "".join(re.escape(q) for q in _QUOTES)
_ELLIPSES = [r"\.\.+", "…"]
_PREFIXES = ["§", "%", "=", "—", "–", r"\+(?![0-9])"]
_PREFIXES += [re.escape(p) for p in _PUNCT] + _ELLIPSES + [re.escape(q) for q in _QUOTES]
_PREFIXES += [re.escape(c) for c in _CURRENCY] + [f"[{_ICONS}]"]
_SUFFIXES = [re.escape(p) for p in _PUNCT] + _ELLIPSES + [re.escape(q) for q in _QUOTES]
_SUFFIXES += [f"[{_ICONS}]", "'s", "'S", "’s", "’S", "—", "–", r"(?<=[0-9])\+"]
_SUFFIXES += [r"(?<=°[FfCcKk])\.", rf"(?<=[0-9])(?:{'|'.join(map(re.escape, _CURRENCY))})"]
_SUFFIXES += [rf"(?<=[0-9])(?:{'|'.join(map(re.escape, _UNITS))})"]
# spaCy writes this class as `[0-9{al}{e}{p}(?:{q})]`: the punctuation alternation and
# the `(?:)` land inside the brackets as literal characters, so `|(?:)` are members too.
_SUFFIXES += [rf"(?<=[0-9{_AL}%²\-\+{re.escape(''.join(_PUNCT))}|(?:){_Q}])\."]
_SUFFIXES += [rf"(?<=[{_AU}][{_AU}])\."]
_INFIXES = [*_ELLIPSES, f"[{_ICONS}]", r"(?<=[0-9])[+\-\*^](?=[0-9-])"]
_INFIXES += [rf"(?<=[{_AL}{_Q}])\.(?=[{_AU}{_Q}])", rf"(?<=[{_A}]),(?=[{_A}])"]
_INFIXES += [
    rf"(?<=[{_A}0-9])(?:{'|'.join(map(re.escape, _HYPHENS))})(?=[{_A}])",
    rf"(?<=[{_A}0-9])[:<>=/](?=[{_A}])",
]

_PREFIX_RE = re.compile("|".join(f"^(?:{p})" for p in _PREFIXES))
_SUFFIX_RE = re.compile("|".join(f"(?:{s})$" for s in _SUFFIXES))
_INFIX_RE = re.compile("|".join(_INFIXES))
# spaCy's URL_MATCH (after dperini's pattern) without the IP-address branch
_URL_RE = re.compile(
    r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?"
    r"(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+"
    rf"[{_AL}]{{2,63}}(?::\d{{2,5}})?(?:[/?#]\S*)?$"
)

_ABBREVIATIONS = _items(
    "._. Adm. Ak. Ala. Apr. Ariz. Ark. Aug. Bros. Calif. Co. Colo. Conn. Corp. D.C. Dec. Del. "
    "Dr. E.G. E.g. Feb. Fla. Ga. Gen. Gov. I.E. I.e. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. "
    "Kan. Kans. Ky. La. Ltd. Mar. Mass. Md. Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. "
    "Mt. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. Ph.D. Prof. "
    "Rep. Rev. S.C. Sen. Sep. Sept. St. Tenn. Va. Wash. Wis. a.m. co. e.g. i.e. p.m. v.s. vs. "
    "ä. ö. ü. 'S 's 'd 'll 're 've 'em 'cause 'bout 'nuff ’s ’d ’ll ’re ’ve '' ’’ and/or w/o "
    "C++ o'clock ma'am ol' doin' goin' havin' lovin' nothin' nuthin' somethin' 'cos 'coz 'cuz "
    "'Cause 'Cos 'Coz 'Cuz <space> \u2014 \u2018S \u2018s \u2019 \u2019S \u2019em \u2019nuff"
) + [f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"]
_EMOTICONS = _items(
    "(*_*) (-8 (-: (-; (-_-) (._.) (: (; (= (>_<) (^_^) (o: (\xac_\xac) (\u0ca0_\u0ca0) )-: ): "
    "-_- -__- 0.0 0.o 0_0 0_o 8) 8-) 8-D 8D :'( :') :'-( :'-) :( :(( :((( :() :) :)) :))) :* "
    ":-( :-(( :-((( :-) :-)) :-))) :-* :-/ :-0 :-3 :-> :-D :-O :-P :-X :-] :-o :-p :-x :-| :-} "
    ":/ :0 :1 :3 :> :D :O :P :X :] :o :o) :p :x :| :} :\u2019( :\u2019) :\u2019-( :\u2019-) ;) "
    ";-) ;-D ;D ;_; <.< </3 <3 <33 <333 =( =) =/ =3 =D =[ =] =| >.< >.> >:( >:o ><(((*> @_@ "
    "O.O O.o O_O O_o V.V V_V XD XDD [-: [: [= ]= ^_^ ^__^ ^___^ o.0 o.O o.o o_0 o_O o_o v.v "
    "v_v xD xDD \xaf\\(\u30c4)/\xaf \u0ca0_\u0ca0 \u0ca0\ufe35\u0ca0"
)
_NEGATABLE = _items(
    "ai are ca could dare did does do had has have is may might must need ought sha should "
    "was were wo would"
)
_PRONOUNS = {"i": "d ll m ma ve", "you": "d ll re ve", "he": "d ll s", "she": "d ll s"}
_PRONOUNS |= {"it": "d ll s", "we": "d ll re ve", "they": "d ll re ve", "that": "d ll s"}
_PRONOUNS |= {"this": "d ll s", "these": "d ll re ve", "those": "d ll re ve"}
_PRONOUNS |= dict.fromkeys(_items("there what when where who why how"), "d ll re s ve")
_NOT_CONTRACTIONS = {"hell", "shell", "shed", "well", "were", "its", "whore", "ill"}


def _specials() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for ap in ("'", "’", ""):
        for stem in _NEGATABLE:
            table[f"{stem}n{ap}t"] = (stem, f"n{ap}t")
            table[f"{stem}n{ap}t{ap}ve"] = (stem, f"n{ap}t", f"{ap}ve")
        for stem in ("could", "might", "must", "should", "would", "not"):
            table[f"{stem}{ap}ve"] = (stem, f"{ap}ve")
        for pron, ends in _PRONOUNS.items():
            for end in _items(ends):
                tails: list[tuple[str, ...]] = [(f"{ap}{end}",)]
                if end in ("d", "ll"):
                    tails.append((f"{ap}{end}", f"{ap}ve"))
                elif end == "ma":
                    tails = [(f"{ap}m", "a")]
                for tail in tails:
                    if "".join((pron, *tail)) not in _NOT_CONTRACTIONS:
                        table["".join((pron, *tail))] = (pron, *tail)
        table[f"let{ap}s"] = ("let", f"{ap}s")
        table[f"c{ap}mon"] = (f"c{ap}m", "on")
    del table["lets"], table["cmon"]
    table |= {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta")}
    table |= {"y'all": ("y'", "all"), "y’all": ("y’", "all"), "yall": ("y", "all")}
    for hour in range(1, 13):
        for half in ("am", "pm", "a.m.", "p.m."):
            table[f"{hour}{half}"] = (str(hour), half)
    for key, (first, *rest) in list(table.items()):  # `Don't` -> `Do n't`, `I'm` -> `I 'm`
        if key[0].islower():
            table.setdefault(key[0].upper() + key[1:], (first[0].upper() + first[1:], *rest))
    for a in _ABBREVIATIONS + _EMOTICONS:
        table[a] = (a,)
    return table


def _affix_split(chunk: str, special: dict[str, tuple[str, ...]]) -> list[str]:
    """tokenizer.pyx `_split_affixes` + `_attach_tokens` on one whitespace-free chunk."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    s, last = chunk, -1
    while s and len(s) != last and s not in special:
        last = len(s)
        m = _PREFIX_RE.match(s)
        pre = m.end() if m else 0
        if pre and s[pre:] in special:
            prefixes.append(s[:pre])
            s = s[pre:]
            break
        m = _SUFFIX_RE.search(s[pre:])
        suf = m.end() - m.start() if m else 0
        if suf and s[:-suf] in special:
            suffixes.append(s[-suf:])
            s = s[:-suf]
            break
        if pre and suf > len(s) - pre:
            suf = 0  # they overlap: spaCy takes the prefix alone
        if pre:
            prefixes.append(s[:pre])
        if suf:
            suffixes.append(s[-suf:])
        s = s[pre : len(s) - suf]
    tokens = prefixes
    if s in special:
        tokens.extend(special[s])
    elif s and _URL_RE.match(s):
        tokens.append(s)
    elif s:
        start = 0
        for m in _INFIX_RE.finditer(s):
            if m.start() == 0:
                continue
            if m.start() != start:
                tokens.append(s[start : m.start()])
            if m.end() != m.start():
                tokens.append(m.group())
            start = m.end()
        if s[start:]:
            tokens.append(s[start:])
    tokens.extend(reversed(suffixes))
    return tokens


_SPECIAL = _specials()
# spaCy's second pass (`_apply_special_cases`): special cases that the affix rules split,
# such as `):` or `v.`, are merged back when their pieces come out next to each other
_MERGE: dict[str, list[tuple[tuple[str, ...], str]]] = {}
for _key in _SPECIAL:
    _pieces = tuple(_affix_split(_key, {}))
    if len(_pieces) > 1:
        _MERGE.setdefault(_pieces[0], []).append((_pieces, _key))


@lru_cache(maxsize=1 << 17)
def chunk_tokens(chunk: str) -> tuple[str, ...]:
    """spaCy's English tokens of one whitespace-free chunk; they concatenate to `chunk`."""
    if chunk in _SPECIAL:
        return _SPECIAL[chunk]
    tokens = _affix_split(chunk, _SPECIAL)
    spans = [
        (i, i + len(pieces), key)
        for i, tok in enumerate(tokens)
        for pieces, key in _MERGE.get(tok, ())
        if tuple(tokens[i : i + len(pieces)]) == pieces
    ]
    if not spans:
        return tuple(tokens)
    seen: set[int] = set()
    chosen = []
    for a, b, key in sorted(spans, key=lambda s: (s[0] - s[1], s[0])):  # longest, then first
        if a not in seen and b - 1 not in seen:
            chosen.append((a, b, key))
        seen.update(range(a, b))
    for a, b, key in sorted(chosen, reverse=True):
        tokens[a:b] = _SPECIAL[key]
    return tuple(tokens)


def words(text: str, lang: str | None = None) -> list[str]:
    """Word and punctuation tokens of `text`, whitespace dropped (datatrove `split_into_words`)."""
    return list(_words(text, resolve_lang(text, lang)))


@lru_cache(maxsize=8)  # the filters of a chain ask for the same document's words in turn
def _words(text: str, lang: str) -> tuple[str, ...]:
    seg = SCRIPT_SEGMENTS.get(lang)
    if seg is None:
        return tuple(tok for chunk in text.split() for tok in chunk_tokens(chunk))
    runs = (chunk_tokens(m[1]) if m[1] else (m[0],) for m in seg.finditer(text))
    return tuple(tok for run in runs for tok in run)  # Latin runs go through chunk_tokens


# datatrove's TERMINAL_PUNCTUATION (src/datatrove/utils/text.py) as hex code points and
# ranges: a superset of the characters spaCy's sentencizer ends sentences at
_TERMINAL = (
    "21 2E 3F 589 61D-61F 6D4 700-702 7F9 837 839 83D-83E 964-965 104A-104B 1362 1367-1368 "
    "166E 1735-1736 17D4-17D6 17D9-17DA 1803 1809 1944-1945 1AA8-1AAB 1B5A-1B5B 1B5E-1B5F "
    "1B7D-1B7E 1C3B-1C3C 1C7E-1C7F 203C-203D 2047-2049 2E2E 2E3C 2E53-2E54 3002 A4FF "
    "A60E-A60F A6F3 A6F7 A876-A877 A8CE-A8CF A92F A9C8-A9C9 AA5D-AA5F AAF0-AAF1 ABEB FE52 "
    "FE56-FE57 FF01 FF0E FF1F FF61 10A56-10A57 10F55-10F59 10F86-10F89 11047-11048 "
    "110BE-110C1 11141-11143 111C5-111C6 111CD 111DE-111DF 11238-11239 1123B-1123C 112A9 "
    "1144B-1144C 115C2-115C3 115C9-115D7 11641-11642 1173C-1173E 11944 11946 11A42-11A43 "
    "11A9B-11A9C 11C41-11C42 11EF7-11EF8 11F43-11F44 16A6E-16A6F 16AF5 16B37-16B38 16B44 "
    "16E98 1BC9F 1DA88"
)
TERMINAL_PUNCTUATION = frozenset(
    chr(c)
    for lo, _, hi in (item.partition("-") for item in _items(_TERMINAL))
    for c in range(int(lo, 16), int(hi or lo, 16) + 1)
)
_ENDS_NOT_EN = TERMINAL_PUNCTUATION | {"…"}  # spaCy's sentencizer, run for English, skips …


@lru_cache(maxsize=1 << 14)
def is_punct(token: str) -> bool:
    """spaCy's `is_punct`: every character is Unicode punctuation (category P*)."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


def _sentence_starts(tokens: list[str], lang: str) -> list[int]:
    ends = TERMINAL_PUNCTUATION if lang == "en" else _ENDS_NOT_EN
    starts, seen_end = [0] if tokens else [], False
    for i, tok in enumerate(tokens):
        if tok in ends:
            seen_end = True
        elif seen_end and not is_punct(tok):
            starts.append(i)
            seen_end = False
    return starts


def count_sentences(text: str, lang: str | None = None) -> int:
    """len(sentences(text, lang)), without building them."""
    lang = resolve_lang(text, lang)
    return len(_sentence_starts(words(text, lang), lang))


def sentences(text: str, lang: str | None = None) -> list[str]:
    """Sentences of `text`, stripped: one ends at a terminal punctuation token (`.!?。！？`, `…`
    outside English), the next starts at the next non-punctuation token: `"Go." He left.`."""
    lang = resolve_lang(text, lang)
    tokens = words(text, lang)
    offsets, pos = [], 0
    for tok in tokens:
        pos = text.index(tok, pos)
        offsets.append(pos)
        pos += len(tok)
    starts = [offsets[i] for i in _sentence_starts(tokens, lang)] + [len(text)]
    return [text[a:b].strip() for a, b in pairwise(starts)]


# ------------------------------------------------------------------ matching and shingling

MATCH_WORD_RE = re.compile(r"\w+")


def match_words(text: str) -> list[str]:
    """Lower-cased words without punctuation: `Janet’s ducks` -> [janet, s, ducks]."""
    return MATCH_WORD_RE.findall(unicodedata.normalize("NFKC", text).lower())


def match_characters(text: str) -> list[str]:
    """Lower-cased letters and digits, no spaces or punctuation."""
    return LETTER_OR_DIGIT_RE.findall(unicodedata.normalize("NFKC", text).lower())


# trimmed from both ends of whitespace-separated words ("(see" and "see," are "see")
TRIMMED_PUNCTUATION = (
    string.punctuation + "“”‘’«»„‚…—–¡¿·、。，．・：；！？「」『』（）［］【】〈〉《》"
)


def shingle_words(text: str) -> list[str]:
    """MinHash's words of one text: lower-cased, split at whitespace, TRIMMED_PUNCTUATION
    trimmed from both ends, a word of punctuation alone skipped. `word_tokens` hashes the
    same words in Arrow (Arrow and Python may disagree on a rare space or case)."""
    return [w for w in (t.strip(TRIMMED_PUNCTUATION) for t in text.lower().split()) if w]
