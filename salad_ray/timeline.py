"""Where a run's time goes: every phase with its start and end on one time axis, and the share of
stage II's training time the trainer spent waiting for data.

The driver appends one line per finished phase to ``timeline.jsonl`` (salad_ray.rundir), a resumed
run after the lines of the runs before it: its name, the lane its :class:`Phase` is drawn in (work
that runs side by side gets lanes of its own; an arm's plan and synthesis share its lane with its
training, in another colour), whether it trains, its start and end. The report draws them
(``timeline.png``), all but phases with no lane: a wait for a student that a training call saves on
its way, whose time is the call's. The trainer's
wait is what rank 0 spent blocked on its data stream (salad_ray.train.loop's ``data_wait_s``):
wait share = Σ data_wait_s / Σ seconds over the metrics windows of the stage-II jobs.

A run killed and continued later (``--resume``) would put its pause on every time axis. The report
reads them on the run's own clock instead (:class:`RunClock`), which stops while nothing was at work.
"""

from __future__ import annotations

import bisect
import json
from itertools import accumulate
from pathlib import Path

from salad_ray.files import append_json_line, atomic_path
from salad_ray.phases import Phase


def record(path: Path, phase: Phase, start: float, end: float) -> None:
    """Append a finished phase with its lane and kind (wall-clock seconds since the epoch)."""
    append_json_line(
        path,
        {"phase": phase.name, "lane": phase.lane, "training": phase.training, "start": start, "end": end},
    )


def read(path: Path) -> list[dict]:
    """The records, oldest first; lines written before lanes were recorded share one lane."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"lane": "phases", "training": False, **r} for r in records]


def plot(records: list[dict], path: Path) -> bool:
    """One bar per phase, lanes top to bottom, minutes since the first phase started; False if empty."""
    records = [r for r in records if r["lane"]]
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = sorted(records, key=lambda r: r["start"])
    t0 = records[0]["start"]
    names = list(dict.fromkeys(r["lane"] for r in records))  # lanes in the order they first started
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for r in records:
        y = names.index(r["lane"])
        color = "tab:blue" if r["training"] else "tab:orange"
        ax.barh(y, (r["end"] - r["start"]) / 60, left=(r["start"] - t0) / 60, color=color, alpha=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("run minutes, pauses left out (blue: training; orange: pipelines, scoring, eval)")
    ax.set_title("Run timeline: every phase, start to end")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True


def wait_share(metrics: list[dict], jobs: set[str]) -> float | None:
    """The share of the jobs' training time the trainer waited for data (None: not measured)."""
    windows = [m for m in metrics if m["stage"] in jobs and "data_wait_s" in m and m.get("seconds")]
    total = sum(m["seconds"] for m in windows)
    return sum(m["data_wait_s"] for m in windows) / total if total else None


class RunClock:
    """Run time: the seconds up to a moment during which the run was at work, inside a finished
    phase (its [start, end]) or a training metrics window ([time - seconds, time]). With
    [a_i, b_i] the disjoint union of those intervals in order,

        run_time(t) = sum_i |[a_i, b_i] ∩ (-inf, t]|.

    A run killed and continued later leaves a stretch in none of them: from its last record before
    the kill to its first after, the pause with the killed phases' unfinished work and the new
    start-up. The clock stops there, so a resumed run's axes read as if it had not stopped; an
    uninterrupted run loses only the moments between one phase's end and the next's start. Without
    recorded phases nothing tells a pause from a pipeline's work: the clock is then the wall clock."""

    def __init__(self, phases: list[dict], metrics: list[dict]):
        windows = [(m["time"] - m["seconds"], m["time"]) for m in metrics if "time" in m and m.get("seconds")]
        spans = sorted([(p["start"], p["end"]) for p in phases] + windows) if phases else []
        merged: list[list[float]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self._starts = [a for a, _ in merged]
        self._spans = merged
        self._before = [0.0, *accumulate(b - a for a, b in merged)]  # run time at each span's start

    def __call__(self, t: float) -> float:
        if not self._spans:
            return t
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return 0.0
        a, b = self._spans[i]
        return self._before[i] + min(t, b) - a

    def phases(self, phases: list[dict]) -> list[dict]:
        """The phases with start and end in run time."""
        return [{**p, "start": self(p["start"]), "end": self(p["end"])} for p in phases]

    def metrics(self, metrics: list[dict]) -> list[dict]:
        """The metrics records with their ``time`` stamps in run time (records without one as they are)."""
        return [{**m, "time": self(m["time"])} if "time" in m else m for m in metrics]
