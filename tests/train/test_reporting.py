"""The callback that records Ray Train's reports: metrics.jsonl lines and TensorBoard scalars."""

from __future__ import annotations

import json
import pickle

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from salad_ray.train.reporting import MetricsLog


def report(log: MetricsLog, step: int, loss: float) -> None:
    ranks = [{"step": step, "loss": loss, "samples": 8 * step}] * 2  # every rank reports the same
    log.after_report(run_context=None, metrics=ranks, checkpoint=None)


def test_each_report_is_one_line_with_its_job_and_time(tmp_path):
    log = MetricsLog("stage1", tmp_path / "metrics.jsonl")
    report(log, 1, 2.5)
    report(log, 2, 2.0)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"], r["loss"], r["samples"]) for r in lines] == [
        ("stage1", 1, 2.5, 8),
        ("stage1", 2, 2.0, 16),
    ]
    assert lines[0]["time"] <= lines[1]["time"]


def test_tensorboard_gets_every_number_at_its_step_and_the_callback_travels_after_use(tmp_path):
    log = MetricsLog("stage2-active", tmp_path / "m.jsonl", "tensorboard", tmp_path / "tracking")
    report(log, 4, 1.5)
    clone = pickle.loads(pickle.dumps(log))  # Ray sends the callback to its controller
    report(clone, 8, 1.25)
    events = EventAccumulator(str(tmp_path / "tracking" / "tensorboard" / "stage2-active"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "samples"}
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(4, 1.5), (8, 1.25)]


def test_a_tracker_without_a_directory_is_refused(tmp_path):
    with pytest.raises(ValueError, match="tracking directory"):
        MetricsLog("stage1", tmp_path / "m.jsonl", "tensorboard")
