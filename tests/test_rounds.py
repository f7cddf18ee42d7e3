"""Stage II's rounds (salad_ray.rounds), without Ray: probes and plans drawn from finished work, and
gap notes in milestone order."""

from __future__ import annotations

from salad_ray.config import load_config
from salad_ray.report import ordered_gaps
from salad_ray.rundir import ACTIVE, RunDir
from salad_ray.selection import RoundPlan


def test_gap_notes_read_in_milestone_order_whatever_order_they_were_noted_in():
    """The warm-up, stage I, then each arm round by round (the report and the summary)."""
    config = load_config("smoke", overrides=["stages.stage2_rounds=3"])
    noted = ["uniform round 1", "stage II active", "active round 2", "stage I", "warm-up", "active round 1"]
    gaps = {label: {"heldout_m": 1.0} for label in [*noted, "stage II uniform"]}
    assert [label for label, _ in ordered_gaps(config, gaps)] == [
        "warm-up",
        "stage I",
        "active round 1",
        "active round 2",
        "stage II active",
        "uniform round 1",
        "stage II uniform",
    ]


# ------------------------------------------------------------------- planning a round (no Ray)


def toy_pool(per_cluster: int = 6, clusters: int = 3):
    import numpy as np
    import pandas as pd

    from salad_ray.pool import Pool

    rows = [
        {"text_id": f"t{c}{i}", "text": f"text {c} {i}", "domain": "d", "words": 10, "cluster": c}
        for c in range(clusters)
        for i in range(per_cluster)
    ]
    return Pool(pd.DataFrame(rows), np.zeros((clusters, 4), dtype=np.float32))


def test_probes_are_drawn_per_cluster_reproducibly_and_never_from_used_texts(tmp_path):

    from salad_ray import rounds
    from salad_ray.runstate import Notes

    config = load_config("smoke", overrides=["selection.probes_per_cluster=2"])
    run, pool = RunDir(tmp_path), toy_pool()
    first = rounds.draw_probes(config, run, Notes(), pool, 1)
    assert list(first.groupby("cluster").size()) == [2, 2, 2]
    assert first.equals(rounds.draw_probes(config, run, Notes(), pool, 1))  # seeded by (seed, round)
    notes = Notes(probes={1: list(first["text_id"])})
    three = [0.0, 0.0, 0.0]
    selected = [
        {"text_id": "t00", "cluster": 0, "seconds": 2.0},
        {"text_id": "t11", "cluster": 1, "seconds": 2.0},
    ]
    RoundPlan(1, 5.0, three, three, [1 / 3] * 3, [True] * 3, [1 / 3] * 3, 4.0, selected).save(
        run.plan(ACTIVE, 1)
    )
    used = rounds.used_text_ids(run, notes, ACTIVE, 2)
    assert used == set(first["text_id"]) | {"t00", "t11"}
    second = rounds.draw_probes(config, run, notes, pool, 2)
    assert not set(second["text_id"]) & used and len(second) == 6


def test_a_round_plan_reads_the_probe_scores_and_draws_only_free_texts(tmp_path):
    import pandas as pd

    from salad_ray import rounds
    from salad_ray.runstate import Notes

    config = load_config("smoke", overrides=["selection.round_budget_seconds=8"])
    run, pool = RunDir(tmp_path), toy_pool()
    probes = ["t00", "t10", "t20"]
    scores = pd.DataFrame(
        {
            "cluster": [0, 1, 2],
            "m_sum": [1.0, 4.0, 9.0],
            "m_count": [1, 1, 1],
            "d_sum": [1.0, 1.0, 1.0],
            "cer": [0.0, 0.0, 0.0],
            "duration": [2.0, 2.0, 2.0],
            "words": [10, 10, 10],
        }
    )
    run.probe_scores(1).parent.mkdir(parents=True)
    scores.to_parquet(run.probe_scores(1))
    plan = rounds.plan_arm_round(config, run, Notes(probes={1: probes}), pool, ACTIVE, 1)
    assert plan.m == [1.0, 4.0, 9.0] and plan.p[2] > plan.p[1] > plan.p[0]  # gamma 5 on M
    chosen = rounds.chosen_texts(pool, plan)
    assert list(chosen["text_id"]) == [c["text_id"] for c in plan.selected]
    assert not set(chosen["text_id"]) & set(probes) and sum(c["seconds"] for c in plan.selected) >= 8
