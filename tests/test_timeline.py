"""Where a run's time goes (salad_ray.timeline): phases on one time axis, the trainer's wait for data."""

from __future__ import annotations

import pytest

from salad_ray import timeline
from salad_ray.driver import Driver
from salad_ray.rundir import RunDir


def test_every_phase_of_the_local_graph_but_the_half_way_waits_has_a_lane_and_the_timeline_is_drawn(
    local_config, tmp_path
):
    """The half-way students are saved by their round's training call: the phases that wait for
    them have no lane and are not drawn (their time is the call's)."""
    phases = Driver(local_config, RunDir(tmp_path)).graph()
    lanes = {p.name: p.lane for p in phases}
    assert [name for name, lane in lanes.items() if not lane] == [
        "active/round-1/half",
        "active/round-2/half",
    ]
    assert lanes["natural"] == "data" and lanes["round-2/scores"] == "probes, scores"
    assert lanes["active/round-1/train"] == lanes["active/round-1/synthesis"] == "active arm"
    assert lanes["uniform/round-3/plan"] == "uniform arm" and lanes["report"] == "eval, report"
    assert {p.name for p in phases if p.training} == {
        "warmup",
        "stage1",
        *(f"{arm}/round-{r}/train" for arm in ("active", "uniform") for r in (1, 2, 3)),
    }
    path = tmp_path / "timeline.jsonl"
    for n, phase in enumerate(phases):
        timeline.record(path, phase, 100.0 + 10 * n, 130.0 + 10 * n)
    records = timeline.read(path)
    assert [(r["phase"], r["lane"], r["training"]) for r in records] == [
        (p.name, p.lane, p.training) for p in phases
    ]
    assert timeline.plot(records, tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").stat().st_size > 5000
    assert not timeline.plot([], tmp_path / "none.png")


def test_lines_written_before_lanes_were_recorded_still_draw(tmp_path):
    path = tmp_path / "timeline.jsonl"
    path.write_text(
        '{"phase": "heldout", "start": 1.0, "end": 5.0}\n{"phase": "stage1", "start": 5.0, "end": 9.0}\n'
    )
    assert [r["lane"] for r in timeline.read(path)] == ["phases", "phases"]
    assert timeline.plot(timeline.read(path), tmp_path / "timeline.png")


def test_the_trainer_wait_share_is_summed_over_the_windows_of_the_jobs_asked_for():
    metrics = [
        {"stage": "stage2-active", "step": 2, "seconds": 10.0, "data_wait_s": 1.0},
        {"stage": "stage2-active", "step": 4, "seconds": 30.0, "data_wait_s": 1.0},
        {"stage": "stage1", "step": 2, "seconds": 50.0, "data_wait_s": 25.0},
        {"stage": "stage2-active", "step": 5},  # an evaluation-only record: no window
    ]
    assert timeline.wait_share(metrics, {"stage2-active"}) == pytest.approx(2.0 / 40.0)
    assert timeline.wait_share(metrics, {"stage2-uniform"}) is None
