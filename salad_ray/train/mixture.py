"""The training data stream: a deterministic mixture of sources over committed shards.

Position p of a stage's stream draws its source with probability proportional to the source's
weight (one seeded draw for the whole stream), then takes the next sample of that source in its
current epoch; each source is reshuffled every epoch with its own seed. The stream is a pure
function of (the committed samples, weights, seed), so a resumed run continues it exactly where
the checkpoint left it: the data position is just the number of samples consumed.
"""

from __future__ import annotations

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


def pool_refs(store: ShardStore, source: str) -> list[SampleRef]:
    """Every committed sample of a store, in a stable order (files by name, rows in order)."""
    refs = []
    for path in store.files("shards"):
        ids = pq.read_table(path, columns=["sample_id"]).column("sample_id").to_pylist()
        refs += [SampleRef(source, str(path), row, sid) for row, sid in enumerate(ids)]
    return refs


def mixture_stream(
    pools: dict[str, list[SampleRef]], weights: dict[str, float], n: int, seed: int
) -> list[SampleRef]:
    """The first ``n`` samples of the stream (see the module docstring)."""
    sources = [s for s in sorted(weights) if weights[s] > 0]
    empty = [s for s in sources if not pools.get(s)]
    if empty:
        raise ValueError(f"the mixture weights sources {empty} that have no committed samples")
    p = np.array([weights[s] for s in sources], dtype=np.float64)
    picks = np.random.default_rng([seed, 0]).choice(len(sources), size=n, p=p / p.sum())
    orders = []
    for k, source in enumerate(sources):
        size, need = len(pools[source]), int((picks == k).sum())
        epochs = [np.random.default_rng([seed, k + 1, e]).permutation(size) for e in range(-(-need // size))]
        orders.append(iter(np.concatenate(epochs) if epochs else np.empty(0, dtype=np.int64)))
    return [pools[sources[k]][int(next(orders[k]))] for k in picks]
