"""Atomic writes (salad_ray.files): the whole new file, or the old one and no leftovers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from salad_ray.files import append_json_line, atomic_path, copy_dir, write_bytes, write_text


def test_a_finished_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "state.json"
    write_text(path, "old")
    write_text(path, "new")
    write_bytes(tmp_path / "blob.bin", b"\x00\x01")
    with atomic_path(tmp_path / "wave.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.arange(3))
    assert path.read_text() == "new" and (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    assert np.load(tmp_path / "wave.npy").tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "state.json", "wave.npy"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "results.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_the_temporary_matches_no_reader_pattern(tmp_path):
    with atomic_path(tmp_path / "000001.json") as tmp:
        tmp.write_text("{}")
        assert list(tmp_path.glob("*.json")) == []  # the shard store lists its commits by *.json


def test_a_directory_is_copied_whole_or_not_at_all(tmp_path):
    source = tmp_path / "checkpoint"
    (source / "adapter").mkdir(parents=True)
    (source / "adapter" / "weights.bin").write_bytes(b"w")
    (source / "config.json").write_text("{}")
    (tmp_path / ".student.tmp" / "adapter").mkdir(parents=True)  # what a copy killed midway left
    (tmp_path / ".student.tmp" / "adapter" / "half.bin").write_bytes(b"h")
    copy_dir(source, tmp_path / "student")
    assert (tmp_path / "student" / "adapter" / "weights.bin").read_bytes() == b"w"
    assert not (tmp_path / "student" / "adapter" / "half.bin").exists()
    with pytest.raises(FileNotFoundError):  # a source that is gone leaves no half copy behind
        copy_dir(tmp_path / "missing", tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "student"]


def test_a_copied_directory_outlives_its_source_and_costs_no_bytes(tmp_path):
    """Hard links on one filesystem: the copy shares the source's bytes, and deleting the source
    (Ray Train dropping an old checkpoint) leaves the copy whole."""
    source = tmp_path / "checkpoint"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"weights")
    copy_dir(source, tmp_path / "student")
    copied = tmp_path / "student" / "model.safetensors"
    assert copied.stat().st_ino == (source / "model.safetensors").stat().st_ino
    shutil.rmtree(source)
    assert copied.read_bytes() == b"weights"


@pytest.mark.parametrize("nearly_full", [True, False])
def test_a_write_that_fails_on_a_full_disk_says_so_and_any_other_failure_passes(
    tmp_path, monkeypatch, nearly_full: bool
):
    """/dev/full fails every write as a full disk does (torch.save: "iostream error" or ENOSPC). Where
    the run's disk is nearly full (the threshold raised past any free space), the error names the
    folder, its free space and --resume; where it is not, torch's own error passes unchanged."""
    import errno

    import torch

    from salad_ray import files

    monkeypatch.setattr(files, "NEARLY_FULL", 1 << 62 if nearly_full else 0)
    with pytest.raises((OSError, RuntimeError)) as raised, files.on_disk(tmp_path, "a checkpoint"):
        torch.save(torch.zeros(1 << 20), "/dev/full")
    if nearly_full:
        assert raised.type is OSError and raised.value.errno == errno.ENOSPC
        message = str(raised.value)
        assert f"writing a checkpoint to {tmp_path} failed" in message
        assert "MiB free on its disk" in message and "--resume" in message
        assert raised.value.__cause__ is not None
    else:
        assert "MiB free on its disk" not in str(raised.value) and raised.value.__cause__ is None


def test_an_error_that_no_full_disk_raises_passes_unchanged(tmp_path, monkeypatch):
    """A permission error is not put down to the disk, however little space is free."""
    from salad_ray import files

    monkeypatch.setattr(files, "NEARLY_FULL", 1 << 62)
    with pytest.raises(PermissionError) as raised, files.on_disk(tmp_path, "a checkpoint"):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))
    assert raised.value.__cause__ is None and "MiB free" not in str(raised.value)


def test_json_lines_are_appended_after_what_is_there_one_record_a_line(tmp_path):
    path = tmp_path / "log.jsonl"
    for record in ({"step": 1, "note": "a\nb"}, {"step": 2}):  # a newline inside a value stays escaped
        append_json_line(path, record)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1, "note": "a\nb"},
        {"step": 2},
    ]
