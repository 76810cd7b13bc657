"""Restart stage: make Harper use the set that is now live, and say whether it worked.

Methods that need Harper's own API (hot reload with verification, the Operations
API, the ``harperdb`` CLI, systemd) are chosen by ``make_applier``; every method
answers with an ``Applied``: whether Harper now uses the set, and what was seen.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from harper_certd import sdnotify
from harper_certd.errors import Interrupted
from harper_certd.generation import Generation


@dataclass(frozen=True, slots=True)
class Applied:
    ok: bool
    method: str
    detail: str
    seconds: float = 0.0
    restarted: bool = False
    verified: bool = False  # Harper was seen serving the set (a TLS handshake), not assumed


# (previous live generation or None, generation now live) -> Applied
Applier = Callable[[Generation | None, Generation], Applied]


def run_command(
    argv: Sequence[str],
    timeout: float,
    interrupted: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int | None, str]:
    """Run argv without a shell; (exit status or None on timeout, output tail).

    When the daemon is asked to stop, it stops waiting (Interrupted) but does not kill the
    command: a half-done restart of Harper is worse than a finished one.
    """
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
            )
        except OSError as exc:
            return 127, f"{argv[0]}: {exc.strerror}"
        deadline = time.monotonic() + timeout
        status: int | None = None
        while status is None:
            sdnotify.keepalive()  # a restart command may take minutes (restart.timeout)
            try:
                status = proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                if interrupted is not None and interrupted.is_set():
                    raise Interrupted(f"stopped waiting for {argv[0]}") from None
                if time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait()
                    break
        out.seek(0)
        text = out.read().decode(errors="replace")[-2000:]
    return status, text


def command_applier(
    argv: Sequence[str], timeout: float, interrupted: threading.Event | None = None
) -> Applier:
    def apply(previous: Generation | None, new: Generation) -> Applied:
        started = time.monotonic()
        status, output = run_command(argv, timeout, interrupted)
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
