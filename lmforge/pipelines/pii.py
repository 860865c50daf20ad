"""PII redaction for the curate stage: e-mail, public IP, phone, payment card, secrets.

Each kind is a compiled candidate regex plus, where a regex alone would over-match, a
check on the candidate (the `ipaddress` module, the Luhn sum, a look at the text just
before it). A candidate that fails its check is left as it was.

The shapes are tuned against technical text (the Debian manuals): private, loopback,
link-local, multicast, reserved and documentation addresses stay (`192.168.0.1`,
`127.0.0.1`, `ff02::1`), and so do section numbers (`Section 6.2.4.3`), versions, dates,
ISBNs, UUIDs, number tables and plain long integers.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge.pipelines.steps import Step, read_meta, update_meta

KINDS = ("secret", "email", "credit_card", "ip_address", "phone")  # the order they run in


@dataclass(kw_only=True)
class PIIConfig:
    """Which kinds are redacted, and what replaces them.

    email, ip_address, phone, credit_card, secret: redact that kind.
    placeholder: the replacement; `{label}` becomes the kind in upper case, so the
        default gives `<EMAIL>`, `<IP_ADDRESS>`, `<PHONE>`, `<CREDIT_CARD>`, `<SECRET>`.
    """

    email: bool = True
    ip_address: bool = True
    phone: bool = True
    credit_card: bool = True
    secret: bool = True
    placeholder: str = "<{label}>"


# ------------------------------------------------------------------------------ patterns

# Each secret shape starts with its literal prefix, so `re` can scan for it quickly (an
# alternation, or a lookbehind in front, makes it try every position: 30x slower); the
# "not inside a longer word" test is a lookbehind placed after the prefix.
_SECRETS = (
    # a PEM private key, to its END line or, when cut off, through its base64 lines
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY-----"
    r"|(?:\s*\n[ \t]*[A-Za-z0-9+/=]{16,}(?=\s|$))*)",
    r"A[KS]IA(?<!\wA[KS]IA)[0-9A-Z]{16}\b",  # AWS access key id (long-term, temporary)
    r"gh[pousr]_(?<!\wgh[pousr]_)[A-Za-z0-9]{36,255}\b",  # GitHub tokens
    r"github_pat_(?<!\wgithub_pat_)[A-Za-z0-9_]{22,255}\b",  # GitHub fine-grained
    r"xox[baprs]-(?<!\wxox[baprs]-)[A-Za-z0-9-]{10,}",  # Slack
    # OpenAI-style: 20 or more of letters and digits, both present
    r"sk-(?<!\wsk-)(?:proj-|svcacct-|admin-)?(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{20,}",
    r"AIza(?<!\wAIza)[0-9A-Za-z_-]{35}(?![\w-])",  # Google API key
    r"eyJ(?<!\weyJ)[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]*",  # JWT: base64 {"..}.{"..}.signature
)
# Not after "/" (a Message-ID in a list-archive URL) and not before ":path" (an scp or
# rsync target, git@salsa.debian.org:team/repo.git): those are not anyone's mailbox.
_EMAIL = (
    r"(?<![A-Za-z0-9_.%+/-])[A-Za-z0-9_.%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-]|\.[A-Za-z0-9]|:[^\s])"
)
# 13-19 digits in groups; the check wants one separator kind and a first group of four
_CARD = r"(?<![\w.,+-])(?:\d[ -]?){12,18}\d(?![\w-]|[.,]\d)"
# not part of a longer dotted or dashed token (versions: 1.2.3.4.5, linux-2.6.32.5-1)
_IPV4 = r"(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d|-\w|[~+])"
_IPV6 = (
    r"(?<![\w:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:-]|\.\w)"
)
_SP = "[ \u00a0]"  # one space: a phone number does not span lines
_PHONE = (
    r"(?:"
    # international: +CC then groups (compact +4930123456 too); 8-15 digits in all
    rf"(?<![\w+)])\+[1-9]\d{{0,2}}(?:{_SP}?\(0?\d{{1,4}}\))?(?:(?:{_SP}|[.-])?\d{{1,8}}){{1,6}}"
    # North American: (212) 555-0147, 212-555-0147, 212.555.0147, 212 555 0147
    rf"|(?<![\w.+-])(?:\([2-9]\d\d\){_SP}?[2-9]\d\d[-. ]|[2-9]\d\d-[2-9]\d\d-"
    rf"|[2-9]\d\d\.[2-9]\d\d\.|[2-9]\d\d{_SP}[2-9]\d\d{_SP})\d{{4}}"
    # trunk-prefix national: 030 12345678, 089/1234567, 03-1234-5678, (030) 123 456 78
    rf"|(?<![\w.,+/-])(?:\(0[1-9]\d{{0,4}}\){_SP}?|0[1-9]\d{{0,4}}(?:{_SP}?/{_SP}?|-|{_SP}))"
    rf"\d{{2,8}}(?:(?:{_SP}|-)\d{{2,8}}){{0,3}}"
    # never the start of a longer run of numbers (a table row, a date, a version)
    rf")(?![\w-]|[.,/:]\d|{_SP}?\d)"
)

# What just before a dotted quad says it is a section or a version, not an address
_NUMBERING = re.compile(
    r"(?i)(?:\b(?:section|sect|chapter|chap|abschnitt|kapitel|version|ver|release|"
    r"rel|kernel|linux|v)\.?|§|No\.|Nr\.)\s*$"
)
# A word that makes a space-separated national number a phone number, at most three
# words before it
_PHONE_WORD = re.compile(
    r"(?i)(?:\b(?:tel|phone|fax|mobil|handy|call|ruf|anruf)|電話|携帯)\w*\.?"
    r"(?:[\s:：]+\S+){0,3}[\s:：]*$"
)
_DOC_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
# (IIN prefix range, allowed lengths): Visa, Mastercard, Amex, Discover, JCB, Diners,
# UnionPay, Maestro
_IIN: tuple[tuple[tuple[int, int], tuple[int, ...]], ...] = (
    ((4, 4), (13, 16, 19)),
    ((51, 55), (16,)),
    ((2221, 2720), (16,)),
    ((34, 34), (15,)),
    ((37, 37), (15,)),
    ((6011, 6011), (16, 17, 18, 19)),
    ((644, 649), (16, 17, 18, 19)),
    ((65, 65), (16, 17, 18, 19)),
    ((3528, 3589), (16, 17, 18, 19)),
    ((300, 305), (14, 15, 16, 17, 18, 19)),
    ((36, 36), (14, 15, 16, 17, 18, 19)),
    ((38, 39), (16, 17, 18, 19)),
    ((62, 62), (16, 17, 18, 19)),
    ((50, 50), (13, 14, 15, 16, 17, 18, 19)),
    ((56, 58), (13, 14, 15, 16, 17, 18, 19)),
    ((67, 67), (13, 14, 15, 16, 17, 18, 19)),
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_public_ip(text: str) -> bool:
    """A globally routable unicast address: not private, loopback, link-local,
    multicast, reserved, unspecified, shared (100.64/10) or documentation."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return False
    if addr.is_multicast or addr.is_reserved or addr.is_loopback or addr.is_link_local:
        return False
    if addr.is_unspecified or addr.is_private or not addr.is_global:
        return False
    return not any(addr in net for net in _DOC_NETS if net.version == addr.version)


# Message-IDs as mutt (20140211193904.GX24404@host) and Emacs (21592.61064.5275@host)
# make them; a mailbox of digits alone (12345678@qq.com) is still a mailbox
_MESSAGE_ID = re.compile(r"\d{8,}\.|\d+(?:\.\d+){2,}@")


def _email_ok(match: re.Match[str]) -> bool:
    return not _MESSAGE_ID.match(match.group())


def _card_ok(match: re.Match[str]) -> bool:
    text = match.group()
    seps = set(re.findall(r"[ -]", text))
    if len(seps) > 1:
        return False
    if seps:
        groups = re.split(r"[ -]", text)
        if len(groups[0]) != 4 or not all(3 <= len(g) <= 6 for g in groups[1:]):
            return False
    digits = re.sub(r"\D", "", text)
    if not 13 <= len(digits) <= 19 or not luhn_ok(digits):
        return False
    for (lo, hi), lengths in _IIN:
        width = len(str(lo))
        if lo <= int(digits[:width]) <= hi and len(digits) in lengths:
            return True
    return False


def _ipv4_ok(match: re.Match[str]) -> bool:
    before = match.string[max(0, match.start() - 20) : match.start()]
    if _NUMBERING.search(before):
        return False
    line_start = match.string.rfind("\n", 0, match.start()) + 1
    after = match.string[match.end() : match.end() + 1]
    if not match.string[line_start : match.start()].strip() and after in {".", ")"}:
        return False  # "6.2.4.3. The mail address configuration": a heading
    return is_public_ip(match.group())


def _ipv6_ok(match: re.Match[str]) -> bool:
    return is_public_ip(match.group())


def _phone_ok(match: re.Match[str]) -> bool:
    text = match.group()
    digits = sum(ch.isdigit() for ch in text)
    if text.startswith("+"):
        return 8 <= digits <= 15
    if not 9 <= digits <= 12:
        return False
    if re.search(r"[-/.()]", text):
        return True
    # only spaces between the groups: a number table looks the same, so ask for a word
    before = match.string[max(0, match.start() - 40) : match.start()]
    return bool(_PHONE_WORD.search(before))


Check = Callable[[re.Match[str]], bool]


class PIIRedactor(Step):
    """Replaces PII in `row["text"]` with placeholders and counts what it replaced.

    `counts` sums over every row this instance saw (one Ray worker's share); each row
    with a find also gets them in its meta, `{"pii": {"email": 2}}`, so the stage can
    sum them over the whole dataset.
    """

    name = "pii"

    def __init__(self, cfg: PIIConfig | None = None) -> None:
        self.cfg = cfg or PIIConfig()
        self.counts: Counter[str] = Counter()
        every: dict[str, list[tuple[re.Pattern[str], Check | None]]] = {
            "secret": [(re.compile(p, re.DOTALL | re.ASCII), None) for p in _SECRETS],
            "email": [(re.compile(_EMAIL), _email_ok)],
            "credit_card": [(re.compile(_CARD), _card_ok)],
            "ip_address": [
                (re.compile(_IPV4), _ipv4_ok),
                (re.compile(_IPV6), _ipv6_ok),
            ],
            "phone": [(re.compile(_PHONE), _phone_ok)],
        }
        self.detectors = [(kind, every[kind]) for kind in KINDS if getattr(self.cfg, kind)]

    def redact(self, text: str) -> tuple[str, Counter[str]]:
        """The text with PII replaced, and how many of each kind were replaced."""
        found: Counter[str] = Counter()
        for kind, patterns in self.detectors:
            placeholder = self.cfg.placeholder.format(label=kind.upper())
            for pattern, check in patterns:
                text, n = _substitute(pattern, check, placeholder, text)
                found[kind] += n
        return text, +found

    def apply(self, row: dict[str, Any]) -> None:
        text, found = self.redact(row["text"])
        if not found:
            return
        row["text"] = text
        self.counts.update(found)
        pii = Counter(read_meta(row).get("pii") or {})
        pii.update(found)
        update_meta(row, pii=dict(pii))


def _substitute(
    pattern: re.Pattern[str], check: Check | None, placeholder: str, text: str
) -> tuple[str, int]:
    """`pattern.subn`, leaving the candidates that fail `check` as they are."""
    if check is None:
        return pattern.subn(lambda _: placeholder, text)
    n = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal n
        if not check(m):
            return m.group()
        n += 1
        return placeholder

    return pattern.sub(replace, text), n
