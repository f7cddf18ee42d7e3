"""The driver's status line (salad_ray.status): lanes, pipelines, trainers, phases logged."""

from __future__ import annotations

import json
import logging

from salad_ray import console
from salad_ray.config import load_config
from salad_ray.phases import Phase
from salad_ray.rundir import RunDir
from salad_ray.runstate import RunState
from salad_ray.status import Status


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


def test_the_trainer_shows_every_job_still_under_way_against_its_last_milestone(tmp_path):
    config = load_config("smoke")  # stage I 4 steps; stage II 2 rounds of 2 steps per arm
    run = RunDir(tmp_path)
    status = Status(config, run, RunState(run.state, config.stages.stage2_rounds), dict)
    assert status.trainer() == "-"
    lines = [("stage1", 4), ("stage2-active", 1), ("stage2-uniform", 2)]
    run.metrics.write_text("".join(json.dumps({"stage": job, "step": step}) + "\n" for job, step in lines))
    assert status.trainer() == "stage2-active 1/4, stage2-uniform 2/4"
    with open(run.metrics, "a") as f:
        f.write(json.dumps({"stage": "stage2-active", "step": 4}) + "\n")
        f.write(json.dumps({"stage": "stage2-uniform", "step": 4}) + "\n")
    assert status.trainer() == "stage2-uniform 4/4"  # all done: the last to log
    with open(run.metrics, "a") as f:
        f.write('{"stage": "stage2-act')  # a line the controller is still writing
    assert status.trainer() == "stage2-uniform 4/4"


def test_off_a_terminal_a_tick_logs_the_line_when_it_changed_or_after_a_quiet_spell(
    tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(console, "live", lambda line: None)  # not a terminal
    config = load_config("smoke")
    run = RunDir(tmp_path)
    status = Status(config, run, RunState(run.state, config.stages.stage2_rounds), dict, quiet=3600)
    with caplog.at_level(logging.INFO, logger="salad_ray"):
        status.tick()
        status.tick()  # unchanged, and not quiet for long: not logged again
        status.show("natural", "natural")
        status.tick()
        status.quiet = 0
        status.tick()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" |")[0] for line in lines] == ["starting", "natural", "natural"]
