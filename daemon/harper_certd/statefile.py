"""Small JSON files the daemon keeps in its state directory for itself and for ``status``.

``restart-budget.json``: the Harper restarts spent in the last hour (``schedule.RestartBudget``),
so that a daemon restart does not refill the budget.  ``waiting.json``: the sets the daemon
is holding back and why (the restart budget, a notBefore a little ahead), which
``harper-certd status`` prints; absent when nothing waits.  ``daemon.json``: the running
daemon's pid, its start time in clock ticks since boot and when it started, so that ``status``
can say whether a daemon serves this state directory (a newcomer's staged set sat in
incoming/ with no daemon, and ``status`` said OK); removed at a clean stop.  All are written
whole (temporary file, fsync, rename: a reader sees the old or the new content), mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from harper_certd import fsio
from harper_certd.harper.process import start_ticks

BUDGET_FILE = "restart-budget.json"
WAITING_FILE = "waiting.json"
DAEMON_FILE = "daemon.json"
# The start of a waiting entry's ``reason`` for a set held for its peers (peerhold.py).
PEER_HOLD_REASON = "peers: "


def write_json(path: Path, data: Any) -> bool:
    """Replace ``path`` with ``data`` as JSON, atomically (``fsio.write_replace``: an
    unpredictable temporary name, ``O_EXCL | O_NOFOLLOW``, mode 0600 before the rename);
    False when it cannot be written."""
    raw = json.dumps(data, indent=1).encode()
    try:
        fsio.write_replace(path.parent, path.name, raw, mode=0o600)
    except OSError:
        return False  # a full or read-only state directory: the caller keeps it in memory
    return True


def read_json(path: Path) -> Any:
    """``path``'s JSON content; None when missing, unreadable, damaged, or not a regular
    file of at most 1 MiB (``fsio.read_regular``: no link followed, a FIFO never waited on)."""
    try:
        raw = fsio.read_regular(path, 1 << 20)
    except OSError:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def write_waiting(state: Path, entries: list[dict[str, Any]]) -> None:
    """What waits now (``[{"source", "reason", "until"}]``); the file goes when nothing does."""
    path = state / WAITING_FILE
    if entries:
        write_json(path, {"waiting": entries})
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def read_waiting(state: Path) -> list[dict[str, Any]]:
    data = read_json(state / WAITING_FILE)
    entries = data.get("waiting") if isinstance(data, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def write_daemon(state: Path, started: str) -> None:
    """Say that this process is the daemon of ``state`` (``started``: ISO 8601)."""
    pid = os.getpid()
    write_json(
        state / DAEMON_FILE, {"pid": pid, "start_ticks": start_ticks(pid), "started": started}
    )


def clear_daemon(state: Path) -> None:
    """At a clean stop: the record goes when it is this process's."""
    data = read_json(state / DAEMON_FILE)
    if isinstance(data, dict) and data.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            (state / DAEMON_FILE).unlink()


def read_daemon(state: Path) -> dict[str, Any]:
    """``{"running", "pid", "since"}`` for ``status``: running True when the recorded process
    still runs (same pid, same start time), False when there is no record or that process is
    gone (a crash leaves the record), None when the record cannot be read (another user's
    state directory)."""
    path = state / DAEMON_FILE
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        unreadable = data is None and os.path.lexists(path)
        return {"running": None if unreadable else False, "pid": None, "since": None}
    pid = data["pid"]
    ticks = data.get("start_ticks")
    running = isinstance(ticks, int) and start_ticks(pid) == ticks
    return {"running": running, "pid": pid, "since": data.get("started")}
