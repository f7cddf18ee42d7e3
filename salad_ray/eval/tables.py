"""The evaluation's tables and plots, from ``results.json`` (:mod:`salad_ray.eval.suite`).

* the paper's Table 3 shape: accuracy / gap per task and their averages, one row per system
  (original LLM on text, the cascade, then each student on speech);
* text-side forgetting: each student's text accuracy against the original LLM's;
* held-out F and M per domain;
* accuracy against log M (and text accuracy against F), one point per student.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from salad_ray.eval.suite import CASCADE, ORIGINAL


def _mode(system: dict) -> str:
    return {"original": "text", "cascade": "cascade", "student": "speech"}[system["kind"]]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def gap_table(results: dict) -> str:
    """Accuracy (%) / gap (points) per task: original on text, cascade, students on speech."""
    tasks = list(results["tasks"])
    systems = results["systems"]
    reference = systems[ORIGINAL]["accuracy"]["text"]
    header = ["system", "input"] + [f"{t} acc / gap" for t in tasks] + ["average acc / gap"]
    rows = []
    for name, system in systems.items():
        mode = _mode(system)
        acc = system["accuracy"][mode]
        cells = []
        for t in [*tasks, None]:
            a = np.mean([acc[x] for x in tasks]) if t is None else acc[t]
            r = np.mean([reference[x] for x in tasks]) if t is None else reference[t]
            cells.append(f"{100 * a:.1f}" + ("" if name == ORIGINAL else f" / {100 * (r - a):+.1f}"))
        rows.append([name, {"text": "text", "cascade": "ASR transcript", "speech": "speech"}[mode], *cells])
    chance = " / ".join(f"{t} {100 * c:.0f}%" for t, c in results["chance"].items())
    note = (
        f"Accuracy in %, gap in points (original LLM's text accuracy minus this row's). "
        f"{', '.join(f'{t}: {n} items' for t, n in results['tasks'].items())}; {results['shots']}-shot at most; "
        f"voice {results['voice']}; chance: {chance}."
    )
    return _table(header, rows) + "\n\n" + note


def forgetting_table(results: dict) -> str:
    tasks = list(results["tasks"])
    systems = results["systems"]
    reference = systems[ORIGINAL]["accuracy"]["text"]
    rows = []
    for name, system in systems.items():
        if system["kind"] != "student":
            continue
        text = system["accuracy"]["text"]
        cells = [f"{100 * text[t]:.1f} / {100 * (reference[t] - text[t]):+.1f}" for t in tasks]
        avg = np.mean([text[t] for t in tasks])
        cells.append(f"{100 * avg:.1f} / {100 * (np.mean([reference[t] for t in tasks]) - avg):+.1f}")
        rows.append([name, *cells])
    header = ["student (fed text)"] + [f"{t} acc / forgetting" for t in tasks] + ["average"]
    return _table(header, rows)


def heldout_table(results: dict) -> str | None:
    students = {n: s["heldout"] for n, s in results["systems"].items() if "heldout" in s}
    if not students:
        return None
    domains = sorted({d for h in students.values() for d in h["domains"]})
    header = ["domain", *[f"{n}: F / M" for n in students]]
    rows = [
        ["all", *[f"{h['f']:.4f} / {h['m']:.4f}" for h in students.values()]],
        *[[d, *[_fm(h["domains"].get(d)) for h in students.values()]] for d in domains],
    ]
    return _table(header, rows)


def _fm(values: dict | None) -> str:
    return "-" if values is None else f"{values['f']:.4f} / {values['m']:.4f}"


def plot_accuracy_vs_gap(results: dict, path: Path) -> bool:
    """Speech accuracy against ln M and text accuracy against F, one point per student and task."""
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
        speech = [100 * s["accuracy"]["speech"][t] for t in tasks]
        text = [100 * s["accuracy"]["text"][t] for t in tasks]
        line = left.scatter([math.log(max(m, 1e-9))] * len(tasks), speech, label=name)
        left.scatter(
            [math.log(max(m, 1e-9))], [np.mean(speech)], marker="*", s=160, color=line.get_facecolor()
        )
        right.scatter([f] * len(tasks), text, label=name, color=line.get_facecolor())
    reference = results["systems"][ORIGINAL]["accuracy"]["text"]
    cascade = results["systems"][CASCADE]["accuracy"]["cascade"]
    for ax in (left, right):
        ax.axhline(
            100 * np.mean([reference[t] for t in tasks]), color="grey", ls="--", label="original LLM (text)"
        )
    left.axhline(100 * np.mean([cascade[t] for t in tasks]), color="grey", ls=":", label="cascade")
    left.set_xlabel("ln M on held-out speech (nats / text target)")
    left.set_ylabel("speech accuracy (%)  (star: average)")
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
    parts = [
        "\n## Evaluation: the text-speech gap\n",
        gap_table(results),
        "\n### Text-side forgetting\n",
        forgetting_table(results),
    ]
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
    for name in ("stage I", "stage II uniform", "stage II active"):
        if name not in systems:
            continue
        s = systems[name]
        speech = s["accuracy"]["speech"]
        held = s.get("heldout", {})
        avg = np.mean([speech[t] for t in tasks])
        rows.append(
            [
                name,
                f"{held.get('f', float('nan')):.4f}",
                f"{held.get('m', float('nan')):.4f}",
                *[f"{100 * speech[t]:.1f}" for t in tasks],
                f"{100 * avg:.1f}",
                f"{100 * (np.mean([reference[t] for t in tasks]) - avg):+.1f}",
            ]
        )
    header = ["student", "held-out F", "held-out M", *[f"{t} speech acc" for t in tasks], "average", "gap"]
    return _table(header, rows)
