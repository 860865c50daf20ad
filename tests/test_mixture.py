"""The data mixture: the real tokenize stage on a local Ray over two real sources of very
different sizes (Debian manuals, about 92% of the tokens, and GPTeacher conversations),
mixed half and half; shares measured in the shards, determinism, no validation leak, and
the unmixed default."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmforge.jobs import tokenize
from lmforge.jobs.recipe import Recipe, load_recipe
from lmforge.pipelines import mixture
from lmforge.pipelines.packing import is_validation
from lmforge.pipelines.tokenizer import tokenizer_rates
from lmforge.platform import chat
from lmforge.platform.config import ConfigError

from conftest import shared

VAL = 0.1


def stage_output(folder: Path, docs: list[dict[str, str]]) -> str:
    """A curate-like stage output: kept/ Parquet rows and a manifest with a digest."""
    (folder / "kept").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(docs), folder / "kept" / "part-0.parquet")
    (folder / "manifest.json").write_text(json.dumps({"digest": f"d-{folder.name}"}))
    return str(folder)


def conversations(records: list[dict[str, str]]) -> list[dict[str, str]]:
    """GPTeacher records as chat documents: the instruction, then the response."""
    return [
        {
            "id": f"gpteacher-{i}",
            "text": chat.render(
                [
                    {"role": "user", "content": r["instruction"]},
                    {"role": "assistant", "content": r["response"]},
                ]
            ),
        }
        for i, r in enumerate(records)
    ]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    web = []
    with shared("corpus/debian_docs_en_ja_de.jsonl").open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            web.append({"id": d["id"], "text": d["text"][:3000]})
            if len(web) == 200:
                break
    records = json.loads(shared("synthetic/gpteacher_roleplay_gpt4.json").read_text())[:45]
    conv = conversations(records)
    return {"web": web, "synthetic": conv}


@pytest.fixture(scope="module")
def inputs(
    tmp_path_factory: pytest.TempPathFactory, sources: dict[str, list[dict[str, str]]]
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mix-inputs")
    return {name: stage_output(root / name, docs) for name, docs in sources.items()}


def recipe(tmp: Path, inputs: dict[str, str], out: str, *sets: str) -> Recipe:
    return load_recipe(
        None,
        overrides=[
            f"workdir={tmp / 'work'}",
            f"mlflow.tracking_uri=sqlite:///{tmp}/m.db",
            f"tokenize.input={json.dumps([inputs['web'], inputs['synthetic']])}",
            f"tokenize.output={tmp / out}",
            "tokenize.vocab_size=400",
            "tokenize.seq_len=64",
            f"tokenize.val_fraction={VAL}",
            *sets,
        ],
    )


def run(r: Recipe) -> dict:
    tokenize.run(r)
    return json.loads((Path(r.tokenize.output or "") / "manifest.json").read_text())


def stream(folder: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """The packed rows of a split in file order, flattened, and each row's doc starts."""
    ids, starts = [], []
    for f in sorted(folder.rglob("*.parquet")):
        t = pq.read_table(f)
        ids += [np.asarray(r, dtype=np.int32) for r in t["input_ids"].to_pylist()]
        starts += [np.asarray(s) for s in t["doc_starts"].to_pylist()]
    return (np.concatenate(ids) if ids else np.zeros(0, np.int32)), starts


def conversation_share(folder: Path, chat_ids: set[int], eos: int, seq_len: int) -> float:
    """Share of a split's packed tokens that belong to conversations: a document is one
    when it opens with a role token (the Debian manuals never hold one)."""
    flat, starts = stream(folder)
    in_chat = np.zeros(len(flat), dtype=bool)
    current = False
    pos = 0
    for r, row_starts in enumerate(starts):
        bounds = [0, *row_starts.tolist(), seq_len]
        for a, b in itertools.pairwise(bounds):
            if a in row_starts.tolist():
                current = int(flat[r * seq_len + a]) in chat_ids
            in_chat[pos + a : pos + b] = current
        pos += seq_len
    return float(in_chat.mean())


@pytest.mark.usefixtures("ray_local")
def test_mixture_shares_exact_reported_deterministic_and_no_val_leak(
    tmp_path: Path, inputs: dict[str, str], sources: dict[str, list[dict[str, str]]]
) -> None:
    from transformers import PreTrainedTokenizerFast

    mix = f"tokenize.mixture={json.dumps({inputs['web']: 0.5, inputs['synthetic']: 0.5})}"
    m = run(recipe(tmp_path, inputs, "tokens", mix))
    train = m["sources"]["train"]
    assert m["mixture"]["weights"] == {inputs["web"]: 0.5, inputs["synthetic"]: 0.5}
    web, syn = train[inputs["web"]], train[inputs["synthetic"]]
    assert syn["repeats"] > 5 and web["repeats"] < 1  # natural mix was about 0.95 / 0.05
    for fig in (web, syn):
        assert abs(fig["share"] - 0.5) < 0.005
    assert syn["documents_written"] > syn["documents"]
    assert m["sources"]["val"][inputs["synthetic"]]["documents"] > 0

    # the shares in the shards themselves, by the conversations' opening role tokens
    out = Path(m["tokenizer"]).parent
    tok = PreTrainedTokenizerFast.from_pretrained(m["tokenizer"])
    role_ids = {tok.convert_tokens_to_ids(t) for t in chat.ROLE_TOKENS.values()}
    share = conversation_share(out / "train", role_ids, m["eos_token_id"], m["seq_len"])
    assert abs(share - 0.5) < 0.005

    # no validation document in training: each val document's tokens are not in train,
    # while train documents are found there (the check can see)
    flat, _ = stream(out / "train")
    haystack = flat.tobytes()

    def found(doc: dict[str, str]) -> bool:
        ids = np.asarray(tok(doc["text"], add_special_tokens=False)["input_ids"][:48], np.int32)
        return haystack.find(ids.tobytes()) >= 0

    convs = sources["synthetic"]
    val_docs = [d for d in convs if is_validation(d["id"], VAL)]
    train_docs = [d for d in convs if not is_validation(d["id"], VAL)]
    assert val_docs and not any(found(d) for d in val_docs)
    assert sum(found(d) for d in train_docs) >= 0.9 * len(train_docs)

    # the same seed makes the same shards; the plot and metrics are in the run
    again = run(recipe(tmp_path, inputs, "tokens-again", mix))
    assert again["digest"] == m["digest"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    data = client.get_run(m["mlflow_run_id"]).data.metrics
    assert abs(data["mix.synthetic.share"] - 0.5) < 0.005 and "mix_val.web.tokens" in data
    arts = [a.path for a in client.list_artifacts(m["mlflow_run_id"])]
    assert "mixture.png" in arts


@pytest.mark.usefixtures("ray_local")
def test_shares_hold_for_short_documents_sampled_down_at_a_long_context(
    tmp_path: Path,
) -> None:
    """Three real sources read as several blocks: 2,550 fortunes and quotations (about
    60 tokens each) sampled down to 1% of training, the paragraphs of the Debian manuals
    and every GPTeacher conversation. At seq_len 4096 a block of sampled-down quotations
    holds a few rows' worth of tokens: cutting each block's tail would lose about half a
    row per block; carried tails lose less than one row per split."""
    web, quotes = [], []
    with shared("corpus/debian_docs_en_ja_de.jsonl").open(encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["source"].startswith("fortunes"):
                quotes.append({"id": d["id"], "text": d["text"]})
                continue
            paragraphs = [p for p in d["text"].split("\n\n") if len(p.strip()) > 40]
            web += [{"id": f"{d['id']}-{k}", "text": p} for k, p in enumerate(paragraphs)]
    records = json.loads(shared("synthetic/gpteacher_roleplay_gpt4.json").read_text())
    conv = conversations(records)
    root = tmp_path / "in"
    ins = {n: stage_output(root / n, d) for n, d in [("q", quotes), ("w", web), ("c", conv)]}
    weights = {ins["q"]: 0.01, ins["w"]: 0.5, ins["c"]: 0.49}
    seq_len = 4096
    r = load_recipe(
        None,
        overrides=[
            f"workdir={tmp_path / 'work'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db",
            f"tokenize.input={json.dumps(list(ins.values()))}",
            f"tokenize.output={tmp_path / 'tokens'}",
            "tokenize.vocab_size=400",
            f"tokenize.seq_len={seq_len}",
            "tokenize.val_fraction=0.05",
            f"tokenize.mixture={json.dumps(weights)}",
        ],
    )
    m = run(r)
    assert m["documents"] == len(quotes) + len(web) + len(conv) > 4 * 2048  # 5+ blocks
    for split in ("train", "val"):
        figs = m["sources"][split]
        lost = [f["planned_tokens"] - f["tokens"] for f in figs.values()]
        assert all(n >= 0 for n in lost) and sum(lost) < seq_len  # under one row in all
        assert sum(f["tokens"] for f in figs.values()) == m["splits"][split]["tokens"]
    train = m["sources"]["train"]
    total = sum(f["tokens"] for f in train.values())
    assert train[ins["q"]]["repeats"] < 0.2 and train[ins["c"]]["repeats"] > 1
    longest = max(len(d["text"]) for d in web + conv)  # characters: more than its tokens
    for uri, w in weights.items():
        assert abs(train[uri]["tokens"] - w * total) <= seq_len + longest / 2, uri
    assert abs(train[ins["q"]]["share"] - 0.01) < 0.001
    r.tokenize.output = str(tmp_path / "tokens-again")
    again = run(r)
    assert again["digest"] == m["digest"]  # several blocks, tails carried: the same shards


@pytest.mark.usefixtures("ray_local")
def test_without_a_mixture_the_natural_mix_is_written_and_reported(
    tmp_path: Path, inputs: dict[str, str], sources: dict[str, list[dict[str, str]]]
) -> None:
    m = run(recipe(tmp_path, inputs, "tokens"))
    assert m["mixture"] is None
    train = m["sources"]["train"]
    assert {f["repeats"] for f in train.values()} == {1.0}
    assert all(f["documents_written"] == f["documents"] for f in train.values())
    assert train[inputs["web"]]["share"] > 0.9  # the natural sizes
    every = [d["id"] for docs in sources.values() for d in docs]
    n_val = sum(is_validation(i, VAL) for i in every)
    assert m["splits"]["val"]["documents"] == n_val
    assert m["splits"]["train"]["documents"] == len(every) - n_val
    # per source, the tokens in the shards add up to the split's; before packing, less
    # than a row more (block tails are carried, only the last is left)
    packed = sum(f["tokens"] for f in train.values())
    planned = sum(f["planned_tokens"] for f in train.values())
    assert packed == m["splits"]["train"]["tokens"]
    assert planned - m["seq_len"] < packed <= planned


def test_the_plan_meets_token_targets_and_the_tokenizer_sample_follows_weights() -> None:
    """Pure logic: a big and a small source mixed 0.3 / 0.7 (natural about 0.99 / 0.01)."""
    rng = np.random.default_rng(0)
    n_big, n_small = 2000, 30
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(n_big + n_small)],
            mixture.SOURCE: ["big"] * n_big + ["small"] * n_small,
            "n_tokens": rng.integers(50, 500, n_big + n_small),
            "key": pa.array(rng.integers(0, 2**63, n_big + n_small), pa.uint64()),
        }
    )
    weights = {"big": 0.3, "small": 0.7}
    plan, epochs = mixture.plan(table, weights, None)
    assert plan.base["big"] == 0 and plan.base["small"] == int(epochs["small"]) > 10
    shares = mixture.figures(mixture.written(table, plan))
    assert all(abs(shares[s]["share"] - w) < 0.002 for s, w in weights.items())
    rates = tokenizer_rates({"big": (n_big, 10**6), "small": (n_small, 3000)}, weights, 100)
    assert rates["small"] == 1.0 and 0 < rates["big"] < 0.05  # the small source whole


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (['tokenize.mixture={"WEB": 0.0, "SYN": 1}'], "tokenize.mixture.WEB: weight must be > 0"),
        (['tokenize.mixture={"WEB": 1}'], "tokenize.mixture: no weight for source SYN"),
        (['tokenize.mixture={"other": 1, "WEB": 1, "SYN": 1}'], "tokenize.mixture.other: neither"),
        (['tokenize.groups={"g": ["nowhere"]}'], "tokenize.groups.g: nowhere is not in"),
        (
            ['tokenize.groups={"all": ["WEB", "SYN"]}', 'tokenize.mixture={"all": 1}'],
            None,
        ),
    ],
)
def test_mixture_config_is_checked_before_ray(
    tmp_path: Path, inputs: dict[str, str], sets: list[str], message: str | None
) -> None:
    named = [s.replace("WEB", inputs["web"]).replace("SYN", inputs["synthetic"]) for s in sets]
    r = recipe(tmp_path, inputs, "tokens", *named)
    if message is None:
        tokenize.validate(r)
        return
    expected = message.replace("WEB", inputs["web"]).replace("SYN", inputs["synthetic"])
    with pytest.raises(ConfigError, match="^" + expected.replace(".", r"\.").replace("(", r"\(")):
        tokenize.validate(r)


@pytest.mark.usefixtures("ray_local")
def test_plain_parquet_folders_without_ids_or_with_numbers_as_ids_are_read(
    tmp_path: Path,
) -> None:
    """Inputs other than stage outputs: a folder with only `text` gets each text's hash
    as its id (a repeated text keeps one id, so one split), numeric ids become text, a
    null text is empty, and a folder without `text` is an error naming it."""
    (tmp_path / "plain").mkdir()
    pq.write_table(
        pa.table({"text": ["a b c", "d e", "a b c", None]}), tmp_path / "plain" / "p.parquet"
    )
    (tmp_path / "numbered").mkdir()
    pq.write_table(
        pa.table({"id": [7, 8], "text": ["x", "y"], "lang": ["en", "en"]}),
        tmp_path / "numbered" / "n.parquet",
    )
    (tmp_path / "other").mkdir()
    pq.write_table(pa.table({"content": ["z"]}), tmp_path / "other" / "o.parquet")
    docs = mixture.labelled_documents(
        {str(tmp_path / "plain"): "plain", str(tmp_path / "numbered"): "numbered"}
    )
    rows = sorted(docs.take_all(), key=lambda r: (r[mixture.SOURCE], r["text"]))
    assert [(r[mixture.SOURCE], r["text"]) for r in rows] == [
        ("numbered", "x"),
        ("numbered", "y"),
        ("plain", ""),
        ("plain", "a b c"),
        ("plain", "a b c"),
        ("plain", "d e"),
    ]
    ids = [r["id"] for r in rows]
    assert ids[:2] == ["7", "8"] and all(isinstance(i, str) and i for i in ids)
    assert ids[3] == ids[4] != ids[5] and ids[3].startswith("sha-")
    with pytest.raises(ValueError, match="other has no `text` column"):
        mixture.labelled_documents({str(tmp_path / "other"): "other"})
    r = load_recipe(
        None,
        overrides=[
            f"tokenize.input={json.dumps([str(tmp_path / 'plain'), str(tmp_path / 'other')])}",
            f"tokenize.output={tmp_path / 'tokens'}",
        ],
    )
    with pytest.raises(ConfigError, match=r"^tokenize\.input: .*other has no `text` column"):
        tokenize.validate(r)  # before Ray: the stage's own check
    tokenize.validate(
        r.model_copy(
            update={
                "tokenize": r.tokenize.model_copy(
                    update={"input": [str(tmp_path / "plain"), str(tmp_path / "numbered")]}
                )
            }
        )
    )
