"""The driver's one-line status: what runs, the trainers' steps, the pipelines' progress, the budget used.

On a terminal the line is redrawn in place below the log records (salad_ray.console.live, rich's
own refresh); elsewhere the scheduler's tick (:func:`salad_ray.phases.run_graph`'s ``on_tick``)
logs the line when it changed, or after ``quiet`` seconds without a change. Work that runs side by
side (the data pipelines, the arms of stage II) shows in lanes of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from salad_ray import console, rundir, timeline
from salad_ray.config import RunConfig
from salad_ray.console import log
from salad_ray.phases import Phase
from salad_ray.rundir import RunDir
from salad_ray.runstate import RunState


class Status:
    def __init__(
        self,
        config: RunConfig,
        run: RunDir,
        state: RunState,
        pipelines: Callable[[], dict[str, tuple[int, int]]],
        quiet: float = 120.0,
    ):
        self.config, self.run, self.state, self.pipelines = config, run, state, pipelines
        self.quiet = quiet
        self.lanes: dict[str, str] = {}
        self._live = console.live(self.line)
        self._logged, self._logged_at = "", 0.0

    def __enter__(self) -> Status:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()

    def tick(self) -> None:
        """Off a terminal: log the line when it changed, or when ``quiet`` seconds passed without."""
        if self._live is not None:
            return
        line = self.line()
        if line != self._logged or time.time() - self._logged_at >= self.quiet:
            log.info("%s", line)
            self._logged, self._logged_at = line, time.time()

    def show(self, lane: str, text: str) -> None:
        self.lanes[lane] = text

    def clear(self, lane: str) -> None:
        self.lanes.pop(lane, None)

    def started(self, phase: Phase) -> None:
        self.show(phase.name, phase.name)
        log.info("phase %s", phase.name)

    def ended(self, phase: Phase, seconds: float, error: BaseException | None) -> None:
        """A phase's end: its lane cleared, and if it finished, its span added to the run's timeline."""
        self.clear(phase.name)
        if error is not None:
            log.error("phase %s failed after %.0f s: %r", phase.name, seconds, error)
            return
        timeline.record(self.run.timeline, phase, time.time() - seconds, time.time())
        log.info("phase %s done in %.0f s", phase.name, seconds)

    def trainer(self) -> str:
        """The step of every training job still under way (else of the last one to log), against the
        step of its last milestone. A line being appended as it is read (the controller's record of
        Ray Train's reports) is not a step yet: it is left out."""
        last: dict[str, int] = {}
        if self.run.metrics.is_file():
            for line in self.run.metrics.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                last[record["stage"]] = record["step"]
        if not last:
            return "-"
        total: dict[str, int] = {}
        for m in rundir.milestones(self.config.stages, rundir.run_arms(self.config)):
            total[m.job] = max(total.get(m.job, 0), m.step)
        running = [job for job, step in last.items() if step < total[job]] or [list(last)[-1]]
        return ", ".join(f"{job} {last[job]}/{total[job]}" for job in running)

    def budget_used(self) -> str:
        """Synthetic seconds made so far against the budget of the rounds planned so far."""
        done = [r for arm in self.state.notes.rounds.values() for r in arm.values()]
        budget = self.config.selection.round_budget_seconds * len(done)
        return f"{sum(r.seconds for r in done):.0f}/{budget:.0f} s" if done else "-"

    def line(self) -> str:
        lanes = dict(self.lanes)
        progress = self.run.eval / rundir.EVAL_PROGRESS
        if rundir.EVAL in lanes and progress.is_file():
            lanes[rundir.EVAL] = f"eval: {progress.read_text().strip()}"
        work = "; ".join(lanes.values()) or "starting"
        pipelines = ", ".join(f"{name} {done}/{total}" for name, (done, total) in self.pipelines().items())
        return (
            f"{work} | trainer {self.trainer()} | pipelines {pipelines or '-'}"
            f" | budget used {self.budget_used()}"
        )
