"""Active selection: balanced k-means over the text pool, p(c) ∝ P_pool(c)·S(c)^γ, budgeted draws.

Clusters. The pool's sentence embeddings are cut into K clusters of (nearly) equal size by
balanced k-means: k-means++ seeding, then Lloyd iterations whose assignment step gives each point
its nearest centroid that still has room (points nearest their centroid choose first), each
cluster capped at ceil(N / K) points.

Target distribution. With S(c) the score of cluster c and P_pool(c) the cluster's share of the pool,

    p(c) = P_pool(c) · S(c)^γ / Σ_c' P_pool(c') · S(c')^γ,

over the clusters kept: a cluster whose probes' TTS character error rate exceeds ``max_cer`` gets
p(c) = 0 (its speech is not worth learning from). γ = 0 is selection in proportion to the pool
(uniform over balanced clusters); the paper uses γ = 5. S is the config's ``selection.signal``:
``misalignment`` (default) takes S(c) = M(c), the student's per-token misalignment on the cluster's
spoken probes; ``distillation`` takes S(c) = KL(c), the distillation KL to the teacher on the same
targets (both from :func:`salad_ray.scoring.per_cluster`). A round's plan records M(c) and KL(c)
either way, and which one drove p.

Budget. Texts are drawn without replacement: draw a cluster from p, take a random unused text of
it, add its estimated seconds of speech, until the round's budget is met; an exhausted cluster
leaves the draw and p is renormalised. All draws are seeded, so a plan is reproducible.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from salad_ray.config import SelectionSignal
from salad_ray.files import write_text


def _sq_dist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(N, D), (K, D) -> (N, K) squared Euclidean distances."""
    return np.maximum((x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], 0.0)


def balanced_assign(d: np.ndarray, capacity: int, chunk: int = 4096) -> np.ndarray:
    """Assign each point to its nearest cluster with room (no cluster above ``capacity`` points);
    points closest to their nearest centroid choose first (ties: the lower index).

    Vectorised in chunks of the priority order: a chunk whose points' first choices among the
    clusters with room fit that room is assigned at once, which is exactly what choosing one point
    at a time gives (no choice in it can find its cluster full); a chunk that would overflow a
    cluster is assigned one point at a time."""
    n, k = d.shape
    if capacity * k < n:
        raise ValueError(f"capacity {capacity} x {k} clusters cannot hold {n} points")
    labels = np.full(n, -1)
    load = np.zeros(k, dtype=np.int64)
    order = np.argsort(d.min(1), kind="stable")
    for start in range(0, n, chunk):
        points = order[start : start + chunk]
        room = capacity - load
        choice = np.where(room > 0, d[points], np.inf).argmin(1)
        taken = np.bincount(choice, minlength=k)
        if (taken <= room).all():
            labels[points], load = choice, load + taken
            continue
        for i in points:
            c = int(np.where(load < capacity, d[i], np.inf).argmin())
            labels[i], load[c] = c, load[c] + 1
    return labels


def balanced_kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and centroids (K, D) of balanced k-means (module docstring)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"cannot cut {n} points into {k} clusters")
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(n)]]
    for _ in range(1, k):  # k-means++: next seed drawn in proportion to squared distance
        d = _sq_dist(x, np.array(centroids)).min(1)
        centroids.append(x[rng.choice(n, p=d / d.sum())] if d.sum() > 0 else x[rng.integers(n)])
    centroids = np.array(centroids)
    capacity = -(-n // k)
    labels = balanced_assign(_sq_dist(x, centroids), capacity)
    for _ in range(iterations):
        centroids = np.array([x[labels == c].mean(0) for c in range(k)])
        new = balanced_assign(_sq_dist(x, centroids), capacity)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels, centroids


def target_distribution(pool_share: np.ndarray, s: np.ndarray, gamma: float, keep: np.ndarray) -> np.ndarray:
    """p(c) ∝ P_pool(c) · S(c)^γ over the kept clusters (module docstring)."""
    weight = np.where(keep, pool_share * np.power(np.maximum(s, 0.0), gamma), 0.0)
    if weight.sum() <= 0:
        raise ValueError("no cluster is left to select from (all dropped, or the signal is zero everywhere)")
    return weight / weight.sum()


@dataclass
class Candidate:
    text_id: str
    cluster: int
    seconds: float  # estimated seconds of speech once synthesized


def draw(candidates: list[Candidate], p: np.ndarray, budget_seconds: float, seed: int) -> list[Candidate]:
    """Draw texts without replacement, cluster by p, until the estimated seconds reach the budget."""
    rng = np.random.default_rng(seed)
    by_cluster: dict[int, list[Candidate]] = {}
    for cand in candidates:
        by_cluster.setdefault(cand.cluster, []).append(cand)
    queues = {c: [items[i] for i in rng.permutation(len(items))] for c, items in by_cluster.items()}
    p = np.array(p, dtype=np.float64)
    chosen, seconds = [], 0.0
    while seconds < budget_seconds:
        live = np.array([p[c] if queues.get(c) else 0.0 for c in range(len(p))])
        if live.sum() <= 0:
            break  # every cluster with probability mass is exhausted
        cand = queues[int(rng.choice(len(p), p=live / live.sum()))].pop()
        chosen.append(cand)
        seconds += cand.seconds
    return chosen


@dataclass
class RoundPlan:
    """A round's decision, as a value: what was measured, what it implies, what will be spoken."""

    round: int
    gamma: float
    m: list[float]  # M(c) per cluster, from the probes
    cer: list[float]  # TTS character error rate per cluster, from the probes
    pool_share: list[float]
    kept: list[bool]
    p: list[float]
    budget_seconds: float
    selected: list[dict] = field(default_factory=list)  # Candidate fields
    kl: list[float] = field(default_factory=list)  # distillation KL(c) per cluster (empty: not measured)
    signal: str = SelectionSignal.MISALIGNMENT.value  # which of m / kl is S(c) in p

    def shares(self) -> list[float]:
        """Share of the selected (estimated) seconds per cluster."""
        totals = np.zeros(len(self.m))
        for c in self.selected:
            totals[c["cluster"]] += c["seconds"]
        return (totals / max(totals.sum(), 1e-9)).tolist()

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: Path) -> None:
        """Write the plan as JSON (a round's ``plan.json``), atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> RoundPlan:
        return cls(**json.loads(path.read_text()))


def plan_round(
    round_index: int,
    m: np.ndarray,
    cer: np.ndarray,
    pool_share: np.ndarray,
    candidates: list[Candidate],
    *,
    gamma: float,
    max_cer: float,
    budget_seconds: float,
    seed: int,
    kl: np.ndarray | None = None,
    signal: SelectionSignal | str = SelectionSignal.MISALIGNMENT,
) -> RoundPlan:
    """Measure -> distribution -> draw: the whole selection of one round, S(c) = ``m`` or ``kl`` as
    ``signal`` says (module docstring)."""
    signal = SelectionSignal(signal)
    if signal == SelectionSignal.DISTILLATION and kl is None:
        raise ValueError("selection.signal is distillation but no distillation KL per cluster was given")
    score = np.asarray(kl if signal == SelectionSignal.DISTILLATION else m)
    keep = np.asarray(cer) <= max_cer
    p = target_distribution(np.asarray(pool_share), score, gamma, keep)
    chosen = draw(candidates, p, budget_seconds, seed)
    return RoundPlan(
        round=round_index,
        gamma=gamma,
        m=[float(v) for v in m],
        cer=[float(v) for v in cer],
        pool_share=[float(v) for v in pool_share],
        kept=[bool(v) for v in keep],
        p=p.tolist(),
        budget_seconds=budget_seconds,
        selected=[asdict(c) for c in chosen],
        kl=[] if kl is None else [float(v) for v in kl],
        signal=signal.value,
    )
