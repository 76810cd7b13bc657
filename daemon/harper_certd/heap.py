"""The C heap's free pages given back to the system after work: glibc's ``malloc_trim(0)``.

Measured in the soak (``python -m bench``'s loop, 1,000 rotations; docs/bench/report.md): the
RSS crept ~1.5 MiB per 1,000 rotations while the Python objects stayed flat
(``sys.getallocatedblocks()`` ~217,000 and 21 pymalloc arenas from rotation 100 to 850):
memory freed by the native libraries (cryptography, OpenSSL) and kept by glibc's allocator,
some of it held by objects in reference cycles until a full collection.  ``gc.collect()``
then ``malloc_trim(0)`` (``madvise(MADV_DONTNEED)`` on the free pages of every arena; glibc
2.8 on) took the creep to ~0.6 MiB per 1,000.  Called at most once per
``TRIM_AFTER_SECONDS`` after files arrived (``node.loop``), never on an idle daemon.  Where
the C library has no ``malloc_trim`` (musl, macOS), ``trim`` only collects.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

# Seconds after the first files of a burst before the heap is trimmed (one trim a burst).
TRIM_AFTER_SECONDS = 30.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        found: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # no such symbol: not glibc
        return None
    return found


_TRIM = _malloc_trim()


def trim() -> bool:
    """A full garbage collection (objects in reference cycles hold native memory until the
    oldest generation is collected, which a quiet daemon rarely reaches), then the
    allocator's free pages given back; whether the C library could (True: glibc)."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
