"""The clustered candidate pool on disk (salad_ray.pool.Pool), no Ray: shares, save and load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from salad_ray.pool import Pool


def pool(clusters: list[int], k: int) -> Pool:
    texts = pd.DataFrame(
        {
            "text_id": [f"t{i}" for i in range(len(clusters))],
            "text": [f"text number {i}" for i in range(len(clusters))],
            "domain": ["computers"] * len(clusters),
            "words": [3] * len(clusters),
            "cluster": np.asarray(clusters, dtype=np.int32),
        }
    )
    return Pool(texts, np.eye(k, 4, dtype=np.float32))


def test_share_is_each_clusters_fraction_of_the_pool_including_empty_ones():
    share = pool([0, 0, 2, 2, 2, 0, 0, 0], k=4).share()
    np.testing.assert_allclose(share, [5 / 8, 0.0, 3 / 8, 0.0])
    assert share.sum() == pytest.approx(1.0)


def test_a_saved_pool_loads_back_whole(tmp_path):
    saved = pool([1, 0, 1, 2], k=3)
    saved.save(tmp_path / "pool")
    loaded = Pool.load(tmp_path / "pool")
    pd.testing.assert_frame_equal(loaded.texts, saved.texts)
    np.testing.assert_array_equal(loaded.centroids, saved.centroids)
    assert loaded.clusters == 3
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == ["centroids.npy", "texts.parquet"]


def test_a_pool_without_its_texts_is_not_a_pool(tmp_path):
    """texts.parquet is written last: a save cut short leaves no pool that loads."""
    (tmp_path / "pool").mkdir()
    np.save(tmp_path / "pool" / "centroids.npy", np.zeros((2, 4)))
    with pytest.raises(FileNotFoundError):
        Pool.load(tmp_path / "pool")
