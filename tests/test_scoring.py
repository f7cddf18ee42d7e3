"""Per-cluster M and distillation KL from scored probes (salad_ray.scoring.per_cluster), no Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from salad_ray.scoring import SCORE_COLUMNS, m_intervals, per_cluster


def scores(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (cluster, cer, m_sum, m_count, d_sum); the other columns do not enter per_cluster."""
    frame = pd.DataFrame(rows, columns=["cluster", "cer", "m_sum", "m_count", "d_sum"])
    frame["sample_id"] = [f"p{i}" for i in range(len(frame))]
    frame["duration"], frame["words"] = 1.0, 5
    return frame[SCORE_COLUMNS]


def test_m_and_kl_are_weighted_by_text_targets_not_averaged_over_probes():
    # cluster 0: one probe of 1 target (M 1.0) and one of 3 targets (M 3.0 per target)
    m, cer, d = per_cluster(
        scores(
            [
                (
                    0,
                    0.1,
                    1.0,
                    1,
                    0.5,
                ),
                (0, 0.3, 9.0, 3, 1.5),
            ]
        ),
        k=1,
    )
    assert m[0] == pytest.approx(10.0 / 4)  # not the probes' mean of 2.0
    assert d[0] == pytest.approx(2.0 / 4)
    assert cer[0] == pytest.approx(0.2)  # CER is a plain mean over probes


def test_clusters_without_probes_or_targets_after_speech_score_zero():
    m, cer, d = per_cluster(scores([(1, 0.05, 4.0, 2, 1.0), (2, 0.4, 0.0, 0, 0.0)]), k=4)
    np.testing.assert_allclose(m, [0.0, 2.0, 0.0, 0.0])
    np.testing.assert_allclose(d, [0.0, 0.5, 0.0, 0.0])
    assert np.isinf(cer[0]) and np.isinf(cer[3])  # no probe at all
    assert cer[2] == pytest.approx(0.4)  # probed, but nothing followed its speech: M = KL = 0


def test_probe_order_does_not_change_the_scores():
    rows = [(c, 0.1 * c, float(i), 1 + i % 3, 0.1 * i) for i, c in enumerate([0, 1, 0, 2, 1, 0])]
    forward, backward = per_cluster(scores(rows), k=3), per_cluster(scores(rows[::-1]), k=3)
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_allclose(a, b)


def test_m_intervals_resample_whole_probes_and_contain_the_estimate():
    rows = [(0, 0.1, 2.0, 2, 0.0), (0, 0.1, 6.0, 2, 0.0), (1, 0.1, 3.0, 1, 0.0), (1, 0.1, 3.0, 3, 0.0)]
    rows.append((2, 0.1, 0.0, 0, 0.0))  # probed, nothing after its speech: no interval
    low_spread, high_spread, empty, unprobed = m_intervals(scores(rows), k=4)
    m, _, _ = per_cluster(scores(rows), k=4)
    assert low_spread.estimate == pytest.approx(m[0]) == pytest.approx(2.0)
    # a resample draws either probe twice or both: M in {1.0, 2.0, 3.0} per target, never outside
    assert 1.0 <= low_spread.low <= 2.0 <= low_spread.high <= 3.0 and low_spread.low < low_spread.high
    # per-probe M 3.0 and 1.0 per target: resamples give 3.0, 1.5 or 1.0
    assert high_spread.estimate == pytest.approx(1.5) and 1.0 <= high_spread.low < high_spread.high <= 3.0
    assert empty is None and unprobed is None


def test_m_intervals_leave_out_probes_without_targets_and_need_two():
    # cluster 0: two probes with targets and two with none; the empty ones would drag resamples to 0
    rows = [(0, 0.1, 2.0, 2, 0.0), (0, 0.1, 6.0, 2, 0.0), (0, 0.1, 0.0, 0, 0.0), (0, 0.1, 0.0, 0, 0.0)]
    rows += [(1, 0.1, 3.0, 1, 0.0), (1, 0.1, 0.0, 0, 0.0)]  # one probe with targets: no spread to show
    mixed, single = m_intervals(scores(rows), k=2)
    assert mixed.estimate == pytest.approx(2.0) and mixed.low >= 1.0
    assert single is None
