"""A run's milestones (salad_ray.rundir), without Ray: which student scores each round, and which
students each arm's training call of a round saves on its way."""

from __future__ import annotations

import pytest

from salad_ray.config import load_config
from salad_ray.rundir import ACTIVE, UNIFORM, round_end, round_exports, student_for_round


def stages(rounds: int, steps: int):
    return load_config(
        "smoke", overrides=[f"stages.stage2_rounds={rounds}", f"stages.stage2_steps_per_round={steps}"]
    ).stages


def saved(milestones) -> list[tuple[str, int, str]]:
    return [(m.job, m.step, m.student) for m in milestones]


def test_round_r_is_scored_by_the_active_half_way_student_of_round_r_minus_1():
    assert saved(student_for_round(r, stages(3, 20)) for r in (1, 2, 3)) == [
        ("stage1", 4, "stage1"),
        ("stage2-active", 10, "active-round-1-half"),
        ("stage2-active", 30, "active-round-2-half"),
    ]


def test_the_active_arm_saves_the_scoring_student_half_way_through_each_round_but_the_last():
    """Each round is one call to its end; the active arm's call saves the half-way student on its
    way, strictly inside the round (after its first step, before its last)."""
    three = stages(3, 20)
    assert [saved(round_exports(ACTIVE, r, three)) for r in (1, 2, 3)] == [
        [("stage2-active", 10, "active-round-1-half")],
        [("stage2-active", 30, "active-round-2-half")],
        [],
    ]
    assert [round_exports(UNIFORM, r, three) for r in (1, 2, 3)] == [[], [], []]
    assert [saved([round_end(arm, r, three)]) for arm in (ACTIVE, UNIFORM) for r in (1, 2, 3)] == [
        [(arm.job, 20 * r, f"{arm.name}-round-{r}")] for arm in (ACTIVE, UNIFORM) for r in (1, 2, 3)
    ]
    assert [m.label for m in round_exports(ACTIVE, 2, three)] == ["active round 2 half"]
    assert round_end(ACTIVE, 3, three).label == "stage II active"


@pytest.mark.parametrize("steps", [2, 3, 20, 2500])
def test_the_scoring_student_of_a_round_exists_before_the_previous_round_ends(steps):
    """For r >= 2, saved inside round r - 1: after training on its selection, before it ends (so
    round r is prepared while round r - 1 trains on)."""
    for r in range(2, 6):
        scorer = student_for_round(r, stages(6, steps))
        assert (scorer.job, scorer.round) == (ACTIVE.job, r - 1)
        assert (r - 2) * steps < scorer.step < (r - 1) * steps


def test_the_local_preset_runs_the_continuous_loop(local_config):
    """At least three rounds, at least two of them scored by a stage-II student."""
    stages = local_config.stages
    assert stages.stage2_rounds >= 3
    scored = [student_for_round(r, stages) for r in range(1, stages.stage2_rounds + 1)]
    assert sum(m.job != "stage1" for m in scored) >= 2


def test_arm_names_come_in_the_arms_order_whatever_order_they_are_found_in():
    from salad_ray.rundir import in_arm_order

    assert in_arm_order(["uniform", None, "stage1", "active", "uniform"]) == ["active", "uniform"]
    assert in_arm_order([]) == []
