"""The console of a run (salad_ray.console): Ray Data's INFO lines stay off it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


QUIETED = """
import sys
import ray
from salad_ray import console

ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
ray.data.range(8).map(lambda row: row).materialize()
print("-- quiet from here --", file=sys.stderr, flush=True)
console.quiet_ray_data()
ray.data.range(8).map(lambda row: row).materialize()
"""


@pytest.mark.slow
def test_ray_data_info_lines_leave_the_console(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-c", QUIETED], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loud, quiet = proc.stderr.split("-- quiet from here --")
    assert "Starting execution of Dataset" in loud  # Ray Data's default: every dataset's plan, progress
    assert "Starting execution of Dataset" not in quiet and " INFO " not in quiet, quiet
