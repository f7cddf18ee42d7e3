"""The driver's phase graph (salad_ray.driver), without Ray: every preset's can finish, and the
continuous loop's order of scoring and probing."""

from __future__ import annotations

import pytest

import salad_ray.phases
from salad_ray.config import PRESETS, load_config
from salad_ray.driver import Driver
from salad_ray.phases import check_graph
from salad_ray.rundir import (
    ACTIVE,
    RunDir,
    half_way,
    probes_phase,
    round_end,
    scores_phase,
    student_for_round,
)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_declares_a_graph_that_can_finish(preset, tmp_path):
    check_graph(Driver(load_config(preset), RunDir(tmp_path)).graph())


def test_each_round_is_scored_after_its_student_is_saved_and_probed_after_the_active_plans_before_it(
    local_config, tmp_path
):
    """The graph encodes salad_ray.rundir.student_for_round: round r's scores need the phase that
    saves round r's scoring student; its probes need the active arm's plan of round r - 1."""
    graph = {p.name: p for p in Driver(local_config, RunDir(tmp_path)).graph()}
    stages = local_config.stages
    for r in range(1, stages.stage2_rounds + 1):
        scorer = student_for_round(r, stages)
        student = str(RunDir(tmp_path).student(scorer).relative_to(tmp_path))
        saves = [p.name for p in graph.values() if p.produces == student]
        assert saves and saves[0] in graph[scores_phase(r)].needs
        if r > 1:
            assert ACTIVE.phase(r - 1, "plan") in graph[probes_phase(r)].needs
    assert graph[probes_phase(1)].needs == ("pool",)  # beside the warm-up and stage I


def test_a_half_way_phase_records_the_student_its_call_saved_and_fails_if_the_call_ended_without_it(
    local_config, tmp_path, monkeypatch
):
    """The active arm's half-way student is saved by its round's training call on its way: the
    phase that waits for it finishes once the folder is there, and fails (rather than wait for
    ever) once the call has ended without it."""
    monkeypatch.setattr(salad_ray.phases, "POLL_SECONDS", 0.01)
    run, stages = RunDir(tmp_path), local_config.stages
    driver = Driver(local_config, run)
    half, call = half_way(1, stages), round_end(ACTIVE, 1, stages)
    driver._ended.add(call.phase)
    with pytest.raises(RuntimeError, match="active/round-1/train ended without saving"):
        driver.await_student(half, call)
    assert half.phase not in driver.state.done
    run.student(half).mkdir(parents=True)
    driver.await_student(half, call)
    assert half.phase in driver.state.done
