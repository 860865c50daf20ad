"""The held-out records of `synthetic_filter_eval.py`, made at the start of each of its runs
(no copy is committed: the clean answers come from ../shared/data and installed packages).

    python benchmarks/heldout/make_synthetic_heldout.py OUT.jsonl

Answers: Debian FAQ sections whose title is a question (../shared/data/corpus) and the
opening prose of docstrings of installed Python packages, each with its question. Defects:
the refusals, disclaimers and identity claims below, written for this file (not taken from
lmforge's phrase lists or tests), and truncations and loops cut or repeated out of the
answers. Nothing here imports lmforge or looks at what its filters decide.
"""

import importlib
import inspect
import json
import random
import re
import sys
from pathlib import Path

rng = random.Random(20240611)
CORPUS = Path(__file__).resolve().parents[3] / "shared/data/corpus/debian_docs_en_ja_de.jsonl"


def reflow_faq(text: str, limit: int = 1400) -> str:
    """Body of a FAQ section as an answer: prose paragraphs re-flowed, command lines
    fenced, stopping before footnotes, at a paragraph that ends a sentence."""
    body = text.split("\n", 1)[1]
    body = body.split("\n---")[0]
    out: list[str] = []
    for para in re.split(r"\n\s*\n", body):
        lines = [ln.strip() for ln in para.strip("\n").split("\n") if ln.strip()]
        if not lines:
            continue
        if re.match(r"^\d+(\.\d+)+\.\s", lines[0]) and len(lines) == 1:
            out.append("### " + lines[0].replace("\xa0", " "))  # a sub-section's title
            continue
        if all(
            re.match(r"^(#|\$|ln |apt|dpkg|aptitude|sudo|[a-z0-9.-]+ --?[a-z])", ln) for ln in lines
        ):
            out.append("```\n" + "\n".join(lines) + "\n```")  # commands
            continue
        if len(lines) == 1 and len(lines[0]) < 40 and not lines[0].endswith((".", ":")):
            out.append(f"**{lines[0]}**")  # a term of a definition list
            continue
        out.append(" ".join(lines))
    kept: list[str] = []
    for p in out:
        if sum(len(x) for x in kept) + len(p) > limit and kept:
            break
        kept.append(p)
    while kept and (kept[-1].startswith(("```", "#", "**")) or kept[-1][-1] not in '.?!)"'):
        kept.pop()
    return "\n\n".join(kept)


def faq_pool() -> list[dict[str, str]]:
    recs = [json.loads(x) for x in CORPUS.read_text(encoding="utf-8").splitlines()]
    out = []
    for r in recs:
        if not r["source"].startswith("debian-faq_"):
            continue
        title = r["title"].replace("\xa0", " ").strip()
        if not title.endswith("?"):
            continue
        question = re.sub(r"^[\d.]+\s*", "", title)
        answer = reflow_faq(r["text"])
        if len(answer) >= 150:
            out.append({"source": f"debian-faq:{r['id']}", "q": question, "a": answer})
    return out


MODULES = """
textwrap shutil json subprocess functools heapq bisect tempfile csv logging argparse difflib
fnmatch glob gzip hashlib secrets urllib.parse calendar string pathlib contextlib threading
queue sched weakref copy pprint inspect operator tarfile zipfile socket email.utils
http.cookies mimetypes base64 locale gettext shlex configparser sqlite3 asyncio.tasks
requests.sessions requests.api click.core jinja2.environment packaging.version
yaml.__init__ werkzeug.utils dateutil.parser filelock networkx.algorithms.shortest_paths.generic
""".split()  # noqa: SIM905
TEMPLATES = [
    "What does `{n}` do in Python?",
    "Can you explain what {n} is for?",
    "Briefly describe the Python function {n}.",
    "I keep running into {n} in code reviews. What is it?",
    "How would you summarise what `{n}` does?",
    "Explain {n} to a junior developer.",
    "What is the purpose of {n}?",
]


def prose(doc: str, limit: int = 900) -> str:
    """The leading prose paragraphs of a docstring, re-flowed, up to `limit` characters."""
    paras = []
    for para in re.split(r"\n\s*\n", doc.strip()):
        first = para.strip().split("\n")[0]
        if re.match(
            r"^(>>>|:|\.\.|Args|Arguments|Parameters|Returns|Raises|Example|Note|-{3,}|\*)", first
        ):
            break
        if re.search(r"^\s{2,}\S", para, re.M):  # an indented block: code or a table
            break
        text = " ".join(ln.strip() for ln in para.split("\n"))
        if sum(len(p) for p in paras) + len(text) > limit and paras:
            break
        paras.append(text)
    while paras and (not paras[-1] or paras[-1][-1] not in ".!?)"):
        paras.pop()
    return "\n\n".join(paras)


def doc_pool() -> list[dict[str, str]]:
    """Public functions and classes of MODULES whose docstring opens with 150+ characters
    of prose, at most three per module."""
    out = []
    for mod_name in MODULES:
        try:
            mod = importlib.import_module(mod_name.removesuffix(".__init__"))
        except ImportError:
            print("skip (not importable)", mod_name, file=sys.stderr)
            continue
        got = 0
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", "") != mod.__name__:
                continue
            a = prose(inspect.getdoc(obj) or "")
            if len(a) < 150:
                continue
            name = f"{mod.__name__}.{attr}"
            k = len(out)
            out.append(
                {
                    "source": f"pydoc:{name}",
                    "q": TEMPLATES[k % len(TEMPLATES)].format(n=name),
                    "a": a,
                }
            )
            got += 1
            if got == 3:
                break
    return out


# ------------------------------------------------------------------------ defects

REFUSALS = [  # the whole answer
    "That's not something I'm going to help with.",
    "I'd rather not get into that one, sorry.",
    "Regrettably, this falls outside what I'm permitted to do.",
    "I won't be writing that for you.",
    "This is a request I have to turn down.",
    "Helping with this would go against the rules I operate under, so I'll pass.",
    "No can do, I'm afraid: that is outside my remit.",
    "I'm going to have to say no to this one.",
    "My apologies, but this isn't a task I'm able to take on.",
    "Under my usage policy I am not permitted to answer questions like this.",
    "Unfortunately that isn't something I can do for you.",
    "恐れ入りますが、このご依頼には対応いたしかねます。",
    "すみません、その内容についてはお手伝いできないんです。",
    "I apologise, however I'm not in a position to respond to this.",
]
DISCLAIMERS = [  # (text, where: "open" before the answer, "mid" after its first paragraph)
    (
        "Being an artificial intelligence, I have no personal stake in this, but here is an overview.",
        "open",
    ),
    ("Speaking as a machine-learning system without lived experience of my own:", "open"),
    (
        "Keep in mind that I'm a computer program and don't have feelings of my own; that said, here goes.",
        "open",
    ),
    (
        "Since I am a chatbot, I have never actually used this myself, but the documentation says the following.",
        "open",
    ),
    (
        "I should mention that what I know only runs up to early 2023, so check for anything newer.",
        "mid",
    ),
    ("As a virtual assistant I lack personal opinions, though I can summarise the facts.", "open"),
    ("I don't possess consciousness or beliefs, so please take this as a neutral summary.", "mid"),
    ("Not being human, I can't say I've tried it, but here is how it works.", "open"),
    ("(Note: I am an automated assistant and cannot verify current release information.)", "mid"),
    (
        "My training data stops at a fixed date, so newer releases may be missing from this answer.",
        "mid",
    ),
    ("私は人工知能なので個人的な経験はありませんが、一般的には次のとおりです。", "open"),
    ("AIである私には感情も意見もありませんが、事実をまとめます。", "open"),
    ("As an AI model, my perspective here is purely informational.", "mid"),
]
IDENTITIES = [  # (claim, where)
    ("Hello, this is ChatGPT here.", "open"),
    ("You're chatting with GPT-4, OpenAI's model.", "open"),
    ("Speaking as Claude (Anthropic's assistant), here's my take.", "open"),
    ("I'm Bard, Google's conversational AI, and I'm glad to help.", "open"),
    ("This answer comes from Llama 2, the open model released by Meta.", "mid"),
    ("I go by the name Gemini, and I was built at Google DeepMind.", "open"),
    ("OpenAI trained me, so I'll answer as best I can.", "open"),
    ("For the record, I'm a Mistral model released by Mistral AI.", "mid"),
    ("Being Qwen from Alibaba Cloud, I can tell you the following.", "open"),
    ("Hi there! Claude here, made by the folks at Anthropic.", "open"),
    ("Answering as the ChatGPT assistant:", "open"),
    ("こんにちは、GoogleのGeminiです。", "open"),
    ("私はAnthropic製のClaudeというAIです。", "mid"),
]
TRUNCATION_FORMS = [
    "mid_word",
    "after_article",
    "after_comma",
    "open_list",
    "announced_count",
    "colon_end",
    "open_code",
    "mid_word",
    "after_article",
    "open_paren",
    "mid_sentence_conj",
    "open_list",
    "announced_count",
    "mid_word",
]
LOOP_FORMS = [
    "pair_repeated",
    "list_item",
    "word_stutter",
    "paragraph_x3",
    "sentence_x4",
    "pair_repeated",
    "list_item",
    "word_stutter",
    "paragraph_x3",
    "sentence_x4",
    "clause_loop",
    "clause_loop",
    "line_loop",
]


def insert(answer: str, text: str, where: str) -> str:
    paras = answer.split("\n\n")
    if where == "mid" and len(paras) > 1:
        return "\n\n".join([paras[0], text, *paras[1:]])
    return f"{text}\n\n{answer}" if rng.random() < 0.5 else f"{text} {answer}"


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s]


def truncate(answer: str, form: str) -> str:
    flat = answer
    n = len(flat)
    if form == "mid_word":
        words = list(re.finditer(r"[A-Za-z]{6,}", flat))
        words = [m for m in words if 0.4 * n < m.start() < 0.9 * n] or words
        m = rng.choice(words)
        return flat[: m.start() + rng.randint(2, len(m.group()) - 2)]
    if form == "after_article":
        ms = [
            m
            for m in re.finditer(r"\b(the|a|an|of|to|and)\b", flat)
            if 0.4 * n < m.end() < 0.95 * n
        ]
        return flat[: rng.choice(ms).end()]
    if form == "after_comma":
        ms = [m for m in re.finditer(r",", flat) if 0.3 * n < m.end() < 0.95 * n]
        return flat[: rng.choice(ms).end()] if ms else flat[: int(0.6 * n)].rsplit(" ", 1)[0] + ","
    if form == "open_paren":
        s = sentences(flat)
        keep = " ".join(s[: max(1, len(s) // 2)])
        return keep + " (for instance, on a system where"
    if form == "mid_sentence_conj":
        s = sentences(flat)
        keep = " ".join(s[: max(1, len(s) // 2)])
        nxt = s[len(s) // 2] if len(s) > 1 else s[0]
        return keep + " " + " ".join(nxt.split()[: max(3, len(nxt.split()) // 2)]) + " because"
    if form == "open_list":
        s = sentences(flat)
        items = s[:3] if len(s) >= 3 else (s * 3)[:3]
        return "In short:\n\n- " + "\n- ".join(items[:2]) + "\n- " + " ".join(items[2].split()[:4])
    if form == "announced_count":
        s = sentences(flat)
        total = rng.choice([4, 5, 6])
        got = rng.randint(1, min(3, total - 1))
        body = "\n".join(f"{i + 1}. {s[i % len(s)]}" for i in range(got))
        word = {4: "four", 5: "five", 6: "six"}[total]
        return f"There are {word} things worth knowing here.\n\n{body}"
    if form == "colon_end":
        s = sentences(flat)
        keep = " ".join(s[: max(1, len(s) // 2)])
        return keep + " The command to run is as follows:"
    if form == "open_code":
        s = sentences(flat)
        keep = " ".join(s[: max(1, len(s) - 1)])
        return (
            keep + "\n\nA quick example:\n\n```bash\nsudo apt-get install --no-install-recommends "
        )
    raise ValueError(form)


def loop(answer: str, form: str) -> str:
    s = sentences(answer)
    if form == "pair_repeated":
        pair = " ".join(s[-2:]) if len(s) >= 2 else s[-1]
        return answer + (" " + pair) * rng.randint(4, 7)
    if form == "list_item":
        item = s[-1]
        return answer + "\n\n" + "\n".join(f"- {item}" for _ in range(rng.randint(6, 10)))
    if form == "word_stutter":
        cut = answer.rstrip(".!?")
        word = cut.split()[-1]
        return cut + (" " + word) * rng.randint(15, 30)
    if form == "paragraph_x3":
        para = answer.split("\n\n")[0]
        return answer + ("\n\n" + para) * 3
    if form == "sentence_x4":
        return answer + (" " + s[len(s) // 2]) * 4
    if form == "clause_loop":
        return answer.rstrip(".!?") + " and then it starts again" * rng.randint(8, 14) + "."
    if form == "line_loop":
        return answer + "\n" + "\n".join(["Hope this helps!"] * rng.randint(5, 9))
    raise ValueError(form)


def main() -> None:
    faq = faq_pool()
    docs = doc_pool()
    rng.shuffle(faq)
    rng.shuffle(docs)
    print(f"pools: {len(faq)} FAQ answers, {len(docs)} docstring answers", file=sys.stderr)
    # alternate sources so both defect and clean sets get both kinds
    mixed = (
        [x for pair in zip(faq, docs, strict=False) for x in pair]
        + faq[len(docs) :]
        + docs[len(faq) :]
    )
    records = []
    plan = (
        [("refusal", r, None) for r in REFUSALS]
        + [("disclaimer", d, w) for d, w in DISCLAIMERS]
        + [("identity", c, w) for c, w in IDENTITIES]
        + [("truncation", f, None) for f in TRUNCATION_FORMS]
        + [("loop", f, None) for f in LOOP_FORMS]
    )
    it = iter(mixed)
    for k, (kind, what, where) in enumerate(plan):
        base = next(it)
        a = base["a"]
        if kind == "refusal":
            resp, form = what, "replaces"
        elif kind in ("disclaimer", "identity"):
            resp, form = insert(a, what, where), where
        elif kind == "truncation":
            resp, form = truncate(a, what), what
        else:
            resp, form = loop(a, what), what
        records.append(
            {
                "id": f"heldout-{kind}-{k:03d}",
                "planted": kind,
                "form": form,
                "from": base["source"],
                "instruction": base["q"],
                "input": "",
                "response": resp,
            }
        )
    clean = list(it)
    for k, base in enumerate(clean[:62]):
        records.append(
            {
                "id": f"heldout-clean-{k:03d}",
                "planted": "clean",
                "form": base["source"].split(":")[0],
                "from": base["source"],
                "instruction": base["q"],
                "input": "",
                "response": base["a"],
            }
        )
    print(
        f"{len(records)} records, {len(records) - len(clean[:62])} planted, {len(clean[:62])} clean (of {len(clean)} left)",
        file=sys.stderr,
    )
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


main()
