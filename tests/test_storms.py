"""Quiet under storms (issue 17 item 7): a library's repeated messages are one line and a
count per minute; a layout hazard is logged once per change of the layout, not per reload.

The daemon test is a real daemon subprocess under file churn in ``incoming/`` and many
SIGHUPs (each waited for by its ``certd.config_reloaded``), about 20 s (30 s for the module)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from daemonfix import DaemonProc
from harper_certd import events
from harper_certd.quiet import MAX_KINDS, Coalescer, kind_of
from nodefix import make_node

RELOADS = 40
CHURN_SECONDS = 10.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_storm_of_one_kind_is_two_lines_a_minute() -> None:
    """5,000 messages of one kind (ids differ) in a window: the first logged at once, the
    rest one certd.library_repeated with the count when the window ends; a new window
    starts again with a line at once."""
    clock = _Clock()
    out: list[events.Event] = []
    quiet = Coalescer(60.0, out.append, clock)
    for i in range(5000):
        quiet.library("RuntimeWarning at inotify.py:1", f"Callback with id {140000 + i} exists")
        clock.now += 0.01  # 50 s in all
    assert [type(e).__name__ for e in out] == ["LibraryMessage"]
    quiet.flush()
    assert len(out) == 1  # the window is still open
    assert quiet.next_due() == 1060.0
    clock.now = 1060.0
    quiet.flush()
    assert [type(e).__name__ for e in out] == ["LibraryMessage", "LibraryRepeated"]
    repeated = out[1]
    assert isinstance(repeated, events.LibraryRepeated)
    assert repeated.count == 4999
    assert repeated.message == "Callback with id 144999 exists"
    assert quiet.next_due() == float("inf")
    quiet.library("RuntimeWarning at inotify.py:1", "Callback with id 1 exists")
    assert type(out[-1]).__name__ == "LibraryMessage"  # a new window
    clock.now += 61
    quiet.flush()
    assert len(out) == 3  # nothing repeated in that window: no count line


def test_kinds_are_told_apart_and_bounded() -> None:
    clock = _Clock()
    out: list[events.Event] = []
    quiet = Coalescer(60.0, out.append, clock)
    assert kind_of("Thread-12", "id 0x7f3a at 12") == kind_of("Thread-3", "id 0x1 at 9")
    quiet.library("watchdog", "one")
    quiet.library("watchdog", "two")
    assert len(out) == 2
    for i in range(MAX_KINDS * 3):
        quiet.library("watchdog", f"kind {'x' * i}")
    assert len(out) == MAX_KINDS + 1  # the kinds beyond MAX_KINDS share one


def _churn(incoming: Path, stop: threading.Event) -> int:
    """Create, rename and delete files and folders in incoming/ until ``stop``: the count."""
    done = 0
    while not stop.is_set():
        for i in range(20):
            folder = incoming / f"storm-{i}"
            (folder / "sub").mkdir(parents=True, exist_ok=True)
            (folder / "sub" / "x.tmp").write_bytes(b"x")
            os.rename(folder, incoming / f"moved-{i}")
            os.rename(incoming / f"moved-{i}", folder)
            os.rename(folder / "sub" / "x.tmp", folder / "y.tmp")
            (folder / "y.tmp").unlink()
            (folder / "sub").rmdir()
            folder.rmdir()
            done += 9
    return done


def test_daemon_under_churn_and_reloads(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        hazards = len(d.named("certd.layout_warning"))
        assert hazards >= 1, "the fixture's layout has enableRootCAs on: a hazard (a warning)"
        assert d.named("certd.layout_hazard") == []  # none of error severity
        # Harper's default is no error line at every start (alerts on errors page people)
        assert {e["level"] for e in d.named("certd.layout_warning")} == {"warning"}
        stop = threading.Event()
        counted: list[int] = []
        churner = threading.Thread(target=lambda: counted.append(_churn(incoming, stop)))
        churner.start()
        started = time.monotonic()
        try:
            for i in range(1, RELOADS + 1):
                d.signal(signal.SIGHUP)
                d.wait_for("certd.config_reloaded", count=i)
            while time.monotonic() - started < CHURN_SECONDS:
                time.sleep(0.2)
        finally:
            stop.set()
            churner.join()
        # Reloads that change nothing log no hazard again.
        assert len(d.named("certd.layout_warning")) == hazards
        # A change of the layout is logged once: enableRootCAs off removes the hazard,
        # back on brings it back (one line, however many reloads follow).
        config_path = node.root / "harperdb-config.yaml"
        tree = yaml.safe_load(config_path.read_text())
        tree["replication"]["enableRootCAs"] = False
        config_path.write_text(yaml.safe_dump(tree))
        d.signal(signal.SIGHUP)
        d.wait_for("certd.config_reloaded", count=RELOADS + 1)
        tree["replication"]["enableRootCAs"] = True
        config_path.write_text(yaml.safe_dump(tree))
        for i in range(RELOADS + 2, RELOADS + 5):
            d.signal(signal.SIGHUP)
            d.wait_for("certd.config_reloaded", count=i)
        back = d.named("certd.layout_warning")[hazards:]
        assert [e["code"] for e in back] == ["enable_root_cas_on"]
        assert d.stop() == 0
        library = d.named("certd.library_message")
        repeated = d.named("certd.library_repeated")
    # Each kind of library message is logged once in its minute, whatever the storm; the
    # rest are counted, the count logged when the minute ends (here: when the daemon stops).
    kinds = [kind_of(e["logger"], e["message"]) for e in library]
    assert len(kinds) == len(set(kinds)), library
    assert {kind_of(e["logger"], e["message"]) for e in repeated} <= set(kinds)
    assert len(repeated) <= len(kinds)
    assert all(e["count"] >= 1 for e in repeated)
    assert not [line for line in d.raw if not line.startswith("<")], "a raw line"
    print(
        f"churn: {counted[0]} file operations, {RELOADS + 4} reloads; "
        f"library_message {len(library)}, library_repeated {len(repeated)} "
        f"(counts {[e['count'] for e in repeated]})"
    )


def test_harper_stopping_and_starting_is_told(tmp_path: Path) -> None:
    """A process named by hdb.pid appears (certd.harper_started), then dies
    (certd.harper_stopped): the daemon says both, from its look at hdb.pid."""
    node = make_node(tmp_path)
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        harper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        try:
            (node.root / "hdb.pid").write_text(f"{harper.pid}\n")
            started = d.wait_for("certd.harper_started", timeout=30)
            assert started["pid"] == harper.pid
            assert not d.named("certd.harper_stopped")
        finally:
            harper.kill()
            harper.wait()
        stopped = d.wait_for("certd.harper_stopped", timeout=30)
        assert stopped["pid"] == harper.pid
        assert d.stop() == 0
