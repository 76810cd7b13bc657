"""harper_certd.sdnotify speaks sd_notify(3) to real AF_UNIX datagram sockets."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harper_certd import sdnotify


@dataclass(frozen=True, slots=True)
class Manager:
    """The receiving end that systemd would hold, and the environment naming it."""

    sock: socket.socket
    env: dict[str, str]

    def receive(self) -> bytes:
        return self.sock.recv(65536)

    def assert_empty(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(65536)
        finally:
            self.sock.settimeout(5)


def _bound(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    if request.param == "path":
        path = tmp_path / "notify"
        sock, name = _bound(str(path)), str(path)
    else:
        name = f"@harper-certd-test-{uuid.uuid4().hex}"
        sock = _bound(b"\0" + name[1:].encode())
    with sock:
        yield Manager(sock, {"NOTIFY_SOCKET": name})


def test_ready_sends_one_datagram(manager: Manager) -> None:
    """ready() with a status is exactly one datagram of two assignments."""
    assert sdnotify.ready("watching 3 sets", env=manager.env) is True
    assert manager.receive() == b"READY=1\nSTATUS=watching 3 sets"
    manager.assert_empty()


def test_each_helper_sends_its_exact_message(manager: Manager) -> None:
    """ready, status, stopping, watchdog and notify each send what sd_notify(3) names."""
    assert sdnotify.ready(env=manager.env)
    assert manager.receive() == b"READY=1"
    assert sdnotify.status("swapping tls", env=manager.env)
    assert manager.receive() == b"STATUS=swapping tls"
    assert sdnotify.stopping(env=manager.env)
    assert manager.receive() == b"STOPPING=1"
    assert sdnotify.watchdog(env=manager.env)
    assert manager.receive() == b"WATCHDOG=1"
    assert sdnotify.notify("EXTEND_TIMEOUT_USEC=5000000", env=manager.env)
    assert manager.receive() == b"EXTEND_TIMEOUT_USEC=5000000"
    manager.assert_empty()


def test_reloading_carries_the_monotonic_clock(manager: Manager) -> None:
    """reloading() sends RELOADING=1 with MONOTONIC_USEC read from CLOCK_MONOTONIC now."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sdnotify.reloading(env=manager.env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = manager.receive().split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_text_cannot_add_assignments(manager: Manager) -> None:
    """Newlines in status text are flattened, so the text cannot say READY=1 or MAINPID=."""
    assert sdnotify.status("bad name\nREADY=1\r\nMAINPID=1", env=manager.env)
    assert manager.receive() == b"STATUS=bad name READY=1 MAINPID=1"
    assert sdnotify.ready("a\nb", env=manager.env)
    assert manager.receive() == b"READY=1\nSTATUS=a b"


def test_utf8_status_is_sent_as_utf8(manager: Manager) -> None:
    """Non-ASCII status text reaches the manager UTF-8 encoded."""
    assert sdnotify.status("nœud prêt", env=manager.env)
    assert manager.receive() == "STATUS=nœud prêt".encode()


@pytest.mark.parametrize(
    "env",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "notify"}, {"NOTIFY_SOCKET": "vsock:2:999"}],
    ids=["unset", "empty", "relative", "vsock"],
)
def test_not_under_systemd_sends_nothing(env: dict[str, str]) -> None:
    """Without a usable NOTIFY_SOCKET every call returns False and raises nothing."""
    assert sdnotify.notify("READY=1", env=env) is False
    assert sdnotify.ready("x", env=env) is False
    assert sdnotify.watchdog(env=env) is False


def test_empty_message_is_not_sent(manager: Manager) -> None:
    """An empty message is refused rather than sent as an empty datagram."""
    assert sdnotify.notify("", env=manager.env) is False
    manager.assert_empty()


def test_send_failures_return_false(tmp_path: Path) -> None:
    """A missing socket, a closed listener, a plain file or an unbound name: False, no raise."""
    closed = tmp_path / "closed"
    _bound(str(closed)).close()  # the socket file stays; nobody receives: ECONNREFUSED
    plain = tmp_path / "plain"
    plain.write_text("not a socket")
    for name in (
        str(tmp_path / "missing"),
        str(closed),
        str(plain),
        str(tmp_path),
        f"@harper-certd-test-unbound-{uuid.uuid4().hex}",
        "/" + "x" * 200,  # longer than sun_path
    ):
        assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": name}) is False, name


def test_default_environment_is_os_environ(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without env=, NOTIFY_SOCKET is read from the process environment."""
    monkeypatch.setenv("NOTIFY_SOCKET", manager.env["NOTIFY_SOCKET"])
    assert sdnotify.watchdog() is True
    assert manager.receive() == b"WATCHDOG=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.watchdog() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "self"}, None),
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "sixty"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    """Half of WATCHDOG_USEC in seconds, only when WATCHDOG_PID is unset or names us."""
    assert sdnotify.watchdog_interval(env) == expected


_CHILD = """
from harper_certd import sdnotify
print(sdnotify.watchdog_interval())
print(sdnotify.ready("child ready"))
"""


def _ucred_pid(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _uid, _gid = struct.unpack("3i", data[: struct.calcsize("3i")])
            return int(pid)
    raise AssertionError(f"no SCM_CREDENTIALS in {ancillary!r}")


def test_main_process_of_a_service_is_the_sender(manager: Manager) -> None:
    """A process started like systemd starts it pings from its own PID (NotifyAccess=main)."""
    # systemd reads the sender's PID from SCM_CREDENTIALS to enforce NotifyAccess=main.
    manager.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    env = {**os.environ, **manager.env, "WATCHDOG_USEC": "60000000"}
    # exec keeps the shell's PID, so WATCHDOG_PID=$$ names the Python process, as
    # systemd's WATCHDOG_PID names the service's main process.
    with subprocess.Popen(
        ["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" -c "$1"', sys.executable, _CHILD],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "")
    assert out.split() == ["30.0", "True"]
    data, ancillary, _flags, _addr = manager.sock.recvmsg(65536, socket.CMSG_SPACE(12))
    assert data == b"READY=1\nSTATUS=child ready"
    assert _ucred_pid(ancillary) == proc.pid


def test_inherited_watchdog_is_not_ours() -> None:
    """A child that inherited another process's WATCHDOG_PID does not take its watchdog."""
    env = {**os.environ, "WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from harper_certd import sdnotify; print(sdnotify.watchdog_interval())",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "None"


# --- the process's watchdog: armed once, fed by every bounded wait ---------------------


@pytest.fixture
def armed(manager: Manager) -> Iterator[Manager]:
    """The watchdog armed at a 0.1 s interval (WATCHDOG_USEC 200 ms) to ``manager``."""
    assert sdnotify.arm_watchdog({**manager.env, "WATCHDOG_USEC": "200000"}) == 0.1
    try:
        yield manager
    finally:
        sdnotify.disarm_watchdog()


def test_keepalive_pings_only_when_due(armed: Manager) -> None:
    """The first keepalive after arming pings; the next, within the interval, does not."""
    due = sdnotify.next_keepalive()
    assert due is not None
    sdnotify.keepalive()
    assert armed.receive() == b"WATCHDOG=1"
    later = sdnotify.next_keepalive()
    assert later is not None
    assert later > due
    if time.monotonic() < later:  # still inside the interval: nothing more is sent
        sdnotify.keepalive()
        if time.monotonic() < later:
            armed.assert_empty()


def test_a_long_wait_keeps_the_watchdog_fed(armed: Manager) -> None:
    """A 0.65 s wait at a 0.1 s interval pings on its way (a wait inside a cycle, such as
    one for Harper to serve, is progress), never more than one ping per interval."""
    started = time.monotonic()
    assert sdnotify.wait(None, 0.65) is False
    took = time.monotonic() - started
    pings = 0
    armed.sock.settimeout(0.01)
    with contextlib.suppress(TimeoutError):
        while True:
            assert armed.receive() == b"WATCHDOG=1"
            pings += 1
    assert pings >= 2
    assert pings <= int(took / 0.1) + 1


def test_wait_returns_at_once_when_the_event_is_set(armed: Manager) -> None:
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    assert sdnotify.wait(stop, 30.0) is True


def test_nothing_is_sent_when_the_watchdog_is_not_armed(manager: Manager) -> None:
    """Not armed (the CLI, or a daemon without WATCHDOG_USEC): waits send nothing."""
    sdnotify.disarm_watchdog()
    assert sdnotify.arm_watchdog(manager.env) is None  # no WATCHDOG_USEC: nothing armed
    sdnotify.keepalive()
    sdnotify.sleep(0.05)
    assert sdnotify.next_keepalive() is None
    manager.assert_empty()
