"""PII redaction and eval-set decontamination, on the real eval files and Debian manuals."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest

from lmforge.pipelines.decontam import (
    DecontamConfig,
    Decontaminate,
    EvalItem,
    EvalSet,
    characters,
    load_eval_set,
    words,
)
from lmforge.pipelines.pii import PIIConfig, PIIRedactor, is_public_ip, luhn_ok
from lmforge.pipelines.records import DROPPED, KEPT, empty_row, to_table
from lmforge.pipelines.steps import Pipeline
from lmforge.pipelines.text import normalize_text

from conftest import shared

# ------------------------------------------------------------------------------ PII

POSITIVES = [
    ("mail osamu@debian.org for details", "email"),
    ("Maintainer: Santiago Vila <sanvila@debian.org>", "email"),
    ("Contact: John.Doe+tag@mail.example.co.uk.", "email"),
    ("ask john_doe@example.com", "email"),
    ("メールはtaro@example.jpへ", "email"),  # no space around it in Japanese
    ("PING (130.89.148.77) 1432(1460) bytes", "ip_address"),
    ("resolver 8.8.8.8 answered", "ip_address"),
    ("host 2001:4860:4860::8888.", "ip_address"),
    ("from mirror (2603:400a:ffff:bb8::801f:3e): icmp_seq=1", "ip_address"),
    ("call +1 (415) 555-2671 today", "phone"),
    ("office +44 20 7946 0958", "phone"),
    ("Zentrale +49 (0)30 1234567", "phone"),
    ("sms +14155552671", "phone"),
    ("bureau +33 1 23 45 67 89", "phone"),
    ("desk (212) 555-0147", "phone"),
    ("desk 212-555-0147", "phone"),
    ("Tel. 030 12345678", "phone"),
    ("Telefon: 089 / 123456", "phone"),
    ("電話 03-1234-5678 まで", "phone"),
    ("card 4111 1111 1111 1111 exp 12/29", "credit_card"),
    ("4111-1111-1111-1111", "credit_card"),
    ("mc 5500005555555559", "credit_card"),
    ("amex 3782 822463 10005", "credit_card"),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "secret"),
    ("token ghp_" + "a1B2" * 9, "secret"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv", "secret"),
    ("SLACK=xoxb-123456789012-abcdefABCDEF", "secret"),
    ("OPENAI_API_KEY=sk-proj-abc123DEF456ghi789JKL012", "secret"),
    ("key=AIzaSyA1234567890abcdefghijklmnopqrstuv", "secret"),
    (
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "secret",
    ),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1234567890abcdef\n"
        "abcdefabcdefabcdef==\n-----END RSA PRIVATE KEY-----",
        "secret",
    ),
]

NEGATIVES = [
    "127.0.0.1 localhost",
    "127.0.1.1 myhost",
    "address 192.168.11.1 netmask 255.255.255.0",
    "10.0.0.1 and 172.16.5.4 and 169.254.1.1 and 100.64.0.1",
    "ff02::1 ip6-allnodes, ::1 ip6-localhost, fe80::1%eth0",
    "documentation 192.0.2.1, 198.51.100.7, 203.0.113.9 and 2001:db8::1",
    "mDNS 224.0.0.251",
    "See Section 6.2.4.3, The mail address configuration",
    "6.2.4.3. The mail address configuration",
    "linux-image-2.6.32.5-1 and version 1.2.3.4 and 1.3.6.1.4.1",
    "dates 2023-01-15, 15.01.2023, 01/15/2023, 01-02-2023 at 11:59:01",
    "versions 1.2.3 and 2.9-2+deb8u1 and 1003.1-1990 and 9.20170808",
    "ISBN 978-3-16-148410-0, ISBN 0-306-40615-2, ISBN 9780306406157",
    "plain integers 1234567890123 and 5368709120",
    "not Luhn 4111 1111 1111 1112 nor 1234 5678 9012 3456 nor 4111111111111112",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "uuid 12345678-1234-1234-1234-123456789012",
    "Mem: 997184 976928 20256 0 129592",
    "chmod 0644 file; 0 2008-09-15 20:11",
    "1 packets transmitted, 0 received, +1 errors, 100% packet loss",
    "Perl Data::Dumper, C++ std::vector, a::b",
    "hotel 030 12345678",  # spaces only and no phone word before it
    "https://lists.debian.org/20140211193904.GX24404@rzlab.ucr.edu",
    "git@salsa.debian.org:ddp-team/debian-faq.git",
    "$ scp foo username@remote.host:foo",
    "risk-management and task-1234567890abcdefghij",
]


@pytest.fixture(scope="module")
def redactor() -> PIIRedactor:
    return PIIRedactor()


@pytest.mark.parametrize(("text", "kind"), POSITIVES)
def test_pii_positives(redactor: PIIRedactor, text: str, kind: str) -> None:
    out, found = redactor.redact(text)
    assert dict(found) == {kind: 1}, out
    assert f"<{kind.upper()}>" in out


@pytest.mark.parametrize("text", NEGATIVES)
def test_pii_hard_negatives(redactor: PIIRedactor, text: str) -> None:
    assert redactor.redact(text) == (text, {})


def test_public_ip_and_luhn_helpers() -> None:
    assert is_public_ip("130.89.148.77") and is_public_ip("2603:400a:ffff:bb8::801f:3e")
    for private in ("192.168.0.1", "127.0.0.1", "::1", "fe80::1", "192.0.2.1", "224.0.0.1"):
        assert not is_public_ip(private)
    assert not is_public_ip("1.2.3.04") and not is_public_ip("11:59:01")
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_pii_counts_go_to_meta_and_the_step(tmp_path: Path) -> None:
    step = PIIRedactor()
    found = empty_row(
        id="a",
        text="write to a@debian.org or b@example.org from 8.8.8.8, not 192.168.0.1",
        meta=json.dumps({"title": "t", "pii": {"email": 1}}),
    )
    clean = empty_row(id="b", text="nothing here but 127.0.0.1", meta=None)
    for row in (found, clean):
        step.apply(row)
    assert found["text"] == "write to <EMAIL> or <EMAIL> from <IP_ADDRESS>, not 192.168.0.1"
    # merged into what meta had, counts added to an earlier step's
    assert json.loads(found["meta"]) == {"title": "t", "pii": {"email": 3, "ip_address": 1}}
    assert clean["meta"] is None and clean["text"] == "nothing here but 127.0.0.1"
    assert step.counts == {"email": 2, "ip_address": 1}


def test_pii_config_switches_kinds_and_placeholder() -> None:
    step = PIIRedactor(PIIConfig(email=False, placeholder="[{label}]"))
    out, found = step.redact("a@debian.org at 8.8.8.8")
    assert out == "a@debian.org at [IP_ADDRESS]" and found == {"ip_address": 1}


def test_pii_on_the_debian_manuals() -> None:
    """Real technical text: only e-mails and the few public IPs in ping output go."""
    corpus = shared("corpus/debian_docs_en_ja_de.jsonl")
    step = PIIRedactor()
    texts = []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        row = empty_row(text=normalize_text(json.loads(line)["text"]))
        step.apply(row)
        texts.append(row["text"])
    print(f"\nPII on {len(texts)} Debian documents: {dict(step.counts)}")
    assert set(step.counts) == {"email", "ip_address"}  # no phone, card or secret there
    joined = "\n".join(texts)
    for kept in ("127.0.0.1", "192.168.0.1", "255.255.255.0", "ff02::1", "Section 6.2.4.3"):
        assert kept in joined
    for gone in ("osamu@debian.org", "130.89.148.77", "2603:400a:ffff:bb8::801f:3e"):
        assert gone not in joined


# ------------------------------------------------------------------------------ readers

EVALS = "evals"


@pytest.fixture(scope="module")
def eval_sets() -> dict[str, EvalSet]:
    return {
        "gsm8k": load_eval_set(str(shared(f"{EVALS}/gsm8k_test.jsonl"))),
        "humaneval": load_eval_set(str(shared(f"{EVALS}/HumanEval.jsonl.gz"))),
        "mmlu": load_eval_set(str(shared(f"{EVALS}/mmlu_test_all.csv"))),
    }


def test_readers_recognise_the_real_files(eval_sets: dict[str, EvalSet]) -> None:
    gsm8k, humaneval, mmlu = eval_sets["gsm8k"], eval_sets["humaneval"], eval_sets["mmlu"]
    assert (gsm8k.name, gsm8k.format, len(gsm8k.items)) == ("gsm8k_test", "gsm8k", 1319)
    assert (humaneval.name, humaneval.format) == ("HumanEval", "humaneval")
    assert len(humaneval.items) == 164 and humaneval.items[0].id == "HumanEval/0"
    assert (mmlu.name, mmlu.format, len(mmlu.items)) == ("mmlu_test_all", "mmlu", 14042)
    assert mmlu.items[0].id == "mmlu_test_all:abstract_algebra:1"


def test_reader_with_a_named_field_and_unknown_formats(tmp_path: Path) -> None:
    custom = tmp_path / "my_eval.jsonl"
    custom.write_text('{"id": "q1", "problem": "Two plus two?"}\n{"problem": "Why?"}\n')
    got = load_eval_set(str(custom), field="problem")
    assert [(i.id, i.text) for i in got.items] == [("q1", "Two plus two?"), ("my_eval:2", "Why?")]
    with pytest.raises(ValueError, match=r"my_eval.jsonl:1: field 'question'"):
        load_eval_set(str(custom), field="question")
    with pytest.raises(ValueError, match=r"my_eval.jsonl: unknown evaluation-set format.*problem"):
        load_eval_set(str(custom))
    table = tmp_path / "scores.csv"
    table.write_text("name,score\na,1\n")
    with pytest.raises(ValueError, match=r"scores.csv: unknown evaluation-set format"):
        load_eval_set(str(table))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: the evaluation set is empty"):
        load_eval_set(str(empty))


def test_tokens_ignore_case_punctuation_and_wrapping() -> None:
    assert words("Janet’s ducks\n   lay 16 eggs.") == words("janet's DUCKS lay 16\teggs")
    assert characters("日本語の 文章、です。") == list("日本語の文章です")


# ------------------------------------------------------------------------------ decontam


@pytest.fixture(scope="module")
def decontam(eval_sets: dict[str, EvalSet]) -> Decontaminate:
    return Decontaminate(list(eval_sets.values()))


@pytest.fixture(scope="module")
def debian() -> list[dict]:
    corpus = shared("corpus/debian_docs_en_ja_de.jsonl")
    docs = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    return [d | {"text": normalize_text(d["text"])} for d in docs]


def plant(base: str, quote: str) -> str:
    """`quote` in the middle of `base`, between two paragraphs, with other words around."""
    cut = base.find("\n\n", len(base) // 2)
    cut = cut if cut > 0 else len(base)
    return f"{base[:cut]}\n\nSomeone posted this on a forum:\n{quote}\n(end of post)\n{base[cut:]}"


def rewrap(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=41, subsequent_indent="   ")


def item(eval_set: EvalSet, item_id: str) -> str:
    return next(i.text for i in eval_set.items if i.id == item_id)


def test_planted_eval_items_are_found(
    eval_sets: dict[str, EvalSet], decontam: Decontaminate, debian: list[dict]
) -> None:
    english = [d for d in debian if d["lang"] == "en"]
    prompt = item(eval_sets["humaneval"], "HumanEval/10")
    cases = [
        ("gsm8k", "gsm8k_test:100", rewrap(item(eval_sets["gsm8k"], "gsm8k_test:100"))),
        # code pasted with other indentation
        ("humaneval", "HumanEval/10", "\n".join("  " + ln.strip() for ln in prompt.split("\n"))),
        ("mmlu", "mmlu_test_all:high_school_psychology:5004", None),
        # 11 words, under n=13: the whole question is the n-gram
        ("mmlu", "mmlu_test_all:high_school_psychology:5002", None),
    ]
    for k, (which, item_id, quote) in enumerate(cases):
        quote = quote or rewrap(item(eval_sets[which], item_id)) + "\n(A) ... (B) ..."
        row = empty_row(id=f"planted-{k}", text=plant(english[k]["text"], quote), meta=None)
        decontam.apply(row)
        assert row["fate"] == DROPPED, (item_id, quote)
        assert (row["step"], row["reason"]) == ("decontam", f"decontam/{eval_sets[which].name}")
        meta = json.loads(row["meta"])["decontam"]
        assert (meta["eval_set"], meta["item"]) == (eval_sets[which].name, item_id)
        assert meta["ngram"] in " ".join(words(quote))


def test_the_debian_manuals_are_not_contaminated(
    decontam: Decontaminate, debian: list[dict]
) -> None:
    dropped = [(d["id"], decontam.match(d["text"])) for d in debian]
    dropped = [hit for hit in dropped if hit[1] is not None]
    print(f"\ndecontam false positives on Debian: {len(dropped)}/{len(debian)}: {dropped[:5]}")
    assert dropped == []


def test_short_templates_do_not_drop_documents(decontam: Decontaminate) -> None:
    text = (
        "Quiz time. Which of the following statements is correct? Which of the following "
        "is true? Which of the following statements is not true? Answer below."
    )
    assert decontam.match(text) is None
    assert decontam.skipped_short > 1000  # MMLU's very short and template questions


def test_cjk_items_match_by_characters(tmp_path: Path, debian: list[dict]) -> None:
    question = (
        "太郎さんはりんごを十二個持っています。花子さんに三個あげて、次郎さんから五個"
        "もらいました。太郎さんは今りんごを何個持っていますか。"
    )
    path = tmp_path / "ja_math.jsonl"
    path.write_text(json.dumps({"id": "ja-1", "q": question}, ensure_ascii=False) + "\n")
    step = Decontaminate([load_eval_set(str(path), field="q")])
    assert list(step.index) == ["char"]
    japanese = [d for d in debian if d["lang"] == "ja"]
    wrapped = question[:30] + "\n  " + question[30:]  # a line break inside the sentence
    found = step.match(plant(japanese[0]["text"], wrapped))
    assert found is not None and found[:2] == ("ja_math", "ja-1")
    assert all(step.match(d["text"]) is None for d in japanese)
    # 50 characters is the window: a 40-character excerpt is not enough
    assert step.match(plant(japanese[0]["text"], question[5:45])) is None
    shorter = Decontaminate([load_eval_set(str(path), field="q")], DecontamConfig(n_chars=30))
    assert shorter.match(plant(japanese[0]["text"], question[5:45])) is not None


def test_pipeline_runs_both_steps_after_pickling(
    eval_sets: dict[str, EvalSet], decontam: Decontaminate, debian: list[dict]
) -> None:
    leak = plant(debian[0]["text"], item(eval_sets["gsm8k"], "gsm8k_test:7"))
    rows = [
        empty_row(id="leak", text=leak, meta=None),
        empty_row(id="pii", text="mail me: someone@example.org", meta=None),
    ]
    # pickled, as Ray ships a pipeline to its workers
    pipeline = pickle.loads(pickle.dumps(Pipeline([decontam, PIIRedactor()])))
    out = pipeline(to_table(rows)).to_pylist()
    assert [(r["id"], r["fate"], r["reason"]) for r in out] == [
        ("leak", DROPPED, "decontam/gsm8k_test"),
        ("pii", KEPT, None),
    ]
    assert json.loads(out[1]["meta"]) == {"pii": {"email": 1}}


def test_curate_steps_decontaminate_with_the_sets_the_driver_read() -> None:
    """On a cluster the driver reads `decontam.eval_sets` and sends them to the actors as
    data: given the sets, the steps never open the configured path (here one that exists
    nowhere, as a driver's path does not on a worker node) and still drop a leak."""
    from lmforge.pipelines.config import CurateConfig
    from lmforge.pipelines.curation import curate_steps

    question = (
        "Natalia sold clips to forty eight of her friends in April, and then she sold half "
        "as many clips in May. How many clips did Natalia sell altogether in April and May?"
    )
    path = "/nowhere/on/this/node/heldout.jsonl"
    sets = [EvalSet("heldout", path, "jsonl", (EvalItem("heldout:1", question),))]
    cfg = CurateConfig(
        language={"enabled": False}, min_chars=0, min_words=0, pii=False,
        quality={"gopher_repetition": False, "gopher_quality": False, "c4": False,
                 "fineweb": False},
        decontam={"eval_sets": [path]},
    )  # fmt: skip
    with pytest.raises(FileNotFoundError):
        curate_steps(cfg.model_dump())  # without them, the actor would open the path
    (step,) = [s for s in curate_steps(cfg.model_dump(), eval_sets=sets) if s.name == "decontam"]
    leak = empty_row(id="leak", text=f"A worksheet.\n{question}\nShow your work.", meta=None)
    fine = empty_row(id="ok", text="Nothing from any evaluation set here.", meta=None)
    for row in (leak, fine):
        step.apply(row)
    assert (leak["fate"], leak["reason"]) == (DROPPED, "decontam/heldout")
    assert fine["fate"] == KEPT
