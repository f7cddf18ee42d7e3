"""Stage II's round schedule, without Ray: which student scores each round, and which stores each
training call of a round reads from which step."""

from __future__ import annotations

import pytest

from salad_ray.run import ACTIVE, UNIFORM, Driver, round_calls, student_for_round
from salad_ray.train import launcher
from salad_ray.train.mixture import SampleRef


def test_round_r_is_scored_by_the_active_half_way_student_of_round_r_minus_1():
    assert [student_for_round(r, 20) for r in (1, 2, 3)] == [
        ("stage1", 0),
        ("active-round-1-half", 10),
        ("active-round-2-half", 30),
    ]


def test_the_active_arm_saves_the_scoring_student_half_way_through_each_round_but_the_last():
    assert [round_calls(ACTIVE, r, 3, 20) for r in (1, 2, 3)] == [
        [(10, "active-round-1-half"), (20, "active-round-1")],
        [(30, "active-round-2-half"), (40, "active-round-2")],
        [(60, "active-round-3")],
    ]
    assert [round_calls(UNIFORM, r, 3, 20) for r in (1, 2, 3)] == [
        [(20 * r, f"uniform-round-{r}")] for r in (1, 2, 3)
    ]


@pytest.mark.parametrize("steps", [2, 3, 20, 2500])
def test_the_scoring_student_of_a_round_exists_before_the_previous_round_ends(steps):
    """For r >= 2, saved inside round r - 1: after training on its selection, before it ends (so
    round r is prepared while round r - 1 trains on)."""
    for r in range(2, 6):
        name, step = student_for_round(r, steps)
        assert name == ACTIVE.half_student(r - 1)
        assert (r - 2) * steps < step < (r - 1) * steps


def test_the_local_preset_runs_the_continuous_loop(local_config):
    """At least three rounds, at least two of them scored by a stage-II student."""
    stages = local_config.stages
    assert stages.stage2_rounds >= 3
    scored = [
        student_for_round(r, stages.stage2_steps_per_round)[0] for r in range(1, stages.stage2_rounds + 1)
    ]
    assert sum(name != "stage1" for name in scored) >= 2


@pytest.mark.parametrize("arm", [ACTIVE, UNIFORM])
def test_each_training_call_extends_the_stream_and_round_r_reads_its_selection(
    arm, local_config, tmp_path, monkeypatch
):
    """Every call of an arm (the local preset's rounds) reads the stores of the rounds it reaches,
    round r's from step (r - 1)·S on; no call changes the steps an earlier one trained, and round r's
    steps read all of round r's selection (sizes below its expected number of active positions)."""
    mix = local_config.stages.stage2_mix
    active = (
        local_config.stages.stage2_steps_per_round
        * launcher.global_batch(local_config)
        * mix["active"]
        / sum(mix.values())
    )
    sizes = {"natural": 30, "text": 30}
    sizes |= {arm.store(r): int(active * f) for r, f in ((1, 0.6), (2, 0.45), (3, 0.65))}

    def pool_refs(store, source: str) -> list[SampleRef]:
        name = store.root.name
        return [SampleRef(source, f"{name}.parquet", row, f"{name}-{row}") for row in range(sizes[name])]

    monkeypatch.setattr(launcher, "pool_refs", pool_refs)
    driver = Driver(local_config, tmp_path)
    per_step = launcher.global_batch(local_config) * local_config.train.grad_accum
    per_round = local_config.stages.stage2_steps_per_round * per_step
    trained: list[SampleRef] = []
    stages = local_config.stages
    rounds = [round_calls(arm, r, stages.stage2_rounds, stages.stage2_steps_per_round) for r in (1, 2, 3)]
    assert [len(calls) for calls in rounds] == ([2, 2, 1] if arm == ACTIVE else [1, 1, 1])
    for until, _ in [call for calls in rounds for call in calls]:
        job, starts = driver.stage_job(until, arm)
        reached = -(-until // stages.stage2_steps_per_round)
        assert job.stores["active"] == [str(tmp_path / "data" / arm.store(r)) for r in range(1, reached + 1)]
        assert starts == {"active": [(r - 1) * stages.stage2_steps_per_round for r in range(1, reached + 1)]}
        stream = launcher.stage_stream(local_config, job, starts)
        assert stream[: len(trained)] == trained
        trained = stream[: until * per_step]
    for r in (1, 2, 3):
        window = trained[(r - 1) * per_round : r * per_round]
        reads = {ref.sample_id for ref in window if ref.source == "active"}
        assert {f"{arm.store(r)}-{row}" for row in range(sizes[arm.store(r)])} <= reads
