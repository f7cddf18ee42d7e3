"""The evaluation's tables and plots, from ``results.json`` (:mod:`salad_ray.eval.suite`).

* the paper's Table 3 shape: accuracy / gap per task and their averages, one row per system
  (original LLM on text, the cascade, the untrained student, then each final student on speech),
  every accuracy with its 95 % bootstrap interval over items (:mod:`salad_ray.eval.stats`);
* the controls: each final student with shuffled audio, accuracy and held-out M, and the paired
  difference from real audio (what the student takes from the speech);
* active against uniform selection: the paired difference of held-out M over the same held-out
  samples (and of spoken accuracy over the same items), claimed only when its interval excludes 0;
* what stage II moved: held-out M and the distillation KL D of stage I and each arm, and their paired
  changes (M can fall because the student's text side drifts; D falls only as its speech side nears
  the teacher);
* text-side forgetting: each student's text accuracy against the original LLM's;
* held-out F and M per domain, with the held-out-only domains (``data.heldout_only``) on a row of
  their own, "held-out domain (unseen)";
* accuracy against log M (and text accuracy against F), one point per student, with intervals.

Results written before per-item correctness was kept (no ``correct``) render without intervals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np

from salad_ray import rundir
from salad_ray.eval.stats import (
    LEVEL,
    RESAMPLES,
    SEED,
    Interval,
    accuracy_interval,
    paired_accuracy_difference,
    paired_ratio_difference,
    ratio_interval,
)
from salad_ray.eval.suite import CASCADE, HELDOUT_SUMS, ORIGINAL
from salad_ray.metrics import per_token
from salad_ray.rundir import STAGE1_LABEL, end_of_stage2

UNSEEN_ROW = "held-out domain (unseen)"
ACTIVE, UNIFORM = end_of_stage2(rundir.ACTIVE), end_of_stage2(rundir.UNIFORM)


def _mode(system: dict) -> str:
    return {"original": "text", "cascade": "cascade", "student": "speech"}[system["kind"]]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _in_table3(system: dict) -> bool:
    return system.get("role", "final") != "round"


def correct_vectors(system: dict | None, mode: str, tasks: list[str]) -> list[list[int]] | None:
    """The 0/1 vectors of a system's mode, one per task, or None where they were not kept."""
    kept = (system or {}).get("correct", {}).get(mode)
    if kept is None or any(t not in kept for t in tasks):
        return None
    return [kept[t] for t in tasks]


def accuracy_ci(system: dict, mode: str, tasks: list[str]) -> Interval | None:
    """The mean accuracy over ``tasks`` of a system's mode and its bootstrap interval over items."""
    correct = correct_vectors(system, mode, tasks)
    return accuracy_interval(correct) if correct else None


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def acc_cell(value: float, interval: Interval | None) -> str:
    return _pct(value) + ("" if interval is None else f" [{_pct(interval.low)}, {_pct(interval.high)}]")


def _points(interval: Interval) -> str:
    return f"{100 * interval.estimate:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"


def nats(v: float, signed: bool = False) -> str:
    """A value in nats (or a rate, a share) to 4 decimals, the one format of the report's F, M and D; a
    value that is 0 up to rounding noise, such as an untrained student's F, prints as 0.0000, not
    -0.0000 (``+ 0.0`` turns a rounded -0.0 into 0.0)."""
    return f"{round(v, 4) + 0.0:{'+.4f' if signed else '.4f'}}"


def nats_cell(interval: Interval, signed: bool = False) -> str:
    return f"{nats(interval.estimate, signed)} [{nats(interval.low, signed)}, {nats(interval.high, signed)}]"


def ci_note() -> str:
    return (
        f"Brackets: {100 * LEVEL:.0f} % percentile bootstrap intervals ({RESAMPLES} resamples, seed {SEED}) "
        f"over items (accuracies; an average resamples each task's items) or over held-out samples (M, D)."
    )


def gap_table(results: dict) -> str:
    """Accuracy (%) [95 % interval] / gap (points) per task and on average: the original LLM on text,
    the cascade, the untrained and the final students on speech."""
    tasks = list(results["tasks"])
    systems = results["systems"]
    reference = systems[ORIGINAL]["accuracy"]["text"]
    header = ["system", "input"] + [f"{t} acc / gap" for t in tasks] + ["average acc / gap"]
    rows = []
    for name, system in systems.items():
        if not _in_table3(system):
            continue
        mode = _mode(system)
        acc = system["accuracy"][mode]
        cells = []
        for t in [*tasks, None]:
            chosen = tasks if t is None else [t]
            a = float(np.mean([acc[x] for x in chosen]))
            r = float(np.mean([reference[x] for x in chosen]))
            cell = acc_cell(a, accuracy_ci(system, mode, chosen))
            cells.append(cell + ("" if name == ORIGINAL else f" / {100 * (r - a):+.1f}"))
        rows.append([name, {"text": "text", "cascade": "ASR transcript", "speech": "speech"}[mode], *cells])
    chance = " / ".join(f"{t} {100 * c:.0f}%" for t, c in results["chance"].items())
    note = (
        f"Accuracy in %, gap in points (original LLM's text accuracy minus this row's). "
        f"{', '.join(f'{t}: {n} items' for t, n in results['tasks'].items())}; {results['shots']}-shot at most; "
        f"voice {results['voice']}; chance: {chance}."
    )
    unspoken = results.get("unspoken", {}).get("items", {})
    if unspoken:  # the TTS could not speak them: every system was scored without them
        left_out = ", ".join(f"{t}: {len(ids)}" for t, ids in unspoken.items())
        note += f" Left out, unspeakable ({'; '.join(results['unspoken']['reasons'])}): {left_out} items."
    if any(correct_vectors(s, _mode(s), tasks) for s in systems.values()):
        note += " " + ci_note()
    return markdown_table(header, rows) + "\n\n" + note


def forgetting_table(results: dict) -> str:
    tasks = list(results["tasks"])
    systems = results["systems"]
    reference = systems[ORIGINAL]["accuracy"]["text"]
    rows = []
    for name, system in systems.items():
        if system["kind"] != "student" or "text" not in system["accuracy"]:
            continue
        text = system["accuracy"]["text"]
        cells = [
            f"{acc_cell(text[t], accuracy_ci(system, 'text', [t]))} / {100 * (reference[t] - text[t]):+.1f}"
            for t in tasks
        ]
        avg = float(np.mean([text[t] for t in tasks]))
        forgetting = 100 * (np.mean([reference[t] for t in tasks]) - avg)
        cells.append(f"{acc_cell(avg, accuracy_ci(system, 'text', tasks))} / {forgetting:+.1f}")
        rows.append([name, *cells])
    header = ["student (fed text)"] + [f"{t} acc / forgetting" for t in tasks] + ["average"]
    return markdown_table(header, rows)


# ------------------------------------------------------------------------------------ held-out


Measure = Literal["m", "d"]  # held-out M or D: both per text target after speech (m_targets)


def _per_sample(heldout: dict, domains: set[str] | None = None) -> dict[str, np.ndarray] | None:
    """A student's per-sample held-out sums and counts by sample id (``domains``: only those)."""
    rows = heldout.get("per_sample")
    if rows is None:
        return None
    keep = [n for n, d in enumerate(rows["domains"]) if domains is None or d in domains]
    return {
        "ids": np.array([rows["ids"][n] for n in keep]),
        **{k: np.array([rows[k][n] for n in keep], dtype=np.float64) for k in HELDOUT_SUMS if k in rows},
    }


def heldout_ci(heldout: dict, measure: Measure, domains: set[str] | None = None) -> Interval | None:
    """Held-out M or D and its bootstrap interval over held-out samples; None where the per-sample
    sums were not kept."""
    rows = _per_sample(heldout, domains)
    key = f"{measure}_sum"
    if rows is None or key not in rows or len(rows["ids"]) == 0 or rows["m_targets"].sum() == 0:
        return None
    return ratio_interval(rows[key], rows["m_targets"])


def paired_heldout_difference(
    a: dict, b: dict, measure: Measure, domains: set[str] | None = None
) -> tuple[Interval, int] | None:
    """M(a) - M(b), or D's, on the held-out samples both were measured on, its paired interval, and
    how many."""
    ra, rb = _per_sample(a, domains), _per_sample(b, domains)
    key = f"{measure}_sum"
    if ra is None or rb is None or key not in ra or key not in rb:
        return None
    index = {sid: n for n, sid in enumerate(rb["ids"])}
    pairs = [(n, index[sid]) for n, sid in enumerate(ra["ids"]) if sid in index]
    if not pairs:
        return None
    ia, ib = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    counts = ra["m_targets"][ia]
    if counts.sum() == 0:
        return None
    return paired_ratio_difference(ra[key][ia], rb[key][ib], counts), len(pairs)


def _unseen_fm(heldout: dict, domains: set[str]) -> tuple[float, float, Interval | None] | None:
    """F and M per token over the held-out samples of ``domains``, M with its interval."""
    rows = _per_sample(heldout, domains)
    if rows is None or not len(rows["ids"]):
        return None
    f, m = per_token(rows["f_sum"], rows["f_targets"]), per_token(rows["m_sum"], rows["m_targets"])
    return f, m, heldout_ci(heldout, "m", domains)


def heldout_table(results: dict) -> str | None:
    """F / M per domain for every student in Table 3; M with its interval over samples on the
    "all" and the unseen-domain rows."""
    students = {n: s["heldout"] for n, s in results["systems"].items() if "heldout" in s and _in_table3(s)}
    if not students:
        return None
    unseen = set(results.get("heldout_only", []))
    domains = sorted({d for h in students.values() for d in h["domains"]})

    def with_ci(f: float, m: float, interval: Interval | None) -> str:
        return f"{nats(f)} / {nats(m)}" + (
            "" if interval is None else f" [{nats(interval.low)}, {nats(interval.high)}]"
        )

    rows = [["all", *[with_ci(h["f"], h["m"], heldout_ci(h, "m")) for h in students.values()]]]
    if unseen:
        cells = []
        for h in students.values():
            fm = _unseen_fm(h, unseen)
            cells.append("-" if fm is None else with_ci(*fm))
        rows.append([UNSEEN_ROW, *cells])
    rows += [[d, *[_fm(h["domains"].get(d)) for h in students.values()]] for d in domains]
    header = ["domain", *[f"{n}: F / M" for n in students]]
    table = markdown_table(header, rows)
    if unseen:
        table += (
            f"\n\n{UNSEEN_ROW}: {', '.join(sorted(unseen))} (data.heldout_only), a domain no natural, "
            "text, pool or probe text comes from."
        )
    return table


def _fm(values: dict | None) -> str:
    return "-" if values is None else f"{nats(values['f'])} / {nats(values['m'])}"


# ------------------------------------------------------------------------------------ controls


def controls_table(results: dict) -> str | None:
    """Each final student with real and with shuffled audio: accuracy and held-out M, and the paired
    differences (real - shuffled accuracy; shuffled - real M): what the student takes from speech."""
    tasks = list(results["tasks"])
    rows = []
    for name, s in results["systems"].items():
        control = s.get("shuffled")
        if control is None:
            continue
        real_c, shuf_c = correct_vectors(s, "speech", tasks), correct_vectors(control, "speech", tasks)
        if real_c is None or shuf_c is None:
            continue
        cells = [
            acc_cell(float(np.mean([s["accuracy"]["speech"][t] for t in tasks])), accuracy_interval(real_c)),
            acc_cell(
                float(np.mean([control["accuracy"]["speech"][t] for t in tasks])), accuracy_interval(shuf_c)
            ),
            _points(paired_accuracy_difference(real_c, shuf_c)),
        ]
        held, held_control = s.get("heldout"), control.get("heldout")
        if held and held_control:
            real_m, shuf_m = heldout_ci(held, "m"), heldout_ci(held_control, "m")
            diff = paired_heldout_difference(held_control, held, "m")
            cells += [
                nats_cell(real_m) if real_m else nats(held["m"]),
                nats_cell(shuf_m) if shuf_m else nats(held_control["m"]),
                nats_cell(diff[0], signed=True) if diff else "-",
            ]
        else:
            cells += ["-", "-", "-"]
        rows.append([name, *cells])
    if not rows:
        return None
    header = [
        "student",
        "speech acc, real audio",
        "speech acc, shuffled audio",
        "real - shuffled (points)",
        "held-out M, real",
        "held-out M, shuffled",
        "shuffled - real M",
    ]
    note = (
        "Shuffled audio: every item's spoken context is another item's (a seeded derangement of the items, "
        "none keeps its own; the examples, options and answer stay), and every held-out sample's speech "
        "spans are another sample's. A student that uses the speech loses accuracy and gains M; one that "
        "guesses from the text around it does not. Differences are paired (same items, same samples)."
    )
    return markdown_table(header, rows) + "\n\n" + note


def _verdict(diff: Interval, below: str, above: str, neither: str) -> str:
    """``below`` where a difference's interval lies below 0, ``above`` where above, else ``neither``."""
    if diff.high < 0:
        return below
    return above if diff.low > 0 else neither


def _claim(diff: Interval, better: str, worse: str, what: str, unit: str, n: str) -> str:
    """A plain-language verdict on a paired difference ``better - worse`` where lower is better."""
    where = f"{what}, {better} - {worse} = {nats_cell(diff, signed=True)} {unit} ({n})"
    return _verdict(
        diff,
        f"**{better.capitalize()} beats {worse}** on {where}: the interval is below 0.",
        f"**{worse.capitalize()} beats {better}** on {where}: the interval is above 0.",
        f"**No measurable difference** between {better} and {worse} on {where}: the interval includes 0, "
        f"so this run does not show that {better} selection beats {worse}.",
    )


def gap_change(results: dict) -> str | None:
    """Whether stage II closed the gap: for each stage-II arm, its gap minus stage I's, i.e.
    (A_text - A_arm) - (A_text - A_I) = A_I - A_arm (the original LLM's text accuracy A_text is the
    same for both), a paired difference over the same items, in points; "smaller" is claimed only
    when its 95 % interval is below 0."""
    systems, tasks = results["systems"], list(results["tasks"])
    stage1 = correct_vectors(systems.get(STAGE1_LABEL), "speech", tasks)
    if stage1 is None:
        return None
    lines = []
    for arm in (ACTIVE, UNIFORM):
        correct = correct_vectors(systems.get(arm), "speech", tasks)
        if correct is None:
            continue
        d = paired_accuracy_difference(stage1, correct)
        verdict = _verdict(
            d,
            "smaller after stage II",
            "larger after stage II",
            "the interval includes 0: this run does not show a change",
        )
        lines.append(
            f"Gap after {arm} minus gap after {STAGE1_LABEL}: {_points(d)} points over the same "
            f"{sum(len(x) for x in correct)} items; {verdict}."
        )
    return "\n\n".join(lines) + f"\n\n{ci_note()} Paired: both students on the same items." if lines else None


def stage2_shift(results: dict) -> str | None:
    """What stage II moved on the held-out speech: F, M and D of stage I and of each stage-II arm,
    and each arm's change from stage I in M and in D, paired over the same held-out samples.

    M = KL(P(.|w) || P(.|c)) compares the student on speech with itself on text; D = KL(Q(.|w) ||
    P(.|c)) compares it with the teacher, over the same targets (:mod:`salad_ray.metrics`). While F
    is small (P(.|w) near Q), M falls when the speech predictions move toward the teacher's, and D
    falls with it; M also falls when the text predictions move toward the speech ones (F rises), and
    D, which does not involve the text side, does not: D tells the two apart. "Lower" or "higher" is
    claimed only when the interval excludes 0."""
    systems = results["systems"]
    base = systems.get(STAGE1_LABEL, {}).get("heldout")
    if base is None or "d_sum" not in base.get("per_sample", {}):
        return None
    rows, verdicts = [], []
    for name in (STAGE1_LABEL, ACTIVE, UNIFORM):
        held = systems.get(name, {}).get("heldout")
        m, d = (heldout_ci(held, measure) if held else None for measure in ("m", "d"))
        if held is None or m is None or d is None:
            continue
        if name == STAGE1_LABEL:
            rows.append([name, nats(held["f"]), nats_cell(m), nats_cell(d), "-", "-"])
            continue
        changes = [paired_heldout_difference(held, base, measure) for measure in ("m", "d")]
        shown = ["-" if c is None else nats_cell(c[0], signed=True) for c in changes]
        rows.append([name, nats(held["f"]), nats_cell(m), nats_cell(d), *shown])
        if changes[1] is not None:
            interval, n = changes[1]
            verdict = _verdict(
                interval,
                "lower after stage II",
                "higher after stage II",
                "the interval includes 0: this run does not show D move",
            )
            verdicts.append(
                f"D after {name} minus D after {STAGE1_LABEL}: {nats_cell(interval, signed=True)} nats per "
                f"target over {n} held-out samples; {verdict}."
            )
    if len(rows) < 2:
        return None
    header = [
        "student",
        "held-out F",
        "held-out M",
        "held-out D",
        f"M - M({STAGE1_LABEL})",
        f"D - D({STAGE1_LABEL})",
    ]
    note = (
        "D is the distillation KL from the teacher on text to the student on speech, over M's targets "
        "(the text targets that follow speech): how far what the student hears is from what the teacher "
        "reads. M is the student on speech against itself on text, so M falls either when D falls or "
        "when the student's text predictions drift toward its speech ones (F rises). With a top-k "
        "teacher D lumps the tail into one class, a lower bound on the full KL: compare D with D, not "
        f"with M. {ci_note()} Paired: both students on the same held-out samples."
    )
    return markdown_table(header, rows) + "\n\n" + "\n\n".join(verdicts) + "\n\n" + note


def active_vs_uniform(results: dict) -> str | None:
    """The paper's comparison in words: held-out M of the two stage-II arms as a paired difference
    over the same held-out samples, claimed only when its 95 % interval excludes 0 (also on the
    unseen domain); spoken accuracy as a paired difference over the same items, in points."""
    systems = results["systems"]
    if ACTIVE not in systems or UNIFORM not in systems:
        return None
    active, uniform = systems[ACTIVE], systems[UNIFORM]
    lines = []
    if "heldout" in active and "heldout" in uniform:
        diff = paired_heldout_difference(active["heldout"], uniform["heldout"], "m")
        if diff is not None:
            interval, n = diff
            lines.append(
                _claim(
                    interval, "active", "uniform", "held-out M", "nats per target", f"{n} held-out samples"
                )
            )
        unseen = set(results.get("heldout_only", []))
        diff = (
            paired_heldout_difference(active["heldout"], uniform["heldout"], "m", unseen) if unseen else None
        )
        if diff is not None:
            interval, n = diff
            lines.append(
                _claim(
                    interval, "active", "uniform", f"M on the {UNSEEN_ROW}", "nats per target", f"{n} samples"
                )
            )
    tasks = list(results["tasks"])
    a, u = correct_vectors(active, "speech", tasks), correct_vectors(uniform, "speech", tasks)
    if a is not None and u is not None:
        d = paired_accuracy_difference(a, u)
        verdict = _verdict(
            d,
            "uniform is more accurate",
            "active is more accurate",
            "the interval includes 0: no measurable difference",
        )
        lines.append(
            f"Spoken accuracy, active - uniform: {_points(d)} points over the same "
            f"{sum(len(x) for x in a)} items; {verdict}."
        )
    if not lines:
        return None
    return (
        "\n\n".join(lines) + f"\n\n{ci_note()} Paired: both students on the same units, resampled together."
    )


# --------------------------------------------------------------------------------------- plots


def plot_accuracy_vs_gap(results: dict, path: Path) -> bool:
    """Speech accuracy against ln M and text accuracy against F, one point per student and task;
    the star (average) carries its intervals (accuracy over items, ln M over held-out samples)."""
    students = {n: s for n, s in results["systems"].items() if "heldout" in s}
    if not students:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, s in students.items():
        m, f = s["heldout"]["m"], s["heldout"]["f"]
        lm = math.log(max(m, 1e-9))
        speech = [100 * s["accuracy"]["speech"][t] for t in tasks]
        line = left.scatter([lm] * len(tasks), speech, label=name)
        color = line.get_facecolor()
        acc, m_ci = accuracy_ci(s, "speech", tasks), heldout_ci(s["heldout"], "m")
        yerr = None if acc is None else [[100 * (acc.estimate - acc.low)], [100 * (acc.high - acc.estimate)]]
        xerr = None
        if m_ci is not None and m_ci.low > 0:
            xerr = [[lm - math.log(m_ci.low)], [math.log(max(m_ci.high, 1e-9)) - lm]]
        left.errorbar(
            [lm], [np.mean(speech)], yerr=yerr, xerr=xerr, fmt="*", ms=12, color=color[0], capsize=3
        )
        if "text" in s["accuracy"]:
            right.scatter(
                [f] * len(tasks), [100 * s["accuracy"]["text"][t] for t in tasks], label=name, color=color
            )
    reference = results["systems"][ORIGINAL]["accuracy"]["text"]
    cascade = results["systems"][CASCADE]["accuracy"]["cascade"]
    for ax in (left, right):
        ax.axhline(
            100 * np.mean([reference[t] for t in tasks]), color="grey", ls="--", label="original LLM (text)"
        )
    left.axhline(100 * np.mean([cascade[t] for t in tasks]), color="grey", ls=":", label="cascade")
    left.set_xlabel("ln M on held-out speech (nats / text target)")
    left.set_ylabel("speech accuracy (%)  (star: average, 95 % CI)")
    left.set_title("Spoken accuracy against misalignment")
    right.set_xlabel("F on held-out text (nats / token)")
    right.set_ylabel("text accuracy (%)")
    right.set_title("Text accuracy against forgetting")
    left.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def eval_sections(results: dict, out_dir: Path) -> list[str]:
    """Markdown blocks for the run report (plots written next to it)."""
    parts = ["\n## Evaluation: the text-speech gap\n", gap_table(results)]
    closed = gap_change(results)
    if closed:
        parts += ["\n### The gap after stage II against after stage I\n", closed]
    shift = stage2_shift(results)
    if shift:
        parts += ["\n### What stage II moved: M against D\n", shift]
    comparison = active_vs_uniform(results)
    if comparison:
        parts += ["\n### Active against uniform selection\n", comparison]
    controls = controls_table(results)
    if controls:
        parts += ["\n### Controls: shuffled audio\n", controls]
    parts += ["\n### Text-side forgetting\n", forgetting_table(results)]
    held = heldout_table(results)
    if held:
        parts += ["\n### Held-out F and M per domain (nats per token)\n", held]
    if plot_accuracy_vs_gap(results, out_dir / "accuracy_vs_gap.png"):
        parts.append("\n![accuracy against log M and F](accuracy_vs_gap.png)\n")
    return parts


def arms_table(results: dict) -> str:
    """Stage II with uniform and with active selection side by side (the paper's comparison)."""
    tasks = list(results["tasks"])
    systems = results["systems"]
    reference = systems[ORIGINAL]["accuracy"]["text"]
    rows = []
    for name in (STAGE1_LABEL, UNIFORM, ACTIVE):
        if name not in systems:
            continue
        s = systems[name]
        speech = s["accuracy"]["speech"]
        held = s.get("heldout", {})
        m_ci = heldout_ci(held, "m") if held else None
        avg = float(np.mean([speech[t] for t in tasks]))
        rows.append(
            [
                name,
                nats(held.get("f", float("nan"))),
                nats_cell(m_ci) if m_ci else nats(held.get("m", float("nan"))),
                *[acc_cell(speech[t], accuracy_ci(s, "speech", [t])) for t in tasks],
                acc_cell(avg, accuracy_ci(s, "speech", tasks)),
                f"{100 * (np.mean([reference[t] for t in tasks]) - avg):+.1f}",
            ]
        )
    header = ["student", "held-out F", "held-out M", *[f"{t} speech acc" for t in tasks], "average", "gap"]
    table = markdown_table(header, rows)
    comparison = active_vs_uniform(results)
    return table + ("\n\n" + comparison if comparison else "")
