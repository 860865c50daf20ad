"""Token batches whose position is a function of the optimizer step: exact, resumable.

Ray Data's `streaming_split` hands blocks to whichever worker asks first, so which
sequences a rank sees depends on timing, and a restarted worker group starts its
iterator from the first block: a resume would reuse some sequences and skip others.
Here, as in Levanter and torchtitan, every rank reads the token shards itself (local or
`s3://`, through pyarrow) and the order is arithmetic:

- an epoch is a seeded permutation of the split's Parquet row groups, and within each
  row group a seeded permutation of its rows (seed, epoch and group number seed numpy's
  generator, so every rank and every restart computes the same order without talking);
- optimizer step `s` of the run consumes the epoch's sequences `[k*G, (k+1)*G)` with
  `G = world * micro_batch * accum` and `k = s mod steps_per_epoch`; rank `r` takes its
  `micro_batch * accum` consecutive ones of them;
- an epoch's last `N mod G` sequences (fewer than one global batch) are not used in that
  epoch, like `drop_last`; the next epoch's permutation is a different one.

The data position of a rank at a step is therefore `(epoch, first sequence)`, saved with
every checkpoint and checked on resume. Validation reads the first sequences of the val
split in file order, the same ones at every evaluation.

Shards written with `tokenize.loss_on: assistant` carry a `loss_mask` column; a batch
then comes with its labels: the token ids, with -100 (ignored by the loss) where the
mask is False. Without the column the labels are None and every token is a target.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from lmforge.platform import storage

# The shards' columns, as `tokenize` writes them (lmforge.pipelines.packing): train reads the
# files, it does not import the stage that writes them (tests/test_layers.py).
LOSS_MASK = "loss_mask"  # (seq_len,) bools, present only with tokenize.loss_on: assistant


@dataclass(frozen=True)
class SplitIndex:
    """The row groups of one split: (file URI, row group number, rows) in file order."""

    groups: tuple[tuple[str, int, int], ...]

    @property
    def sequences(self) -> int:
        return sum(g[2] for g in self.groups)


def index_split(uri: str) -> SplitIndex:
    """List the Parquet files of a split folder (sorted by name) and their row groups,
    from the files' footers only."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return SplitIndex(())
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.is_file and i.path.endswith(".parquet"))
    groups: list[tuple[str, int, int]] = []
    for f in files:
        with fs.open_input_file(f) as handle:
            meta = pq.ParquetFile(handle).metadata
        groups += [(f, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    return SplitIndex(tuple(g for g in groups if g[2] > 0))


IGNORE_INDEX = -100  # the label the loss skips (PyTorch's and Hugging Face's default)


def labels_of(ids: np.ndarray, mask: np.ndarray | None) -> torch.Tensor | None:
    """int64 labels of (B, T) token ids: the ids where `mask`, IGNORE_INDEX elsewhere."""
    if mask is None:
        return None
    return torch.from_numpy(np.where(mask, ids, IGNORE_INDEX).astype(np.int64))


class _RowGroups:
    """Reads `input_ids` (and `loss_mask`, when the shards have it) of one row group as
    (rows, seq_len) arrays; keeps the last few (consecutive sequences of an epoch mostly
    come from the same group)."""

    def __init__(self, uri: str, seq_len: int, keep: int = 4) -> None:
        self.fs, _ = storage.filesystem(uri)
        self.seq_len = seq_len
        self.keep = keep
        self.cache: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]] = (
            OrderedDict()
        )

    def get(self, path: str, group: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(token ids, loss mask or None) of a row group, each (rows, seq_len)."""
        key = (path, group)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        import pyarrow.parquet as pq

        with self.fs.open_input_file(path) as handle:
            file = pq.ParquetFile(handle)
            columns = ["input_ids"] + ([LOSS_MASK] if LOSS_MASK in file.schema_arrow.names else [])
            table = file.read_row_group(group, columns=columns)

        def rows_of(name: str) -> np.ndarray:
            values = table[name].combine_chunks().flatten()  # int32 ids, as tokenize writes
            return np.asarray(values.to_numpy(zero_copy_only=False)).reshape(-1, self.seq_len)

        rows = (rows_of("input_ids"), rows_of(LOSS_MASK) if LOSS_MASK in columns else None)
        self.cache[key] = rows
        while len(self.cache) > self.keep:
            self.cache.popitem(last=False)
        return rows


class TrainBatches:
    """The micro-batches of each optimizer step for one rank (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        seq_len: int,
        seed: int,
        rank: int,
        world: int,
        micro_batch_size: int,
        grad_accum_steps: int,
    ) -> None:
        self.index = index_split(uri)
        self.seed, self.rank = seed, rank
        self.micro, self.accum = micro_batch_size, grad_accum_steps
        self.global_batch = world * micro_batch_size * grad_accum_steps
        self.steps_per_epoch = self.index.sequences // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the train split holds {self.index.sequences} sequences, fewer than one global "
                f"batch of {self.global_batch} (num_workers x micro_batch_size x "
                "grad_accum_steps); make more data or a smaller batch"
            )
        self.reader = _RowGroups(uri, seq_len)
        self._epoch: int | None = None
        self._order: np.ndarray = np.zeros(0, dtype=np.int64)
        self._starts: list[int] = []
        self._rows: dict[int, np.ndarray] = {}

    def position(self, step: int) -> dict[str, int]:
        """Where this rank reads for optimizer step `step` (0-based): epoch and the index
        in the epoch's order of its first sequence."""
        epoch, k = divmod(step, self.steps_per_epoch)
        first = k * self.global_batch + self.rank * self.micro * self.accum
        return {"epoch": epoch, "first_sequence": first, "sequences": self.micro * self.accum}

    def step_batches(self, step: int) -> list[torch.Tensor]:
        """`grad_accum_steps` (micro_batch_size, seq_len) int64 tensors for step `step`."""
        return self.step(step)[0]

    def step(self, step: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """The micro-batches of step `step` and their labels (None: every token counts)."""
        pos = self.position(step)
        self._set_epoch(pos["epoch"])
        seqs = [self._sequence(pos["first_sequence"] + i) for i in range(pos["sequences"])]
        rows = np.stack([ids for ids, _ in seqs])
        ids = torch.from_numpy(rows.astype(np.int64))  # embedding lookups take int64
        masks = [m for _, m in seqs if m is not None]
        labels = labels_of(rows, np.stack(masks) if masks else None)
        cut = [slice(m * self.micro, (m + 1) * self.micro) for m in range(self.accum)]
        return [ids[c] for c in cut], None if labels is None else [labels[c] for c in cut]

    def _set_epoch(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        rng = np.random.default_rng([self.seed, epoch])
        self._order = rng.permutation(len(self.index.groups))
        sizes = [self.index.groups[g][2] for g in self._order]
        self._starts = list(np.cumsum([0, *sizes[:-1]]))
        self._rows, self._epoch = {}, epoch

    def _sequence(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        slot = bisect.bisect_right(self._starts, i) - 1
        g = int(self._order[slot])
        if g not in self._rows:  # the row order inside group g for this epoch
            n = self.index.groups[g][2]
            rng = np.random.default_rng([self.seed, self._epoch or 0, g])
            self._rows = {g: rng.permutation(n)}  # one group at a time is enough
        path, group, _ = self.index.groups[g]
        ids, mask = self.reader.get(path, group)
        r = self._rows[g][i - self._starts[slot]]
        return ids[r], None if mask is None else mask[r]


def val_batches(
    uri: str, *, seq_len: int, rank: int, world: int, micro_batch_size: int, max_batches: int
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """This rank's share of the first `max_batches * world` validation micro-batches, in
    file order, with their labels (None: every token counts): batch b of rank r holds
    sequences [(b*world + r)*B, ... + B). Every rank gets the same number of batches (a
    ZeRO-3 forward is a collective)."""
    index = index_split(uri)
    reader = _RowGroups(uri, seq_len)
    flat: list[tuple[np.ndarray, np.ndarray | None]] = []
    need = max_batches * world * micro_batch_size
    for path, group, _ in index.groups:
        if sum(len(a) for a, _ in flat) >= need:
            break
        flat.append(reader.get(path, group))
    if not flat:
        return []
    rows = np.concatenate([a for a, _ in flat])[:need]
    masked = flat[0][1] is not None
    masks = np.concatenate([m for _, m in flat if m is not None])[:need] if masked else None
    out = []
    for b in range(max_batches):
        if (b + 1) * world * micro_batch_size > len(rows):
            break
        lo = (b * world + rank) * micro_batch_size
        part = rows[lo : lo + micro_batch_size]
        labels = labels_of(part, None if masks is None else masks[lo : lo + micro_batch_size])
        out.append((torch.from_numpy(part.astype(np.int64)), labels))
    return out
