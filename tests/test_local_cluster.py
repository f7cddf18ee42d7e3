"""Ray's address file after a cluster is gone: forgotten only when no live cluster has it (no Ray started)."""

from __future__ import annotations

import pytest

from salad_ray import local_cluster
from salad_ray.local_cluster import address_file, forget_dead_cluster, recorded_address, running_cluster

DEAD, LIVE = "127.0.0.1:61001", "127.0.0.1:62002"


def record(tmp_path, address: str) -> None:
    address_file(str(tmp_path)).write_text(address)


def test_the_address_file_is_rays(tmp_path):
    assert address_file(str(tmp_path)) == tmp_path / "ray_current_cluster"


def test_a_dead_clusters_address_is_forgotten(tmp_path):
    record(tmp_path, DEAD)
    assert forget_dead_cluster(str(tmp_path), live={LIVE}) == DEAD
    assert not address_file(str(tmp_path)).exists() and recorded_address(str(tmp_path)) is None
    assert forget_dead_cluster(str(tmp_path), live=set()) is None  # nothing left to forget


def test_a_live_clusters_address_is_kept(tmp_path):
    record(tmp_path, LIVE + "\n")
    assert forget_dead_cluster(str(tmp_path), live={LIVE}) is None
    assert recorded_address(str(tmp_path)) == LIVE


def test_no_file_or_an_empty_one_is_nothing_to_forget(tmp_path):
    assert forget_dead_cluster(str(tmp_path), live=set()) is None
    record(tmp_path, "")
    assert recorded_address(str(tmp_path)) is None and forget_dead_cluster(str(tmp_path), live=set()) is None


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """This machine's address file in tmp_path, and the live clusters a test sets."""
    live: set[str] = set()
    monkeypatch.setattr(local_cluster, "address_file", lambda temp_dir=None: tmp_path / "ray_current_cluster")
    monkeypatch.setattr(local_cluster, "live_clusters", lambda: set(live))
    return tmp_path, live


def test_running_cluster_prefers_the_recorded_one_and_ignores_a_dead_record(machine):
    tmp_path, live = machine
    assert running_cluster() is None
    record(tmp_path, DEAD)
    assert running_cluster() is None  # the record alone is no cluster
    live.update({LIVE, "127.0.0.1:60000"})
    assert running_cluster() == "127.0.0.1:60000"  # the record is dead: any live one
    record(tmp_path, LIVE)
    assert running_cluster() == LIVE


def test_the_command_says_what_it_did(machine, capsys):
    tmp_path, live = machine
    local_cluster.main()
    assert "nothing to repair" in capsys.readouterr().out
    record(tmp_path, DEAD)
    local_cluster.main()
    assert f"it named {DEAD}, a Ray cluster no longer running" in capsys.readouterr().out
    live.add(LIVE)
    record(tmp_path, LIVE)
    local_cluster.main()
    assert f"names {LIVE}, a live Ray cluster: kept" in capsys.readouterr().out
