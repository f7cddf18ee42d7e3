"""Bootstrap confidence intervals for the evaluation's accuracies and gaps.

One resampling scheme serves every interval of the report (:func:`bootstrap`): the percentile
bootstrap. Given strata X_1..X_S (a benchmark's items, the held-out samples), each an array whose
first axis is the resampling unit, draw every stratum again with replacement to its own size,
independently, R times; evaluate the statistic on each draw, giving t*_1..t*_R; the interval at
level 1 - alpha is [q_{alpha/2}(t*), q_{1-alpha/2}(t*)], the empirical quantiles, around the
statistic of the data itself. Resampling within strata keeps each benchmark's size fixed, so an
average over benchmarks is resampled as it was measured.

The statistics used (x: 0/1 correctness of an item; s, n: a sample's summed KL and its number of
text targets):

* accuracy over tasks          (1/S) sum_k mean_i x_ki
* paired accuracy difference   (1/S) sum_k mean_i (x_ki - y_ki)    (same items, two systems)
* held-out M                   sum_i s_i / sum_i n_i               (per token, as the run reports it)
* paired M difference          sum_i (s_i - s'_i) / sum_i n_i      (same samples, two students)

Paired statistics resample the units once for both systems, so what the two share (an item's
difficulty, a sample's length) cancels and the interval is that of the difference itself. The seed
is fixed: the same data always give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
_BLOCK_ELEMENTS = 1 << 22  # indices drawn per block of resamples (memory bound for large benchmarks)


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap interval [low, high]."""

    estimate: float
    low: float
    high: float

    def excludes(self, value: float = 0.0) -> bool:
        return not self.low <= value <= self.high

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


Statistic = Callable[[list[np.ndarray]], np.ndarray]


def bootstrap(
    strata: Sequence[np.ndarray],
    statistic: Statistic,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` (module docstring).

    ``statistic`` receives the strata with a leading resample axis, (R, n_k, ...) each, and returns
    R values; the point estimate is its value on the data (R = 1).
    """
    data = [np.asarray(s, dtype=np.float64) for s in strata]
    if not data or any(len(s) == 0 for s in data):
        raise ValueError("bootstrap needs at least one non-empty stratum")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    estimate = float(statistic([s[None] for s in data])[0])
    rng = np.random.default_rng(seed)
    per_resample = sum(len(s) for s in data)
    block = max(1, _BLOCK_ELEMENTS // per_resample)
    values = []
    for start in range(0, resamples, block):
        r = min(block, resamples - start)
        values.append(statistic([s[rng.integers(0, len(s), size=(r, len(s)))] for s in data]))
    draws = np.concatenate(values)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high))


def _mean_over_strata(strata: list[np.ndarray]) -> np.ndarray:
    return np.mean([s.mean(axis=1) for s in strata], axis=0)


def accuracy_interval(correct: Sequence[Sequence[float]], **kwargs) -> Interval:
    """Mean accuracy over tasks (one 0/1 vector per task; one task: its accuracy) and its interval."""
    return bootstrap([np.asarray(c, dtype=np.float64) for c in correct], _mean_over_strata, **kwargs)


def paired_accuracy_difference(
    a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], **kwargs
) -> Interval:
    """Accuracy of ``a`` minus that of ``b`` on the same items (per task, averaged over tasks)."""
    strata = [
        np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64) for x, y in zip(a, b, strict=True)
    ]
    return bootstrap(strata, _mean_over_strata, **kwargs)


def _ratio(strata: list[np.ndarray]) -> np.ndarray:
    (rows,) = strata  # (R, n, 2): summed KL, targets
    return rows[..., 0].sum(axis=1) / np.maximum(rows[..., 1].sum(axis=1), 1e-12)


def ratio_interval(sums: Sequence[float], counts: Sequence[float], **kwargs) -> Interval:
    """sum(sums) / sum(counts) (a per-token mean such as held-out M) over resampled units."""
    return bootstrap([np.stack([sums, counts], axis=1)], _ratio, **kwargs)


def paired_ratio_difference(
    a_sums: Sequence[float], b_sums: Sequence[float], counts: Sequence[float], **kwargs
) -> Interval:
    """(sum(a) - sum(b)) / sum(counts): two students' per-token means on the same units."""
    diff = np.asarray(a_sums, dtype=np.float64) - np.asarray(b_sums, dtype=np.float64)
    return bootstrap([np.stack([diff, np.asarray(counts, dtype=np.float64)], axis=1)], _ratio, **kwargs)
