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
            "--arm=active",
            f"--save={tmp_path / 'student'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["step"] for p in result["curve"]] == [0, 1, 2]
    from salad_ray.config import load_config

    rounds = load_config(file=smoke_job.run_dir / "config.yaml").stages.stage2_rounds
    assert result["synthetic"] == [f"active-{r}" for r in range(1, rounds + 1)]  # --arm: its round stores
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
    assert result["text_change"]["low"] <= result["text_change"]["estimate"] <= result["text_change"]["high"]
    change = result["spoken_change"]  # paired over the same items: the mean of the accuracies' difference
    assert change["low"] <= change["estimate"] <= change["high"]
    ends = [result["spoken_accuracy"][at] for at in ("end", "stage1")]
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


@pytest.mark.slow
@pytest.mark.machine_wide
def test_the_sweep_names_a_synthetic_store_the_run_does_not_have(smoke_job, tmp_path):
    assert smoke_job.succeeded, smoke_job.output[-3000:]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "stage2_sweep.py"),
            f"--run-dir={smoke_job.run_dir}",
            *["--batch=2", "--lr=1e-3", "--steps=2", f"--out={tmp_path / 'sweep.jsonl'}"],
            *["--synthetic", "probes-1", "active-9"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    assert "no store active-9" in done.stderr and "probes-1" not in done.stderr.splitlines()[-1]
    assert not (tmp_path / "sweep.jsonl").exists()
