"""A streamed Hugging Face dataset as a Ray datasource.

Not ``ray.data.from_huggingface``: for a hub dataset it first swaps the stream for the hub's Parquet
export of the whole split (found by the dataset's name, dropping any ``take`` or ``map``) and needs a
network; and its fallback reads ``datasets``' own Arrow batches, which fail when a nullable field is
null throughout one batch. Here one task reads the stream in order, in blocks of ``block_rows``
records typed by the dataset's declared features.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata


class StreamedDataset(Datasource):
    def __init__(self, data, block_rows: int = 256):
        self.data = data  # a datasets.IterableDataset
        self.block_rows = block_rows

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(lambda: blocks(self.data, self.block_rows), meta)]


def blocks(data, block_rows: int) -> Iterator[pa.Table]:
    """The records of ``data`` as Arrow tables of ``block_rows`` rows with its declared schema
    (inferred per block when it declares none)."""
    schema = data.features.arrow_schema if data.features is not None else None
    batch: list[dict] = []
    for record in data:
        batch.append(record)
        if len(batch) == block_rows:
            yield pa.Table.from_pylist(batch, schema=schema)
            batch = []
    if batch:
        yield pa.Table.from_pylist(batch, schema=schema)
