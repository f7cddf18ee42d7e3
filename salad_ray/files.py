"""Files written whole or not at all: a reader never sees half of one, and a crash mid-write leaves
the previous version (or nothing) in place."""

from __future__ import annotations

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
