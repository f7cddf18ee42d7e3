"""tools/token_error.py on the smoke run: the adapter's greedy-CTC token error on its spoken stores."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.machine_wide  # smoke_job (the README's laptop job) ends with `ray stop`
def test_the_tool_reads_each_store_s_spoken_tokens_against_what_the_adapter_spells(smoke_job, tmp_path):
    from salad_ray.metrics import token_error
    from salad_ray.model.student import SpeechLM
    from salad_ray.objective import speech_tokens
    from salad_ray.pipeline.shards import ShardStore

    assert smoke_job.succeeded, smoke_job.output[-3000:]
    student = smoke_job.run_dir / "students" / "stage1"
    stores = [smoke_job.run_dir / "data" / name for name in ("natural", "heldout")]
    out = tmp_path / "token_error.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "token_error.py"),
            f"--student={student}",
            *[f"--store={s}" for s in stores],
            "--limit=3",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["store"] for r in results] == [str(s) for s in stores]
    model = SpeechLM.load(student).eval()
    for result, store in zip(results, stores, strict=True):
        samples = list(itertools.islice(ShardStore(store).samples(), 3))
        references = [t for s in samples for t in speech_tokens(s)]
        assert (result["samples"], result["spans"]) == (len(samples), len(references))
        assert result["tokens"] == sum(len(r) for r in references) > 0
        spelled = model.spelled_tokens([a for s in samples for a in s.audio])
        assert result["token_error"] == pytest.approx(token_error(references, spelled))
