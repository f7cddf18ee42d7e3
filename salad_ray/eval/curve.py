"""The learning curve: spoken accuracy and held-out M against training steps and minutes.

Two sources meet on one set of axes:

* ``metrics.jsonl``: held-out M every ``train.eval_every`` steps of every stage, one line per arm
  (stage I, then that arm's stage II);
* ``eval/results.json``: the evaluated students (untrained at step 0, stage I, each stage-II round's
  student when ``eval.round_students`` is on, the final students), each with its spoken accuracy
  (the mean over benchmarks) and held-out M, and their 95 % bootstrap intervals as error bars.

Steps: stage I's steps, then each arm's stage-II steps after them. Minutes: wall-clock minutes since
training began when the records carry a ``time`` stamp (the report restates them on the run's own
clock, :class:`salad_ray.timeline.RunClock`, which leaves out a resumed run's pause); otherwise the
training time of the steps themselves, summed window by window (a window's seconds = its samples /
its samples_per_s), which leaves out start-up, checkpoints, evaluation and waiting for data.

Where held-out M has not reached ``eval.m_target`` × stage I's, :func:`m_budgets` says how many
stage-II steps the run's own curve would need, and :func:`gap_budgets` how many a gap after stage II
shown smaller than stage I's would need (extrapolations, stated as such in the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from salad_ray.eval.stats import Interval, paired_accuracy_difference
from salad_ray.eval.suite import CASCADE, ORIGINAL
from salad_ray.eval.tables import (
    ACTIVE,
    UNIFORM,
    acc_cell,
    accuracy_ci,
    correct_vectors,
    heldout_ci,
    markdown_table,
    nats,
    nats_cell,
)
from salad_ray.rundir import ARMS, STAGE1_JOB, STAGE1_LABEL, arm_of_job, in_arm_order


@dataclass(frozen=True)
class Point:
    """An evaluated student on the curve."""

    name: str
    arm: str | None  # None: shared by every arm (untrained, stage I)
    step: int
    minutes: float | None
    accuracy: float
    accuracy_ci: Interval | None
    m: float | None
    m_ci: Interval | None


def _window_seconds(records: list[dict]) -> dict[int, float]:
    """Cumulative training seconds at each record's step of one stage (from its throughput)."""
    out, total, previous = {}, 0.0, 0
    for r in sorted(records, key=lambda r: r["step"]):
        if r.get("samples_per_s") and "samples" in r:
            total += max(r["samples"] - previous, 0) / r["samples_per_s"]
            previous = r["samples"]
        out[r["step"]] = total
    return out


def minutes_axis(metrics: list[dict]) -> tuple[dict[tuple[str, int], float], bool]:
    """Minutes at every (stage, step) record, and whether they are wall-clock (module docstring)."""
    if metrics and all("time" in r for r in metrics):
        first = min(metrics, key=lambda r: r["time"])
        lead = first["samples"] / first["samples_per_s"] if first.get("samples_per_s") else 0.0
        t0 = first["time"] - lead
        return {(r["stage"], r["step"]): (r["time"] - t0) / 60 for r in metrics}, True
    stage1 = _window_seconds([r for r in metrics if r["stage"] == STAGE1_JOB])
    offset = max(stage1.values(), default=0.0)
    out = {(STAGE1_JOB, step): s / 60 for step, s in stage1.items()}
    for stage in {r["stage"] for r in metrics} - {STAGE1_JOB}:  # each job's own offset: any order
        for step, s in _window_seconds([r for r in metrics if r["stage"] == stage]).items():
            out[(stage, step)] = (offset + s) / 60
    return out, False


def _global_step(stage: str, step: int, stage1_steps: int) -> int:
    return step if stage == STAGE1_JOB else stage1_steps + step


def _lookup(minutes: dict[tuple[str, int], float], stage: str, step: int) -> float | None:
    if (stage, step) in minutes:
        return minutes[(stage, step)]
    earlier = [s for (st, s) in minutes if st == stage and s <= step]
    return minutes[(stage, max(earlier))] if earlier else None


def curve_points(results: dict, metrics: list[dict], stage1_steps: int) -> list[Point]:
    """Every evaluated student with a known place in training, in step order."""
    tasks = list(results["tasks"])
    minutes, _ = minutes_axis(metrics)
    points = []
    for name, s in results["systems"].items():
        if s["kind"] != "student":
            continue
        if s.get("role") == "untrained":
            step, at = 0, 0.0
        elif s.get("stage") is not None and s.get("step") is not None:
            step = _global_step(s["stage"], s["step"], stage1_steps)
            at = _lookup(minutes, s["stage"], s["step"])
        else:
            continue
        held = s.get("heldout")
        points.append(
            Point(
                name,
                arm_of_job(s.get("stage")),
                step,
                at,
                float(np.mean([s["accuracy"]["speech"][t] for t in tasks])),
                accuracy_ci(s, "speech", tasks),
                held["m"] if held else None,
                heldout_ci(held, "m") if held else None,
            )
        )
    return sorted(points, key=lambda p: (p.step, p.name))


def _errors(values: list[float], intervals: list[Interval | None], scale: float = 1.0):
    if all(i is None for i in intervals):
        return None
    low = [scale * (v - i.low) if i else 0.0 for v, i in zip(values, intervals, strict=True)]
    high = [scale * (i.high - v) if i else 0.0 for v, i in zip(values, intervals, strict=True)]
    return [low, high]


def plot_learning_curve(results: dict, metrics: list[dict], stage1_steps: int, path: Path) -> bool:
    """Spoken accuracy (top) and held-out M (bottom) against steps (left) and minutes (right)."""
    points = curve_points(results, metrics, stage1_steps)
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes, wall = minutes_axis(metrics)
    arms = in_arm_order([p.arm for p in points] + [arm_of_job(r["stage"]) for r in metrics])
    arms = arms or [None]
    tasks = list(results["tasks"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharey="row")
    groups = [(None, "black", "untrained / stage I")] + [
        (arm, f"C{n}", arm) for n, arm in enumerate(arms) if arm
    ]
    for col, use_minutes in enumerate((False, True)):

        def at(p: Point, use_minutes: bool = use_minutes) -> float | None:
            return p.minutes if use_minutes else p.step

        span = max((at(p) or 0.0 for p in points), default=1.0) or 1.0
        for n, (arm, color, label) in enumerate(groups):
            mine = [p for p in points if p.arm == arm and at(p) is not None]
            dodge = (n - (len(groups) - 1) / 2) * 0.008 * span  # arms side by side at the same x
            if arm is not None:  # the arm's line, from the shared students on
                line = [p for p in points if p.arm in (None, arm) and at(p) is not None]
                axes[0, col].plot(
                    [at(p) for p in line], [100 * p.accuracy for p in line], "-", color=color, lw=1
                )
            if not mine:
                continue
            xs = [at(p) + dodge for p in mine]  # type: ignore[operator]
            axes[0, col].errorbar(
                xs,
                [100 * p.accuracy for p in mine],
                yerr=_errors([p.accuracy for p in mine], [p.accuracy_ci for p in mine], 100),
                fmt="o",
                capsize=3,
                color=color,
                label=f"{label}: evaluated",
            )
            with_m = [(x, p) for x, p in zip(xs, mine, strict=True) if p.m is not None]
            axes[1, col].errorbar(
                [x for x, _ in with_m],
                [p.m for _, p in with_m],
                yerr=_errors([p.m for _, p in with_m], [p.m_ci for _, p in with_m]),
                fmt="o",
                capsize=3,
                color=color,
                label=f"{label}: evaluated",
            )
        for n, arm in enumerate(arms):
            training = [
                r
                for r in metrics
                if "heldout_m" in r
                and (r["stage"] == STAGE1_JOB or (arm is not None and arm_of_job(r["stage"]) == arm))
            ]
            training.sort(key=lambda r: _global_step(r["stage"], r["step"], stage1_steps))
            line = [
                (
                    minutes.get((r["stage"], r["step"]))
                    if use_minutes
                    else _global_step(r["stage"], r["step"], stage1_steps),
                    r["heldout_m"],
                )
                for r in training
            ]
            line = [(x, m) for x, m in line if x is not None]
            if line:
                axes[1, col].plot(
                    [x for x, _ in line],
                    [m for _, m in line],
                    "-",
                    alpha=0.5,
                    color=f"C{n}",
                    label=f"{arm or STAGE1_LABEL}: during training",
                )
    reference = results["systems"][ORIGINAL]["accuracy"]["text"]
    cascade = results["systems"].get(CASCADE, {}).get("accuracy", {}).get("cascade")
    for col in range(2):
        axes[0, col].axhline(
            100 * np.mean([reference[t] for t in tasks]), color="grey", ls="--", label="original LLM (text)"
        )
        if cascade:
            axes[0, col].axhline(
                100 * np.mean([cascade[t] for t in tasks]), color="grey", ls=":", label="cascade"
            )
    for row in range(2):
        axes[row, 0].axvline(stage1_steps, color="grey", lw=0.5)  # stage I | stage II
    axes[0, 0].set_ylabel("spoken accuracy (%), 95 % CI")
    axes[1, 0].set_ylabel("held-out M (nats / target), 95 % CI")
    axes[1, 0].set_xlabel("training step (stage I, then stage II)")
    axes[1, 1].set_xlabel(
        "wall-clock minutes since training began" if wall else "training minutes (steps only)"
    )
    axes[0, 0].set_title("Learning curve: spoken accuracy")
    axes[1, 0].set_title("Learning curve: held-out M")
    axes[0, 0].legend(fontsize="x-small")
    axes[1, 0].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def curve_table(results: dict, metrics: list[dict], stage1_steps: int) -> str | None:
    points = curve_points(results, metrics, stage1_steps)
    if not points:
        return None
    _, wall = minutes_axis(metrics)
    rows = [
        [
            p.name,
            str(p.step),
            "-" if p.minutes is None else f"{p.minutes:.1f}",
            acc_cell(p.accuracy, p.accuracy_ci),
            "-" if p.m is None else (nats_cell(p.m_ci) if p.m_ci else nats(p.m)),
        ]
        for p in points
    ]
    minutes = "wall-clock minutes" if wall else "training minutes"
    return markdown_table(["student", "step", minutes, "spoken accuracy (%)", "held-out M"], rows)


@dataclass(frozen=True)
class MBudget:
    """What an arm's stage II would need for held-out M to fall to ``target`` × stage I's M_I, on

        M(s) = M_I exp(b s),    b = sum_s s ln(M_s / M_I) / sum_s s^2

    the least-squares fit through stage I's value over the arm's held-out measurements M_s at
    stage-II steps s (every ``train.eval_every`` steps and at the end of each training call)."""

    arm: str
    steps: int  # stage-II steps the arm trained
    ratio: float  # its last held-out M over stage I's
    rate: float  # b, per stage-II step
    target: float
    # wall-clock seconds per stage-II step of the arm, all it waited on included
    seconds_per_step: float | None

    @property
    def steps_needed(self) -> int | None:
        """The first whole stage-II step at which the fit reaches the target (None: M does not fall
        on the fit)."""
        return math.ceil(math.log(self.target) / self.rate) if self.rate < 0 else None


def _last_m(records: list[dict]) -> tuple[int, float] | None:
    measured = sorted((r["step"], r["heldout_m"]) for r in records if r.get("heldout_m") is not None)
    return measured[-1] if measured else None


def m_budgets(metrics: list[dict], target: float) -> list[MBudget]:
    """Each stage-II arm's :class:`MBudget` (none without a held-out M after stage I)."""
    stage1 = _last_m([r for r in metrics if r["stage"] == STAGE1_JOB])
    if stage1 is None or stage1[1] <= 0:
        return []
    m1 = stage1[1]
    budgets = []
    for stage in [arm.job for arm in ARMS if any(r["stage"] == arm.job for r in metrics)]:
        measured = sorted(  # ln M needs M > 0: a KL of exactly 0 carries no rate
            (r["step"], r["heldout_m"])
            for r in metrics
            if r["stage"] == stage and (r.get("heldout_m") or 0) > 0 and r["step"] > 0
        )
        if not measured:
            continue
        steps = np.array([s for s, _ in measured], dtype=float)
        logs = np.log(np.array([m for _, m in measured]) / m1)
        last_step, last_m = measured[-1]
        budgets.append(
            MBudget(
                arm=arm_of_job(stage),
                steps=last_step,
                ratio=last_m / m1,
                rate=float(steps @ logs / (steps @ steps)),
                target=target,
                seconds_per_step=stage2_pace(metrics, stage, last_step),
            )
        )
    return budgets


def stage2_pace(metrics: list[dict], stage: str, step: int) -> float | None:
    """Wall-clock seconds per stage-II step of a stage-II job from the end of stage I to its ``step``
    (its pipelines and the other arm beside it included); None without wall-clock records."""
    stage1 = _last_m([r for r in metrics if r["stage"] == STAGE1_JOB])
    minutes, wall = minutes_axis(metrics)
    if not (wall and stage1 and step > 0 and (STAGE1_JOB, stage1[0]) in minutes and (stage, step) in minutes):
        return None
    return 60 * (minutes[(stage, step)] - minutes[(STAGE1_JOB, stage1[0])]) / step


def budget_section(budgets: list[MBudget]) -> list[str]:
    """The report's block on what reaching the M target would take, one row per arm."""
    if not budgets:
        return []
    target = budgets[0].target
    rows = []
    for b in budgets:
        needed = b.steps_needed
        if b.ratio <= target:
            to_go = "reached"
        elif needed is None:
            to_go = "M did not fall on the fit: no estimate"
        elif needed <= b.steps:
            to_go = f"{needed}: the fit is past the target, the last measurement is not"
        else:
            more = needed - b.steps
            minutes = (
                ""
                if b.seconds_per_step is None
                else f", about {more * b.seconds_per_step / 60:.0f} more minutes"
            )
            to_go = f"{needed} ({more} more{minutes})"
        pace = "-" if b.seconds_per_step is None else f"{b.seconds_per_step:.1f}"
        change = 100 * (math.exp(10 * b.rate) - 1)
        rows.append([b.arm, str(b.steps), f"{b.ratio:.3f}", f"{change:+.1f} %", pace, to_go])
    return [
        f"\n### What reaching held-out M {target:g} × stage I's would take\n",
        f"Each arm's held-out M against stage I's, and the stage-II steps at which the fit "
        f"M(s) = M_I exp(b s), through stage I's M_I and the arm's held-out measurements at stage-II "
        f"steps s, reaches {target:g} M_I (`eval.m_target`). **An extrapolation from this run's own "
        f"points, not a measurement.** Seconds per step: the arm's wall-clock stage II over its steps, "
        f"with its pipelines and the other arm beside it.\n",
        markdown_table(
            [
                "arm",
                "stage-II steps",
                "M / stage I",
                "fitted change per 10 steps",
                "seconds per step",
                f"stage-II steps to {target:g}× on the fit",
            ],
            rows,
        ),
    ]


def curve_section(results: dict, metrics: list[dict], stage1_steps: int, out_dir: Path) -> list[str]:
    """The report's learning-curve block: the plot and its table."""
    if not plot_learning_curve(results, metrics, stage1_steps, out_dir / "learning_curve.png"):
        return []
    return [
        "\n### Learning curve\n",
        "![spoken accuracy and held-out M against steps and minutes](learning_curve.png)\n",
        curve_table(results, metrics, stage1_steps) or "",
    ]


@dataclass(frozen=True)
class GapBudget:
    """What a gap after an arm's stage II shown smaller than stage I's would take, on the straight line
    through the origin fitted to the paired changes in spoken accuracy:

        d(s) = A_arm(s) - A_I = r s,    r = sum_s s d(s) / sum_s s^2,

    over the arm's evaluated students at stage-II steps s (its last, after S steps; each earlier
    round's too with ``eval.round_students``), each d(s) the paired difference over the same items
    (points). The last one's 95 % interval [d_lo, d_hi] reaches m = d(S) - d_lo below its estimate (a
    percentile interval need not be symmetric). Were m to stay as d grew, the interval would clear 0
    once d > m, at the first whole stage-II step s > m / r. The gap is A_text - A, so a rise in
    spoken accuracy is the same fall in the gap."""

    arm: str
    steps: int  # S
    change: Interval  # d(S), as fractions of items
    rate: float  # r, fractions of items per stage-II step
    students: int  # how many evaluated students r is fitted to
    seconds_per_step: float | None

    @property
    def margin(self) -> float:
        """m: how far the last interval reaches below its estimate."""
        return self.change.estimate - self.change.low

    def steps_needed(self, rate: float) -> int | None:
        """Stage-II steps to a shown smaller gap if accuracy rises ``rate`` a step (None: it does not)."""
        return math.floor(self.margin / rate) + 1 if rate > 0 else None


def gap_budgets(results: dict, metrics: list[dict]) -> list[GapBudget]:
    """Each evaluated stage-II arm's :class:`GapBudget` against the stage-I student."""
    systems, tasks = results["systems"], list(results["tasks"])
    stage1 = correct_vectors(systems.get(STAGE1_LABEL), "speech", tasks)
    budgets = []
    for arm in (ACTIVE, UNIFORM):
        system = systems.get(arm)
        if stage1 is None or correct_vectors(system, "speech", tasks) is None or not system.get("step"):
            continue
        fitted = {  # s -> d(s) of every evaluated student of the arm
            s["step"]: paired_accuracy_difference(c, stage1)
            for s in systems.values()
            if s.get("stage") == system["stage"]
            and s.get("step")
            and (c := correct_vectors(s, "speech", tasks)) is not None
        }
        steps = np.array(list(fitted), dtype=float)
        changes = np.array([d.estimate for d in fitted.values()])
        budgets.append(
            GapBudget(
                arm=arm_of_job(system["stage"]),
                steps=system["step"],
                change=fitted[system["step"]],
                rate=float(steps @ changes / (steps @ steps)),
                students=len(fitted),
                seconds_per_step=stage2_pace(metrics, system["stage"], system["step"]),
            )
        )
    return budgets


def gap_budget_section(budgets: list[GapBudget]) -> list[str]:
    """The report's block on what a gap shown smaller after stage II would take, one row per arm."""
    if not budgets:
        return []

    def budget(b: GapBudget, rate: float) -> str:
        if b.change.low > 0:
            return "shown"
        needed = b.steps_needed(rate)
        if needed is None:
            return "none: accuracy does not rise"
        if needed <= b.steps:
            return f"{needed}: within this run's {b.steps}"
        minutes = (
            "" if b.seconds_per_step is None else f", about {needed * b.seconds_per_step / 60:.0f} minutes"
        )
        return f"{needed}{minutes}"

    rows = [
        [
            b.arm,
            str(b.steps),
            f"{100 * b.change.estimate:+.1f} [{100 * b.change.low:+.1f}, {100 * b.change.high:+.1f}]",
            str(b.students),
            f"{1000 * b.rate:+.2f}",
            f"{100 * b.margin:.1f}",
            budget(b, b.rate),
            budget(b, max(b.rate, b.change.high / b.steps)),
        ]
        for b in budgets
    ]
    return [
        "\n### What a smaller gap after stage II would take\n",
        "Each arm's spoken accuracy after stage II minus stage I's, paired over the same items (the gap "
        "falls by as much as accuracy rises), and the stage-II steps at which, on a straight line "
        "through stage I and the arm's evaluated students (its last; each earlier round's with "
        "`eval.round_students`), the change would pass the last interval's reach below its estimate, "
        "where an interval of that reach would clear 0: at the fitted rate, and at the faster of that "
        "rate and the last interval's upper end over its steps (the fewest steps this run allows). "
        "**An extrapolation, not a measurement.** Minutes: the arm's wall-clock seconds per stage-II "
        "step, with its pipelines and the other arm beside it.\n",
        markdown_table(
            [
                "arm",
                "stage-II steps",
                "accuracy change, points",
                "students fitted",
                "fitted points per 10 steps",
                "reach below the estimate, points",
                "stage-II steps to a shown smaller gap",
                "at the interval's upper end",
            ],
            rows,
        ),
    ]
