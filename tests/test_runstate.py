"""state.json (salad_ray.runstate): versions it upgrades, and ones it stops at with what to do."""

from __future__ import annotations

import json

import pytest

from salad_ray.runstate import STATE_VERSION, RunState, StateError, read_state


def test_a_state_from_before_version_1_gets_the_half_way_phases_its_train_phases_did(tmp_path):
    path = tmp_path / "state.json"
    old = ["stage1", "active/round-1/train", "uniform/round-1/train", "active/round-3/train"]
    path.write_text(json.dumps({"done": old, "notes": {"probes": {"1": ["t"]}}}))
    upgraded = read_state(path, rounds=3)  # round 3 is the last: it has no half-way call
    assert upgraded.version == STATE_VERSION and upgraded.notes.probes == {1: ["t"]}
    assert upgraded.done == [*old, "active/round-1/half"]
    assert read_state(path).done == old  # read, not resumed: as it is


def test_a_version_1_state_reads_without_d_and_is_written_back_as_this_version(tmp_path):
    path = tmp_path / "state.json"
    gap = {"stage I": {"step": 60, "heldout_f": 0.03, "heldout_m": 0.9}}
    path.write_text(json.dumps({"version": 1, "done": ["stage1"], "notes": {"gap": gap}}))
    state = RunState(path)
    assert state.notes.gap["stage I"].heldout_d is None  # a run from before D was kept
    state.finish("eval")
    assert json.loads(path.read_text())["version"] == STATE_VERSION == 2


def test_a_state_this_version_cannot_read_stops_with_what_to_do(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"version": STATE_VERSION + 1, "done": ["heldout"], "notes": {}}))
    with pytest.raises(StateError, match="written by a newer salad-ray"):
        RunState(path)
    path.write_text(json.dumps({"done": ["heldout"], "notes": {"probes": {"one": ["t"]}}}))
    with pytest.raises(StateError, match=r"notes\.probes\.one.*start a new --run-dir"):
        RunState(path)
    path.write_text('{"done": ["heldout"], "no')  # cut short
    with pytest.raises(StateError, match="is not a run state"):
        RunState(path)
