"""The rehearsal preset's local models and datasets (tools/rehearsal_data.py): built deterministically,
in the formats of the paper's sources, and every source and model of the preset resolves from them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from salad_ray import preflight
from salad_ray.config import load_config
from salad_ray.pipeline.shards import ShardStore
from salad_ray.runstate import RunState

ROOT = Path(__file__).parents[1]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_the_same_seed_builds_the_same_llm_and_text(tmp_path, rehearsal_tool):
    tool = rehearsal_tool
    for part in ("a", "b"):
        tool.build_llm(tmp_path / part / "llm", seed=0)
        tool.build_fineweb_edu(tmp_path / part / "fineweb-edu", documents=50)
    for name in ("llm", "fineweb-edu"):
        assert _digest(tmp_path / "a" / name) == _digest(tmp_path / "b" / name)
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "a" / "llm").model_type == "qwen2"


@pytest.fixture(scope="module")
def rehearsal_home(tmp_path_factory, rehearsal_tool):
    """A folder holding runs/rehearsal-data, the preset's local models and data (built once: espeak-ng
    speaks ~20 texts and Kokoro's random weights are made, ~1 min)."""
    home = tmp_path_factory.mktemp("rehearsal")
    rehearsal_tool.build(home / "runs" / "rehearsal-data")
    return home


@pytest.mark.slow
def test_every_source_and_model_of_the_rehearsal_preset_resolves(rehearsal_home, monkeypatch):
    monkeypatch.chdir(rehearsal_home)  # the preset names runs/rehearsal-data, relative to where it runs
    config = load_config("rehearsal")
    problems = preflight.data_problems(config) + preflight.mixture_problems(config)
    problems += preflight.model_problems(config)
    assert problems == []
    assert config.models.encoder.kind.value == "mimi" and config.tts.backend.value == "kokoro"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_rehearsal_survives_a_lost_train_worker_and_tts_actor(rehearsal_home):
    """paper-3b's whole loop at toy size on a simulated cluster of its node groups (tools/rehearse.py):
    a train worker killed mid-stage and a TTS actor killed mid-round; the run still ends at its planned
    step, every actor sits in its group, and every sample of every store is committed once."""
    run_dir, summary = rehearsal_home / "runs" / "rehearsal", rehearsal_home / "summary.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "rehearse.py"), "--faults", f"--summary={summary}"],
        cwd=rehearsal_home,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(summary.read_text())
    assert report["fault_error"] is None, report["fault_error"]  # the fault thread itself did not fail
    assert set(report["killed"]) == {"train worker", "TTS actor"}
    assert report["misplaced"] == []
    assert any(k.startswith("ServeReplica") and k.endswith("@ gpu") for k in report["placements"])

    config = load_config(file=run_dir / "config.yaml")
    state = RunState(run_dir / "state.json")
    assert "report" in state.done and (run_dir / "report" / "report.md").is_file()
    stages = config.stages
    assert state.notes.gap["stage I"].step == stages.stage1_steps
    assert state.notes.gap["stage II active"].step == stages.stage2_rounds * stages.stage2_steps_per_round
    for folder in sorted((run_dir / "data").iterdir()):
        store = ShardStore(folder)
        shards, quarantine = store.ids("shards"), store.ids("quarantine")
        assert len(shards) + len(quarantine) == len(set(shards) | set(quarantine)), folder.name
        assert store.table().num_rows == len(shards), folder.name
