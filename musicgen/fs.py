"""Atomic file writes: a kill or an error leaves either the old file or the new one, never a
half-written file; and ``exclusive``, one writer at a time in a directory that parallel runs share.
Standard library only, so that code that reads no MIDI (the corpus export's bookkeeping, reports)
need not import the MIDI stack to write its outputs.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_UMASK = os.umask(0o022)  # read the process umask (the only way), then put it back
os.umask(_UMASK)

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "exclusive"]


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved onto ``path`` when the block succeeds.

    A kill or an error leaves either the old file or the new one, never a half-written file
    under ``path``: the temporary file is hidden (``.name.XXXX.tmp``), fsynced, then renamed
    (``os.replace`` is atomic within a file system) and removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private; give it a plain file's permissions
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a kill leaves either the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` encoded as UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def exclusive(root: Path | str) -> Iterator[None]:
    """Hold ``root``'s lock (``root/.lock``, made if missing) for the block: one writer at a time in
    a directory that parallel runs or DDP ranks share (the corpus export, the token cache). Released
    by the OS if the process dies."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as f:  # "a": made if missing, never truncated or touched
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
