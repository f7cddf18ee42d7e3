"""Elastic TTS on a simulated multi-node cluster: the pool follows `tts` nodes as they join, and
losing one mid-run loses and duplicates nothing (tools/elastic_tts.py, in its own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_tts_pool_follows_tts_nodes_and_losing_one_loses_nothing(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "elastic_tts.py"), str(out)],
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": ""},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert "error" not in s, s.get("error")
    # TTS actors run only where `tts` is; the pool (min 1, max 2) grows as tts nodes join
    assert s["actors_without_tts_nodes"] == 0
    assert s["actors_with_one_node"] == s["actors_still_one_node"] == 1
    assert s["actors_with_two_nodes"] == 2
    # a tts node removed mid-run: every input exactly once, in the shards or the quarantine
    assert s["pipeline_running_at_removal"] and s["tts_nodes_after_removal"] == 1
    assert s["victim_restarts"] and all(n >= 1 for n in s["victim_restarts"])  # its actor was restarted
    assert s["delivered"] == s["expected"]  # sorted ids: none twice, none missing
    assert s["written"] + s["quarantined"] == len(s["expected"])
