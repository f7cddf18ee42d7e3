"""Files written whole or not at all: a reader never sees half of one, and a crash mid-write leaves
the previous version (or nothing) in place; a write that fails on a full disk says so. JSON-lines logs
are appended a line at a time, each line in one write."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for the block to write (same folder, so the rename is
    atomic; hidden and ending in ``.tmp``, so no reader's pattern matches it); it replaces ``path``
    when the block ends, and is removed if the block raises. (``np.save`` appends ``.npy`` to a
    path: give it the open file.)"""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def append_json_line(path: str | Path, record: dict) -> None:
    """Append ``record`` to a JSON-lines file as one line, in one write (in append mode, a line lands
    whole after every line already there; the logs and the tools' result files)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Written and synced to disk before it replaces ``path`` (a commit log may name it next)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def new_dir(path: str | Path) -> Iterator[Path]:
    """A directory for the block to fill, which becomes ``path`` whole or not at all: it is the hidden
    sibling ``.<name>.tmp`` until the block ends, then renamed. The temporary's name is fixed, so what
    a writer killed midway left behind (a student is hundreds of MB) is removed by the next writer,
    not kept forever."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_dir(source: str | Path, path: str | Path) -> None:
    """``source`` copied to a new directory ``path`` whole or not at all (:func:`new_dir`).

    Files are hard-linked where the filesystem allows and copied where it does not: a copy costs
    no bytes, for sources whose files are never rewritten in place (a training checkpoint's are
    written once; deleting the checkpoint later leaves the copy whole)."""
    with new_dir(path) as tmp:
        shutil.copytree(source, tmp, copy_function=_link_or_copy)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(source, target)


# Free bytes under which a failed write is put down to a full disk (a checkpoint that filled it left
# close to nothing; torch.save itself reports only "iostream error").
NEARLY_FULL = 1 << 30


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem of ``path`` (of its nearest existing folder)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


# OS errors that a full disk raises; an OSError with another errno (EACCES, ...) is never put down to it.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def on_disk(directory: str | Path, what: str) -> Iterator[None]:
    """A block that writes ``what`` into ``directory``. An error that a full disk may have caused
    (ENOSPC or EDQUOT, or an error without an errno: torch.save's RuntimeError, safetensors' own),
    raised while that filesystem has under :data:`NEARLY_FULL` bytes free, becomes an
    ``OSError(ENOSPC)`` naming the folder, the free space and what to do; any other error passes
    unchanged. Place it inside any block that deletes the partial write on error, so the free space
    is read before that."""
    try:
        yield
    except Exception as e:
        if isinstance(e, OSError) and e.errno is not None and e.errno not in DISK_FULL:
            raise
        try:
            free = free_bytes(directory)
        except OSError:
            raise e from None
        if free >= NEARLY_FULL:
            raise
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise OSError(
            errno.ENOSPC,
            f"writing {what} to {directory} failed ({first_line}) with {free / 2**20:.0f} MiB free on "
            "its disk. Free space there (on a run's own disk the largest files are old runs' train/ "
            "checkpoints), then run again with --resume: the run continues from its last checkpoint",
        ) from e
