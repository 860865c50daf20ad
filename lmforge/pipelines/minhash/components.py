"""Connected components of the candidate edges, by rounds of groupby over the edge list.

Each component keeps the document with the smallest id; the driver sees only per-round
counts. A label row (id, ROOT, SIZE) names a member's component root and its size.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmforge.pipelines.minhash.config import MinHashConfig
from lmforge.pipelines.minhash.groups import grouped

log = logging.getLogger(__name__)

ROOT, SIZE = "_root", "_size"  # a label row: the component's kept id and its size


def unique_edges(src: Any, dst: Any, **extra: Any) -> pa.Table:
    t = pa.table({"src": src, "dst": dst, **extra})
    t = t.filter(pc.not_equal(t["src"], t["dst"]))  # a repeated id is not an edge
    return t.group_by(["src", "dst", *extra]).aggregate([]) if t.num_rows else t


def cat(*parts: Any) -> pa.ChunkedArray:
    """Arrays or chunked arrays of one type, end to end (no copy)."""
    chunks = [c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
    return pa.chunked_array(chunks, type=parts[0].type)


def both_ways(edges: pa.Table) -> pa.Table:
    """Edges -> (node, nbr) from both ends: grouped by node, a node meets all neighbours."""
    return pa.table(
        {"node": cat(edges["dst"], edges["src"]), "nbr": cat(edges["src"], edges["dst"])}
    )


def from_larger(edges: pa.Table) -> pa.Table:
    """Edges -> (node, nbr) from the larger end: a node meets its smaller neighbours."""
    return pa.table({"node": edges["dst"], "nbr": edges["src"]})


def neighbour_min(t: pa.Table) -> tuple[Any, pa.Table]:
    """(node, nbr) rows -> each row's smallest neighbour of its node, and (node, nbr_min)."""
    mins = t.group_by("node").aggregate([("nbr", "min")])
    return mins["nbr_min"].take(pc.index_in(t["node"], value_set=mins["node"])), mins


def large_star(group: pa.Table) -> pa.Table:
    """Each node u links its larger neighbours to m = min(u, neighbours of u).
    `changed` marks links that moved (m != u)."""
    t = group.group_by(["node", "nbr"]).aggregate([])
    m = pc.min_element_wise(t["node"], neighbour_min(t)[0])
    larger = pc.greater(t["nbr"], t["node"])
    src, node = pc.filter(m, larger), pc.filter(t["node"], larger)
    return unique_edges(src, pc.filter(t["nbr"], larger), changed=pc.not_equal(src, node))


def small_star(group: pa.Table) -> pa.Table:
    """Each node u links itself and its smaller neighbours to m = min(neighbours of u).
    `changed` marks the links between two former neighbours of u."""
    t = group.group_by(["node", "nbr"]).aggregate([])  # every nbr < node
    m, mins = neighbour_min(t)
    moved = pc.not_equal(t["nbr"], m)
    n_moved = pc.sum(moved).as_py() or 0
    return unique_edges(
        cat(pc.filter(m, moved), mins["nbr_min"]),  # m - each other smaller neighbour of u
        cat(pc.filter(t["nbr"], moved), mins["node"]),  # m - u
        changed=np.arange(n_moved + mins.num_rows) < n_moved,
    )


def component_labels(group: pa.Table) -> pa.Table:
    """Star edges (root, member) -> (id=member, root, size of the component)."""
    t = group.group_by(["src", "dst"]).aggregate([])
    sizes = t.group_by("src").aggregate([("dst", "count")])
    size = sizes["dst_count"].take(pc.index_in(t["src"], value_set=sizes["src"]))
    return pa.table({"id": t["dst"], ROOT: t["src"], SIZE: pc.add(size, 1)})


def connected_components(edges: Any, cfg: MinHashConfig) -> Any:
    """Edges (src < dst) -> star edges (root, member), root the component's smallest id.

    Alternates large-star and small-star (Kiveris et al., "Connected Components in
    MapReduce and Beyond", 2014), each one groupby of the edge list by node. Both keep
    connectivity; when neither moves a link, every component is a star around its
    minimum. The driver reads one count per step.
    """
    for round_ in range(1, cfg.max_cc_iterations + 1):
        edges = grouped(edges, "node", large_star, cfg, prepare=both_ways, scale=2).materialize()
        moved = edges.sum("changed") or 0
        edges = grouped(edges, "node", small_star, cfg, prepare=from_larger).materialize()
        moved += edges.sum("changed") or 0
        log.info("minhash components round %d: %d links moved", round_, moved)
        if moved == 0:
            return edges
    log.warning(
        "minhash components did not converge in %d rounds: some near duplicates stay kept",
        cfg.max_cc_iterations,
    )
    return edges
