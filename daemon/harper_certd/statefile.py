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
from pathlib import Path
from typing import Any

from harper_certd import fsio

BUDGET_FILE = "restart-budget.json"
WAITING_FILE = "waiting.json"
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
