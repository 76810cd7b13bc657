"""The real daemon as a subprocess on temporary roots: its log lines, the live files, restarts."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemonfix import PRIORITY, DaemonProc, drop, started_with_tiny_inotify_queue
from harper_certd import devca, logs
from nodefix import Node, make_node, run_cli, status_json

FAST = {"watch": {"settle_seconds": 0.3}}


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path, extra=json.loads(json.dumps(FAST)))


def _processed(node: Node) -> list[str]:
    folder = node.root / "keys" / "processed"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _rejected(node: Node) -> list[Path]:
    folder = node.root / "keys" / "rejected"
    # dot-names are the daemon's own records (rejected/.reasons), not filed sets
    return sorted(p for p in folder.iterdir() if p.name[0] != ".") if folder.exists() else []


def test_valid_set_installed_once_with_one_restart(node: Node) -> None:
    """A set dropped in incoming/ is installed, one restart, live files new, source processed."""
    with DaemonProc(node) as d:
        started = d.wait_for("certd.started")
        assert started["sets"][0]["where"] == "tls"
        assert 89 < started["sets"][0]["days_left"] <= 90
        new_fp = devca.fingerprint_of(
            devca.load_cert((node.source("a") / "certificate.pem").read_bytes())
        )
        drop(node, "a", node.tmp / "src" / "a")
        installed = d.wait_for("certd.set_installed")
        assert installed["fingerprint"] == new_fp
        time.sleep(1.0)  # anything else the events could still cause
        assert d.stop() == 0
    assert node.restarts() == 1
    assert node.live_fingerprint() == new_fp
    assert [n.endswith("-a") for n in _processed(node)] == [True]
    assert d.named("certd.set_detected")[0]["source"].endswith("incoming/a")


def test_broken_set_refused_live_unchanged(node: Node) -> None:
    """A broken set: refused with its code, live set unchanged, source in rejected/ with reason."""
    old = node.live_fingerprint()
    bad = node.source("bad")
    devca.write_private(bad / "privateKey.pem", devca.make_leaf(node.ca).key_pem)
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        drop(node, "bad", bad)
        refused = d.wait_for("certd.set_refused")
        assert d.stop() == 0
    assert refused["codes"] == ["key_mismatch"]
    assert refused["_priority"] == PRIORITY["error"]
    assert node.live_fingerprint() == old
    assert node.restarts() == 0
    [kept] = _rejected(node)
    assert json.loads((kept / "reason.json").read_text())["problems"][0]["code"] == "key_mismatch"


def test_burst_of_twenty_sets_is_one_rotation(node: Node) -> None:
    """20 sets dropped at once are judged; the newest is installed with a single restart."""
    node.config_data["watch"]["settle_seconds"] = 1.0
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        folders = [node.source(f"s{i:02d}") for i in range(20)]
        for i, folder in enumerate(folders):
            drop(node, f"s{i:02d}", folder)
        installed = d.wait_for("certd.set_installed")
        d.wait_for("certd.set_superseded", count=19, timeout=10)
        time.sleep(1.5)
        assert d.stop() == 0
    assert node.restarts() == 1
    assert installed["source"].endswith("s19")
    assert len(_processed(node)) == 20


def test_restart_storm_is_held_back(node: Node) -> None:
    """Past restarts_per_hour, a further set waits with a restart_held error, not a restart."""
    node.config_data["restart"]["restarts_per_hour"] = 2
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        for i in range(3):
            drop(node, f"r{i}")
            if i < 2:
                d.wait_for("certd.set_installed", count=i + 1)
        held = d.wait_for("certd.restart_held")
        time.sleep(0.5)
        assert d.stop() == 0
    assert node.restarts() == 2
    assert held["limit_per_hour"] == 2
    assert held["_priority"] == PRIORITY["error"]
    assert (node.root / "keys" / "incoming" / "r2").exists()  # kept for later, not lost


def test_sighup_with_bad_config_keeps_the_old_one(node: Node) -> None:
    """SIGHUP with an invalid new config: config_refused, and the daemon goes on working."""
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        node.config_data["restart"]["method"] = "reboot"
        node.write_config()
        d.signal(signal.SIGHUP)
        refused = d.wait_for("certd.config_refused")
        assert "restart.method" in refused["error"]
        drop(node, "after")
        d.wait_for("certd.set_installed")
        node.config_data["restart"]["method"] = "command"
        node.config_data["generations_kept"] = 3
        node.write_config()
        d.signal(signal.SIGHUP)
        d.wait_for("certd.config_reloaded")
        assert d.stop() == 0


def test_sigterm_mid_swap_exits_fast_and_completes_at_next_start(node: Node) -> None:
    """SIGTERM while Harper restarts after a swap: exit 0 within 5 s; the next start finishes it."""
    slow = node.tmp / "slow.py"
    slow.write_text(
        f"import time, pathlib\ntime.sleep(30)\npathlib.Path({str(node.calls)!r})"
        ".open('a').write('late\\n')\n"
    )
    node.config_data["restart"]["command"] = [sys.executable, str(slow)]
    folder = node.source("mid")
    new_fp = devca.fingerprint_of(devca.load_cert((folder / "certificate.pem").read_bytes()))
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        drop(node, "mid", folder)
        deadline = time.monotonic() + 20

        def flipped_and_journalled() -> bool:
            # The swap is switched in and the restart command is still running: the live
            # generation's metadata still says "pending".
            try:
                target = os.readlink(node.state / "current")
                meta = json.loads((node.state / target / "meta.json").read_text())
            except (OSError, ValueError):
                return False
            return bool(meta.get("outcome") == "pending")

        while not flipped_and_journalled():
            assert time.monotonic() < deadline, "\n".join(d.raw)
            time.sleep(0.05)
        asked = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.stop(timeout=5) == 0
        took = time.monotonic() - asked
    assert took < 5
    stopped = d.named("certd.stopped")[0]
    assert stopped["swap_in_flight"] is True
    assert node.live_fingerprint() == new_fp  # swapped whole, not half
    node.config_data["restart"]["command"] = [sys.executable, "-c", "pass"]
    with DaemonProc(node) as again:
        recovered = again.wait_for("certd.swap_recovered")
        again.wait_for("certd.started")
        assert again.stop() == 0
    assert recovered["outcome"] == "completed"
    assert node.live_fingerprint() == new_fp


def test_incoming_deleted_and_recreated(node: Node) -> None:
    """The incoming folder removed (and perhaps made again by hand): the daemon makes it again
    if need be, says "watching … again", and takes the next set."""
    incoming = node.root / "keys" / "incoming"
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        shutil.rmtree(incoming)
        time.sleep(0.5)
        incoming.mkdir(exist_ok=True)  # the daemon may have made it again already
        d.wait_for("certd.watch_rearmed", timeout=15)
        drop(node, "later")
        d.wait_for("certd.set_installed", timeout=20)
        assert d.proc.poll() is None
        assert d.stop() == 0
    assert d.named("certd.watch_lost")


def test_expiry_thresholds_with_an_injected_clock(node: Node) -> None:
    """On a fast clock, the warnings and then the expiry event come in order; the first one
    when renewal is overdue (15 days left for this 90-day leaf), not at a fixed 30 days."""
    not_after = devca.load_cert(node.live.cert.read_bytes()).not_valid_after_utc
    start = (not_after - dt.timedelta(days=30, hours=12)).isoformat().replace("+00:00", "Z")
    env = {"HARPER_CERTD_CLOCK": f"{start}*{86400 * 6}"}  # six days a second
    with DaemonProc(node, env=env) as d:
        d.wait_for("certd.expired", timeout=20)
        assert d.stop() == 0
    warnings = d.named("certd.expiry_warning")
    assert [w["threshold_days"] for w in warnings] == [15, 14, 7, 3, 1]
    assert all(w["_priority"] == PRIORITY["warning"] for w in warnings)
    assert all(w["certificate"] == "leaf" for w in warnings)
    assert d.named("certd.expired")[0]["_priority"] == PRIORITY["critical"]


def test_live_set_changed_by_hand(node: Node) -> None:
    """A valid set moved over the live files is adopted; garbage is reported and restored."""
    node.config_data["on_invalid_live"] = "restore"
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        drop(node, "first")  # the live paths become managed links
        d.wait_for("certd.set_installed")
        first = node.live_fingerprint()
        by_hand = node.source("by-hand")
        for name in ("privateKey.pem", "ca.pem", "certificate.pem"):
            os.rename(by_hand / name, node.root / "keys" / name)
        changed = d.wait_for("certd.live_changed")
        hand_fp = node.live_fingerprint()
        assert changed["fingerprint"] == hand_fp != first
        (node.root / "keys" / "certificate.pem").unlink()
        (node.root / "keys" / "certificate.pem").write_bytes(b"garbage\n")
        invalid = d.wait_for("certd.live_invalid")
        restored = d.wait_for("certd.live_restored")
        assert d.stop() == 0
    assert invalid["codes"] == ["cert_unreadable"]
    assert invalid["_priority"] == PRIORITY["error"]
    assert restored["fingerprint"] == hand_fp
    assert node.live_fingerprint() == hand_fp


def test_renewal_command_and_backoff(node: Node, tmp_path: Path) -> None:
    """In the renewal window the command runs; its set arrives by incoming/; failures back off."""
    ca_dir = tmp_path / "renew-ca"
    ca_dir.mkdir()
    devca.write_private(ca_dir / "ca.key", node.ca.key_pem)
    (ca_dir / "ca.pem").write_bytes(node.ca.cert_pem)
    script = tmp_path / "renew.py"
    script.write_text(
        "import os, sys, pathlib\n"
        "from cryptography.hazmat.primitives import serialization\n"
        "from cryptography import x509\n"
        "from harper_certd import devca\n"
        f"d = pathlib.Path({str(ca_dir)!r})\n"
        "key = serialization.load_pem_private_key((d / 'ca.key').read_bytes(), None)\n"
        "ca = devca.Issued(x509.load_pem_x509_certificate((d / 'ca.pem').read_bytes()), key)\n"
        "leaf = devca.make_leaf(ca, 'nodea', dns=['nodea'], ips=['127.0.0.2'])\n"
        f"tmp = pathlib.Path({str(tmp_path / 'renewed')!r})\n"
        "devca.write_set(tmp, leaf, [ca])\n"
        f"os.rename(tmp, pathlib.Path({str(node.root / 'keys' / 'incoming' / 'renewed')!r}))\n"
    )
    node.config_data["renew"] = {
        "command": [sys.executable, str(script)],
        "before_days": 200,
        "backoff_initial": 3600,
    }
    with DaemonProc(node) as d:
        d.wait_for("certd.renewal_started")
        d.wait_for("certd.renewal_succeeded")
        installed = d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert installed["source"].endswith("incoming/renewed")
    # A failing command is retried with backoff, not in a loop.
    node.config_data["renew"] = {
        "command": [sys.executable, "-c", "import sys; sys.exit(4)"],
        "before_days": 200,
        "backoff_initial": 1,
        "backoff_max": 2,
    }
    with DaemonProc(node) as d:
        failed = d.wait_for("certd.renewal_failed", count=2, timeout=15)
        assert d.stop() == 0
    first_fail = d.named("certd.renewal_failed")[0]
    assert first_fail["exit_status"] == 4
    assert first_fail["failures"] == 1
    assert failed["failures"] == 2


def test_exception_in_a_cycle_is_an_event_not_a_death(node: Node) -> None:
    """An OS failure inside a cycle is an event (filing the installed source into an
    immutable processed/: certd.source_left, the set installed); the daemon keeps working."""
    processed = node.root / "keys" / "processed"
    processed.mkdir(parents=True)
    if (
        subprocess.run(
            ["chattr", "+i", str(processed)], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("chattr +i is not supported here")
    try:
        with DaemonProc(node) as d:
            d.wait_for("certd.started")
            drop(node, "one")
            d.wait_for("certd.set_installed")  # the swap itself did not need processed/
            failed = d.wait_for("certd.source_left")  # left in incoming/, said once
            subprocess.run(["chattr", "-i", str(processed)], check=True)
            drop(node, "two")
            d.wait_for("certd.set_installed", count=2)
            assert d.proc.poll() is None
            assert d.stop() == 0
    finally:
        subprocess.run(["chattr", "-i", str(processed)], check=False)
    assert "permission denied" in failed["reason"]
    assert not d.named("certd.cycle_failed")
    assert len(d.named("certd.source_left")) == 1  # remembered, not judged again


def test_log_lines_are_catalogued_prefixed_and_keyless(node: Node) -> None:
    """Every line is JSON with a <N> journald priority matching its level, a catalogued event,
    and never key material."""
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        drop(node, "a")
        d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert d.raw
    for line in d.raw:
        assert "PRIVATE KEY" not in line
        assert line.startswith("<"), line
    for event in d.events:
        logs.check_event(event["event"])
        assert logs.EVENTS[event["event"]][0] == event["level"]
        assert event["_priority"] == PRIORITY[event["level"]]


def test_events_used_in_the_source_are_catalogued() -> None:
    """Events are logged as records (``logs.emit``), never by name: no module calls a logger
    with a ``certd.*`` name, and every ``certd.*`` name written in the source outside the
    records (state-transition tables, the demo's waits) is a catalogued event."""
    import re

    source = Path(logs.__file__).parent
    by_name = re.compile(r"log\.(?:debug|info|warning|error|critical|exception)\(\s*\"certd\.")
    named = re.compile(r"[\"'](certd\.[a-z_]+)[\"']")
    called: list[str] = []
    used: set[str] = set()
    for path in source.rglob("*.py"):
        if path.parent.name == "events":
            continue
        text = path.read_text()
        called += [f"{path.name}: {m.group(0)}" for m in by_name.finditer(text)]
        used.update(named.findall(text))
    assert called == []
    assert "certd.set_installed" in used  # the scan reads the modules that name events
    assert sorted(used - set(logs.EVENTS)) == []


def test_inotify_overflow_leads_to_a_rescan(node: Node) -> None:
    """A real inotify queue overflow (a tiny kernel queue, a flood of events): the daemon says
    events were lost, rescans, and still takes the set that arrived meanwhile."""
    d = started_with_tiny_inotify_queue(node)
    with d:
        noise = node.root / "keys" / "incoming" / ".noise"
        noise.mkdir()
        folder = node.source("during")
        for i in range(400):
            (noise / f"f{i}").write_bytes(b"x")
        drop(node, "during", folder)
        lost = d.wait_for("certd.watch_lost")
        d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert "overflowed" in lost["change"]


def test_systemd_notify_ready_status_watchdog_stopping(node: Node, tmp_path: Path) -> None:
    """Under systemd the daemon sends READY=1 with a STATUS, WATCHDOG=1 heartbeats and
    STOPPING=1, each one datagram to $NOTIFY_SOCKET (a real socket here)."""
    import socket as sock

    path = tmp_path / "notify.sock"
    server = sock.socket(sock.AF_UNIX, sock.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(10)
    received: list[str] = []
    try:
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        with DaemonProc(node, env=env) as d:
            d.wait_for("certd.started")
            while sum(m == "WATCHDOG=1" for m in received) < 3:
                received.append(server.recv(4096).decode())
            assert d.stop() == 0
        server.settimeout(2)
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(server.recv(4096).decode())
    finally:
        server.close()
    ready = next(m for m in received if "READY=1" in m)
    status = next(m for m in received if m.startswith("STATUS=live CN=nodea"))
    assert "days left" in status
    assert received.index(ready) >= 0
    assert received.count("WATCHDOG=1") >= 3
    assert "STOPPING=1" in received


def test_watchdog_is_fed_while_a_restart_command_runs(node: Node, tmp_path: Path) -> None:
    """A restart command that takes longer than the watchdog interval (a slow
    `systemctl restart`, restart.timeout allows 120 s) does not starve systemd's watchdog:
    pings keep coming while the daemon waits for it, and the set is installed after."""
    import socket as sock

    started, release = tmp_path / "restart-started", tmp_path / "restart-release"
    script = tmp_path / "slow_restart.py"
    script.write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(started)!r}).touch()\n"
        "deadline = time.monotonic() + 60\n"
        f"while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
    )
    node.config_data["restart"]["command"] = [sys.executable, str(script)]
    path = tmp_path / "notify.sock"
    server = sock.socket(sock.AF_UNIX, sock.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(10)
    during = 0
    try:
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}
        with DaemonProc(node, env=env) as d:
            d.wait_for("certd.started")
            drop(node, "slow", node.source("slow"))
            deadline = time.monotonic() + 30
            while not started.exists():
                assert time.monotonic() < deadline, "\n".join(d.raw)
                time.sleep(0.02)
            server.setblocking(False)  # what came before the command started is not counted
            with contextlib.suppress(BlockingIOError):
                while True:
                    server.recv(4096)
            server.settimeout(10)  # a starved watchdog: no ping within 10 s fails the test
            while during < 5:
                if server.recv(4096).decode() == "WATCHDOG=1":
                    during += 1
            assert not d.named("certd.set_installed")  # still inside the restart command
            release.touch()
            d.wait_for("certd.set_installed")
            assert d.stop() == 0
    finally:
        server.close()
    assert during == 5


def test_renewal_result_taken_from_a_certbot_lineage(node: Node, tmp_path: Path) -> None:
    """With renew.lineage_dir, a successful renewal command's lineage is installed; certbot's
    live/ links stay where they are."""
    le = tmp_path / "le"
    script = tmp_path / "certbot_like.py"
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    devca.write_private(ca_dir / "ca.key", node.ca.key_pem)
    (ca_dir / "ca.pem").write_bytes(node.ca.cert_pem)
    script.write_text(
        "import os, pathlib\n"
        "from cryptography import x509\n"
        "from cryptography.hazmat.primitives import serialization\n"
        "from harper_certd import devca\n"
        f"d, le = pathlib.Path({str(ca_dir)!r}), pathlib.Path({str(le)!r})\n"
        "key = serialization.load_pem_private_key((d / 'ca.key').read_bytes(), None)\n"
        "ca = devca.Issued(x509.load_pem_x509_certificate((d / 'ca.pem').read_bytes()), key)\n"
        "leaf = devca.make_leaf(ca, 'nodea', dns=['nodea'], ips=['127.0.0.2'])\n"
        "archive, live = le / 'archive' / 'nodea', le / 'live' / 'nodea'\n"
        "archive.mkdir(parents=True); live.mkdir(parents=True)\n"
        "(archive / 'fullchain1.pem').write_bytes(leaf.cert_pem)\n"
        "devca.write_private(archive / 'privkey1.pem', leaf.key_pem)\n"
        "for n in ('fullchain', 'privkey'):\n"
        "    (live / f'{n}.pem').symlink_to(f'../../archive/nodea/{n}1.pem')\n"
    )
    node.config_data["renew"] = {
        "command": [sys.executable, str(script)],
        "before_days": 200,
        "lineage_dir": str(le / "live" / "nodea"),
        "backoff_initial": 3600,
    }
    with DaemonProc(node) as d:
        d.wait_for("certd.renewal_succeeded")
        installed = d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert installed["source"].endswith("live/nodea")
    assert (le / "live" / "nodea" / "fullchain.pem").is_symlink()
    fullchain = (le / "live" / "nodea" / "fullchain.pem").read_bytes()
    assert node.live_fingerprint() == devca.fingerprint_of(devca.load_cert(fullchain))


def test_status_says_whether_a_daemon_serves_the_state_directory(node: Node) -> None:
    """``status`` says whether a daemon runs for this state directory (a newcomer's staged
    set sat in incoming/ with none, and ``status`` said OK without a word): the daemon's pid
    while it runs; not running after its stop, after a crash (the record of a process that
    is gone), and a set waiting in incoming/ then says that nothing will take it."""
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        _, data = status_json(node, "--no-probe")
        assert data["daemon"]["running"] is True
        assert data["daemon"]["pid"] == d.proc.pid
        assert d.stop() == 0
    _, data = status_json(node, "--no-probe")
    assert data["daemon"] == {"running": False, "pid": None, "since": None}
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = {"pid": gone.pid, "start_ticks": 1, "started": "2026-12-07T00:00:00+00:00"}
    (node.state / "daemon.json").write_text(json.dumps(record))
    _, data = status_json(node, "--no-probe")
    assert data["daemon"]["running"] is False
    assert data["daemon"]["pid"] == gone.pid
    waiting = node.root / "keys" / "incoming" / "set-b"
    shutil.copytree(node.source("b"), waiting)
    text = run_cli("status", "--no-probe", "--config", str(node.write_config())).stdout
    assert f"daemon: not running for {node.state}" in text
    assert f"waiting: {waiting} since" in text
    assert "no daemon runs to take it" in text
