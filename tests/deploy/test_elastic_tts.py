"""Elastic TTS on a simulated multi-node cluster: the pool follows `tts` nodes, and losing one
mid-run loses and duplicates nothing (tests/deploy/elastic_tts.py runs each case in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_case(mode: str, tmp_path: Path) -> dict:
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.deploy.elastic_tts", mode, str(out)],
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": ""},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert "error" not in summary, summary.get("error")
    return summary


def test_the_tts_pool_grows_as_the_autoscaler_adds_tts_nodes(tmp_path):
    s = run_case("grow", tmp_path)
    assert s["tts_nodes_before"] == 0  # TTS actors can only run where `tts` is: none at first
    assert s["peak_tts_nodes"] == 2 and s["peak_tts_actors"] == 2  # min 1 -> max 2, one per node
    assert s["delivered"] == s["expected"]  # every input exactly once


def test_losing_a_tts_node_mid_run_loses_and_duplicates_nothing(tmp_path):
    s = run_case("remove", tmp_path)
    assert s["removed_while_running"] and s["tts_nodes_after"] == 1
    assert s["delivered"] == s["expected"]  # sorted lists: no id twice, none missing
    assert s["written"] + s["quarantined"] == len(s["expected"])
