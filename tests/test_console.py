"""The console of a run: Ray Data's INFO lines stay off it, the status line shows every pipeline."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from salad_ray.config import load_config
from salad_ray.phases import Phase
from salad_ray.rundir import RunDir
from salad_ray.runstate import RunState
from salad_ray.status import Status

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


def test_the_status_line_shows_lanes_pipelines_and_logs_phases(tmp_path, caplog):
    config = load_config("smoke")
    run = RunDir(tmp_path)
    progress = {"natural": (312, 848), "heldout": (51, 51)}
    status = Status(config, run, RunState(run.state, config.stages.stage2_rounds), lambda: progress)
    phase = Phase("natural", lambda: None)
    with caplog.at_level(logging.INFO, logger="salad_ray"):
        status.started(phase)
        line = status.line()
        status.ended(phase, 3.0, None)
    assert line.startswith("natural |") and "pipelines natural 312/848, heldout 51/51" in line
    assert [r.getMessage() for r in caplog.records] == ["phase natural", "phase natural done in 3 s"]
    assert status.line().startswith("starting |")  # the lane left with its phase
