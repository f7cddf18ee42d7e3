"""tools/stage2_sweep.py on the smoke run: stage II's batch and rate measured from its stage-I student."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_the_sweep_trains_the_stage_one_student_and_measures_m_and_accuracy_from_it(smoke_job, tmp_path):
    assert smoke_job.succeeded, smoke_job.output[-3000:]
    out = tmp_path / "sweep.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "stage2_sweep.py"),
            f"--run-dir={smoke_job.run_dir}",
            *["--batch=2", "--lr=1e-3", "--steps=2", "--eval-every=1", "--accuracy", f"--out={out}"],
            *["--synthetic", "active-1", "probes-1"],
            f"--save={tmp_path / 'student'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["step"] for p in result["curve"]] == [0, 1, 2]
    assert result["synthetic"] == ["active-1", "probes-1"]  # the stores its stream drew speech from
    stage1 = json.loads((smoke_job.run_dir / "state.json").read_text())["notes"]["gap"]["stage I"]
    assert result["curve"][0]["heldout_m"] == pytest.approx(stage1["heldout_m"], rel=1e-4)  # its start
    assert result["curve"][0]["heldout_d"] == pytest.approx(stage1["heldout_d"], rel=1e-4)  # D noted too
    assert result["curve"][2]["heldout_m"] != result["curve"][0]["heldout_m"]  # and it trained
    assert result["m_over_stage1"] == pytest.approx(
        result["curve"][2]["heldout_m"] / result["curve"][0]["heldout_m"]
    )
    results = json.loads((smoke_job.run_dir / "eval" / "results.json").read_text())
    assert result["spoken_accuracy"]["stage1"] == pytest.approx(
        results["systems"]["stage I"]["accuracy"]["speech"]
    )  # scored as the run's evaluation scores it
    assert set(result["spoken_accuracy"]["end"]) == set(results["tasks"])
    assert result["text_accuracy"]["stage1"] == pytest.approx(
        results["systems"]["stage I"]["accuracy"]["text"]
    )
    for mode in ("spoken", "text"):  # paired over the same items: the mean of the accuracies' difference
        change = result[f"{mode}_change"]
        assert change["low"] <= change["estimate"] <= change["high"]
        ends = [result[f"{mode}_accuracy"][at] for at in ("end", "stage1")]
        assert change["estimate"] == pytest.approx(float(np.mean([ends[0][t] - ends[1][t] for t in ends[0]])))
    from salad_ray.metrics import per_token
    from salad_ray.model.student import SpeechLM
    from salad_ray.objective import samples_gap
    from salad_ray.pipeline.shards import ShardStore

    saved = SpeechLM.load(tmp_path / "student")  # --save: the student the last curve point measured
    heldout = list(ShardStore(smoke_job.run_dir / "data" / "heldout").samples())
    gap = samples_gap(saved, heldout, 4, saved.device)
    assert per_token(gap.m_sums, gap.m_counts) == pytest.approx(result["curve"][2]["heldout_m"], rel=1e-4)
    assert per_token(gap.d_sums, gap.m_counts) == pytest.approx(result["curve"][2]["heldout_d"], rel=1e-4)


def _sweep_cli(run_dir: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "stage2_sweep.py"),
            f"--run-dir={run_dir}",
            *["--batch=2", "--lr=1e-3", "--steps=2", f"--out={out}"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.machine_wide
def test_the_sweep_names_the_stores_the_run_lacks_and_takes_an_arm_or_stores_not_both(smoke_job, tmp_path):
    assert smoke_job.succeeded, smoke_job.output[-3000:]
    out = tmp_path / "sweep.jsonl"
    named = _sweep_cli(smoke_job.run_dir, out, "--synthetic", "probes-1", "active-9")
    assert named.returncode == 2
    assert named.stderr.splitlines()[-1].endswith("lacks the store(s) active-9")
    # --arm: the arm's stores of every round the (overridden) config has; the smoke run has 2
    rounds = _sweep_cli(smoke_job.run_dir, out, "--arm=uniform", "--set", "stages.stage2_rounds=3")
    assert rounds.returncode == 2
    assert "lacks the store(s) uniform-3 (uniform: selection.compare_uniform: true)" in rounds.stderr
    both = _sweep_cli(smoke_job.run_dir, out, "--arm=active", "--synthetic", "probes-1")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert not out.exists()
