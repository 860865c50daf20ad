"""filter-synthetic quality: plant known defects into copies of real GPT-4 records, run the
stage, and measure recall per defect type and the drop rate on untouched records; then the
same on held-out records the filters were not written against.

    python benchmarks/synthetic_filter_eval.py [--per-type 120] [--seed 7] [--direct]
        [--heldout FILE.jsonl | --no-heldout]

IN-SAMPLE. The first evaluation is in-sample: the filters were tuned on these GPTeacher
records, and the phrasings planted below are the kind the filters' phrase lists and unit
tests were written from. Its figures say the filters do what they were built to do, not how
they do on data they have not seen.

Input: GPTeacher role-play (`../shared/data/synthetic/gpteacher_roleplay_gpt4.json`, 1,923
real GPT-4 records). A random `--per-type` records per defect type are copied and changed;
the rest stay untouched; every record appears once. Defect types, each in several forms:

    refusal      the answer replaced by, or opened with, a refusal or AI disclaimer
                 (English and Japanese; phrasings after public cleaning lists)
    identity     a claim to be, or be made by, another vendor's model, at the start or
                 after the first paragraph (English and Japanese)
    truncation   cut mid-sentence, an unclosed code block appended, a numbered list
                 stopping before the count it announced, cut at about 256 tokens
    loop         the last sentence repeated, a paragraph repeated, a phrase looping
    language     an English question answered with Japanese or German text (Debian
                 corpus), or a Japanese question with the English answer
    eval_item    the question replaced by a GSM8K, MMLU or HumanEval item (sometimes with
                 case and spacing changed), decontaminated against ../shared/data/evals

A planted record counts as caught when it is dropped for its type's reason; untouched
records should be kept. Prints recall per type and form, false drops with their reasons,
records per second per core, and the measured figures as a RESULT line. In-sample goals:
recall >= 0.95 for every type and at most 3% of untouched records dropped; the exit status
is 1 when either is missed.

HELD-OUT. `benchmarks/heldout/make_synthetic_heldout.py` makes, at run time, records written
apart from the filters (see benchmarks/heldout/README.md): answers taken from the Debian FAQ
(../shared/data, never copied into the repository) and from
docstrings of installed Python packages, some kept clean, the others given a refusal, an AI
disclaimer, another vendor's identity claim, a truncation or a repetition loop, each phrased
anew. Each record's `planted` field names its defect ("clean" for none); only the
conversation goes to the stage, in a run of its own with near-duplicate prompts off (the
set measures the per-conversation filters, and its docstring questions share a few
templates, so MinHash would pair them). Printed apart, labelled held-out: recall per
defect type and form, and the share of clean records dropped. They have no goal and never
fail the run; a warning is printed when they are very low (recall over all planted
held-out records below 0.5, or more than 20% of the clean ones dropped).

CODE. No code-instruction data set is in ../shared/data: `code_instructions.py` builds a
stand-in from real code (standard-library functions as answers to "Write a Python function
that does this: <docstring line>", hand-written C/JS/SQL/shell programs), mostly bare code.
Its untouched records' drop rate has the in-sample goal (<= 3%); the same answers cut at a
random point are run apart (same prompts) and their truncation recall printed, no goal.

--direct runs the per-conversation filters and decontamination in this process (no Ray, no
dedup): a quick loop while tuning, not the figure to report.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import code_instructions
import harness

GPTEACHER = "synthetic/gpteacher_roleplay_gpt4.json"
EVALS = ("evals/gsm8k_test.jsonl", "evals/mmlu_test_all.csv", "evals/HumanEval.jsonl.gz")
CORPUS = "corpus/debian_docs_en_ja_de.jsonl"
# builds the held-out records at run time: their clean answers are Debian FAQ sections of
# ../shared/data and installed docstrings, which the repository must not hold copies of
HELDOUT_MAKER = Path(__file__).resolve().parent / "heldout" / "make_synthetic_heldout.py"
RECALL_GOAL, DROP_GOAL = 0.95, 0.03  # in-sample: every type's recall, untouched drop rate
HELDOUT_WARN_RECALL, HELDOUT_WARN_DROPS = 0.5, 0.2  # held-out: warn below / above these
EXPECTED = {  # defect type -> the reason prefixes that count as caught
    "refusal": ("synthetic_filter/refusal",),
    "identity": ("synthetic_filter/identity",),
    "truncation": ("synthetic_filter/truncated",),
    "loop": ("synthetic_filter/repetition",),
    "language": ("synthetic_filter/language_mismatch",),
    "eval_item": ("decontam/",),
}
EXPECTED_HELDOUT = {
    "refusal": ("synthetic_filter/refusal",),
    "disclaimer": ("synthetic_filter/refusal",),  # refusal/disclaimer, refusal/cutoff
    "identity": ("synthetic_filter/identity",),
    "truncation": ("synthetic_filter/truncated",),
    "loop": ("synthetic_filter/repetition",),
}

REFUSALS = [  # (text, replaces the answer?) -- phrasings from FastChat/GPT4-LLM-Cleaned lists
    ("I'm sorry, but I can't assist with that request.", True),
    ("I'm sorry, but I cannot fulfill this request.", True),
    (
        "I apologize, but as an AI language model, I am not able to role-play as a real person.",
        True,
    ),
    ("Sorry, I can't help with that.", True),
    ("Unfortunately, I cannot provide that content as it goes against my guidelines.", True),
    ("I'm afraid I can't do that.", True),
    ("I am unable to comply with this request.", True),
    ("I must decline to write that content.", True),
    ("It's not appropriate for me to speculate about the private thoughts of real people.", True),
    ("I'm not able to provide personal opinions on this topic.", True),
    ("As an AI, I cannot engage in this role-play scenario.", True),
    ("I'm sorry, but I am not able to browse the internet or access real-time information.", True),
    ("申し訳ありませんが、そのリクエストにはお応えできません。", True),
    ("申し訳ございませんが、その質問にはお答えできかねます。", True),
    ("As an AI language model, I don't have personal experiences, but here is a response:", False),
    ("As an AI, I do not have personal feelings or opinions. However,", False),
    ("I'm just an AI language model, so I don't have feelings, but I can imagine this.", False),
    ("As a large language model, I can't truly experience this, but here goes.", False),
    ("Note: my knowledge cutoff is September 2021, so this may be out of date.", False),
    ("AI言語モデルとして、私は個人的な意見を持っていませんが、以下のように答えます。", False),
]
IDENTITIES = [
    "I am ChatGPT, a large language model trained by OpenAI.",
    "As an AI developed by OpenAI, I will do my best to answer.",
    "I'm Claude, an AI assistant made by Anthropic.",
    "As GPT-4, I can tell you the following.",
    "I was created by Google as part of the Bard project.",
    "My developers at OpenAI designed me to be helpful.",
    "Hi! I'm Gemini, a model from Google.",
    "As a Llama model developed by Meta, I am happy to help.",
    "I am Qwen, a large language model created by Alibaba Cloud.",
    "I'm an AI language model developed by OpenAI, known as ChatGPT.",
    "私はOpenAIによって開発されたChatGPTです。",
    "私はGoogleが開発したAIアシスタントです。",
]
JA_QUESTIONS = [
    "あなたは中世の騎士です。戦いの前夜の気持ちを説明してください。",
    "有名な探偵として、最近解決した事件について話してください。",
    "宇宙飛行士の立場から、初めて月面に立った瞬間を描写してください。",
    "あなたは料理長です。今夜のおすすめ料理を紹介してください。",
    "歴史上の科学者として、あなたの最大の発見を説明してください。",
    "海賊の船長として、乗組員に向けて演説をしてください。",
    "あなたは魔法使いです。弟子に最初の呪文を教えてください。",
    "環境活動家として、気候変動への取り組みを呼びかけてください。",
]
CODE_TAILS = [
    "\n\nHere is a short script that does it:\n\n```python\ndef plan(days):\n    for day in days:\n        print(day",
    "\n\nFor example:\n\n```\nstep 1: gather the supplies\nstep 2: prepare the",
    "\n\n```javascript\nfunction greet(name) {\n  return `Hello, ${name}",
]
NUMBER_WORDS = {5: "five", 6: "six", 7: "seven"}
LANGUAGE_WORDS = re.compile(
    r"translat|English|Japanese|German|French|Spanish|Italian|Chinese|Latin|language", re.I
)


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def plant(kind: str, rec: dict[str, Any], rng: random.Random, pools: dict[str, Any]) -> str:
    """Change `rec` in place to carry one defect of `kind`; returns the form planted."""
    answer = rec["response"]
    if kind == "refusal":
        text, replaces = rng.choice(REFUSALS)
        rec["response"] = (
            text
            if replaces
            else f"{text}\n\n{answer}"
            if rng.random() < 0.5
            else f"{text} {answer}"
        )
        return "replaces" if replaces else "opens"
    if kind == "identity":
        claim = rng.choice(IDENTITIES)
        paragraphs = answer.split("\n\n")
        if len(paragraphs) > 1 and rng.random() < 0.5:
            paragraphs.insert(1, claim)
            rec["response"] = "\n\n".join(paragraphs)
            return "middle"
        rec["response"] = f"{claim} {answer}"
        return "start"
    if kind == "truncation":
        form = rng.choice(["mid_sentence", "mid_sentence", "code_fence", "list", "token_limit"])
        if form == "token_limit" and len(answer) < 1100:
            form = "mid_sentence"
        if form == "mid_sentence":
            words = answer.split(" ")
            for _ in range(20):
                cut = rng.randint(int(len(words) * 0.3), max(int(len(words) * 0.9), 1))
                head = " ".join(words[:cut]).rstrip()
                if head and head[-1] not in ".!?\"')":
                    break
            rec["response"] = head
        elif form == "code_fence":
            rec["response"] = answer + rng.choice(CODE_TAILS)
        elif form == "list":
            items = [" ".join(s.split()) for s in sentences(answer) if len(s) > 20] or [answer]
            n = rng.choice(list(NUMBER_WORDS))
            k = rng.randint(2, n - 1)
            listed = "\n".join(f"{i + 1}. {items[i % len(items)]}" for i in range(k))
            rec["response"] = f"Here are {NUMBER_WORDS[n]} key points:\n\n{listed}"
        else:
            cut = answer.rfind(" ", 0, 1024)
            rec["response"] = answer[:cut]
        return form
    if kind == "loop":
        form = rng.choice(["sentence", "paragraph", "phrase"])
        parts = sentences(answer)
        if form == "sentence":
            last = parts[-1]
            rec["response"] = answer + (" " + last) * rng.randint(5, 12)
        elif form == "paragraph":
            para = answer.split("\n\n")[-1]
            rec["response"] = answer + ("\n\n" + para) * rng.randint(2, 4)
        else:
            words = parts[-1].rstrip(".!?").split()
            phrase = " ".join(words[-rng.randint(3, 6) :])
            rec["response"] = answer.rstrip(".!?") + (", " + phrase) * rng.randint(10, 20)
        return form
    if kind == "language":  # on prompts that ask for no translation and name no language
        if rng.random() < 0.5:
            rec["instruction"] = rng.choice(JA_QUESTIONS)
            rec["input"] = ""
            return "ja_question"
        lang = rng.choice(["ja", "de"])
        rec["response"] = rng.choice(pools[lang])
        return f"{lang}_answer"
    if kind == "eval_item":
        name = rng.choice(list(pools["evals"]))
        question = rng.choice(pools["evals"][name])
        if rng.random() < 0.3:
            question = "  ".join(question.upper().split()) if len(question) < 400 else question
            name += "_reformatted"
        rec["instruction"] = question
        rec["input"] = ""
        return name
    raise ValueError(kind)


def _whole_sentences(text: str, limit: int) -> str:
    """The text up to the last sentence end within `limit` characters (or all of it)."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(end, 0, limit) for end in ("。", ". ", "! ", "? "))
    return text[: cut + 1] if cut > 0 else text[:limit]


def load_pools() -> dict[str, Any]:
    from lmforge.pipelines.decontam import cjk_share

    corpus = [json.loads(x) for x in harness.shared_data(CORPUS).read_text().splitlines()]
    pools: dict[str, Any] = {}
    for lang in ("ja", "de"):
        texts = [" ".join(d["text"].split()) for d in corpus if d["lang"] == lang]
        texts = [_whole_sentences(t, 600) for t in texts]
        # in the language: Japanese sections quote English commands and paths at length
        pools[lang] = [t for t in texts if len(t) > 80 and (lang != "ja" or cjk_share(t) > 0.3)]
    gsm = [
        json.loads(x)["question"] for x in harness.shared_data(EVALS[0]).read_text().splitlines()
    ]
    with harness.shared_data(EVALS[1]).open(encoding="utf-8") as f:
        mmlu = [
            r["question"]
            + "\n"
            + "\n".join(f"{c}. {r[f'choice{i}']}" for i, c in enumerate("ABCD"))
            for r in csv.DictReader(f)
        ]
    with gzip.open(harness.shared_data(EVALS[2]), "rt", encoding="utf-8") as f:
        humaneval = ["Complete this function:\n" + json.loads(x)["prompt"] for x in f]
    pools["evals"] = {"gsm8k": gsm, "mmlu": mmlu, "humaneval": humaneval}
    return pools


def make_input(path: Path, per_type: int, seed: int) -> tuple[dict[str, tuple[str, str]], int]:
    """Writes the JSONL; returns {id: (type, form)} of planted records and the record count."""
    real = json.loads(harness.shared_data(GPTEACHER).read_text(encoding="utf-8"))
    rng = random.Random(seed)
    pools = load_pools()
    order = list(range(len(real)))
    rng.shuffle(order)
    kinds = list(EXPECTED)
    planted: dict[str, tuple[str, str]] = {}
    with path.open("w", encoding="utf-8") as out:
        for pos, i in enumerate(order):
            rec = dict(real[i], id=f"gpteacher-{i:04d}")
            kind = kinds[pos % len(kinds)]
            if kind == "language" and LANGUAGE_WORDS.search(rec["instruction"] + rec["input"]):
                kind = "skip"  # translation asked, or a language named: not a mismatch
            if pos < per_type * len(kinds) and kind != "skip":
                planted[rec["id"]] = (kind, plant(kind, rec, rng, pools))
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return planted, len(real)


def fates_direct(path: Path) -> dict[str, str | None]:
    from lmforge.pipelines.decontam import DecontamConfig
    from lmforge.pipelines.synthetic import default_filters, first_finding, to_conversation
    from lmforge.pipelines.synthetic.steps import ConversationDecontam

    filters = default_filters()
    decontam = ConversationDecontam([str(harness.shared_data(e)) for e in EVALS], DecontamConfig())
    out: dict[str, str | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        conv = to_conversation(rec)
        found = first_finding(conv, filters)
        reason = f"synthetic_filter/{found.reason}" if found else None
        if reason is None:
            row = {"messages": conv, "text": "\n".join(t["content"] for t in conv), "meta": None}
            result = decontam.filter(row)
            reason = None if result is True else result[1]  # type: ignore[index]
        out[rec["id"]] = reason
    return out


def fates_stage(
    tmp: Path, path: Path, name: str = "out", *sets: str
) -> tuple[dict[str, str | None], float]:
    from lmforge.jobs import filter_synthetic

    out = tmp / name
    r = harness.recipe(
        tmp, "filter-synthetic", [str(path)], str(out),
        f"synthetic.decontam.eval_sets={json.dumps([str(harness.shared_data(e)) for e in EVALS])}",
        "synthetic.report=false", *sets,
    )  # fmt: skip
    harness.prepare_mlflow(r)
    sw = harness.Stopwatch()
    with sw.span("run"):
        filter_synthetic.run(r)
    fates = harness.fates_of_output(out)
    return {i: (None if f == "kept" else d) for i, (f, d) in fates.items()}, sw["run"]


def load_heldout(src: Path, path: Path) -> tuple[dict[str, tuple[str, str]], dict[str, Any]]:
    """Writes the held-out conversations (their labels left out) to `path`; returns
    {id: (planted, form)} and the records by id."""
    records = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines() if x.strip()]
    with path.open("w", encoding="utf-8") as out:
        for r in records:
            conv = {k: r[k] for k in ("id", "instruction", "input", "response")}
            out.write(json.dumps(conv, ensure_ascii=False) + "\n")
    return {r["id"]: (r["planted"], r["form"]) for r in records}, {r["id"]: r for r in records}


def recall_table(
    planted: dict[str, tuple[str, str]],
    fates: dict[str, str | None],
    expected: dict[str, tuple[str, ...]],
) -> tuple[list[tuple[str, ...]], dict[str, float], dict[str, Counter[str]], dict[str, list[str]]]:
    """Rows of the recall table, recall per type, other outcomes and misses per type."""
    caught: Counter[tuple[str, str]] = Counter()
    total: Counter[tuple[str, str]] = Counter()
    other: dict[str, Counter[str]] = defaultdict(Counter)
    misses: dict[str, list[str]] = defaultdict(list)
    for rid, (kind, form) in planted.items():
        reason = fates[rid]
        total[(kind, form)] += 1
        if reason is not None and reason.startswith(expected[kind]):
            caught[(kind, form)] += 1
        else:
            other[kind][reason or "kept"] += 1
            misses[kind].append(rid)
    rows, recalls = [], {}
    for kind in expected:
        forms = sorted(f for k, f in total if k == kind)
        t = sum(total[(kind, f)] for f in forms)
        c = sum(caught[(kind, f)] for f in forms)
        recalls[kind] = c / t if t else float("nan")
        detail = ", ".join(f"{f} {caught[(kind, f)]}/{total[(kind, f)]}" for f in forms)
        rows.append((kind, str(t), str(c), f"{recalls[kind]:.3f}", detail))
    return rows, recalls, other, misses


def _planted_part(record: dict[str, Any], kind: str) -> str:
    """Where a held-out defect sits: a phrase opens the answer or follows its first
    paragraph; a truncation or loop is at its end."""
    answer = record["response"]
    if kind not in ("refusal", "disclaimer", "identity"):
        return answer[-160:]
    paragraphs = answer.split("\n\n")
    return paragraphs[1][:160] if record["form"] == "mid" and len(paragraphs) > 1 else answer[:160]


def report_heldout(
    planted: dict[str, tuple[str, str]],
    records: dict[str, Any],
    fates: dict[str, str | None],
    show: int,
) -> bool:
    """Print the held-out figures; returns False when they are very low (a warning only)."""
    defects = {i: kf for i, kf in planted.items() if kf[0] != "clean"}
    clean = [i for i, (k, _) in planted.items() if k == "clean"]
    print(f"\nHELD-OUT (records written apart from the filters, {HELDOUT_MAKER.name}):")
    rows, recalls, other, misses = recall_table(defects, fates, EXPECTED_HELDOUT)
    harness.table(rows, ("held-out defect", "planted", "caught", "recall", "by form"))
    n_caught = sum(
        1 for i, (k, _) in defects.items() if (fates[i] or "").startswith(EXPECTED_HELDOUT[k])
    )
    any_drop = sum(1 for i in defects if fates[i] is not None)
    overall = n_caught / len(defects) if defects else float("nan")
    false_drops = Counter(fates[i] for i in clean if fates[i] is not None)
    n_false = sum(false_drops.values())
    rate = n_false / len(clean) if clean else float("nan")
    print(
        f"held-out: recall over all {len(defects)} planted {overall:.3f} ({n_caught} caught for "
        f"their type's reason, {any_drop} dropped for any reason); clean records: "
        f"{len(clean)}, dropped {n_false} ({rate:.2%}): {dict(false_drops)}"
    )
    for kind, counter in other.items():
        print(f"held-out missed {kind}: {dict(counter)}")
        for rid in misses[kind][:show]:
            print(f"   {rid} ({planted[rid][1]}): {_planted_part(records[rid], kind)!r}")
    for rid in [i for i in clean if fates[i] is not None][: show * 3]:
        print(
            f"held-out false drop {rid} ({fates[rid]}, from {records[rid]['from']}): "
            f"{records[rid]['response'][-160:]!r}"
        )
    ok = bool(overall >= HELDOUT_WARN_RECALL and rate <= HELDOUT_WARN_DROPS)  # nan: not ok
    worst = min(recalls.values()) if recalls else float("nan")
    print(
        f"RESULT synthetic_filter_eval held-out (no goal): recall={overall:.3f} "
        f"min_recall_per_type={worst:.3f} clean_drop_rate={rate:.4f} "
        f"very_low={not ok} (recall < {HELDOUT_WARN_RECALL} or clean drops > "
        f"{HELDOUT_WARN_DROPS:.0%}; a warning, not an exit failure)"
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-type", type=int, default=120, help="planted records per defect type")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--direct", action="store_true", help="no Ray: filters in this process")
    ap.add_argument("--show", type=int, default=5, help="misses and false drops to print per type")
    ap.add_argument(
        "--heldout", type=Path, default=None, help="held-out records (JSONL; default: made now)"
    )
    ap.add_argument("--no-heldout", action="store_true", help="skip the held-out evaluation")
    args = ap.parse_args()
    if harness.shared_data(GPTEACHER) is None:
        print("../shared/data is absent: this benchmark needs the real GPT-4 records")
        return 0

    with tempfile.TemporaryDirectory(prefix="lmforge-eval-") as d:
        tmp = Path(d)
        path = tmp / "planted.jsonl"
        planted, n = make_input(path, args.per_type, args.seed)
        code_recs = code_instructions.records()  # the code-instruction stand-in
        code_cuts = code_instructions.cut_records(code_recs, args.seed)
        code_paths = [tmp / "code.jsonl", tmp / "code-cut.jsonl"]  # apart: same prompts
        for p, recs in zip(code_paths, (code_recs, code_cuts), strict=True):
            p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        records = {json.loads(x)["id"]: json.loads(x) for x in path.read_text().splitlines()}
        held: tuple[dict[str, tuple[str, str]], dict[str, Any]] | None = None
        if not args.no_heldout:
            source = args.heldout
            if source is None:
                source = tmp / "heldout-source.jsonl"
                subprocess.run([sys.executable, str(HELDOUT_MAKER), str(source)], check=True)
            held = load_heldout(source, tmp / "heldout.jsonl")
        if args.direct:
            fates, seconds = fates_direct(path), 0.0
            code_fates = {k: v for p in code_paths for k, v in fates_direct(p).items()}
            held_fates = fates_direct(tmp / "heldout.jsonl") if held else {}
        else:
            harness.start_ray()
            try:
                fates, seconds = fates_stage(tmp, path)
                code_fates = {
                    k: v
                    for i, p in enumerate(code_paths)
                    for k, v in fates_stage(
                        tmp, p, f"out-code{i}", "synthetic.near_dedup.enabled=false"
                    )[0].items()
                }
                held_fates = (
                    fates_stage(
                        tmp,
                        tmp / "heldout.jsonl",
                        "out-heldout",
                        "synthetic.near_dedup.enabled=false",
                    )[0]
                    if held
                    else {}
                )
            finally:
                harness.stop_ray()

    print("IN-SAMPLE (the GPTeacher records the filters were tuned on, planted with phrasings")
    print("like those their phrase lists and unit tests were written from):")
    rows, recalls, other, misses = recall_table(planted, fates, EXPECTED)
    harness.table(rows, ("in-sample defect", "planted", "caught", "recall", "by form"))
    untouched = [i for i in fates if i not in planted]
    false_drops = Counter(fates[i] for i in untouched if fates[i] is not None)
    n_false = sum(false_drops.values())
    rate = n_false / len(untouched)
    print(
        f"untouched records: {len(untouched)}, dropped {n_false} ({rate:.2%}): {dict(false_drops)}"
    )
    for kind, counter in other.items():
        print(f"missed {kind}: {dict(counter)}")
        for rid in misses[kind][: args.show]:
            print(f"   {rid}: {records[rid]['response'][-160:]!r}")
    for rid in [i for i in untouched if fates[i] is not None][: args.show * 3]:
        print(f"false drop {rid} ({fates[rid]}): {records[rid]['response'][-160:]!r}")
    if seconds:
        cores = harness.RAY_CPUS
        print(f"stage: {n} records in {seconds:.1f} s = {n / seconds / cores:.0f} records/s/core "
              f"({cores} cores, Ray startup excluded)")  # fmt: skip
    code_rate = code_instructions.report(code_recs, code_cuts, code_fates, args.show)
    worst = min(recalls.values())
    ok = bool(worst >= RECALL_GOAL and rate <= DROP_GOAL and code_rate <= DROP_GOAL)
    print(f"RESULT synthetic_filter_eval in-sample: min_recall={worst:.3f} (goal >= {RECALL_GOAL}) "
          f"untouched_drop_rate={rate:.4f} (goal <= {DROP_GOAL}) code_untouched_drop_rate="
          f"{code_rate:.4f} (goal <= {DROP_GOAL}) goals_met={ok}")  # fmt: skip
    if held and not report_heldout(*held, held_fates, args.show):
        print(
            "synthetic_filter_eval: WARNING held-out figures very low: the filters do much "
            "worse on material they were not written against (not an exit failure)",
            file=sys.stderr,
        )
    if not ok:
        print("synthetic_filter_eval: in-sample quality goals MISSED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
