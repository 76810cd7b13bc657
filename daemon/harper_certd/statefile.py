"""Small JSON files the daemon keeps in its state directory for itself and for ``status``.

``restart-budget.json``: the Harper restarts spent in the last hour (``schedule.RestartBudget``),
so that a daemon restart does not refill the budget.  ``waiting.json``: the sets the daemon
is holding back and why (the restart budget, a notBefore a little ahead), which
``harper-certd status`` prints; absent when nothing waits.  Both are written whole
(temporary file, fsync, rename: a reader sees the old or the new content), mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

BUDGET_FILE = "restart-budget.json"
WAITING_FILE = "waiting.json"


def write_json(path: Path, data: Any) -> bool:
    """Replace ``path`` with ``data`` as JSON, atomically; False when it cannot be written."""
    raw = json.dumps(data, indent=1).encode()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False  # a full or read-only state directory: the caller keeps it in memory
    return True


def read_json(path: Path) -> Any:
    """``path``'s JSON content; None when missing, unreadable or damaged."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(1 << 20)
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
