"""The phase graph and its scheduler (salad_ray.phases), without Ray."""

from __future__ import annotations

import threading
import time

import pytest

from salad_ray.phases import GraphError, Phase, check_graph, run_graph


class Recorder:
    """Phases that record themselves done, in the order they finished."""

    def __init__(self):
        self.done: list[str] = []
        self.lock = threading.Lock()

    def phase(self, name: str, needs=(), work=lambda: None, **kw) -> Phase:
        def run():
            work()
            with self.lock:
                self.done.append(name)

        return Phase(name, run, tuple(needs), **kw)

    def is_done(self, name: str) -> bool:
        return name in self.done


def test_phases_run_after_what_they_need_and_side_by_side_where_the_graph_allows():
    rec = Recorder()
    both = threading.Barrier(2, timeout=10)  # broken (and raising) unless b and c run at once
    phases = [
        rec.phase("d", ["b", "c"]),
        rec.phase("b", ["a"], both.wait),
        rec.phase("c", ["a"], both.wait),
        rec.phase("a"),
    ]
    run_graph(phases, rec.is_done)
    assert rec.done[0] == "a" and set(rec.done[1:3]) == {"b", "c"} and rec.done[3] == "d"


def test_a_done_phase_is_not_run_again_but_an_always_phase_is():
    rec = Recorder()
    rec.done = ["a"]
    ran = []
    phases = [
        rec.phase("a", work=lambda: ran.append("a")),
        rec.phase("report", ["a"], lambda: ran.append("report"), always=True),
    ]
    run_graph(phases, rec.is_done)
    assert ran == ["report"]


def test_the_scheduler_ticks_while_phases_run_and_not_after():
    rec = Recorder()
    release = threading.Event()
    ticks: list[int] = []

    def tick():
        ticks.append(len(rec.done))
        if len(ticks) == 3:
            release.set()  # the slow phase ends after the third tick

    run_graph(
        [rec.phase("slow", work=lambda: release.wait(10))], rec.is_done, on_tick=tick, tick_seconds=0.05
    )
    after = len(ticks)
    time.sleep(0.2)
    assert after >= 3 and set(ticks) == {0} and rec.done == ["slow"]  # each tick while it ran
    assert len(ticks) == after  # none once the graph is done


def test_a_tick_that_fails_is_logged_and_the_run_goes_on(caplog):
    rec = Recorder()
    release = threading.Event()

    def tick():
        release.set()
        raise OSError("status file gone")

    run_graph(
        [rec.phase("slow", work=lambda: release.wait(10))], rec.is_done, on_tick=tick, tick_seconds=0.05
    )
    assert rec.done == ["slow"] and "status file gone" in caplog.text


def test_a_failed_phase_stops_what_needs_it_and_is_raised_after_the_running_ones_end():
    rec = Recorder()
    started = threading.Event()

    def fail():
        started.wait(10)
        raise RuntimeError("boom")

    phases = [
        rec.phase("slow", work=lambda: started.set()),
        rec.phase("bad", work=fail),
        rec.phase("after", ["bad"]),
    ]
    with pytest.raises(RuntimeError, match="boom"):
        run_graph(phases, rec.is_done)
    assert rec.done == ["slow"]


def test_graphs_that_can_never_finish_are_rejected_before_anything_runs():
    rec = Recorder()
    with pytest.raises(GraphError, match="needs \\['nowhere'\\]"):
        run_graph([rec.phase("a", ["nowhere"])], rec.is_done)
    with pytest.raises(GraphError, match="a cycle among \\['a', 'b'\\]"):
        check_graph([rec.phase("a", ["b"]), rec.phase("b", ["a"])])
    with pytest.raises(GraphError, match="declared twice"):
        check_graph([rec.phase("a"), rec.phase("a")])
    with pytest.raises(GraphError, match="ended without recording itself done"):
        run_graph([Phase("lazy", lambda: None)], rec.is_done)
    assert rec.done == []
