"""The store's history: ``<state>/history.jsonl``, one JSON line per operation, appended.

What ``status`` and the metrics read back (the last rotation, rollback, release), never what
recovery decides by: the journal and the generations' ``meta.json`` are the state
(``journal.py``).  Lines are ``{"time", "op", "outcome", ...details}``; ``time`` is UTC
ISO 8601 with microseconds (a refusal and an install in the same second stay ordered).
Appended with ``O_APPEND`` and no fsync (history, not state); a line that cannot be parsed
is skipped when read.  Mode 0600, owned by the state directory's owner (a root CLI run
leaves a file the daemon's user can still append to).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def utc_stamp() -> str:
    """Now, UTC, ISO 8601 with microseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class History:
    """``path``: the JSONL file; ``owner``: (uid, gid) it must belong to; ``own``: gives a
    path to that owner (``swap.Store.own``)."""

    path: Path
    owner: Callable[[], tuple[int, int]]
    own: Callable[[Path], None]

    def record(self, op: str, outcome: str, **details: Any) -> None:
        """Append one line: ``op`` (install, adopt, rollback, restore, release), its
        ``outcome`` and JSON-serialisable ``details``."""
        line = json.dumps({"time": utc_stamp(), "op": op, "outcome": outcome, **details})
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_uid != self.owner()[0]:
                self.own(self.path)  # created by a root CLI: the daemon appends too
            os.write(fd, line.encode() + b"\n")  # history, not state: no fsync
        finally:
            os.close(fd)

    def last(self, count: int = 10) -> list[dict[str, Any]]:
        """The last ``count`` lines that parse, oldest first ([] when there is no file)."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines[-count:]:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out
