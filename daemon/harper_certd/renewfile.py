"""``<state>/renewal.json``: the last failed renewal, for ``status`` and the metrics.

The daemon writes it at every ``certd.renewal_failed`` and removes it at
``certd.renewal_succeeded``; ``status`` (another process) reads it, so a renewal failing is a
warning from its first failure, not only once it is overdue (issue 17 item 8).  Shape::

    {"time": ISO 8601, "reason": str, "codes": [str], "exit_status": int | None,
     "failures": int, "next_attempt": ISO 8601, "fingerprint": SHA-256 hex of the live leaf
     the renewal was to replace, or None}

A failure recorded for another leaf than the live one is over (the set was replaced by other
means): ``failing`` ignores it.  Written whole through ``statefile.write_json`` (0600, temp
file and rename).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from harper_certd import statefile

RENEWAL_FILE = "renewal.json"


def write_renewal_failure(state: Path, failure: dict[str, Any] | None) -> None:
    """Record ``failure`` (the shape above), or, None, that the renewal succeeded."""
    path = state / RENEWAL_FILE
    if failure is not None:
        statefile.write_json(path, failure)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def failing(state: Path, live_fingerprint: str | None) -> dict[str, Any] | None:
    """The last failure, if it is still the live leaf's renewal; None otherwise."""
    data = statefile.read_json(state / RENEWAL_FILE)
    if not isinstance(data, dict) or not isinstance(data.get("reason"), str):
        return None
    recorded = data.get("fingerprint")
    if recorded is not None and live_fingerprint is not None and recorded != live_fingerprint:
        return None
    return data
