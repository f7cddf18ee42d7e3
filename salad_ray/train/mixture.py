"""The training data stream: a deterministic mixture of sources over committed shards.

Position p of a stage's stream draws its source with probability proportional to the source's
weight (one seeded draw for the whole stream, whatever the sources hold), then reads that source's
next sample. A source is an ordered list of segments (one per shard store: stage II's active source
has one per round), segment j readable from position s_j on. At each of its positions a source reads

* the next unread sample of the newest readable segment that has one, each segment in its own
  seeded permutation; so every sample of a segment is read once before any is read again, and the
  positions from s_j on read segment j first;
* once every readable segment is read through, a replay epoch: a seeded permutation of all the
  segments readable when the epoch starts (a segment that becomes readable meanwhile is read
  first, then the epoch goes on; the next epoch covers it).

The stream is a pure function of (the committed samples, the segments' starts, weights, seed), and
what position p reads depends only on segments readable by p: adding a segment from position s on
leaves every position before s as it was, so a run extended by a round (and a resumed run)
continues the stream exactly where its checkpoint left it: the data position is just the number of
samples consumed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from salad_ray.pipeline.shards import ShardStore


@dataclass(frozen=True)
class SampleRef:
    source: str
    file: str
    row: int
    sample_id: str


@dataclass(frozen=True)
class Segment:
    """Samples of one source, readable from stream position ``start`` on."""

    refs: list[SampleRef]
    start: int = 0


def pool_refs(store: ShardStore, source: str) -> list[SampleRef]:
    """Every committed sample of a store, in a stable order (files by name, rows in order)."""
    refs = []
    for path in store.files("shards"):
        ids = pq.read_table(path, columns=["sample_id"]).column("sample_id").to_pylist()
        refs += [SampleRef(source, str(path), row, sid) for row, sid in enumerate(ids)]
    return refs


class _SourceReader:
    """One source's reading order (the module docstring's rule); source k of the mixture draws its
    segment j's permutation from seed (seed, k + 1, 0, j) and replay epoch e >= 1's from (seed, k + 1, e)."""

    def __init__(self, name: str, segments: list[Segment], key: tuple[int, int]):
        self.name, self.segments, self.key = name, sorted(segments, key=lambda s: s.start), key
        self.unread: list[deque[SampleRef]] = []  # the readable segments, unread samples in order
        self.replay: deque[SampleRef] = deque()
        self.epoch = 0

    def read(self, position: int) -> SampleRef:
        while len(self.unread) < len(self.segments) and self.segments[len(self.unread)].start <= position:
            refs = self.segments[len(self.unread)].refs
            order = np.random.default_rng([*self.key, 0, len(self.unread)]).permutation(len(refs))
            self.unread.append(deque(refs[i] for i in order))
        fresh = next((seg for seg in reversed(self.unread) if seg), None)
        if fresh is not None:
            return fresh.popleft()
        if not self.replay:
            readable = [ref for seg in self.segments[: len(self.unread)] for ref in seg.refs]
            if not readable:
                raise ValueError(
                    f"the mixture draws source {self.name!r} at position {position}, "
                    "where it has no committed samples"
                )
            self.epoch += 1
            order = np.random.default_rng([*self.key, self.epoch]).permutation(len(readable))
            self.replay.extend(readable[i] for i in order)
        return self.replay.popleft()


def segmented_stream(
    sources: dict[str, list[Segment]], weights: dict[str, float], n: int, seed: int
) -> list[SampleRef]:
    """The first ``n`` samples of the stream of sources made of segments (see the module docstring)."""
    names = [s for s in sorted(weights) if weights[s] > 0]
    p = np.array([weights[s] for s in names], dtype=np.float64)
    picks = np.random.default_rng([seed, 0]).choice(len(names), size=n, p=p / p.sum())
    readers = [_SourceReader(s, sources.get(s, []), (seed, k + 1)) for k, s in enumerate(names)]
    return [readers[k].read(position) for position, k in enumerate(picks)]


def mixture_stream(
    pools: dict[str, list[SampleRef]], weights: dict[str, float], n: int, seed: int
) -> list[SampleRef]:
    """The first ``n`` samples of the stream of sources of one segment each, readable from the start."""
    return segmented_stream({s: [Segment(refs)] for s, refs in pools.items()}, weights, n, seed)
