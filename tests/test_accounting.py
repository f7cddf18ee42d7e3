"""Counting what a pipeline did (salad_ray.accounting): records accounted for, TTS actors' time."""

from __future__ import annotations

import pytest

from salad_ray.accounting import PipelineReport, Reason, tts_usage


def test_every_record_is_written_quarantined_or_skipped():
    report = PipelineReport("natural", inputs=5, written=2)
    report.count(Reason.EMPTY, 2)
    report.count(Reason.DONE)
    assert report.accounted() == report.inputs == 5
    assert report.quarantined == {Reason.EMPTY.value: 2} and report.skipped == {Reason.DONE.value: 1}


def test_an_actor_is_idle_between_its_calls_and_not_before_its_first_or_after_its_last():
    # actor a: calls [0, 4] and [6, 10] (idle 2 s between); actor b joins late: [5, 8] (never idle)
    busy, idle = tts_usage([0.0, 6.0, 5.0], [4.0, 10.0, 8.0], ["a", "a", "b"])
    assert (busy, idle) == (11.0, 2.0)
    report = PipelineReport("heldout", tts_busy_s=busy, tts_idle_s=idle)
    assert report.tts_idle_share == pytest.approx(2 / 13)
    assert "TTS actors idle 15 %" in report.summary()
    assert tts_usage([], [], []) == (0.0, 0.0) and PipelineReport("text").tts_idle_share == 0.0
    assert "TTS" not in PipelineReport("text").summary()
