"""Datasets on the Hugging Face Hub, `hf:NAME[:split]`, streamed into Ray Data."""

from __future__ import annotations

from functools import partial
from typing import Any

from lmforge.pipelines.readers.discovery import split_hf
from lmforge.pipelines.readers.formats import parquet_rows
from lmforge.pipelines.readers.tally import ReadTally


def hub_rows(uri: str, id_field: str, *, tally: ReadTally | None = None) -> Any:
    """`hf:NAME[:split]` from the Hub, streamed: Ray reads the Hub's Parquet files in
    its tasks where the dataset has them. Needs the network; every split if none named.

    tally: each split's records are counted as they stream in (added per block: a
    retried task would count its block twice, which fails the stage's reconciliation
    loudly rather than hiding a loss)."""
    import datasets
    import ray.data

    name, split = split_hf(uri)
    loaded = datasets.load_dataset(name, split=split, streaming=True)
    splits = (
        loaded.items() if isinstance(loaded, datasets.IterableDatasetDict) else [(split, loaded)]
    )
    parts = []
    for split_name, dataset in splits:
        file = f"hf:{name}:{split_name}" if split_name else f"hf:{name}"
        rows_of = partial(parquet_rows, id_field=id_field, file=file)
        ds = ray.data.from_huggingface(dataset)
        if tally is not None:
            count = partial(_count, actor=tally.actor(), file=file)
            ds = ds.map_batches(count, batch_format="pyarrow")
        parts.append(ds.map_batches(rows_of, batch_format="pyarrow", zero_copy_batch=True))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def _count(batch: Any, actor: Any, file: str) -> Any:
    import ray

    ray.get(actor.add.remote(file, batch.num_rows))
    return batch
