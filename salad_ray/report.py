"""The run report: a Markdown page and PNG plots, made from what the run directory holds.

Plots: M per cluster per round (as measured on the probes), the selection share per cluster per
round and arm, F and M on the held-out set over training, the training losses, and the learning
curve (salad_ray.eval.curve: the evaluated students' spoken accuracy and held-out M against steps
and minutes, with 95 % intervals). Tables: the gap after each stage, the rounds' plans, the
evaluation with its intervals, controls and the active-against-uniform verdict
(salad_ray.eval.tables) and the data pipeline's counts. Everything is read back from the run directory (salad_ray.rundir: state.json,
metrics.jsonl, the rounds' plans, eval/results.json), so a report can be remade at any time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from salad_ray import timeline
from salad_ray.accounting import PipelineReport
from salad_ray.config import RunConfig
from salad_ray.eval.stats import Interval
from salad_ray.eval.tables import markdown_table, nats
from salad_ray.rundir import (
    ACTIVE,
    STAGE1_JOB,
    STAGE1_LABEL,
    Arm,
    RunDir,
    arm_of_job,
    in_arm_order,
    milestones,
    run_arms,
)
from salad_ray.runstate import GapNote, Notes, RunState
from salad_ray.selection import RoundPlan


def read_metrics(path: Path) -> list[dict]:
    """Training metrics, one entry per (stage, step): a step redone after a restart keeps its last record."""
    if not path.is_file():
        return []
    latest: dict[tuple[str, int], dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            latest[(record["stage"], record["step"])] = record
    return list(latest.values())


def read_plans(run: RunDir, arms: list[Arm], rounds: int) -> dict[str, list[RoundPlan]]:
    """The plans made so far by each stage-II arm (in the order given), by arm name, in round order."""
    plans = {
        arm.name: [
            RoundPlan.load(run.plan(arm, r)) for r in range(1, rounds + 1) if run.plan(arm, r).is_file()
        ]
        for arm in arms
    }
    return {arm: p for arm, p in plans.items() if p}


def _series(metrics: list[dict], stage1_steps: int) -> dict[str, list[tuple[int, dict]]]:
    """Per arm, its training records on one step axis: stage I, then that arm's stage II."""
    stage1 = [(m["step"], m) for m in metrics if m["stage"] == STAGE1_JOB]
    arms = in_arm_order(arm_of_job(m["stage"]) for m in metrics)
    out = {}
    for arm in arms or [STAGE1_LABEL]:
        stage2 = [(m["step"] + stage1_steps, m) for m in metrics if arm_of_job(m["stage"]) == arm]
        out[arm] = sorted(stage1 + stage2, key=lambda x: x[0])
    return out


def plot_round_matrix(series: dict[str, list[float]], ylabel: str, title: str, path: Path) -> None:
    """Grouped bars: one group per cluster, one bar per series (a round, or an arm's round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(next(iter(series.values())))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * k + 2), 3.5))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(k) + i * width, values, width, label=label)
    ax.set_xticks(np.arange(k) + 0.4 - width / 2, [str(c) for c in range(k)])
    ax.set_xlabel("cluster")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(
    series: dict[str, list[tuple[int, dict]]],
    keys: list[str],
    ylabel: str,
    title: str,
    path: Path,
    stage1_steps: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for arm, points in series.items():
        for key in keys:
            xs = [step for step, m in points if key in m]
            ys = [m[key] for step, m in points if key in m]
            if xs:
                label = key if len(series) == 1 else f"{key} ({arm})"
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.axvline(stage1_steps, color="grey", linestyle=":", label="stage I | stage II")
    ax.set_xlabel("training step (stage I, then stage II)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(header: list[str], rows: list[list]) -> str:
    """A Markdown table of numbers (:func:`salad_ray.eval.tables.nats`) and text."""
    return markdown_table(
        header, [[nats(v) if isinstance(v, float) else str(v) for v in row] for row in rows]
    )


def _probe_intervals(run: RunDir, plan: RoundPlan) -> list[Interval | None]:
    """M per cluster with its interval over the round's probes (none where the scores are gone)."""
    from salad_ray.scoring import m_intervals

    scores = run.probe_scores(plan.round)
    return m_intervals(pd.read_parquet(scores), len(plan.m)) if scores.is_file() else [None] * len(plan.m)


def _interval_cell(interval: Interval | None) -> str:
    return "-" if interval is None else f"[{interval.low:#.3g}, {interval.high:#.3g}]"


def _overlapping_top(intervals: list[Interval | None], kept: list[bool]) -> tuple[int, int] | None:
    """Among the clusters the selection kept: how many others' M intervals reach the highest-M
    one's, of how many others (None: fewer than two kept clusters with an interval)."""
    known = [i for i, k in zip(intervals, kept, strict=True) if k and i is not None]
    if len(known) < 2:
        return None
    top = max(known, key=lambda i: i.estimate)
    return sum(i.high >= top.low for i in known if i is not top), len(known) - 1


def ordered_gaps(config: RunConfig, gaps: dict[str, GapNote]) -> list[tuple[str, GapNote]]:
    """The run's gap notes (by milestone label) in the milestones' reading order
    (salad_ray.rundir.milestones): the warm-up, stage I, then each arm's rounds."""
    order = milestones(config.stages, run_arms(config))
    return [(m.label, gaps[m.label]) for m in order if m.label in gaps]


def _pipeline_rows(reports: list[PipelineReport]) -> list[list]:
    def by_reason(counts: dict[str, int]) -> str:
        total = sum(counts.values())
        return (
            f"{total} ({', '.join(f'{reason} {n}' for reason, n in sorted(counts.items()))})"
            if total
            else "0"
        )

    return [
        [r.name, r.inputs, r.written, by_reason(r.quarantined), by_reason(r.skipped), r.teacher_retries]
        for r in reports
    ]


def time_section(
    config: RunConfig, notes: Notes, phases: list[dict], metrics: list[dict], out: Path
) -> list[str]:
    """The run's timeline (salad_ray.timeline), the trainer's wait for data in stage II and the TTS
    actors' idle share (salad_ray.accounting.tts_usage)."""
    parts = []
    if timeline.plot(phases, out / "timeline.png"):
        parts.append("\n## Where the time went\n\n![timeline](timeline.png)\n")
    share = timeline.wait_share(metrics, {arm.job for arm in run_arms(config)})
    if share is not None:
        parts.append(
            f"Stage II's trainer waited for data {100 * share:.1f} % of its training time (rank 0, "
            "blocked on its stream, summed over the metrics windows of every stage-II job).\n"
        )
    spoken = [r for r in notes.pipelines.values() if r.tts_busy_s]
    if spoken:
        busy, idle = sum(r.tts_busy_s for r in spoken), sum(r.tts_idle_s for r in spoken)
        each = ", ".join(f"{r.name} {100 * r.tts_idle_share:.0f} %" for r in spoken)
        parts.append(
            f"The TTS actors sat idle {100 * idle / (busy + idle):.1f} % of their time in the pool "
            f"(between each actor's first and last call; {busy:.0f} s speaking, {idle:.0f} s idle; "
            f"per pipeline: {each}).\n"
        )
    return parts


def write_report(config: RunConfig, run: RunDir, notes: Notes) -> Path:
    """Write report/report.md and its plots from what the run directory holds."""
    out, stage1_steps = run.report, config.stages.stage1_steps
    out.mkdir(parents=True, exist_ok=True)
    phases, metrics = timeline.read(run.timeline), read_metrics(run.metrics)
    clock = timeline.RunClock(phases, metrics)  # every time axis below on the run's own clock
    phases, metrics = clock.phases(phases), clock.metrics(metrics)
    series = _series(metrics, stage1_steps)
    plans = read_plans(run, run_arms(config), config.stages.stage2_rounds)
    parts = [f"# salad-ray run report\n\nRun directory: `{run.root}`\n"]

    gaps = ordered_gaps(config, notes.gap)
    columns = {"forgetting F": "heldout_f", "misalignment M": "heldout_m", "distillation KL D": "heldout_d"}
    if all(g.heldout_d is None for _, g in gaps):  # a run from before D was kept
        del columns["distillation KL D"]
    gap_rows = [
        [stage, *(float("nan") if (v := getattr(g, key)) is None else v for key in columns.values())]
        for stage, g in gaps
    ]
    if gap_rows:
        parts.append(
            "## The gap on the held-out broad-domain speech\n\n"
            "F, M and D in nats per text target, measured at the end of each stage and round (D, the "
            "distillation KL from the teacher on text to the student on speech, over M's targets).\n"
        )
        parts.append(_table(["after", *columns], gap_rows))

    if any(series.values()):
        plot_curves(
            series,
            ["heldout_f", "heldout_m", "heldout_d"],
            "nats / text target",
            "F, M and D on the held-out set",
            out / "heldout_gap.png",
            stage1_steps,
        )
        plot_curves(
            series,
            ["loss_dist", "loss_nll"] + (["loss_ctc"] if config.train.ctc_weight else []),
            "loss",
            "Training loss",
            out / "losses.png",
            stage1_steps,
        )
        parts.append(
            "\n## Training\n\n![F, M and D on the held-out set](heldout_gap.png)\n\n![losses](losses.png)\n"
        )

    if plans:
        active = plans.get(ACTIVE.name) or next(iter(plans.values()))
        plot_round_matrix(
            {f"round {p.round}": p.m for p in active},
            "M (nats / text target)",
            "M per cluster per round (probes)",
            out / "m_per_cluster.png",
        )
        plot_round_matrix(
            {f"{arm} round {p.round}": p.shares() for arm, arm_plans in plans.items() for p in arm_plans},
            "share of selected seconds",
            "Selection share per cluster per round",
            out / "selection_share.png",
        )
        parts.append(
            "\n## Active rounds\n\n![M per cluster](m_per_cluster.png)\n\n![selection share](selection_share.png)\n"
            "\nM's interval: 95 % bootstrap over the cluster's probes of the round that have text "
            "after speech (none below two such probes; a percentile bootstrap over a handful of probes "
            "is, if anything, too narrow). Clusters whose intervals overlap cannot be told apart by "
            "their probes; where M is the selection signal, γ raises the estimates to its power all "
            "the same.\n"
        )
        by_round: dict[int, list[Interval | None]] = {}  # the arms share each round's probe scores
        for arm, arm_plans in plans.items():
            for plan in arm_plans:
                if plan.round not in by_round:
                    by_round[plan.round] = _probe_intervals(run, plan)
                intervals = by_round[plan.round]
                rows = [
                    [
                        c,
                        plan.m[c],
                        _interval_cell(intervals[c]),
                        plan.kl[c] if plan.kl else float("nan"),
                        plan.cer[c],
                        "yes" if plan.kept[c] else "dropped",
                        plan.p[c],
                        plan.shares()[c],
                    ]
                    for c in range(len(plan.m))
                ]
                used = notes.rounds.get(arm, {}).get(plan.round)
                parts.append(
                    f"\n### {arm.capitalize()} round {plan.round} (γ = {plan.gamma:g}, signal {plan.signal}, "
                    f"budget {plan.budget_seconds:g} s, "
                    f"{len(plan.selected)} texts selected, {used.seconds if used else float('nan'):.0f} s synthesized)\n"
                )
                header = ["cluster", "M", "M, 95 % CI", "KL to teacher", "TTS CER", "kept", "p(c)", "share"]
                parts.append(_table(header, rows))
                if (overlap := _overlapping_top(intervals, plan.kept)) is not None:
                    parts.append(
                        "\nKept clusters whose M interval overlaps the highest-M kept cluster's: "
                        "{} of {}.\n".format(*overlap)
                    )

    from salad_ray.eval.curve import budget_section, curve_section, gap_budget_section, gap_budgets, m_budgets

    results = run.results
    if results.is_file():
        from salad_ray.eval.tables import eval_sections

        evaluated = json.loads(results.read_text())
        parts += eval_sections(evaluated, out)
        parts += curve_section(evaluated, metrics, stage1_steps, out)
        parts += gap_budget_section(gap_budgets(evaluated, metrics))
    parts += budget_section(m_budgets(metrics, config.eval.m_target))

    parts += time_section(config, notes, phases, metrics, out)
    pipelines = list(notes.pipelines.values())
    if pipelines:
        parts.append(
            "\n## Data pipeline\n\nEvery record each pipeline read, by what became of it: written to a "
            "shard, quarantined (kept with its origin and reason in the store's quarantine) or skipped.\n"
        )
        parts.append(
            _table(
                ["pipeline", "read", "written", "quarantined", "skipped", "teacher calls retried"],
                _pipeline_rows(pipelines),
            )
        )
    path = out / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path


def summary(config: RunConfig, run: RunDir, state: RunState) -> str:
    """What a run did, as the driver prints it at the end: phases done, the held-out gap after each
    milestone, each round's synthesis and every pipeline's counts."""
    notes = state.notes
    lines = [f"run {run.root} ({config.preset}): {', '.join(state.done)}"]
    gaps = ordered_gaps(config, notes.gap)
    width = max((len(label) for label, _ in gaps), default=0)
    for label, gap in gaps:
        f, m = (float("nan") if v is None else v for v in (gap.heldout_f, gap.heldout_m))
        d = "" if gap.heldout_d is None else f"  D = {nats(gap.heldout_d)}"  # None: a run from before D
        lines.append(f"  after {label:{width}s}  held-out F = {nats(f)}  M = {nats(m)}{d}")
    for arm in in_arm_order(notes.rounds):
        for r, info in sorted(notes.rounds[arm].items()):
            lines.append(f"  {arm} round {r}: {info.texts} texts, {info.seconds:.0f} s synthesized")
    for report in notes.pipelines.values():  # every record read: written, quarantined, skipped
        lines.append(f"  data {report.summary()}")
    lines.append(f"  report: {run.report / 'report.md'}")
    return "\n".join(lines)
