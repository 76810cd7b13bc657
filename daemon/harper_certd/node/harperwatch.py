"""Harper stopping and starting, noticed: ``certd.harper_stopped`` / ``certd.harper_started``.

The node looks at ``<root>/hdb.pid`` (``harper.process.harper_pid``: the PID, alive and not a
zombie) every ``INTERVAL_SECONDS`` (monotonic) and says when the answer changes: a running
Harper gone, or a Harper running where none (or another PID, a restart not made by the
daemon) was.  The first look only remembers (``certd.harper_discovered`` said it already).
A new PID is both: the old process stopped, a new one started (a full restart, the daemon's
own too, after its ``certd.harper_restarted``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harper_certd import events, logs
from harper_certd.harper.process import harper_pid

INTERVAL_SECONDS = 5.0


class HarperWatch:
    """The last PID seen for a Harper root, and when to look again."""

    def __init__(self, look: Callable[[Path], int | None] = harper_pid) -> None:
        self.look = look
        self.pid: int | None = None
        self.seen = False  # False until the first look
        self.next_due = 0.0

    def tick(self, root: Path, now: float) -> None:
        """Look at ``hdb.pid`` when due (``now``: monotonic seconds); log a change."""
        if now < self.next_due:
            return
        self.next_due = now + INTERVAL_SECONDS
        pid = self.look(root)
        if self.seen and pid != self.pid:
            if self.pid is not None:  # gone, or replaced by another process (a restart)
                logs.emit(events.HarperStopped(root=str(root), pid=self.pid))
            if pid is not None:
                logs.emit(events.HarperStarted(root=str(root), pid=pid))
        self.pid, self.seen = pid, True
