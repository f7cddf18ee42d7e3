"""The text pool of active selection: embedded in a Ray Data actor pool, clustered, persisted.

    <pool>/
      texts.parquet    text_id, text, domain, words, cluster   (sorted by text_id)
      centroids.npy    (K, D) cluster centres in embedding space

Embeddings come from any sentence-transformers model (``models.embedder``: all-MiniLM-L6-v2
offline, bge-large-en-v1.5 in the paper presets), L2-normalised; clusters from
:func:`salad_ray.selection.balanced_kmeans`. The pool is built once per run and read back on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from salad_ray.assets import resolve
from salad_ray.config import ModelRef, RunConfig
from salad_ray.corpus import read_texts
from salad_ray.files import atomic_path
from salad_ray.selection import balanced_kmeans

# Texts per embedding call: sentence-transformers sorts a call's texts by length before it batches
# them, so a larger call pads less (calls of 64 ran at 0.35x the texts/s of one call over 1024 here:
# README, *Performance against the limit*).
EMBED_BATCH = 512


class EmbedStage:
    """Sentence embeddings of a batch of texts (an actor holding the model)."""

    def __init__(self, embedder: ModelRef):
        import torch
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(resolve(embedder)), device="cuda" if torch.cuda.is_available() else "cpu"
        )

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vectors = self.model.encode(list(batch["text"]), normalize_embeddings=True, convert_to_numpy=True)
        return pd.DataFrame({"text_id": batch["text_id"], "embedding": list(vectors.astype(np.float32))})


@dataclass
class Pool:
    texts: pd.DataFrame  # text_id, text, domain, words, cluster
    centroids: np.ndarray

    @property
    def clusters(self) -> int:
        return len(self.centroids)

    def share(self) -> np.ndarray:
        """P_pool(c): each cluster's share of the pool."""
        return np.bincount(self.texts["cluster"], minlength=self.clusters) / len(self.texts)

    @classmethod
    def load(cls, directory: Path) -> Pool:
        return cls(
            pq.read_table(directory / "texts.parquet").to_pandas(), np.load(directory / "centroids.npy")
        )

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "centroids.npy", self.centroids)
        with atomic_path(
            directory / "texts.parquet"
        ) as tmp:  # written last: its presence means the pool is whole
            pq.write_table(pa.Table.from_pandas(self.texts, preserve_index=False), tmp)


def build_pool(config: RunConfig, directory: Path, exclude: set[str]) -> Pool:
    """Read the pool source (minus ``exclude``d text ids), embed it on Ray Data, cluster, save."""
    import ray

    from salad_ray.resources import pool_stage_options

    pool = read_texts(config.data.pool, exclude_domains=config.data.heldout_only)  # probes come from it
    records = [r for r in pool if r.text_id not in exclude]
    k = config.selection.clusters
    if len(records) < k:
        raise ValueError(f"the pool has {len(records)} texts, fewer than selection.clusters = {k}")
    texts = pd.DataFrame(
        {
            "text_id": [r.text_id for r in records],
            "text": [r.text for r in records],
            "domain": [r.domain for r in records],
        }
    )
    texts = texts.sort_values("text_id", ignore_index=True)
    chunks = [texts.iloc[i : i + EMBED_BATCH][["text_id", "text"]] for i in range(0, len(texts), EMBED_BATCH)]
    embedded = (
        ray.data.from_pandas(chunks)
        .map_batches(
            EmbedStage,
            fn_constructor_args=(config.models.embedder,),
            batch_size=EMBED_BATCH,
            batch_format="pandas",
            **pool_stage_options(config.resources.embed),
        )
        .to_pandas()
        .set_index("text_id")
        .loc[texts["text_id"]]
    )
    labels, centroids = balanced_kmeans(np.stack(embedded["embedding"].to_numpy()), k, config.seed)
    texts["words"] = texts["text"].str.split().str.len()
    texts["cluster"] = labels.astype(np.int32)
    pool = Pool(texts, centroids.astype(np.float32))
    pool.save(directory)
    return pool
