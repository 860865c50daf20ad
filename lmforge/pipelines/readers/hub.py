"""Datasets on the Hugging Face Hub, `hf:NAME[:split]`, streamed into Ray Data."""

from __future__ import annotations

from functools import partial
from typing import Any

from lmforge.pipelines.readers.discovery import split_hf
from lmforge.pipelines.readers.formats import parquet_rows


def hub_rows(uri: str, id_field: str) -> Any:
    """`hf:NAME[:split]` from the Hub, streamed: Ray reads the Hub's Parquet files in
    its tasks where the dataset has them. Needs the network; every split if none named."""
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
        parts.append(ds.map_batches(rows_of, batch_format="pyarrow", zero_copy_batch=True))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])
