"""Scoring probes: scorer actors holding a student checkpoint measure M (and the distillation KL)
of every spoken probe, in a Ray Data stage; per-cluster M and KL are token-weighted means over the
probes' text targets that follow speech (T_s of :mod:`salad_ray.metrics`):

    M(c)  = Σ_{probes x in c} M_sum(x) / Σ_{x in c} |T_s(x)|         (nats per text target)
    KL(c) = Σ_{probes x in c} D_sum(x) / Σ_{x in c} |T_s(x)|         (the same targets)

so neither moves with how much text a probe's plan puts before its first speech span. Either can
drive the selection (``selection.signal``, :mod:`salad_ray.selection`). A cluster with no probe
left to score (all failed synthesis) gets M = KL = 0 and is not kept. How far M(c) can be told
apart between clusters is its percentile-bootstrap interval over the cluster's probes
(:func:`m_intervals`, :mod:`salad_ray.eval.stats`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from salad_ray.batch import collate
from salad_ray.config import RunConfig
from salad_ray.eval.stats import Interval, ratio_interval
from salad_ray.metrics import per_token
from salad_ray.pipeline.records import sample_from_row
from salad_ray.pipeline.shards import ShardStore

SCORE_COLUMNS = ["sample_id", "cluster", "cer", "duration", "words", "m_sum", "m_count", "d_sum"]


class ScoreStage:
    """Per-sample M and distillation KL of the samples in shard files, with one student loaded for
    the actor's life; each file's samples are scored in batches of ``batch_size``."""

    def __init__(self, student_dir: str, batch_size: int):
        import torch

        from salad_ray.model.student import SpeechLM

        torch.set_grad_enabled(False)
        self.student = SpeechLM.load(
            student_dir, device="cuda" if torch.cuda.is_available() else "cpu"
        ).eval()
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        import pyarrow.parquet as pq

        rows = [row for file in batch["file"] for row in pq.read_table(file).to_pylist()]
        parts = [self._score(rows[i : i + self.batch_size]) for i in range(0, len(rows), self.batch_size)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SCORE_COLUMNS)

    def _score(self, rows: list[dict]) -> pd.DataFrame:
        from salad_ray.objective import batch_gap

        gap = batch_gap(self.student, collate([sample_from_row(r) for r in rows]).to(self.student.device))
        return pd.DataFrame(
            {
                "sample_id": [r["sample_id"] for r in rows],
                "cluster": [int(r["cluster"]) for r in rows],
                "cer": [float(r["cer"]) for r in rows],
                "duration": [float(r["duration"]) for r in rows],
                "words": [len(r["text"].split()) for r in rows],  # all words: seconds of speech per text word
                "m_sum": gap.m_sums.tolist(),
                "m_count": gap.m_counts.tolist(),
                "d_sum": gap.d_sums.tolist(),
            },
            columns=SCORE_COLUMNS,
        )


def score_store(config: RunConfig, store: ShardStore, student_dir: Path) -> pd.DataFrame:
    """Score every committed sample of a store with the student saved at ``student_dir``.

    The unit of work is a committed shard file, read by the scorer that scores it: Ray Data's
    Parquet reader would first start a pool of footer-reading actors (32 in Ray 2.60, each a Python
    process) to list a handful of small files, several seconds of CPU per round on a laptop."""
    import ray

    from salad_ray.resources import pool_stage_options

    files = [str(f) for f in store.files("shards")]
    if not files:
        return pd.DataFrame(columns=SCORE_COLUMNS)
    ds = ray.data.from_items([{"file": f} for f in files]).map_batches(
        ScoreStage,
        fn_constructor_args=(str(student_dir), config.train.batch_size),
        batch_size=1,
        **pool_stage_options(config.resources.scorer),
    )
    return ds.to_pandas().sort_values("sample_id", ignore_index=True)


def per_cluster(scores: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, CER, distillation KL) per cluster (module docstring); clusters without probes, or whose
    probes have no text target after speech, get M = KL = 0 (CER = inf without probes)."""
    m, cer, d = np.zeros(k), np.full(k, np.inf), np.zeros(k)
    for c, group in scores.groupby("cluster"):
        if group["m_count"].sum() > 0:
            m[int(c)] = per_token(group["m_sum"].to_numpy(), group["m_count"].to_numpy())
            d[int(c)] = per_token(group["d_sum"].to_numpy(), group["m_count"].to_numpy())
        cer[int(c)] = group["cer"].mean()
    return m, cer, d


def m_intervals(scores: pd.DataFrame, k: int) -> list[Interval | None]:
    """M(c) per cluster with its 95 % bootstrap interval over the cluster's probes that have a text
    target after speech (resampled whole: a probe's summed KL and its targets together). None where
    fewer than two such probes exist: one probe gives no spread, not certainty."""
    intervals: list[Interval | None] = [None] * k
    for c, group in scores[scores["m_count"] > 0].groupby("cluster"):
        if len(group) >= 2:
            intervals[int(c)] = ratio_interval(group["m_sum"].to_numpy(), group["m_count"].to_numpy())
    return intervals
