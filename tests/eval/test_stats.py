"""The bootstrap intervals of the evaluation (salad_ray.eval.stats) on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from salad_ray.eval.stats import (
    accuracy_interval,
    bootstrap,
    paired_accuracy_difference,
    paired_ratio_difference,
    ratio_interval,
)


def test_accuracy_interval_covers_a_known_p_about_95_percent_of_the_time():
    p, n, trials = 0.6, 150, 200
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(trials):
        correct = (rng.random(n) < p).astype(int)
        interval = accuracy_interval([correct], resamples=1000)
        assert interval.low <= interval.estimate == correct.mean() <= interval.high
        covered += interval.low <= p <= interval.high
    assert 0.88 <= covered / trials <= 0.99


def test_the_interval_shrinks_with_more_items_and_is_fixed_by_the_seed():
    rng = np.random.default_rng(2)
    widths = []
    for n in (40, 160, 640):
        interval = accuracy_interval([(rng.random(n) < 0.5).astype(int)])
        widths.append(interval.high - interval.low)
    assert widths[0] > 1.6 * widths[1] > 1.6 * 1.6 * widths[2]  # ~ 1 / sqrt(n): halves per 4x
    # 150 items at p = 0.5: a half-width under 8 points, the benchmark size the report needs
    half = accuracy_interval([np.tile([0, 1], 75)])
    assert (half.high - half.low) / 2 < 0.08
    data = [np.arange(30) % 3 == 0]
    assert accuracy_interval(data) == accuracy_interval(data)  # the same data, the same interval


def test_an_average_over_tasks_resamples_each_task_on_its_own():
    a, b = np.ones(20), np.zeros(200)  # one task always right, one always wrong
    interval = accuracy_interval([a, b])
    assert interval.estimate == interval.low == interval.high == 0.5  # nothing varies within a task


def test_paired_difference_excludes_zero_for_a_clear_difference_and_includes_it_for_noise():
    rng = np.random.default_rng(3)
    n = 150
    base = (rng.random(n) < 0.5).astype(int)
    better = np.where(rng.random(n) < 0.3, 1, base)  # right on ~15 % more items
    clear = paired_accuracy_difference([better], [base])
    assert clear.low > 0 and clear.excludes(0)
    noise_a, noise_b = (rng.random(n) < 0.5).astype(int), (rng.random(n) < 0.5).astype(int)
    noise = paired_accuracy_difference([noise_a], [noise_b])
    assert noise.low < 0 < noise.high and not noise.excludes(0)


def test_paired_ratio_difference_cancels_what_the_samples_share():
    rng = np.random.default_rng(4)
    counts = rng.integers(20, 200, size=24).astype(float)
    level = rng.uniform(0.2, 2.0, size=24)  # samples differ a lot in M ...
    a = level * counts
    b = (level + 0.05) * counts  # ... b is worse on every sample by 0.05 per target
    paired = paired_ratio_difference(a, b, counts)
    assert paired.estimate == pytest.approx(-0.05) and paired.high < 0
    unpaired_width = (ratio_interval(a, counts).high - ratio_interval(a, counts).low) * 2
    assert paired.high - paired.low < 0.01 * unpaired_width  # pairing removes the shared spread
    noise = paired_ratio_difference(a, a + rng.normal(0, 0.3, 24) * counts, counts)
    assert noise.low < 0 < noise.high


def test_bootstrap_rejects_empty_data():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap([np.array([])], lambda s: s[0].mean(axis=1))
