"""The systemd notify protocol (sd_notify(3)) without libsystemd.

One datagram of newline-separated ``KEY=value`` assignments to the AF_UNIX socket
named by ``$NOTIFY_SOCKET``.  Nothing here raises or logs: a daemon that is not
under systemd, or whose manager is gone, carries on, and the caller learns from
the return value.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

# A send blocks only while the manager's receive queue is full; the watchdog
# ping must not hang the daemon's loop on that.
_SEND_TIMEOUT = 2.0


def _address(env: Mapping[str, str]) -> bytes | None:
    raw = env.get("NOTIFY_SOCKET", "")
    if raw.startswith("@"):
        # Linux abstract namespace: a leading NUL instead of '@'.
        return b"\0" + os.fsencode(raw[1:])
    if raw.startswith("/"):
        return os.fsencode(raw)
    # Unset, empty, or a form this module does not speak (systemd 253's "vsock:").
    return None


def notify(message: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send *message* as one datagram to ``$NOTIFY_SOCKET``; True when it was sent whole."""
    address = _address(os.environ if env is None else env)
    if address is None or not message:
        return False
    data = message.encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.connect(address)
            sent = sock.send(data)
    except OSError:
        return False
    return sent == len(data)


def _one_line(text: str) -> str:
    # A newline would start a new assignment: status text taken from a file name
    # or an error message could otherwise say "READY=1" or "MAINPID=1".
    return " ".join(text.splitlines())


def ready(status: str | None = None, *, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd that start-up is finished (``Type=notify``), with an optional status."""
    message = "READY=1" if status is None else f"READY=1\nSTATUS={_one_line(status)}"
    return notify(message, env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Set the one-line status that ``systemctl status`` shows."""
    return notify(f"STATUS={_one_line(text)}", env=env)


def reloading(*, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a reload (SIGHUP) began; send ``ready()`` when it is done.

    MONOTONIC_USEC is what systemd 253 and later require with RELOADING=1;
    older managers ignore it.
    """
    # CLOCK_MONOTONIC explicitly: it is the clock systemd compares the value with.
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", env=env)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the daemon is shutting down."""
    return notify("STOPPING=1", env=env)


def watchdog(*, env: Mapping[str, str] | None = None) -> bool:
    """Keep-alive ping for ``WatchdogSec=``."""
    return notify("WATCHDOG=1", env=env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None if none is asked.

    When ``WATCHDOG_PID`` is set, the watchdog is only this process's when it
    names our PID: a child that inherited the environment must not ping.
    """
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


# --- the process's watchdog ------------------------------------------------------------
#
# systemd's watchdog is per process (WATCHDOG_PID), so its pings are too: armed once by
# the daemon's node loop, then sent, when due, by whatever the process is busy with, the
# loop between cycles or a bounded wait inside a cycle (Harper to serve, a restart
# command, a peer).  A wait that stays inside its own timeout is progress; only a cycle
# that stops advancing lets the watchdog fire.


@dataclass(slots=True)
class _Watchdog:
    env: Mapping[str, str]
    interval: float  # seconds between pings (half of WATCHDOG_USEC)
    due: float  # time.monotonic() of the next ping


@dataclass(slots=True)
class _Armed:
    watchdog: _Watchdog | None = None


_lock = threading.Lock()
_armed = _Armed()


def arm_watchdog(env: Mapping[str, str] | None = None) -> float | None:
    """Start this process's watchdog pings, the first due now; the interval in seconds, or
    None (nothing armed) when systemd asks for no watchdog (``watchdog_interval``)."""
    env = dict(os.environ if env is None else env)
    interval = watchdog_interval(env)
    with _lock:
        _armed.watchdog = None if interval is None else _Watchdog(env, interval, time.monotonic())
    return interval


def disarm_watchdog() -> None:
    """No more pings from this process (the daemon is stopping)."""
    with _lock:
        _armed.watchdog = None


def keepalive() -> None:
    """Ping the watchdog if it is armed and a ping is due; cheap otherwise (no syscall)."""
    with _lock:
        armed = _armed.watchdog
        if armed is None:
            return
        now = time.monotonic()
        if now < armed.due:
            return
        armed.due = now + armed.interval
    watchdog(env=armed.env)


def next_keepalive() -> float | None:
    """``time.monotonic()`` of the next ping due, or None when the watchdog is not armed."""
    with _lock:
        return None if _armed.watchdog is None else _armed.watchdog.due


def wait(event: threading.Event | None, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event`` (None: just sleep), pinging the watchdog when a
    ping falls due meanwhile; True when ``event`` is set."""
    deadline = time.monotonic() + max(seconds, 0.0)
    while True:
        keepalive()
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            return event is not None and event.is_set()
        due = next_keepalive()
        step = left if due is None else min(left, max(due - now, 0.001))
        if event is None:
            time.sleep(step)
        elif event.wait(step):
            return True


def sleep(seconds: float) -> None:
    """``time.sleep`` that pings the watchdog when a ping falls due meanwhile."""
    wait(None, seconds)
