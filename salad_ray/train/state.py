"""Training checkpoints: everything needed to continue a run exactly, nothing that unpickles code.

    <checkpoint>/
      student/           the weights as a saved student (safetensors; SpeechLM.load reads it)
      optimizer.pt       AdamW state, full (unsharded), keyed by parameter name
      scheduler.pt       the LambdaLR state (the WSD fields, no code)
      position.json      step, samples consumed, samples and tokens seen per source
      rng-rank<r>.pt     each rank's torch RNG state

The .pt files hold only tensors and plain containers and are read with
``torch.load(weights_only=True)``; weights are safetensors. Saving and restoring go through
torch.distributed.checkpoint's state-dict API, so the same code serves DDP and FSDP.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from salad_ray.files import on_disk
from salad_ray.model.student import SpeechLM

POSITION_FILE = "position.json"


@dataclass
class Position:
    """Where a stage's run stands: the data position is the number of steps taken."""

    step: int = 0
    samples: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # samples per source
    tokens: int = 0  # LLM positions processed

    @classmethod
    def read(cls, directory: Path) -> Position:
        return cls(**json.loads((directory / POSITION_FILE).read_text()))


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kwargs)


def save(
    directory: Path,
    *,
    model: nn.Module,
    student: SpeechLM,
    optimizer,
    scheduler,
    position: Position,
    rank: int,
) -> None:
    """Every rank calls this (gathering a sharded state is collective); rank 0 writes the shared files."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    directory.mkdir(parents=True, exist_ok=True)
    model_state = get_model_state_dict(model, options=_options())
    optim_state = get_optimizer_state_dict(model, optimizer, options=_options())
    with on_disk(directory, "a checkpoint"):
        if rank == 0:
            student.save(directory / "student", state_dict=model_state)
            torch.save(optim_state, directory / "optimizer.pt")
            torch.save(scheduler.state_dict(), directory / "scheduler.pt")
            (directory / POSITION_FILE).write_text(json.dumps(asdict(position)))
        torch.save({"cpu": torch.get_rng_state()}, directory / f"rng-rank{rank}.pt")


def export_student(directory: Path, *, model: nn.Module, student: SpeechLM, rank: int) -> None:
    """The student's weights as they are now, saved as a student in ``directory`` whole or not at all
    (salad_ray.files.new_dir): a milestone on a call's way to its last step. Every rank calls this
    (gathering a sharded state is collective); rank 0 writes, unless ``directory`` exists already: a
    resumed call retrains the same steps to the same weights, and a student once saved is not
    rewritten under a reader."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    from salad_ray.files import new_dir

    model_state = get_model_state_dict(model, options=_options())
    if rank == 0 and not directory.is_dir():
        with new_dir(directory) as tmp, on_disk(directory.parent, "a student"):
            student.save(tmp, state_dict=model_state)


def restore(directory: Path, *, model: nn.Module, optimizer, scheduler, rank: int) -> Position:
    """Load optimizer, scheduler, RNG and data position (the weights were loaded with the student)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    optim_state = torch.load(directory / "optimizer.pt", weights_only=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=optim_state, options=_options())
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    rng = directory / f"rng-rank{rank}.pt"
    if rng.is_file():  # absent when the run restarts with more workers than it saved with
        torch.set_rng_state(torch.load(rng, weights_only=True)["cpu"])
    return Position.read(directory)
