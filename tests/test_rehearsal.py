"""The rehearsal preset's local models and datasets (tools/rehearsal_data.py): built deterministically,
in the formats of the paper's sources, and every source and model of the preset resolves from them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from salad_ray import preflight
from salad_ray.config import load_config

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


@pytest.mark.slow  # espeak-ng speaks ~20 texts and Kokoro's random weights are built: ~1 min
def test_every_source_and_model_of_the_rehearsal_preset_resolves(tmp_path, monkeypatch, rehearsal_tool):
    rehearsal_tool.build(tmp_path / "runs" / "rehearsal-data")
    monkeypatch.chdir(tmp_path)  # the preset names runs/rehearsal-data, relative to where it runs
    config = load_config("rehearsal")
    problems = preflight.data_problems(config) + preflight.mixture_problems(config)
    problems += preflight.model_problems(config)
    assert problems == []
    assert config.models.encoder.kind.value == "mimi" and config.tts.backend.value == "kokoro"
