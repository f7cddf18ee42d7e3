import json
from collections import Counter

import numpy as np
import pytest
from pydantic import ValidationError

from salad_ray.config import SelectionConfig, SelectionSignal
from salad_ray.selection import (
    Candidate,
    RoundPlan,
    balanced_assign,
    balanced_kmeans,
    draw,
    plan_round,
    target_distribution,
)

SIGNALS = ("misalignment", "distillation")


def test_balanced_kmeans_recovers_separated_groups_in_equal_sizes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3 * c, 0.3, size=(50, 4)) for c in range(4)])
    labels, centroids = balanced_kmeans(x, 4, seed=0)
    assert np.bincount(labels).tolist() == [50, 50, 50, 50]
    for group in range(4):  # each true group lands in one cluster
        assert Counter(labels[group * 50 : (group + 1) * 50]).most_common(1)[0][1] == 50
    assert centroids.shape == (4, 4)
    assert np.array_equal(labels, balanced_kmeans(x, 4, seed=0)[0])  # seeded


def test_balance_is_enforced_on_unbalanced_data():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.1, size=(90, 2)), rng.normal(5, 0.1, size=(10, 2))])
    labels, _ = balanced_kmeans(x, 4, seed=0)
    assert np.bincount(labels, minlength=4).max() <= 25  # ceil(100 / 4)
    with pytest.raises(ValueError, match="cannot hold"):
        balanced_assign(np.zeros((5, 2)), capacity=2)


def one_point_at_a_time(d: np.ndarray, capacity: int) -> np.ndarray:
    """The assignment's definition, literally: points in priority order, each to its nearest cluster
    with room (the implementation before it was vectorised)."""
    labels, load = np.full(len(d), -1), np.zeros(d.shape[1], dtype=np.int64)
    preferences = np.argsort(d, axis=1, kind="stable")
    for i in np.argsort(d.min(1), kind="stable"):
        c = next(c for c in preferences[i] if load[c] < capacity)
        labels[i], load[c] = c, load[c] + 1
    return labels


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096])
@pytest.mark.parametrize(("n", "k", "ties"), [(500, 8, False), (503, 16, True), (64, 64, True)])
def test_the_vectorised_assignment_is_the_one_point_at_a_time_greedy(n, k, ties, chunk):
    rng = np.random.default_rng(n + k)
    d = rng.integers(0, 4, size=(n, k)).astype(float) if ties else rng.random((n, k))
    capacity = -(-n // k)
    expected = one_point_at_a_time(d, capacity)
    assert np.array_equal(balanced_assign(d, capacity, chunk=chunk), expected)
    assert np.bincount(expected, minlength=k).max() <= capacity


def test_target_distribution_by_hand():
    share = np.array([0.25, 0.25, 0.5])
    m = np.array([1.0, 2.0, 1.0])
    keep = np.array([True, True, True])
    # gamma = 1: weights 0.25, 0.5, 0.5
    np.testing.assert_allclose(target_distribution(share, m, 1.0, keep), [0.2, 0.4, 0.4])
    # gamma = 0: the pool's own distribution
    np.testing.assert_allclose(target_distribution(share, m, 0.0, keep), share)
    # gamma = 5 with cluster 1 dropped for its CER
    np.testing.assert_allclose(
        target_distribution(share, m, 5.0, np.array([True, False, True])), [1 / 3, 0, 2 / 3]
    )
    with pytest.raises(ValueError, match="no cluster"):
        target_distribution(share, m, 1.0, np.array([False, False, False]))


def test_draw_is_without_replacement_and_stops_at_the_budget():
    candidates = [Candidate(f"t{c}-{i}", c, 1.0) for c in range(3) for i in range(5)]
    chosen = draw(candidates, np.array([0.8, 0.2, 0.0]), budget_seconds=7.5, seed=0)
    ids = [c.text_id for c in chosen]
    assert len(ids) == len(set(ids)) == 8  # 8 x 1 s reaches 7.5 s
    assert all(c.cluster != 2 for c in chosen)  # p = 0 is never drawn
    # a budget larger than what the clusters with mass hold: they are emptied, then the draw stops
    everything = draw(candidates, np.array([0.8, 0.2, 0.0]), budget_seconds=100, seed=0)
    assert len(everything) == 10 and {c.cluster for c in everything} == {0, 1}


def test_gamma_puts_more_budget_where_m_is_high():
    """Four equal clusters whose misalignment differs; gamma = 5 against gamma = 0, same budget and seed."""
    k = 4
    m = np.array([0.2, 0.4, 0.8, 1.6])
    candidates = [Candidate(f"t{c}-{i}", c, 2.0) for c in range(k) for i in range(200)]
    common = dict(
        cer=np.zeros(k),
        pool_share=np.full(k, 1 / k),
        candidates=candidates,
        max_cer=0.2,
        budget_seconds=200.0,
        seed=3,
    )
    active = plan_round(1, m, gamma=5.0, **common)
    uniform = plan_round(1, m, gamma=0.0, **common)
    top = k - 1  # the cluster with the highest M
    assert active.shares()[top] > 0.8 > 0.4 > uniform.shares()[top]
    assert np.argsort(active.shares()).tolist() == [0, 1, 2, 3]  # budget follows M
    assert abs(sum(c["seconds"] for c in active.selected) - 200.0) < 2.0 + 1e-9
    # a cluster whose TTS is unintelligible gets nothing, however high its M
    noisy = plan_round(1, m, gamma=5.0, **(common | {"cer": np.array([0, 0, 0, 0.9])}))
    assert noisy.shares()[top] == 0 and not noisy.kept[top]


def test_the_configured_signal_drives_p():
    """M and the distillation KL rank the clusters in opposite orders; ``selection.signal`` decides
    which one p(c) follows, and the plan records both."""
    k = 4
    m = np.array([0.2, 0.4, 0.8, 1.6])
    kl = m[::-1].copy()
    candidates = [Candidate(f"t{c}-{i}", c, 2.0) for c in range(k) for i in range(200)]
    common = dict(
        cer=np.zeros(k),
        pool_share=np.full(k, 1 / k),
        candidates=candidates,
        gamma=5.0,
        max_cer=0.2,
        budget_seconds=200.0,
        seed=3,
        kl=kl,
    )
    by = {
        signal: plan_round(1, m, signal=SelectionConfig(signal=signal).signal, **common) for signal in SIGNALS
    }
    np.testing.assert_allclose(
        by["misalignment"].p, target_distribution(np.full(k, 1 / k), m, 5.0, np.ones(k))
    )
    np.testing.assert_allclose(
        by["distillation"].p, target_distribution(np.full(k, 1 / k), kl, 5.0, np.ones(k))
    )
    assert np.argsort(by["misalignment"].shares()).tolist() == [0, 1, 2, 3]
    assert np.argsort(by["distillation"].shares()).tolist() == [3, 2, 1, 0]
    for signal, plan in by.items():
        recorded = RoundPlan(**json.loads(json.dumps(plan.to_dict())))  # as plan.json holds it
        assert recorded.signal == signal and recorded.m == m.tolist() and recorded.kl == kl.tolist()
    assert SelectionConfig().signal == SelectionSignal.MISALIGNMENT  # the default
    with pytest.raises(ValidationError):
        SelectionConfig(signal="loss")
    with pytest.raises(ValueError, match="no distillation KL"):
        plan_round(1, m, signal="distillation", **(common | {"kl": None}))
