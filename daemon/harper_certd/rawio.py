"""Reading an open descriptor to its end, bounded: a leaf that imports only ``os``.

Here so that ``warmstart`` (the console script's first import, before anything else is
loaded) and ``fsio`` (every other bounded read of the package) share one loop.
"""

from __future__ import annotations

import os


def read_fd(fd: int, limit: int) -> bytes | None:
    """The bytes of open descriptor ``fd`` from where it stands to its end, or None when it
    holds more than ``limit`` bytes (at most ``limit`` + 1 are read: a file that grows while
    read is bounded too).  OSError as ``os.read`` raises it."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return None if total > limit else b"".join(chunks)
