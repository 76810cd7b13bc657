"""Restart stage: make Harper use the set that is now live, and say whether it worked.

Methods that need Harper's own API (hot reload with verification, the Operations
API, the ``harperdb`` CLI, systemd) are chosen by ``make_applier``; every method
answers with an ``Applied``: whether Harper now uses the set, and what was seen.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harper_certd.swap import Generation


@dataclass(frozen=True, slots=True)
class Applied:
    ok: bool
    method: str
    detail: str
    seconds: float = 0.0
    restarted: bool = False


# (previous live generation or None, generation now live) -> Applied
Applier = Callable[[Generation | None, Generation], Applied]


def run_command(argv: Sequence[str], timeout: float) -> tuple[int | None, str]:
    """Run argv without a shell; (exit status or None on timeout, combined output tail)."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        return None, text[-2000:]
    except OSError as exc:
        return 127, f"{argv[0]}: {exc.strerror}"
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def command_applier(argv: Sequence[str], timeout: float) -> Applier:
    def apply(previous: Generation | None, new: Generation) -> Applied:
        import time

        started = time.monotonic()
        status, output = run_command(argv, timeout)
        seconds = time.monotonic() - started
        if status is None:
            return Applied(
                False,
                "command",
                f"timed out after {timeout:.0f}s: {output}",
                seconds,
                restarted=True,
            )
        if status != 0:
            return Applied(
                False, "command", f"exited {status}: {output.strip()}", seconds, restarted=True
            )
        return Applied(True, "command", output.strip()[-500:], seconds, restarted=True)

    return apply


def none_applier(previous: Generation | None, new: Generation) -> Applied:
    return Applied(True, "none", "restart.method is none: Harper was not asked to reload")
