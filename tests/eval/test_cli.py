"""``python -m salad_ray.eval --run-dir``: a finished run evaluated again, its report remade with it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


def _learning_curve(report: str) -> str:
    """The report's learning-curve block (its table of evaluated students)."""
    return report.split("### Learning curve")[1].split("\n### ")[0]


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_round_students_evaluated_after_the_run_reach_its_report(smoke_job, tmp_path):
    assert smoke_job.succeeded, smoke_job.output[-3000:]
    run = tmp_path / "run"  # a copy: the shared smoke run's results stay as its run left them
    shutil.copytree(smoke_job.run_dir, run)
    report = run / "report" / "report.md"
    assert "| active round 1 |" not in _learning_curve(report.read_text())  # the run scored its final ones
    done = subprocess.run(
        [sys.executable, "-m", "salad_ray.eval", f"--run-dir={run}", "--set", "eval.round_students=true"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"report: {report}" in done.stdout
    systems = json.loads((run / "eval" / "results.json").read_text())["systems"]
    assert systems["active round 1"]["role"] == "round" and systems["active round 1"]["step"] > 0
    curve = _learning_curve(report.read_text())
    assert "| active round 1 |" in curve and "| uniform round 1 |" in curve
