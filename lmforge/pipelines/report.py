"""The curation report: statistics gathered with Ray Data, plotted into one HTML file.

`collect_stats` makes one pass over the stage's rows; each block returns a small table
of (key, count) pairs, so the driver only ever sums a few hundred numbers whatever the
corpus size. `render_html` draws the funnel of kept/dropped by reason, document lengths
before and after, the language mix, PII counts and near-duplicate cluster sizes, and
embeds the plots (PNG, base64) so the file stands alone as an MLflow artifact.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa

from lmforge.pipelines.outputs import parquet_dataset, reason_key
from lmforge.pipelines.records import DROPPED, KEPT, QUARANTINED
from lmforge.platform import storage

_TALLY = pa.schema([("key", pa.string()), ("n", pa.int64())])


def _len_bin(n: int) -> str:
    """Power-of-two length bins: "256" holds lengths in [256, 512)."""
    return str(1 << max(0, int(math.log2(max(n, 1)))))


def tally(batch: pa.Table) -> pa.Table:
    """Per-block counts: lengths in/out, languages read/kept, PII types."""
    c: Counter[str] = Counter()
    cols = batch.select(["fate", "text", "lang", "meta", "chars_in"]).to_pylist()
    for r in cols:
        if r["fate"] == QUARANTINED:
            continue
        lang = r["lang"] or "und"
        c[f"len_in/{_len_bin(r['chars_in'] or 0)}"] += 1
        c[f"lang_read/{lang}"] += 1
        meta = json.loads(r["meta"]) if r["meta"] else {}
        if r["fate"] == KEPT:
            c[f"len_kept/{_len_bin(len(r['text'] or ''))}"] += 1
            c[f"lang_kept/{lang}"] += 1
            for kind, n in (meta.get("pii") or {}).items():
                c[f"pii/{kind}"] += int(n)
    return pa.table({"key": list(c), "n": list(c.values())}, schema=_TALLY)


def collect_stats(ds: Any) -> dict[str, dict[str, int]]:
    """{"len_in": {"256": 12, ...}, "lang_read": {...}, "lang_kept": {...}, "pii": {...}}."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for row in ds.map_batches(tally, batch_format="pyarrow").iter_rows():
        group, _, key = row["key"].partition("/")
        out[group][key] = out[group].get(key, 0) + int(row["n"])
    return dict(out)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _funnel(manifest: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    counts = manifest["counts"]
    reasons = sorted(manifest.get("dropped_by_reason", {}).items(), key=lambda kv: -kv[1])
    labels = ["read", *[k for k, _ in reasons], "quarantined", "kept"]
    values = [counts["read"], *[v for _, v in reasons], counts[QUARANTINED], counts[KEPT]]
    colors = ["#4c72b0"] + ["#dd8452"] * len(reasons) + ["#c44e52", "#55a868"]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1))
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    ax.set_xlabel("documents")
    ax.set_title("Every record's fate: kept, dropped (by step/reason) or quarantined")
    return _png(fig)


def _bars(series: dict[str, dict[str, int]], title: str, xlabel: str, *, numeric: bool) -> str:
    import matplotlib.pyplot as plt

    keys = sorted({k for s in series.values() for k in s}, key=(int if numeric else str))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(1, len(series))
    for i, (name, s) in enumerate(series.items()):
        xs = [j + i * width for j in range(len(keys))]
        ax.bar(xs, [s.get(k, 0) for k in keys], width=width, label=name)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(keys))])
    ax.set_xticklabels(keys, rotation=45 if len(keys) > 8 else 0, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("documents")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    return _png(fig)


def render_html(
    title: str,
    manifest: dict[str, Any],
    stats: dict[str, dict[str, int]],
    *,
    examples: dict[str, list[dict[str, str]]] | None = None,
) -> str:
    """A self-contained HTML report of one data stage; `examples` ("step/reason" -> rows
    with id, evidence, text) adds what was dropped for each reason, to read and judge."""
    import matplotlib

    matplotlib.use("Agg")
    figs = [("Funnel", _funnel(manifest))]
    if stats.get("len_in"):
        series = {"read": stats["len_in"], "kept": stats.get("len_kept", {})}
        figs.append(
            ("Lengths", _bars(series, "Document length", "characters (≥ bin)", numeric=True))
        )
    if stats.get("lang_read"):
        series = {"read": stats["lang_read"], "kept": stats.get("lang_kept", {})}
        figs.append(("Languages", _bars(series, "Language mix", "language", numeric=False)))
    if stats.get("pii"):
        figs.append(("PII", _bars({"found": stats["pii"]}, "PII replaced", "type", numeric=False)))
    if stats.get("cluster"):
        series = {"clusters": stats["cluster"]}
        figs.append(("Dedup", _bars(series, "Near-duplicate cluster sizes", "size", numeric=True)))
    rates = _keep_rates(stats)
    counts = manifest["counts"]
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:,}</td></tr>"
        for k, v in manifest.get("dropped_by_reason", {}).items()
    )
    parts = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td{padding:0 1em}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>read {counts['read']:,} = kept {counts[KEPT]:,} + dropped {counts[DROPPED]:,}"
        f" + quarantined {counts[QUARANTINED]:,}</p>",
        f"<h2>Dropped by step/reason</h2><table>{rows}</table>",
    ]
    if rates:
        cells = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.1%}</td></tr>" for k, v in rates.items()
        )
        parts.append(f"<h2>Keep rate by language</h2><table>{cells}</table>")
    parts += [f"<h2>{name}</h2><img src='data:image/png;base64,{b64}'>" for name, b64 in figs]
    if examples:
        parts.append(_examples(examples, manifest.get("dropped_by_reason", {})))
    parts.append("</body></html>")
    return "\n".join(parts)


def _examples(examples: dict[str, list[dict[str, str]]], counts: dict[str, int]) -> str:
    out = ["<h2>Dropped: examples by reason</h2>"]
    for reason in sorted(examples, key=lambda k: -counts.get(k, 0)):
        out.append(
            f"<h3 id='{html.escape(reason)}'>{html.escape(reason)}"
            f" ({counts.get(reason, 0):,})</h3><table>"
        )
        out.append("<tr><th>id</th><th>why</th><th>conversation (start)</th></tr>")
        for ex in examples[reason]:
            cells = (ex.get("id", ""), ex.get("evidence", ""), ex.get("text", ""))
            out.append(
                "<tr>"
                + "".join(
                    f"<td style='vertical-align:top'><pre style='white-space:pre-wrap;margin:0'>"
                    f"{html.escape(str(c))}</pre></td>"
                    for c in cells
                )
                + "</tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def _keep_rates(stats: dict[str, dict[str, int]]) -> dict[str, float]:
    read, kept = stats.get("lang_read", {}), stats.get("lang_kept", {})
    return {lang: kept.get(lang, 0) / n for lang, n in sorted(read.items()) if n}


def curate_report(
    rows: Any, manifest: dict[str, Any], *, with_clusters: bool
) -> tuple[str, dict[str, Any]]:
    """(report.html, its statistics) of a curation run; near-duplicate cluster sizes
    when MinHash ran."""
    stats: dict[str, Any] = collect_stats(rows)
    if with_clusters:
        from lmforge.pipelines.minhash import cluster_sizes

        stats["cluster"] = {str(k): v for k, v in cluster_sizes(rows).items()}
    return render_html("lmforge curate", manifest, stats), stats


def synthetic_report(
    rows: Any, manifest: dict[str, Any], output: str
) -> tuple[str, dict[str, list[dict[str, str]]]]:
    """(report.html, drop examples by reason) of a filter-synthetic run."""
    stats = collect_stats(rows)
    examples = examples_by_reason(output, list(manifest["dropped_by_reason"]))
    return render_html("lmforge filter-synthetic", manifest, stats, examples=examples), examples


def examples_by_reason(
    output: str, reasons: list[str], per_reason: int = 5
) -> dict[str, list[dict[str, str]]]:
    """Up to `per_reason` dropped rows of each "step/reason": id, evidence and the start of
    the conversation. Streams the written Parquet and stops once every reason has its share."""
    found: dict[str, list[dict[str, str]]] = defaultdict(list)
    dataset = parquet_dataset(storage.join(output, "dropped"))
    if dataset is None:
        return {}
    wanted = set(reasons)
    for batch in dataset.to_batches(columns=["id", "step", "reason", "meta", "text"]):
        for r in batch.to_pylist():
            key = reason_key(r["step"], r["reason"])
            if key in wanted and len(found[key]) < per_reason:
                meta = json.loads(r["meta"]) if r["meta"] else {}
                evidence = meta.get("evidence") or _why(meta)
                found[key].append(
                    {"id": r["id"], "evidence": evidence, "text": (r["text"] or "")[:400]}
                )
        if all(len(found[k]) >= per_reason for k in wanted):
            break
    return dict(found)


def _why(meta: dict[str, Any]) -> str:
    if "duplicate_of" in meta:
        return f"duplicate of {meta['duplicate_of']}"
    if "decontam" in meta:
        d = meta["decontam"]
        return f"{d['eval_set']} item {d['item']}: {d.get('ngram') or d.get('match')}"
    if "perplexity" in meta:
        return f"perplexity {meta['perplexity']}"
    return ""
