"""Bounded reads that never wait: a leaf that imports only ``os`` and ``stat``.

Here so that ``warmstart`` (the console script's first import, before anything else is
loaded), ``fsio`` and every reader of a file someone else may have put in place (Harper's
``hdb.pid`` and ``package.json``, a trust bundle, the set files Node is given) share one
loop and one way of opening.
"""

from __future__ import annotations

import os
import stat

# O_NONBLOCK: a FIFO put where a file should be is opened without waiting for a writer (a
# plain open() waits forever); O_NOCTTY: a terminal never becomes ours.  Links are followed:
# callers that must not follow them use fsio.read_regular.
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# ``read_fd``'s reads after the first (a file that grew past the size fstat gave)
_CHUNK = 1 << 16


def read_fd(fd: int, limit: int, size: int | None = None) -> bytes | None:
    """The bytes of open descriptor ``fd`` from where it stands to its end, or None when it
    holds more than ``limit`` bytes (at most ``limit`` + 1 are read: a file that grows while
    read is bounded too).  ``size``: what ``fstat`` said the file holds; the first read asks
    for that and one byte more, the next ones for 64 KiB (``os.read`` allocates what it is
    asked for: ``limit`` + 1, 1 MiB for a PEM file, cost each read of a 1 KiB file 40 us).
    OSError as ``os.read`` raises it."""
    chunks: list[bytes] = []
    total = 0
    ask = limit + 1 if size is None else min(size, limit) + 1
    while total <= limit:
        chunk = os.read(fd, min(ask, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        ask = _CHUNK
    return None if total > limit else b"".join(chunks)


def read_file(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """A regular file's bytes (its path's links followed), or None when it cannot be opened
    or read, is anything but a regular file (a FIFO, a device, a directory: the type of what
    was opened, ``fstat``, not of the path), or holds more than ``limit`` bytes."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return read_fd(fd, limit, info.st_size)
    except OSError:
        return None
    finally:
        os.close(fd)
