"""Where a run's time goes (salad_ray.timeline): phases on one time axis, the trainer's wait for data."""

from __future__ import annotations

import pytest

from salad_ray import timeline
from salad_ray.driver import Driver
from salad_ray.rundir import RunDir


def test_every_phase_of_the_local_graph_has_a_lane_and_the_timeline_is_drawn(local_config, tmp_path):
    phases = [p.name for p in Driver(local_config, RunDir(tmp_path)).graph()]
    lanes = {name: timeline.lane(name) for name in phases}
    assert lanes["natural"] == "data" and lanes["round-2/scores"] == "probes, scores"
    assert (
        lanes["active/round-1/half"] == "active: train" and lanes["uniform/round-3/plan"] == "uniform: train"
    )
    path = tmp_path / "timeline.jsonl"
    for n, name in enumerate(phases):
        timeline.record(path, name, 100.0 + 10 * n, 130.0 + 10 * n)
    assert [r["phase"] for r in timeline.read(path)] == phases
    assert timeline.plot(timeline.read(path), tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").stat().st_size > 5000
    assert not timeline.plot([], tmp_path / "none.png")


def test_the_trainer_wait_share_is_summed_over_the_windows_of_the_jobs_asked_for():
    metrics = [
        {"stage": "stage2-active", "step": 2, "seconds": 10.0, "data_wait_s": 1.0},
        {"stage": "stage2-active", "step": 4, "seconds": 30.0, "data_wait_s": 1.0},
        {"stage": "stage1", "step": 2, "seconds": 50.0, "data_wait_s": 25.0},
        {"stage": "stage2-active", "step": 5},  # an evaluation-only record: no window
    ]
    assert timeline.wait_share(metrics, {"stage2-active"}) == pytest.approx(2.0 / 40.0)
    assert timeline.wait_share(metrics, {"stage2-uniform"}) is None
