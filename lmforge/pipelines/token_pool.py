"""Tokenizing and packing on a pool of Ray actors, one per CPU, one core each.

The tokenize stage's heavy work is a pure function of each block of documents: encode it
(`mixture.TokenizeDocs`), and later pack it once the mixture plan is known. Ray Data's
actor-pool map did this at 0.3x of bare `tokenizers` on 2 cores: its streaming executor
runs on the driver and takes CPU from the actors, each task is followed by a gap while
the executor hands out the next one, and the pool starts only when the pass does. Here
the driver only waits (`ray.wait`), each actor always has a second block queued, and
the stage starts the actors while it trains the tokenizer (`benchmarks/tokenize_throughput.py`
prints where the time goes). Reading and writing stay on Ray Data: blocks come from a
materialized Dataset and go back as one (`ray.data.from_arrow_refs`).

Blocks are dispatched in order to whichever actor is free, and their results are kept in
block order (packed rows are then put in an order computed from their counts), so the
packed rows do not depend on timing. Each block's tail (less than one row) is packed
with the other tails, so a split loses less than one row in all. The work travels with each call
(the tokenizer config is one object in the store, cached per actor), so a restarted
actor (`max_restarts`) retries a call (`max_task_retries`) with nothing to set up again.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import pyarrow as pa

from lmforge.pipelines import mixture

IN_FLIGHT = 2  # calls queued per actor: the next block is there when one finishes
TAILS_PER_CALL = 256  # block tails (each under one row) packed together by one call
SMALL_COLUMNS = ["id", mixture.SOURCE, "n_tokens", "val", "key"]


class TokenWorker:
    """One process, one core: tokenizes and packs blocks of documents."""

    def __init__(self) -> None:
        # before the first encode: the Rust thread pool is built once per process
        os.environ["RAYON_NUM_THREADS"] = "1"
        self._key: Any = None
        self._docs: mixture.TokenizeDocs | None = None

    def ready(self) -> bool:
        import tokenizers  # noqa: F401  (imported while the driver trains the tokenizer)

        return True

    def tokenize(self, config: dict[str, Any], block: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The block's few small columns, and its `TokenizeDocs` rows."""
        if self._docs is None or self._key != config["key"]:
            kwargs = {k: v for k, v in config.items() if k != "key"}
            self._docs, self._key = mixture.TokenizeDocs(**kwargs), config["key"]
        out = self._docs(block)
        small = SMALL_COLUMNS + (["n_loss"] if "n_loss" in out.column_names else [])
        return out.select(small), out

    def pack(
        self, block: pa.Table, validation: bool, plan: mixture.Plan | None, seq_len: int
    ) -> tuple[mixture.Counts, pa.Table, pa.Table]:
        """One split of a token block packed (`mixture.pack_part`): the tokens and loss
        targets of each source in its rows, the rows, and its tail."""
        return mixture.pack_part(mixture.split_part(block, validation, plan), seq_len)

    def pack_tails(
        self, seq_len: int, *tails: pa.Table
    ) -> tuple[mixture.Counts, pa.Table, pa.Table]:
        """Tails of packed blocks, in order, packed as one stream (`mixture.pack_part`)."""
        return mixture.pack_part(pa.concat_tables(tails), seq_len)


class TokenPool:
    """`size` TokenWorker actors (default: one per CPU of the cluster), started at once
    and given work as each is up (one that waits for a CPU held elsewhere holds no
    block meanwhile);
    `close` ends them. The actors hold every CPU: start the pool once the stage's Ray
    Data passes are done, and run none (any task) until it is closed."""

    def __init__(self, size: int | None = None) -> None:
        import ray

        cpus = size or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor: Any = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(TokenWorker)
        self.actors: list[Any] = [actor.remote() for _ in range(cpus)]
        self._pending = {a.ready.remote(): a for a in self.actors}  # not known to be up
        self._up: list[Any] = []

    def wait_ready(self) -> None:
        """Block until every actor is up (the benchmark starts its clock after this)."""
        import ray

        ray.get(list(self._pending))
        self._up += self._pending.values()
        self._pending = {}

    def tokenize(
        self,
        docs: Any,
        tok: Any,
        val_fraction: float,
        seed: int,
        *,
        loss_on: str = "all",
    ) -> tuple[list[Any], pa.Table]:
        """Every block of `docs` (a materialized Ray Dataset) tokenized: the refs of the
        token blocks, in block order, and the small table of every document (`id`,
        source, `n_tokens`, `val`, `key`, and `n_loss` under loss_on: assistant) on the
        driver, for the plan and the figures."""
        import ray

        from lmforge.pipelines.packing import chat_token_ids

        config = ray.put(
            {
                "key": os.urandom(8).hex(),
                "tokenizer_json": tok.backend_tokenizer.to_str(),
                "eos_id": tok.eos_token_id,
                "val_fraction": val_fraction,
                "seed": seed,
                "chat_ids": chat_token_ids(tok) if loss_on == "assistant" else None,
            }
        )
        calls = [("tokenize", (config, ref)) for ref in docs.to_arrow_refs()]
        results = self._map(calls, num_returns=2)
        tokens = [r[1] for r in results]
        small = [t for t in ray.get([r[0] for r in results]) if t.num_rows]
        columns = SMALL_COLUMNS + (["n_loss"] if loss_on == "assistant" else [])
        table = pa.concat_tables(small) if small else pa.table({c: [] for c in columns})
        return tokens, table

    def pack(
        self, tokens: list[Any], *, validation: bool, plan: mixture.Plan | None, seq_len: int
    ) -> tuple[list[Any], mixture.Counts]:
        """The refs of the packed rows of one split (each document as many times as
        `plan` says; None: once), and per source the tokens and loss targets they hold.
        Each token block is packed by one call; the tails the blocks leave (less than a
        row each) are packed together, TAILS_PER_CALL per call and again until one is
        left, whose tokens (less than one row) are all the split loses. The blocks' rows
        come in `mixture.interleaved` order, then the tails' rows. Make the refs a Dataset
        (`ray.data.from_arrow_refs`) after `close`: that runs tasks."""
        import ray

        calls = [("pack", (ref, validation, plan, seq_len)) for ref in tokens]
        results = self._map(calls, num_returns=3)
        per_block = ray.get([r[0] for r in results])
        rows = [results[b][1] for b in mixture.interleaved(per_block)]
        counts = list(per_block)
        tails = [r[2] for r in results]
        while len(tails) > 1:
            calls = [
                ("pack_tails", (seq_len, *tails[i : i + TAILS_PER_CALL]))
                for i in range(0, len(tails), TAILS_PER_CALL)
            ]
            results = self._map(calls, num_returns=3)
            counts += ray.get([r[0] for r in results])
            rows += [r[1] for r in results]
            tails = [r[2] for r in results]
        totals: mixture.Counts = {}
        for block in counts:
            for s, (kept, targets) in block.items():
                t = totals.setdefault(s, [0, 0])
                t[0], t[1] = t[0] + kept, t[1] + targets
        return rows, totals

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def __enter__(self) -> TokenPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _map(self, calls: list[tuple[str, tuple[Any, ...]]], *, num_returns: int) -> list[Any]:
        """Run `calls` (method name, args) over the actors, each actor holding at most
        IN_FLIGHT of them; returns each call's refs, in call order. A call's first
        return is small: it alone comes to the driver (and raises a call's error)."""
        import ray

        todo = deque(enumerate(calls))
        results: list[Any] = [None] * len(calls)
        running: dict[Any, Any] = {}  # the first ref of a running call -> its actor

        def feed(actor: Any) -> None:
            # a second call queued hides the round trip between calls; once calls are
            # fewer than actors, one each, so no actor ends the pass with two to go
            # while another idles (a block's time lost on every core but one)
            while todo and sum(a is actor for a in running.values()) < (
                IN_FLIGHT if len(todo) > len(self._up) else 1
            ):
                i, (name, args) = todo.popleft()
                refs = getattr(actor, name).options(num_returns=num_returns).remote(*args)
                results[i] = refs
                running[refs[0]] = actor

        for actor in self._up:
            feed(actor)
        while running or (todo and self._pending):
            done, _ = ray.wait([*running, *self._pending], num_returns=1, fetch_local=False)
            ray.get(done[0])  # a failed call, or an actor that failed to start, raises
            if done[0] in self._pending:
                actor = self._pending.pop(done[0])
                self._up.append(actor)
            else:
                actor = running.pop(done[0])
            feed(actor)
        return results
