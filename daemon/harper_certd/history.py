"""The store's history: ``<state>/history.jsonl``, one JSON line per operation, appended.

What ``status`` and the metrics read back (the last rotation, rollback, release), never what
recovery decides by: the journal and the generations' ``meta.json`` are the state
(``journal.py``).  Lines are ``{"time", "op", "outcome", ...details}``; ``time`` is UTC
ISO 8601 with microseconds (a refusal and an install in the same second stay ordered).
Appended with ``O_APPEND`` and no fsync (history, not state); a line that cannot be parsed
is skipped when read.  Mode 0600, owned by the state directory's owner (a root CLI run
leaves a file the daemon's user can still append to).

The cost of an operation does not grow with the history kept: ``last`` reads the file from
its end, in blocks, only as far back as the lines it returns (a ``status`` after 100,000
installs reads a few KiB), and ``record`` trims the file when it passes ``TRIM_BYTES``
(1 MiB, some 4,000 operations) to its newest ``KEEP_BYTES`` (512 KiB), written to a temporary
file and renamed over it.  A line appended by another process between the trim's read and
its rename is lost from the history (never from the state, which the journal and
``meta.json`` hold); the window is one rename per 2,000 operations or so.
"""

import contextlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from harper_certd import fsio
from harper_certd.clock import utc_now

TRIM_BYTES = 1024 * 1024  # the file is trimmed when an append takes it past this
KEEP_BYTES = 512 * 1024  # ... to its newest lines within this many bytes
_BLOCK = 8192  # read back from the end in blocks of this size


def utc_stamp() -> str:
    """Now, UTC, ISO 8601 with microseconds."""
    return utc_now().isoformat(timespec="microseconds")


class History(NamedTuple):
    """``path``: the JSONL file; ``owner``: (uid, gid) it must belong to; ``own``: gives a
    path to that owner (``swap.Store.own``)."""

    path: Path
    owner: Callable[[], tuple[int, int]]
    own: Callable[[Path], None]

    def record(self, op: str, outcome: str, **details: Any) -> None:
        """Append one line: ``op`` (install, adopt, rollback, restore, release), its
        ``outcome`` and JSON-serialisable ``details``."""
        line = json.dumps({"time": utc_stamp(), "op": op, "outcome": outcome, **details})
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags | os.O_NONBLOCK, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return  # a FIFO or device planted under the name: never written to
            if os.fstat(fd).st_uid != self.owner()[0]:
                self.own(self.path)  # created by a root CLI: the daemon appends too
            os.write(fd, line.encode() + b"\n")  # history, not state: no fsync
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > TRIM_BYTES:
            self.trim()

    def trim(self, keep_bytes: int | None = None) -> None:
        """Keep only the newest whole lines within ``keep_bytes``: written to a temporary
        file in the same folder (0600, same owner), renamed over the history (``keep_bytes``
        defaults to ``KEEP_BYTES``).  OSError
        (a full disk, a read-only state) leaves the file as it was."""
        keep = KEEP_BYTES if keep_bytes is None else keep_bytes
        tmp = self.path.with_name(f".{self.path.name}.{fsio.temp_tag()}.trim")
        try:
            with os.fdopen(fsio.open_regular(self.path), "rb") as src:
                size = os.fstat(src.fileno()).st_size
                src.seek(max(0, size - keep))
                tail = src.read()
            if size > keep:
                tail = tail[tail.find(b"\n") + 1 :]  # the first line read may be partial
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(tmp, flags, 0o600)
            try:
                os.write(fd, tail)
            finally:
                os.close(fd)
            if os.stat(tmp).st_uid != self.owner()[0]:
                self.own(tmp)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def last(self, count: int = 10) -> list[dict[str, Any]]:
        """The last ``count`` lines that parse, oldest first ([] when there is no file).

        Reads from the end in blocks until ``count`` + 1 line ends are in hand, so the cost
        follows ``count``, not the file's size."""
        if count <= 0:
            return []
        try:
            with os.fdopen(fsio.open_regular(self.path), "rb") as f:
                end = os.fstat(f.fileno()).st_size
                data = b""
                start = end
                while start > 0 and data.count(b"\n") <= count:
                    start = max(0, start - _BLOCK)
                    f.seek(start)
                    data = f.read(end - start)
        except OSError:  # missing, or not a regular file (a FIFO, a link): nothing to show
            return []
        lines = data.splitlines()
        if start > 0:
            lines = lines[1:]  # the first line read may be partial
        out = []
        for line in lines[-count:]:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out
