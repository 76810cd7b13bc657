"""Crash tests: SIGKILL at each named step of a swap, and at random moments, then recovery.

The invariant, checked after every kill and again after recovery: the paths Harper's
configuration names hold one complete, valid set, the old one or the new one, never a
mix (certificate, key and CA file all of the same set) and never a partly written file.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harper_certd import devca, fsio, load
from harper_certd.install.context import build_context
from harper_certd.recover import in_flight
from harper_certd.recover import recover as recover_store
from harper_certd.validate import Inputs, validate
from nodefix import Node, make_node

# Named steps of a swap, in order. On a first install the generation steps happen first
# while the live files are adopted; the "second" scenario reaches them in the install.
STEPS_FIRST_INSTALL = [
    "generation_file_written:key",
    "generation_written",
    "adopt_flipped",
    "adopt_linked:cert",
    "adopt_linked:key",
    "flipped",
    "journal_cleared",
]
STEPS_SECOND_INSTALL = [
    "generation_file_written:key",
    "generation_file_written:ca",
    "generation_file_written:cert",
    "generation_written",
    "generation_renamed",
    "flipped",
    "journal_cleared",
]
# Steps at which the new set is already switched in (recovery completes it).
AFTER_FLIP = {"flipped", "journal_cleared"}


def live_identity(node: Node) -> tuple[str, bytes]:
    """(certificate fingerprint, CA file bytes) of a complete, valid live set; fails otherwise."""
    cert = node.live.cert.read_bytes()
    key = node.live.key.read_bytes()
    ca = node.ca_file.read_bytes()
    report = validate(Inputs(cert, key, ca), at=dt.datetime.now(dt.UTC), hostnames=["nodea"])
    assert report.valid, f"live set is not whole: {report.problems}"
    leaf = load.parse_certificates(cert, name="live").certs[0]
    return devca.fingerprint_of(leaf), ca


def new_source(node: Node, name: str) -> tuple[Path, tuple[str, bytes]]:
    """A set whose certificate AND CA file differ from every other, so a mix is visible."""
    extra = devca.make_ca(f"Extra CA {name}")
    folder = node.source(name, cas=[node.ca, extra])
    leaf = load.parse_certificates((folder / "certificate.pem").read_bytes(), name="x").certs[0]
    return folder, (devca.fingerprint_of(leaf), (folder / "ca.pem").read_bytes())


def run_install(node: Node, cfg: Path, folder: Path, crash_at: str | None) -> int:
    env = {**os.environ}
    if crash_at:
        env[fsio.CRASH_ENV] = crash_at
    proc = subprocess.run(
        [sys.executable, "-m", "harper_certd", "install", str(folder), "--config", str(cfg)],
        env=env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    return proc.returncode


def recover(node: Node) -> None:
    ctx = build_context(node.config)
    with fsio.locked(ctx.store.lock_path):
        recover_store(ctx.store)
    assert not in_flight(ctx.store)
    leftovers = [p.name for p in (node.state / "generations").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("scenario", "step"),
    [("first", s) for s in STEPS_FIRST_INSTALL] + [("second", s) for s in STEPS_SECOND_INSTALL],
)
def test_kill_at_named_step(tmp_path: Path, scenario: str, step: str) -> None:
    """SIGKILL at each named step: before recovery and after it, the live set is old or new."""
    node = make_node(tmp_path)
    cfg = node.write_config()
    if scenario == "second":
        first, _ = new_source(node, "first")
        assert run_install(node, cfg, first, None) == 0
    old = live_identity(node)
    folder, new = new_source(node, "new")
    assert run_install(node, cfg, folder, step) == -signal.SIGKILL
    assert live_identity(node) in (old, new)
    recover(node)
    expected = new if step in AFTER_FLIP else old
    assert live_identity(node) == expected
    # After recovery a fresh install works as if nothing had happened.
    again, newer = new_source(node, "again")
    assert run_install(node, cfg, again, None) == 0
    assert live_identity(node) == newer


@pytest.mark.parametrize(
    "step", ["generation_written", "generation_renamed", "flipped", "journal_cleared"]
)
def test_kill_during_rollback_of_failed_restart(tmp_path: Path, step: str) -> None:
    """A kill while a failed install rolls back still leaves one whole set, old or new."""
    node = make_node(tmp_path)
    cfg = node.write_config()
    first, _ = new_source(node, "first")
    assert run_install(node, cfg, first, None) == 0
    old = live_identity(node)
    node.fail_restarts()
    folder, new = new_source(node, "new")
    code = run_install(node, cfg, folder, step)
    assert code in (-signal.SIGKILL, 3)
    assert live_identity(node) in (old, new)
    node.exit_file.unlink()
    recover(node)
    assert live_identity(node) in (old, new)


def test_random_kills_during_real_installs(tmp_path: Path) -> None:
    """A loop of SIGKILLs at random moments of real installs: the invariant holds every time."""
    node = make_node(tmp_path)
    cfg = node.write_config()
    rng = random.Random(20261126)
    # Calibrate: how long does one whole install take as a process here?
    spans = []
    for w in range(3):
        warm, _ = new_source(node, f"warm{w}")
        started = time.monotonic()
        assert run_install(node, cfg, warm, None) == 0
        spans.append(time.monotonic() - started)
    span = sorted(spans)[1]
    trials, killed_mid, completed = 40, 0, 0
    for i in range(trials):
        old = live_identity(node)
        folder, new = new_source(node, f"t{i}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "harper_certd", "install", str(folder), "--config", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.4 * span, 1.2 * span))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_mid += 1
        proc.wait(timeout=60)
        assert live_identity(node) in (old, new), f"trial {i}"
        recover(node)
        now = live_identity(node)
        assert now in (old, new), f"trial {i} after recovery"
        completed += now == new
    print(
        f"\nrandom kills: {trials} trials, {killed_mid} killed mid-install, "
        f"{completed} ended with the new set, invariant held in all"
    )
    assert killed_mid > 0  # some kills did land inside installs (counts printed above)


def test_writeback_hint_changes_nothing_written(tmp_path: Path) -> None:
    """``fsio.start_writeback`` (called by ``write_new`` for files fsynced together) is a
    hint: the files keep their bytes and modes once ``sync_all`` returned, and a descriptor
    the kernel cannot advise (a pipe: ESPIPE) is passed over without an error."""
    pending: list[int] = []
    data = {"a.pem": b"first\n" * 700, "b.pem": b"second\n", "c.pem": b""}
    for name, raw in data.items():
        fsio.write_new(tmp_path / name, raw, mode=0o440, pending=pending)
    assert len(pending) == 3
    fsio.sync_all(pending)
    assert pending == []
    for name, raw in data.items():
        assert (tmp_path / name).read_bytes() == raw
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o440
    read_end, write_end = os.pipe()
    try:
        fsio.start_writeback(write_end)
    finally:
        os.close(read_end)
        os.close(write_end)
