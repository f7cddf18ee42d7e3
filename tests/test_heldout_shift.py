"""tools/heldout_shift.py on the smoke run: each student's held-out F, M and D, and its paired changes
from the first student's, as samples_gap measures them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_each_student_is_measured_against_the_first_on_the_same_held_out_samples(smoke_job, tmp_path):
    from salad_ray.config import load_config
    from salad_ray.metrics import per_token
    from salad_ray.model.student import SpeechLM
    from salad_ray.objective import samples_gap
    from salad_ray.pipeline.shards import ShardStore

    assert smoke_job.succeeded, smoke_job.output[-3000:]
    run, out = smoke_job.run_dir, tmp_path / "shift.jsonl"
    names = ["stage1", "warmup"]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "heldout_shift.py"),
            f"--run-dir={run}",
            *[f"--student={n}" for n in names],
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reference, warmup = [json.loads(line) for line in out.read_text().splitlines()]
    assert [reference["student"], warmup["student"]] == names and warmup["reference"] == "stage1"
    for change in ("m_change", "d_change"):  # the reference against itself: exactly 0
        assert reference[change] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    samples = list(ShardStore(run / "data" / "heldout").samples())
    batch = load_config(file=run / "config.yaml").eval.batch_size
    gaps = [samples_gap(SpeechLM.load(run / "students" / n), samples, batch, "cpu") for n in names]
    assert warmup["samples"] == len(samples)
    assert warmup["f"] == pytest.approx(per_token(gaps[1].f_sums, gaps[1].f_counts), rel=1e-4)
    for key, sums in (("m", "m_sums"), ("d", "d_sums")):
        values = [per_token(getattr(g, sums), g.m_counts) for g in gaps]
        assert warmup[key]["estimate"] == pytest.approx(values[1], rel=1e-4)
        assert warmup[key]["low"] <= warmup[key]["estimate"] <= warmup[key]["high"]
        change = warmup[f"{key}_change"]
        assert change["estimate"] == pytest.approx(values[1] - values[0], rel=1e-4, abs=1e-6)
        assert change["low"] <= change["estimate"] <= change["high"]

    def tool(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "tools" / "heldout_shift.py"), f"--run-dir={run}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    natural = tool("--student=stage1", "--store=natural", "--limit=2")  # a store stage I trained on
    assert natural.returncode == 0, natural.stderr[-3000:]
    assert (json.loads(natural.stdout)["store"], json.loads(natural.stdout)["samples"]) == ("natural", 2)
    missing = tool("--student=nobody")
    assert missing.returncode == 2 and "has no student nobody" in missing.stderr
    unspoken = tool("--student=stage1", "--store=text")  # text-only samples: no target follows speech
    assert unspoken.returncode == 2 and "no sample of text is spoken" in unspoken.stderr
