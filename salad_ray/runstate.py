"""A run's ``state.json``: which phases are done, and what they noted for later phases and the report.

The file is a typed, versioned document (:class:`StateFile`), rewritten atomically each time a phase
finishes. Version 1 added the version itself, typed the notes and made the active arm's half-way
training call of round r a phase of its own (``active/round-r/half``). A file written before it (no
``version``) holds the same fields with round numbers as strings; read for a run with R stage-II
rounds, each round r < R whose training is done gets its half-way phase done too (its student was
saved by the same phase). Version 2 marks gap notes that may hold held-out D (``GapNote.heldout_d``,
which version-1 files written since D was added hold too): a version-1 file reads as it is, with or
without D, and is written back as version 2, so that a salad-ray from before D says the file is
newer instead of failing on an unknown field. A file from a newer salad-ray, or one that cannot be
read, stops the run with a message naming the file and what to do.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from salad_ray.accounting import PipelineReport
from salad_ray.config import Strict, deep_merge
from salad_ray.files import write_text
from salad_ray.rundir import ACTIVE

STATE_VERSION = 2


class GapNote(Strict):
    """Held-out F, M and D (nats per text target; D the distillation KL over M's targets) and the
    loss where a milestone's training ended."""

    step: int | None = None
    heldout_f: float | None = None
    heldout_m: float | None = None
    heldout_d: float | None = None  # None in runs from before it was kept
    loss: float | None = None


class RoundNote(Strict):
    """What an arm's round synthesized: seconds of speech, from how many texts."""

    seconds: float
    texts: int


class PoolNote(Strict):
    texts: int
    clusters: int


class Notes(Strict):
    """What finished phases leave for later ones (the keys of :meth:`RunState.finish`)."""

    heldout_ids: list[str] = Field(default_factory=list)  # never trained on, never in the pool
    natural_ids: list[str] = Field(default_factory=list)  # the natural stand-in's texts: not in the pool
    pool: PoolNote | None = None
    probes: dict[int, list[str]] = Field(default_factory=dict)  # round -> its probes' text ids
    rounds: dict[str, dict[int, RoundNote]] = Field(default_factory=dict)  # arm -> round -> synthesis
    gap: dict[str, GapNote] = Field(default_factory=dict)  # milestone label -> its held-out gap
    pipelines: dict[str, PipelineReport] = Field(default_factory=dict)  # store -> its pipeline's counts


class StateFile(Strict):
    version: int = STATE_VERSION
    done: list[str] = Field(default_factory=list)
    notes: Notes = Field(default_factory=Notes)


class StateError(RuntimeError):
    """A state.json this version cannot continue from."""


def read_state(path: Path, rounds: int | None = None) -> StateFile:
    """The state at ``path`` (a new one if there is none); a file from before version 1 is upgraded
    for a run of ``rounds`` stage-II rounds (module docstring), or read as it is without them."""
    if not path.is_file():
        return StateFile()
    try:
        data = json.loads(path.read_text())
        version = data.setdefault("version", 0)
        assert isinstance(version, int), f"version {version!r} is not an integer"
    except (ValueError, AttributeError, AssertionError) as e:
        raise StateError(f"{path} is not a run state ({e}); start a new --run-dir") from None
    if version == 0:
        done = data.setdefault("done", [])
        for r in range(1, rounds or 0):
            if ACTIVE.phase(r, "train") in done and ACTIVE.phase(r, "half") not in done:
                done.append(ACTIVE.phase(r, "half"))
    if version < STATE_VERSION:  # versions 0 and 1 hold no field that version 2 reads differently
        data["version"] = STATE_VERSION
    elif version > STATE_VERSION:
        raise StateError(
            f"{path} is version {version}, written by a newer salad-ray than this one (which reads up "
            f"to {STATE_VERSION}): continue the run with that version, or start a new --run-dir"
        )
    try:
        return StateFile.model_validate(data)
    except ValidationError as e:
        raise StateError(
            f"{path} cannot be read as a run state ({e.error_count()} problems, first: "
            f"{'.'.join(map(str, e.errors()[0]['loc']))}: {e.errors()[0]['msg']}); start a new --run-dir"
        ) from None


class RunState:
    """The run's state, persisted atomically each time a phase finishes (thread-safe); ``rounds``:
    the run's stage-II rounds, to upgrade a file from before version 1 (:func:`read_state`)."""

    def __init__(self, path: Path, rounds: int | None = None):
        self.path = path
        state = read_state(path, rounds)
        self.done, self.notes = state.done, state.notes
        self._lock = threading.Lock()

    def finish(self, phase: str, **notes: Any) -> None:
        """Record ``phase`` as done, merging ``notes`` (fields of :class:`Notes`) into the notes."""
        with self._lock:
            self.notes = Notes.model_validate(deep_merge(self.notes.model_dump(), notes))
            if phase not in self.done:
                self.done.append(phase)
            state = StateFile(done=self.done, notes=self.notes)
            write_text(self.path, state.model_dump_json(indent=2))
