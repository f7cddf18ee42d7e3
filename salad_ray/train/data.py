"""The training stream on Ray Data: every rank reads its own slice of every micro-step.

The stream dataset holds one row per sample reference in stream order, tagged with its ``step``,
``micro`` (micro-step within the step) and ``slot`` (position in the micro-step's global batch,
0 .. G-1). :class:`SlicedDataConfig` gives rank r of W the rows whose slot % W == r, each loaded
from its shard by a Ray Data map, in order. Whatever W an elastic run gets, micro-step (s, m)
consumes exactly the same G samples, so a resumed run sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

import pandas as pd
import pyarrow.parquet as pq
from ray.train import DataConfig

from salad_ray.batch import Sample
from salad_ray.pipeline.records import sample_from_row
from salad_ray.train.mixture import SampleRef

TAGS = ["step", "micro", "slot", "source"]
# Stream rows per Ray Data block. Ray Data cuts a list of rows into up to 200 blocks, one row each
# for a stage-II call's 160, and runs a filter task per block: ~9 s more before a call's first step.
ROWS_PER_BLOCK = 1024
T = TypeVar("T")


def stream_rows(
    stream: list[SampleRef], global_batch: int, grad_accum: int, start_step: int = 0
) -> list[dict]:
    """Tag each reference with its (step, micro, slot); rows of steps before ``start_step`` are left out."""
    per_step = global_batch * grad_accum
    return [
        {
            "step": p // per_step,
            "micro": (p // global_batch) % grad_accum,
            "slot": p % global_batch,
            "source": ref.source,
            "file": ref.file,
            "row": ref.row,
            "sample_id": ref.sample_id,
        }
        for p, ref in enumerate(stream)
        if p // per_step >= start_step
    ]


def stream_dataset(rows: list[dict]):
    """The stream rows (:func:`stream_rows`) as a Ray Data dataset of blocks of ``ROWS_PER_BLOCK`` rows."""
    import ray

    return ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / ROWS_PER_BLOCK)))


def load_rows(refs: pd.DataFrame) -> pd.DataFrame:
    """References -> the shard rows they name, with their stream tags (one Parquet read per file)."""
    out: list[dict | None] = [None] * len(refs)
    for file, group in refs.groupby("file", sort=False):
        table = pq.read_table(file).take(list(group["row"]))
        for (index, ref), row in zip(group.iterrows(), table.to_pylist(), strict=True):
            if row["sample_id"] != ref["sample_id"]:
                raise ValueError(f"{file} row {ref['row']} holds {row['sample_id']}, not {ref['sample_id']}")
            out[refs.index.get_loc(index)] = {**row, **{tag: ref[tag] for tag in TAGS}}
    return pd.DataFrame(out)


class SlicedDataConfig(DataConfig):
    """Rank r of W gets the stream rows with slot % W == r, loaded, in stream order."""

    def __init__(self):
        from ray.data import ExecutionOptions

        super().__init__(datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True))

    def configure(self, datasets, world_size, worker_handles=None, worker_node_ids=None, **kwargs):
        from ray.data import ExecutionOptions

        out = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            for rank in range(world_size):
                mine = ds.filter(lambda row, r=rank, w=world_size: row["slot"] % w == r)
                mine = mine.map_batches(load_rows, batch_format="pandas", batch_size=64)
                mine.context.execution_options = ExecutionOptions(preserve_order=True)
                out[rank][name] = mine.iterator()
        return out


def micro_steps(rows: Iterator[dict], start_step: int) -> Iterator[tuple[int, int, list[Sample], list[str]]]:
    """Group a rank's rows into (step, micro, samples, sources), skipping steps before ``start_step``."""
    for (step, micro), group in itertools.groupby(rows, key=lambda r: (int(r["step"]), int(r["micro"]))):
        if step < start_step:
            continue
        group = list(group)
        yield step, micro, [sample_from_row(r) for r in group], [str(r["source"]) for r in group]


class ReadAhead(Iterator[T], Generic[T]):
    """``items`` read in a thread of their own, up to ``depth`` ahead of the consumer: a rank reads
    and decodes its first micro-steps while it builds its model, and the next ones while it
    computes. An error of the reader is raised to the consumer at the item it stopped on."""

    _END = object()

    def __init__(self, items: Iterator[T], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        threading.Thread(target=self._read, args=(items,), name="read-ahead", daemon=True).start()

    def _read(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                self._queue.put(item)
        except BaseException as error:
            self._queue.put(error)
        else:
            self._queue.put(self._END)

    def __next__(self) -> T:
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # every later call ends too
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item
