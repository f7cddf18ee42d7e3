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


def test_the_run_clock_counts_the_union_of_phases_and_training_windows_and_stops_in_between():
    phases = [{"start": 0.0, "end": 10.0}, {"start": 5.0, "end": 20.0}]  # overlapping: counted once
    metrics = [
        {"stage": "stage1", "step": 5, "time": 110.0, "seconds": 10.0},  # its window: [100, 110]
        {"stage": "stage1", "step": 6, "time": 112.0},  # an evaluation-only record: no window
    ]
    clock = timeline.RunClock(phases, metrics)
    assert [clock(t) for t in (-1.0, 0.0, 15.0, 50.0, 105.0, 200.0)] == [0.0, 0.0, 15.0, 20.0, 25.0, 30.0]
    assert clock.metrics(metrics)[1]["time"] == 30.0
    assert clock.phases(phases)[1] == {"start": 5.0, "end": 20.0}
    assert timeline.RunClock([], metrics)(200.0) == 200.0  # no phases recorded: the wall clock


def test_a_run_paused_between_stage_i_and_stage_ii_has_the_learning_curve_of_one_that_was_not():
    """The minutes axis of the report (salad_ray.eval.curve.minutes_axis) on the run's clock: a run
    killed after stage I and resumed an hour later gets the minutes of the run that went straight on."""
    from salad_ray.eval.curve import minutes_axis

    def run(pause: float) -> tuple[list[dict], list[dict]]:
        phases = [{"phase": "stage1", "start": 0.0, "end": 300.0}]
        metrics = [
            {
                "stage": "stage1",
                "step": s,
                "time": 60.0 * s,
                "seconds": 60.0,
                "samples": 4 * s,
                "samples_per_s": 4 / 60,
            }
            for s in (1, 2, 3, 4, 5)
        ]
        # the resumed session: its stage II starts 30 s after it does, with its pipelines beside it
        t = 300.0 + pause
        phases += [
            {"phase": "round-1/probes", "start": t + 30.0, "end": t + 200.0},
            {"phase": "active/round-1/train", "start": t + 30.0, "end": t + 330.0},
        ]
        metrics += [
            {
                "stage": "stage2-active",
                "step": s,
                "time": t + 30.0 + 100.0 * s,
                "seconds": 100.0,
                "samples": 16 * s,
                "samples_per_s": 0.16,
            }
            for s in (1, 2, 3)
        ]
        return phases, metrics

    def minutes(pause: float) -> dict:
        phases, metrics = run(pause)
        return minutes_axis(timeline.RunClock(phases, metrics).metrics(metrics))[0]

    straight, paused = minutes(0.0), minutes(3600.0)
    assert paused == pytest.approx(straight)
    assert paused[("stage2-active", 3)] == pytest.approx(
        (300.0 + 300.0) / 60
    )  # the 30 s gap stops the clock too
    assert minutes_axis(run(3600.0)[1])[0][("stage2-active", 3)] == pytest.approx((3600 + 630.0) / 60)
