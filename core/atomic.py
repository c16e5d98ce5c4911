"""Files written all or nothing: a reader sees the old file or the whole new one, never a
part, even after a crash or a power cut."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, data: bytes | Callable[[Path], object]) -> Path:
    """Write ``data`` to ``path`` atomically and durably; return ``path``.

    ``data`` is bytes, or a function that writes the temporary path it is given (an exporter
    that wants a file name). The temporary file sits beside ``path`` (same file system, same
    suffix for writers that look at it); it is fsynced, renamed over ``path``, and the folder
    is fsynced so that the rename itself survives a crash. On error nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        commit_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def commit_file(tmp: Path, path: Path) -> None:
    """Make a finished temporary file ``path``: fsync it, rename it over ``path`` (same file
    system), fsync the folder. For writers that fill the file themselves (a memory map)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
