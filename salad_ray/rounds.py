"""Planning a stage-II round from finished work: which texts are free, which are probed, which drawn.

Every function here reads what earlier phases left (the pool, the probes' scores, earlier plans and
the run state's notes) and nothing else, so a resumed run plans exactly what an uninterrupted one
does. No Ray: the driver runs the pipelines these plans feed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from salad_ray.config import RunConfig
from salad_ray.corpus import TextRecord
from salad_ray.pool import Pool
from salad_ray.rundir import ACTIVE, Arm, RunDir
from salad_ray.runstate import Notes
from salad_ray.scoring import per_cluster
from salad_ray.selection import Candidate, RoundPlan, plan_round


def used_text_ids(run: RunDir, notes: Notes, arm: Arm, before_round: int) -> set[str]:
    """Texts an arm may not draw in a round: every probe so far and the arm's earlier selections."""
    used: set[str] = set()
    for r in range(1, before_round + 1):
        used |= set(notes.probes.get(r, []))
    for r in range(1, before_round):
        if (plan := run.plan(arm, r)).is_file():
            used |= {c["text_id"] for c in RoundPlan.load(plan).selected}
    return used


def draw_probes(config: RunConfig, run: RunDir, notes: Notes, pool: Pool, r: int) -> pd.DataFrame:
    """Round r's probes: ``selection.probes_per_cluster`` texts of each cluster, drawn (seeded by the
    run's seed and r) from the texts no probe and no active selection before round r has used."""
    free = pool.texts[~pool.texts["text_id"].isin(used_text_ids(run, notes, ACTIVE, r))]
    rng = np.random.default_rng([config.seed, r])
    per_cluster = config.selection.probes_per_cluster
    return pd.concat([g.iloc[rng.permutation(len(g))[:per_cluster]] for _, g in free.groupby("cluster")])


def plan_arm_round(config: RunConfig, run: RunDir, notes: Notes, pool: Pool, arm: Arm, r: int) -> RoundPlan:
    """The arm's selection of round r (salad_ray.selection.plan_round) from round r's probe scores:
    each free text's duration estimated from the probes' seconds per word."""
    sel = config.selection
    scores = pd.read_parquet(run.probe_scores(r))
    m, cer, kl = per_cluster(scores, pool.clusters)
    seconds_per_word = scores["duration"].sum() / max(scores["words"].sum(), 1)
    used = used_text_ids(run, notes, arm, r)
    candidates = [
        Candidate(t.text_id, int(t.cluster), float(t.words * seconds_per_word))
        for t in pool.texts.itertuples()
        if t.text_id not in used
    ]
    return plan_round(
        r,
        m,
        cer,
        pool.share(),
        candidates,
        gamma=arm.gamma,
        max_cer=sel.max_cer,
        budget_seconds=sel.round_budget_seconds,
        seed=config.seed * 1000 + r,
        kl=kl,
        signal=sel.signal,
    )


def chosen_texts(pool: Pool, plan: RoundPlan) -> pd.DataFrame:
    """The pool's rows of the texts a plan drew, in the plan's order."""
    return pool.texts.set_index("text_id").loc[[c["text_id"] for c in plan.selected]].reset_index()


def records(frame: pd.DataFrame) -> list[TextRecord]:
    return [TextRecord(t.text_id, t.text, t.domain) for t in frame.itertuples()]
