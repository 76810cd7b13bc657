"""The real daemon as a subprocess, with its JSON log lines parsed as they come."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from nodefix import Node

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


# Started as root, the daemon drops to another user (setresuid) after importing what it
# needs: the interpreter lives under /root (0700), which that user cannot reach.
AS_USER = (
    "import os, sys, importlib, pkgutil\n"
    "import harper_certd\n"
    "for info in pkgutil.walk_packages(harper_certd.__path__, 'harper_certd.'):\n"
    "    if not info.name.endswith('__main__'):\n"
    "        importlib.import_module(info.name)\n"
    "for m in ('psutil', 'subprocess', 'json', 'traceback', 'hashlib', 'shutil', 'pwd', 'grp',"
    " 'errno', 'socket', 'ssl', 'http.client', 'urllib.request', 'zoneinfo', 'logging.handlers',"
    " 'tempfile', 'importlib.readers', '_strptime', 'watchdog.observers.inotify',"
    " 'cryptography.x509', 'cryptography.hazmat.backends.openssl'):\n"
    "    importlib.import_module(m)\n"
    "uid, gid = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.setgroups([]); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)\n"
    "from harper_certd.cli import main\n"
    "sys.exit(main(sys.argv[3:]))\n"
)


class Configured(Protocol):
    """What the daemon is started for: ``nodefix.Node``, or a real node's member
    (tests/test_cluster_daemons.py); ``write_config`` returns the config file's path."""

    def write_config(self) -> Path: ...


class DaemonProc:
    def __init__(
        self,
        node: Configured,
        env: Mapping[str, str] | None = None,
        as_user: tuple[int, int] | None = None,
    ) -> None:
        self.node = node
        self.config = node.write_config()
        argv = ["run", "--config", str(self.config)]
        if as_user is None:
            command = [sys.executable, "-m", "harper_certd", *argv]
        else:
            command = [sys.executable, "-c", AS_USER, *map(str, as_user), *argv]
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.cond = threading.Condition()
        full_env = {**os.environ, **(env or {})}
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.pop("INVOCATION_ID", None)  # a CI job under systemd is not the daemon's unit
        full_env.update(env or {})
        # A daemon that stops answering is made to say where each thread was: SIGABRT
        # makes faulthandler write every thread's stack to stderr (``wait_for``).
        full_env.setdefault("PYTHONFAULTHANDLER", "1")
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.rstrip("\n")
            with self.cond:
                self.raw.append(line)
                if line.startswith("<") and ">" in line[:4]:
                    prio, _, body = line[1:].partition(">")
                    try:
                        event = json.loads(body)
                    except ValueError:
                        event = {"event": "(not json)", "line": line}
                    event["_priority"] = int(prio)
                    self.events.append(event)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.cond:
            return [e for e in self.events if e.get("event") == name]

    def wait_for(self, name: str, timeout: float = 30.0, count: int = 1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [e for e in self.events if e.get("event") == name]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    break
                self.cond.wait(timeout=min(left, 0.2))
        raise AssertionError(self._why_not(f"no {name} (x{count}) within {timeout}s"))

    def _why_not(self, headline: str) -> str:
        """The failure's text: the daemon's state, its threads' stacks when it was still
        running (SIGABRT: faulthandler, bounded by 5 s), the last lines, then the rest.

        The end of the log comes first: CI shows the beginning of a long message."""
        running = self.proc.poll() is None
        if running:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            self.reader.join(timeout=5)
        with self.cond:
            raw = list(self.raw)
            counts = collections.Counter(str(e.get("event")) for e in self.events)
        code = self.proc.returncode
        state = "was still running (stacks below)" if running else f"had exited ({code})"
        tail = raw[-60:]
        return (
            f"{headline}; the daemon {state}; events {dict(counts)}\n"
            + "".join(f"{line}\n" for line in _current_thread(raw))
            + "last lines:\n"
            + "\n".join(tail)
            + ("\nthe whole log:\n" + "\n".join(raw) if len(raw) > len(tail) else "")
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self.reader.join(timeout=5)
        return code

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _current_thread(raw: list[str]) -> list[str]:
    """faulthandler's block for the thread that took the signal (the daemon's main loop)."""
    start = next((i for i, line in enumerate(raw) if line.startswith("Current thread")), None)
    if start is None:
        return []
    end = next((i for i in range(start + 1, len(raw)) if not raw[i].startswith("  ")), len(raw))
    return raw[start:end]


def drop(node: Node, name: str, folder: Path | None = None) -> Path:
    """Move a complete set into the incoming folder in one rename, as operators should."""
    folder = folder or node.source(name)
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    target = incoming / name
    os.rename(folder, target)
    return target


def started_with_tiny_inotify_queue(node: Configured) -> DaemonProc:
    """The daemon started while the kernel's ``fs.inotify.max_queued_events`` is 8 (read
    once per inotify instance, when it is created), then the knob put back: its watches
    overflow at the first flood.  Skips the test where the knob cannot be changed."""
    import pytest

    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    try:
        saved = knob.read_text()
        knob.write_text("8\n")
    except OSError:
        pytest.skip("cannot change fs.inotify.max_queued_events here")
    try:
        d = DaemonProc(node)
        d.wait_for("certd.started")
    finally:
        knob.write_text(saved)
    return d
