"""incoming/ under hostile input and hand-over (issue 9 items 3, 9, 12, 13; issue 10 items 2-6, 11).

The tracker and the inbox with an injected ``now``; ``read_source`` against real links,
FIFOs and a racing swapper; and the real daemon as a subprocess, with a second local user
(created here when the tests run as root, removed after) where ownership matters.  In
each daemon test a valid set dropped after the hostile input must be installed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import itertools
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from structlog.testing import capture_logs

from daemonfix import DaemonProc, drop
from harper_certd import devca, logs
from harper_certd.incoming import LOOSE, Inbox, Tracker, ignored
from harper_certd.source import SourceRefused, read_source
from nodefix import Node, make_node

FAST = {"watch": {"settle_seconds": 0.3}}
OUTCOMES = (
    "certd.set_installed",
    "certd.set_refused",
    "certd.set_unchanged",
    "certd.set_superseded",
)
ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: creates a second local user (useradd) and owns files"
)


# --- helpers ---------------------------------------------------------------------------------


def _outcomes(d: DaemonProc, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in d.events
        if e.get("event") in OUTCOMES and str(e.get("source", "")).endswith(f"/incoming/{name}")
    ]


def _wait_count(d: DaemonProc, name: str, count: int, timeout: float) -> float:
    """Poll (never one scan per line: the reader must keep up with a storm of lines)."""
    start = time.monotonic()
    while len(d.named(name)) < count:
        assert time.monotonic() - start < timeout, f"{name} x{count} not within {timeout}s"
        assert d.proc.poll() is None, "\n".join(d.raw[-50:])
        time.sleep(0.25)
    return time.monotonic()


def _all_lines_are_catalogued_json(d: DaemonProc) -> None:
    assert d.raw
    for line in d.raw:
        assert line.startswith("<"), line
        assert ">" in line[:4], line
        event = json.loads(line[line.index(">") + 1 :])
        logs.check_event(event["event"])


def _der_len(n: int) -> bytes:
    if n < 128:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(buf: bytes, i: int) -> tuple[int, int]:
    length, j = buf[i + 1], i + 2
    if length & 0x80:
        k = length & 0x7F
        length, j = int.from_bytes(buf[j : j + k], "big"), j + k
    return j, j + length


def undecodable_subject_ca(ca: devca.Issued) -> bytes:
    """A CA certificate signed by ``ca`` whose subject CN is a UTF8String of 0xFF/0xFE bytes.

    Made with cryptography, then the DER edited and re-signed so that it reaches the
    parser (issue 10 item 1: such an entry made the report raise).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    marker = "Z" * 8
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, marker)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    start, end = _tlv(der, 0)
    _, tbs_end = _tlv(der, start)
    tbs = der[start:tbs_end].replace(marker.encode(), b"\xff\xfe" * 4)
    if isinstance(ca.key, rsa.RSAPrivateKey):
        sig = ca.key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
        sig = ca.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    rest = der[tbs_end:end]
    _, alg_end = _tlv(rest, 0)
    bits = b"\x00" + sig
    body = tbs + rest[:alg_end] + b"\x03" + _der_len(len(bits)) + bits
    out = b"\x30" + _der_len(len(body)) + body
    lines = textwrap.wrap(base64.b64encode(out).decode(), 64)
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    return pem.encode()


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path, extra=json.loads(json.dumps(FAST)))


@pytest.fixture
def second_user() -> Iterator[pwd.struct_passwd]:
    """A real system user for the test's length (root only; skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("a second local user needs root (useradd)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    name = f"hcd{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A folder another user can reach (pytest's own is 0700 root)."""
    folder = Path(tempfile.mkdtemp(prefix="hcd-"))
    os.chmod(folder, 0o755)  # noqa: S103 - traversable by the second user, nothing secret
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _as(user: pwd.struct_passwd, *argv: str) -> None:
    """Run a command (no shell) as ``user``: a real other process with that uid."""
    subprocess.run(list(argv), check=True, user=user.pw_uid, group=user.pw_gid, extra_groups=[])


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(base, name), uid, gid, follow_symlinks=False)


# --- the tracker and the inbox (injected now) ------------------------------------------------


def test_ignored_names() -> None:
    """Editor and dot leftovers are ignored; set files and ordinary names are not."""
    for name in (".x", "cert.pem~", "a.tmp", ".a.swp", "b.swp", "c.swx", "#cert.pem#", ""):
        assert ignored(name), name
    for name in ("certificate.pem", "README", "set-1", "#half", "a.tmpl"):
        assert not ignored(name), name


def test_tracker_settles_drains_in_batches_and_remembers(tmp_path: Path) -> None:
    """A burst waits for quiet, is taken at most ``drain`` at a time (next_due says "now"
    while a backlog is left), and a source left in place is not taken again until it changes."""
    for i in range(5):
        (tmp_path / f"s{i}").mkdir()
    tracker = Tracker(tmp_path, settle=1.0, drain=2)
    tracker.rescan(now=100.0)
    assert tracker.next_due(100.0) == 101.0
    assert tracker.tick(100.5) == []
    first = tracker.tick(101.0)
    assert [c.path.name for c in first] == ["s0", "s1"]
    assert tracker.next_due(101.0) == 101.0  # backlog: at once
    second = tracker.ready(101.0)
    taken = tracker.take(second)
    assert [p.name for p in taken] == ["s2", "s3"]
    tracker.held = True  # held back by the restart budget: no busy loop on the settle rule
    assert tracker.next_due(101.0) is None
    tracker.held = False
    tracker.settled(taken)  # both still there, unchanged: remembered
    assert set(tracker.remembered) == {"s2", "s3"}
    tracker.touch("s2", 102.0)
    assert "s2" not in tracker.candidates  # same inode and mtime: not judged again
    (tmp_path / "s2" / "new").write_text("x")  # changed: judged again
    tracker.touch("s2", 103.0)
    assert "s2" in tracker.candidates
    assert "s2" not in tracker.remembered


def test_tracker_holds_loose_files_until_whole_and_warns_once(tmp_path: Path) -> None:
    """Loose files written one by one: held (no settle deadline) until the set is whole;
    one set_incomplete after loose_wait; taken once complete."""
    tracker = Tracker(tmp_path, settle=1.0, loose_wait=10.0)
    (tmp_path / "certificate.pem").write_text("c")
    tracker.touch("certificate.pem", 0.0)
    assert tracker.next_due(0.0) == 10.0
    with capture_logs() as first:
        assert tracker.tick(5.0) == []
    assert first == []
    with capture_logs() as warned:
        assert tracker.tick(10.0) == []
        assert tracker.tick(11.0) == []
    assert [e["event"] for e in warned] == ["certd.set_incomplete"]
    assert warned[0]["missing"] == ["ca.pem", "privateKey.pem"]
    assert warned[0]["present"] == ["certificate.pem"]
    assert tracker.next_due(11.0) is None
    for name in ("privateKey.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
        tracker.touch(name, 12.0)
    assert [c.path for c in tracker.tick(13.0)] == [tmp_path]
    assert LOOSE not in tracker.candidates


def test_tracker_strays_once_and_unsafe_folder_once_per_change(tmp_path: Path) -> None:
    """A stray is reported once (again only when it changes); leftovers never; incoming/
    made group/world-writable is warned about once per change of mode."""
    (tmp_path / "README").write_text("notes")
    (tmp_path / "cert.pem~").write_text("old")
    os.mkfifo(tmp_path / "pipe")
    tracker = Tracker(tmp_path, settle=1.0)
    with capture_logs() as logged:
        tracker.rescan(0.0)
        tracker.rescan(1.0)
        (tmp_path / "README").write_text("notes, changed")
        os.utime(tmp_path / "README", ns=(1, 10**9))
        tracker.touch("README", 2.0)
        os.chmod(tmp_path, 0o777)  # noqa: S103 - the hazard under test
        tracker.check_mode()
        tracker.check_mode()
        os.chmod(tmp_path, 0o775)  # noqa: S103 - the hazard under test
        tracker.check_mode()
        os.chmod(tmp_path, 0o750)  # noqa: S103 - back to the safe mode
        tracker.check_mode()
    strays = [e["path"] for e in logged if e["event"] == "certd.incoming_stray"]
    assert sorted(strays) == sorted(
        [str(tmp_path / "README"), str(tmp_path / "pipe"), str(tmp_path / "README")]
    )
    assert [e["mode"] for e in logged if e["event"] == "certd.incoming_unsafe"] == ["0777", "0775"]
    assert tracker.candidates == {}


def test_inbox_coalesces_bounds_and_wakes_once(tmp_path: Path) -> None:
    """Many events on one entry are one dirty name; ignored names cost nothing; past the cap,
    one rescan flag; one wake-up per clean-to-dirty change."""
    wakes: list[int] = []
    inbox = Inbox(tmp_path, {tmp_path}, lambda: wakes.append(1), limit=100)
    for i in range(10_000):
        inbox.put(str(tmp_path / "busy" / f"f{i % 7}"))
        inbox.put(str(tmp_path / f".hidden{i}"))
        inbox.put(str(tmp_path / f"x{i}.tmp"))
    taken = inbox.take()
    assert list(taken.names) == ["busy"]
    assert not taken.rescan
    assert wakes == [1]
    for i in range(500):
        inbox.put(str(tmp_path / f"n{i}"))
    taken = inbox.take()
    assert len(taken.names) == 100
    assert taken.rescan
    assert wakes == [1, 1]
    inbox.put(str(tmp_path))
    inbox.put("/elsewhere/keys/certificate.pem")
    taken = inbox.take()
    assert taken.incoming_self
    assert taken.watched
    assert taken.live
    assert not taken.names


# --- read_source: links, FIFOs, races ---------------------------------------------------------


def _set_folder(folder: Path, ca: devca.Issued) -> devca.Issued:
    leaf = devca.make_leaf(ca, "nodea", dns=["nodea"])
    devca.write_set(folder, leaf, [ca])
    return leaf


def test_source_members_never_through_foreign_links(tmp_path: Path) -> None:
    """A FIFO, a link to /dev/zero, a link outside, a copied certbot live/ folder: each refused
    with its code and a sentence, without hanging; a sibling link is read."""
    ca = devca.make_ca("Src Root")
    trusted = {os.geteuid()}
    cases: dict[str, tuple[str, str]] = {}

    fifo = tmp_path / "fifo"
    _set_folder(fifo, ca)
    (fifo / "privateKey.pem").unlink()
    os.mkfifo(fifo / "privateKey.pem")
    cases["fifo"] = ("source_unreadable", "not a regular file")

    zero = tmp_path / "zero"
    _set_folder(zero, ca)
    (zero / "ca.pem").unlink()
    (zero / "ca.pem").symlink_to("/dev/zero")
    cases["zero"] = ("source_unsafe", "outside the source folder")

    copied = tmp_path / "copied"
    copied.mkdir()
    for name in ("fullchain.pem", "privkey.pem"):
        (copied / name).symlink_to(f"../../archive/nodea/{name[:-4]}1.pem")
    cases["copied"] = ("source_unreadable", "copy it with -L")

    for name, (code, words) in cases.items():
        with pytest.raises(SourceRefused) as refused:
            read_source(tmp_path / name, trusted_uids=trusted, ca_fallback=None)
        assert (refused.value.code, words in str(refused.value)) == (code, True), name

    sibling = tmp_path / "sibling"
    leaf = _set_folder(sibling, ca)
    os.rename(sibling / "privateKey.pem", sibling / "k")
    (sibling / "privateKey.pem").symlink_to("k")
    source = read_source(sibling, trusted_uids=trusted, ca_fallback=None)
    assert source.data.key == leaf.key_pem
    assert [n for n, _ in source.members] == ["certificate.pem", "privateKey.pem", "ca.pem"]


def test_certbot_live_folder_read_through_its_archive(tmp_path: Path) -> None:
    """A real certbot layout: live/<name>/x.pem -> ../../archive/<name>/x1.pem is followed."""
    ca = devca.make_ca("LE Root")
    leaf = devca.make_leaf(ca, "nodea", dns=["nodea"])
    archive, live = tmp_path / "archive" / "nodea", tmp_path / "live" / "nodea"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (archive / "fullchain1.pem").write_bytes(leaf.cert_pem)
    devca.write_private(archive / "privkey1.pem", leaf.key_pem)
    for name in ("fullchain", "privkey"):
        (live / f"{name}.pem").symlink_to(f"../../archive/nodea/{name}1.pem")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    source = read_source(live, trusted_uids={os.geteuid()}, ca_fallback=tmp_path / "ca.pem")
    assert source.is_certbot_lineage
    assert (source.data.cert, source.data.key) == (leaf.cert_pem, leaf.key_pem)


def test_a_racing_swapper_never_makes_read_source_leave_the_folder(tmp_path: Path) -> None:
    """A thread swaps ca.pem between a regular file and a link to a secret outside the
    folder as fast as it can, 2,000 reads meanwhile: the secret's bytes are never returned
    (before: lstat, then an open that follows links)."""
    ca = devca.make_ca("Race Root")
    folder = tmp_path / "set"
    _set_folder(folder, ca)
    secret = tmp_path / "secret.pem"
    secret.write_bytes(devca.make_ca("Secret Root").cert_pem)
    (folder / ".real").write_bytes((folder / "ca.pem").read_bytes())
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                os.symlink(secret, folder / ".link")
                os.rename(folder / ".link", folder / "ca.pem")
                shutil.copyfile(folder / ".real", folder / ".file")
                os.rename(folder / ".file", folder / "ca.pem")

    swapper = threading.Thread(target=swap)
    swapper.start()
    outcomes = {"read": 0, "refused": 0}
    try:
        for _ in range(2000):
            try:
                source = read_source(folder, trusted_uids={os.geteuid()}, ca_fallback=None)
            except SourceRefused:
                outcomes["refused"] += 1
                continue
            assert source.data.ca != secret.read_bytes()
            outcomes["read"] += 1
    finally:
        stop.set()
        swapper.join()
    print(f"race: {outcomes}")
    assert outcomes["refused"] > 0  # the swapper did hit reads: the test is not vacuous


# --- the daemon -------------------------------------------------------------------------------


def test_poison_sources_refused_once_and_the_next_set_installed(node: Node) -> None:
    """A FIFO in a certbot-looking folder, a link to /dev/zero, content that made the validator
    raise, a copied certbot live/ folder: each gets exactly one outcome event, none is judged
    again, no cycle fails, and a valid set dropped after them is installed."""
    src = node.tmp / "src"
    fifo = src / "fifo"
    fifo.mkdir(parents=True)
    leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    (fifo / "fullchain.pem").write_bytes(leaf.cert_pem)
    os.mkfifo(fifo / "privkey.pem")
    zero = node.source("zero")
    (zero / "privateKey.pem").unlink()
    (zero / "privateKey.pem").symlink_to("/dev/zero")
    crash = node.source("crash")
    (crash / "ca.pem").write_bytes(node.ca.cert_pem + undecodable_subject_ca(node.ca))
    copied = src / "copied"
    copied.mkdir()
    for name in ("fullchain.pem", "privkey.pem"):
        (copied / name).symlink_to(f"../../archive/nodea/{name[:-4]}1.pem")
    for folder in (fifo, zero, crash, copied):
        os.chmod(folder, 0o755)  # noqa: S103 - an ordinary source folder
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        for folder in (fifo, zero, crash, copied):
            drop(node, folder.name, folder)
        for name in ("fifo", "zero", "copied"):
            deadline = time.monotonic() + 20
            while not _outcomes(d, name) and time.monotonic() < deadline:
                time.sleep(0.1)
        deadline = time.monotonic() + 20
        while not _outcomes(d, "crash") and time.monotonic() < deadline:
            time.sleep(0.1)
        good = node.source("good")
        drop(node, "good", good)
        deadline = time.monotonic() + 20
        while not [e for e in _outcomes(d, "good") if e["event"] == "certd.set_installed"]:
            assert time.monotonic() < deadline, "\n".join(d.raw)
            time.sleep(0.1)
        d.signal(signal.SIGHUP)  # a reload rescans incoming/: nothing is judged again
        d.wait_for("certd.config_reloaded")
        time.sleep(1.5)
        assert d.proc.poll() is None
        assert d.stop() == 0
    per_source = {n: _outcomes(d, n) for n in ("fifo", "zero", "crash", "copied", "good")}
    print({n: [(e["event"], e.get("codes")) for e in v] for n, v in per_source.items()})
    assert {n: len(v) for n, v in per_source.items()} == dict.fromkeys(per_source, 1)
    assert per_source["fifo"][0]["codes"] == ["source_unreadable"]
    assert "not a regular file" in per_source["fifo"][0]["reason"]
    assert per_source["zero"][0]["codes"] == ["source_unsafe"]
    assert per_source["copied"][0]["codes"] == ["source_unreadable"]
    assert "copy it with -L" in per_source["copied"][0]["reason"]
    assert d.named("certd.cycle_failed") == []
    _all_lines_are_catalogued_json(d)


@ROOT_ONLY
def test_handover_by_root_to_a_daemon_running_as_another_user(
    open_tmp: Path, second_user: pwd.struct_passwd
) -> None:
    """The daemon runs as a second user (Harper's): a root-owned folder is refused once by name
    with what to do and stays; an unreadable key is source_unreadable naming owner and mode;
    the valid set dropped after them is installed."""
    node = make_node(open_tmp, method="none", extra=json.loads(json.dumps(FAST)))
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir(mode=0o750)
    _chown_tree(open_tmp, second_user.pw_uid, second_user.pw_gid)
    user = second_user.pw_name
    byroot = node.source("byroot")  # made by root: owned by root
    keyroot = node.source("keyroot")
    _chown_tree(keyroot, second_user.pw_uid, second_user.pw_gid)
    os.chown(keyroot / "privateKey.pem", 0, 0)  # 0600 root: the daemon's user cannot read it
    good = node.source("good")
    _chown_tree(good, second_user.pw_uid, second_user.pw_gid)
    with DaemonProc(node, as_user=(second_user.pw_uid, second_user.pw_gid)) as d:
        d.wait_for("certd.started")
        os.rename(byroot, incoming / "byroot")
        os.rename(keyroot, incoming / "keyroot")
        deadline = time.monotonic() + 20
        while not (_outcomes(d, "byroot") and _outcomes(d, "keyroot")):
            assert time.monotonic() < deadline, "\n".join(d.raw)
            time.sleep(0.1)
        os.rename(good, incoming / "good")
        installed = d.wait_for("certd.set_installed")
        d.signal(signal.SIGHUP)
        d.wait_for("certd.config_reloaded")
        time.sleep(1.5)
        assert d.stop() == 0
    assert installed["source"].endswith("/incoming/good")
    [refused] = _outcomes(d, "byroot")
    assert refused["codes"] == ["source_unmovable"]
    assert (
        f"is owned by root and cannot be moved by {user}: hand sets over owned by {user}"
        in (refused["reason"])
    )
    assert (incoming / "byroot").is_dir()  # left in place, reported once
    [unreadable] = _outcomes(d, "keyroot")
    assert unreadable["codes"] == ["source_unreadable"]
    assert "owner root, mode 0600" in unreadable["reason"]
    assert d.named("certd.cycle_failed") == []
    _all_lines_are_catalogued_json(d)


@ROOT_ONLY
def test_filing_never_follows_links(open_tmp: Path, second_user: pwd.struct_passwd) -> None:
    """The daemon runs as root; Harper's user (trusted, owns the root and incoming/) plants
    links to /etc/shadow, a FIFO and a 64 MiB sparse file beside a refused set: filing moves
    the folder, links stay links, nothing outside is read or copied; the next set installs."""
    node = make_node(open_tmp, extra=json.loads(json.dumps(FAST)))
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir(mode=0o750)
    _chown_tree(node.root, second_user.pw_uid, second_user.pw_gid)
    shadow = Path("/etc/shadow")
    secret = shadow.read_bytes() if shadow.exists() else b""
    stage = node.tmp / "stage"
    wrong = devca.make_leaf(node.ca, "other", dns=["other"])
    leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    stage.mkdir()
    (stage / "fullchain.pem").write_bytes(leaf.cert_pem)
    (stage / "k").write_bytes(wrong.key_pem)  # key of another certificate: refused
    (stage / "ca.pem").write_bytes(node.ca.cert_pem)
    _chown_tree(stage, second_user.pw_uid, second_user.pw_gid)
    evil, evil2 = incoming / ".evil", incoming / ".evil2"
    _as(second_user, "mkdir", "-m", "0755", str(evil), str(evil2))
    for name in ("fullchain.pem", "k", "ca.pem"):
        _as(second_user, "cp", str(stage / name), str(evil / name))
    # certbot's names with a link among them: what made the old filing copy with links followed
    _as(second_user, "ln", "-s", "k", str(evil / "privkey.pem"))
    _as(second_user, "ln", "-s", "/etc/shadow", str(evil / "shadow"))
    _as(second_user, "mkfifo", str(evil / "fifo"))
    _as(second_user, "truncate", "-s", "64M", str(evil / "sparse"))
    _as(second_user, "cp", str(stage / "fullchain.pem"), str(evil2 / "fullchain.pem"))
    _as(second_user, "ln", "-s", "/etc/shadow", str(evil2 / "privkey.pem"))
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        _as(second_user, "mv", str(evil), str(incoming / "evil"))
        _as(second_user, "mv", str(evil2), str(incoming / "evil2"))
        deadline = time.monotonic() + 20
        while not (_outcomes(d, "evil") and _outcomes(d, "evil2")):
            assert time.monotonic() < deadline, "\n".join(d.raw)
            time.sleep(0.1)
        drop(node, "good")
        installed = d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert installed["source"].endswith("/incoming/good")
    assert [e["codes"] for e in _outcomes(d, "evil")] == [["key_mismatch"]]
    assert [e["codes"] for e in _outcomes(d, "evil2")] == [["source_unsafe"]]
    rejected = node.root / "keys" / "rejected"
    sizes = []
    for base, _, files in os.walk(rejected):
        for name in files:
            path = Path(base) / name
            st = os.lstat(path)
            if path.is_symlink():
                continue
            sizes.append(st.st_blocks * 512)  # bytes on disk: a copy would have written them
            if path.is_file() and secret:
                assert secret not in path.read_bytes(), path
    assert sum(sizes) < 1 << 20  # the sparse file was moved, never copied
    [kept] = [p for p in rejected.iterdir() if p.name.endswith("-evil")]
    assert (kept / "shadow").is_symlink()
    assert (kept / "privkey.pem").is_symlink()
    _all_lines_are_catalogued_json(d)


def _open_events(path: Path, stop: threading.Event, seen: list[str]) -> threading.Thread:
    """Record every open(2) of ``path`` by any process (inotify IN_OPEN, through watchdog)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_opened(self, event: FileSystemEvent) -> None:
            if os.fsdecode(event.src_path) == str(path):
                seen.append(os.fsdecode(event.src_path))

    observer = Observer()
    observer.schedule(Handler(), str(path.parent), recursive=False)
    observer.start()

    def wait() -> None:
        stop.wait()
        observer.stop()
        observer.join()

    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def test_the_daemon_never_opens_a_file_a_racing_swapper_points_at(node: Node) -> None:
    """30 sets dropped at once while a thread flips each one's ca.pem between a regular file and
    a link to a secret outside: the secret is never opened (inotify IN_OPEN on it); the next
    valid set is installed."""
    # folders that never stop changing are taken in several rotations: not what is tested here
    node.config_data["restart"]["restarts_per_hour"] = 100
    secret_dir = node.tmp / "secret"
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "other-service.pem"
    devca.write_private(secret, devca.make_ca("Other Service").cert_pem)
    folders = []
    for i in range(30):
        folder = node.source(f"r{i:02d}")
        (folder / ".real").write_bytes((folder / "ca.pem").read_bytes())
        folders.append(folder)
    stop, opened = threading.Event(), list[str]()
    watcher = _open_events(secret, stop, opened)
    flips = [0]

    def swap(targets: list[Path]) -> None:
        while not stop.is_set():
            live = [f for f in targets if f.exists()]
            if not live:
                return
            for f in live:
                with contextlib.suppress(OSError):
                    os.symlink(secret, f / ".link")
                    os.rename(f / ".link", f / "ca.pem")
                    shutil.copyfile(f / ".real", f / ".file")
                    os.rename(f / ".file", f / "ca.pem")
                    flips[0] += 1

    try:
        with DaemonProc(node) as d:
            d.wait_for("certd.started")
            incoming = node.root / "keys" / "incoming"
            moved = [drop(node, f.name, f) for f in folders]
            swapper = threading.Thread(target=swap, args=(moved,))
            swapper.start()
            deadline = time.monotonic() + 40
            while any(f.exists() for f in moved) and time.monotonic() < deadline:
                time.sleep(0.2)
            stop.set()
            swapper.join()
            # A source is filed (gone from incoming/) just before its outcome event is logged;
            # one the swapper kept changing until it stopped is taken once it settles.
            judged = sum(len(_outcomes(d, f.name)) for f in moved)
            settled = time.monotonic() + 90
            while judged < len(moved) and time.monotonic() < settled:
                time.sleep(0.1)
                judged = sum(len(_outcomes(d, f.name)) for f in moved)
            count = len(d.named("certd.set_installed"))
            drop(node, "good")
            deadline = time.monotonic() + 60  # 30 judged sets may still be filing
            while not _outcomes(d, "good"):
                assert time.monotonic() < deadline, "\n".join(d.raw)
                time.sleep(0.1)
            assert d.stop() == 0
    finally:
        stop.set()
        watcher.join()
    print(f"race: {flips[0]} flips, {judged} sources judged, {count} installed before 'good'")
    assert judged == 30
    assert opened == []
    assert _outcomes(d, "good")[0]["event"] in ("certd.set_installed", "certd.set_superseded")
    assert incoming.exists()


def _notify_socket(path: Path) -> tuple[socket.socket, list[tuple[float, str]]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    received: list[tuple[float, str]] = []
    return sock, received


def test_event_storm_does_not_stall_the_daemon(node: Node, tmp_path: Path) -> None:
    """A writer doing thousands of file operations a second in incoming/ for 8 s, and 2,000
    empty folders at once: a valid set dropped meanwhile is installed, watchdog pings keep
    coming (largest gap under WatchdogSec), SIGTERM is answered within 5 s; the numbers are
    printed."""
    node.config_data["watch"]["settle_seconds"] = 0.5
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir()
    sock_path = tmp_path / "notify.sock"
    sock, received = _notify_socket(sock_path)
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                data = sock.recv(4096).decode()
                for part in data.split("\n"):
                    received.append((time.monotonic(), part))

    listener = threading.Thread(target=listen)
    listener.start()
    writer_code = (
        "import os, sys, time\n"
        "inc, until = sys.argv[1], time.monotonic() + float(sys.argv[2])\n"
        "w = os.path.join(inc, '.w'); os.makedirs(w, exist_ok=True)\n"
        "n = 0\n"
        "while time.monotonic() < until:\n"
        "    p = os.path.join(w, f'f{n % 50}')\n"
        "    with open(p, 'w') as f: f.write('x')\n"
        "    os.rename(p, p + 'r'); os.unlink(p + 'r')\n"
        "    t = os.path.join(inc, f'x{n % 20}.tmp')\n"
        "    with open(t, 'w') as f: f.write('x')\n"
        "    os.unlink(t)\n"
        "    n += 1\n"
        "print(n * 6)\n"
    )
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    for i in range(2000):
        (bulk / f"e{i:04d}").mkdir()
    # WatchdogSec=6 (a ping due every 3 s): the largest gap must stay under 6 s, or
    # systemd would have killed the daemon in the storm
    env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "6000000"}
    try:
        with DaemonProc(node, env=env) as d:
            d.wait_for("certd.started")
            writer = subprocess.Popen(
                [sys.executable, "-c", writer_code, str(incoming), "8"],
                stdout=subprocess.PIPE,
                text=True,
            )
            t0 = time.monotonic()
            for i in range(2000):
                os.rename(bulk / f"e{i:04d}", incoming / f"e{i:04d}")
            made = time.monotonic() - t0
            dropped = time.monotonic()
            drop(node, "good")
            install_s = _wait_count(d, "certd.set_installed", 1, 120) - dropped
            drained_s = _wait_count(d, "certd.set_refused", 2000, 120) - t0
            ops = int((writer.communicate(timeout=30)[0] or "0").strip() or 0)
            # SIGTERM during a second storm of folders, with the writer running again
            writer = subprocess.Popen(
                [sys.executable, "-c", writer_code, str(incoming), "5"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(500):
                (incoming / f"g{i:04d}").mkdir()
            time.sleep(1.0)
            status = Path(f"/proc/{d.proc.pid}/status").read_text()
            rss_kib = int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1])
            sent = time.monotonic()
            d.signal(signal.SIGTERM)
            code = d.proc.wait(timeout=30)
            term_s = time.monotonic() - sent
            writer.communicate(timeout=30)
            d.reader.join(timeout=5)
    finally:
        stop.set()
        listener.join()
        sock.close()
    pings = [t for t, m in received if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    if gaps:
        worst = gaps.index(max(gaps))
        print(f"worst gap from {pings[worst] - pings[0]:.2f} s after the first ping")
    print(
        f"storm: writer {ops} ops in 8 s ({ops / 8:.0f}/s); 2,000 folders moved in {made:.2f} s; "
        f"valid set installed {install_s:.2f} s after its drop; 2,000 refusals done "
        f"{drained_s:.2f} s after the first folder; SIGTERM answered in {term_s:.2f} s; "
        f"peak RSS {rss_kib / 1024:.0f} MiB; {len(pings)} watchdog pings, largest gap "
        f"{max(gaps, default=0):.2f} s"
    )
    assert code == 0
    assert term_s < 5
    assert gaps
    assert max(gaps) < 6
    assert rss_kib < 300 * 1024
    assert d.named("certd.cycle_failed") == []
    assert len(d.named("certd.watch_lost")) <= 2  # one overflow warning per burst at most
    _all_lines_are_catalogued_json(d)
    assert resource.getrusage(resource.RUSAGE_SELF)  # (the test process itself stays sane)


def test_content_that_raises_never_stops_the_daemon_at_start(node: Node) -> None:
    """A live CA file holding an entry that made the validator raise: the daemon starts (no
    traceback, every line an event), and installs the next valid set."""
    node.ca_file.write_bytes(node.ca.cert_pem + undecodable_subject_ca(node.ca))
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        drop(node, "good")
        installed = d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert installed["source"].endswith("/incoming/good")
    _all_lines_are_catalogued_json(d)


def test_an_unexpected_error_at_start_is_an_event(node: Node) -> None:
    """An error outside any cycle (incoming_dir under a regular file): certd.crashed
    (critical, the traceback inside the event), exit 1; every line a catalogued JSON event."""
    blocker = node.tmp / "a-file"
    blocker.write_text("not a folder")
    node.config_data["incoming_dir"] = str(blocker / "incoming")
    with DaemonProc(node) as d:
        code = d.proc.wait(timeout=30)
        d.reader.join(timeout=5)
    assert code == 1
    crashed = d.named("certd.crashed")
    assert [e["event"] for e in d.events][-1] == "certd.crashed"
    assert "NotADirectoryError" in crashed[0]["error"]
    assert "Traceback" in crashed[0]["traceback"]
    _all_lines_are_catalogued_json(d)


def test_loose_files_written_one_by_one_are_one_set(node: Node) -> None:
    """certificate.pem, then privateKey.pem, then ca.pem, seconds apart: held (one
    set_incomplete warning), then installed as one set; never two refused halves."""
    node.config_data["watch"]["loose_wait_seconds"] = 1.0
    folder = node.source("loose")
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir()
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        shutil.copy(folder / "certificate.pem", incoming / "certificate.pem")
        incomplete = d.wait_for("certd.set_incomplete", timeout=15)
        shutil.copy(folder / "privateKey.pem", incoming / "privateKey.pem")
        time.sleep(1.5)
        shutil.copy(folder / "ca.pem", incoming / "ca.pem")
        installed = d.wait_for("certd.set_installed")
        time.sleep(1.0)
        assert d.stop() == 0
    assert incomplete["missing"] == ["ca.pem", "privateKey.pem"]
    assert d.named("certd.set_refused") == []
    assert len(d.named("certd.set_incomplete")) == 1
    assert "/incoming/loose-" in installed["source"]


def test_strays_reported_once_leftovers_ignored(node: Node) -> None:
    """cert.pem~, .x.tmp, a.swp, #a#, .hidden: ignored; a README: one incoming_stray, not
    repeated at the next rescan; incoming/ made world-writable: one incoming_unsafe; the next
    valid set is installed."""
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir()
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        for name in ("cert.pem~", ".x.tmp", "a.swp", "#a#", ".hidden", "b.tmp", "README"):
            (incoming / name).write_text("left over")
        d.wait_for("certd.incoming_stray")
        os.chmod(incoming, 0o777)  # noqa: S103 - the hazard under test
        d.wait_for("certd.incoming_unsafe")
        d.signal(signal.SIGHUP)  # a reload rescans
        d.wait_for("certd.config_reloaded")
        os.chmod(incoming, 0o750)  # noqa: S103 - back to the safe mode
        drop(node, "good")
        d.wait_for("certd.set_installed")
        time.sleep(1.0)
        assert d.stop() == 0
    assert [e["path"] for e in d.named("certd.incoming_stray")] == [str(incoming / "README")]
    assert len(d.named("certd.incoming_unsafe")) == 1
    assert d.named("certd.set_refused") == []
    _all_lines_are_catalogued_json(d)


def test_keys_folder_swapped_with_ln_sfn(node: Node) -> None:
    """keys/ is a link swapped (ln -sfn) to a copy without incoming/: the daemon makes
    incoming/ again, says "watching … again" and takes a set dropped there within seconds,
    not at the hourly rescan."""
    keys = node.root / "keys"
    first = node.root / "keys-a"
    os.rename(keys, first)
    keys.symlink_to("keys-a")
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        second = node.root / "keys-b"
        shutil.copytree(first, second, symlinks=True, ignore=shutil.ignore_patterns("incoming"))
        tmp_link = node.root / ".keys-new"
        tmp_link.symlink_to("keys-b")
        os.rename(tmp_link, keys)
        t0 = time.monotonic()
        rearmed = d.wait_for("certd.watch_rearmed", timeout=20)
        seen_s = time.monotonic() - t0
        drop(node, "later")
        installed = d.wait_for("certd.set_installed", timeout=20)
        assert d.stop() == 0
    print(f"ln -sfn: watching again after {seen_s:.2f} s")
    print([(e["event"], e.get("change")) for e in d.events if "watch" in e["event"]])
    assert "incoming" in rearmed["change"]
    assert "again" in rearmed["change"]
    assert installed["source"].endswith("/incoming/later")
    assert (second / "incoming").is_dir()


def test_certbot_lineage_filed_as_the_bytes_read_and_only_once(node: Node) -> None:
    """`harper-certd install` of a certbot live/ folder, twice: processed/ holds one copy with
    only the member files read (0600; certbot's README and a planted link are not copied),
    and certbot's links stay where they are."""
    le = node.tmp / "le"
    leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    archive, live = le / "archive" / "nodea", le / "live" / "nodea"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (archive / "fullchain1.pem").write_bytes(leaf.cert_pem)
    devca.write_private(archive / "privkey1.pem", leaf.key_pem)
    for name in ("fullchain", "privkey"):
        (live / f"{name}.pem").symlink_to(f"../../archive/nodea/{name}1.pem")
    (live / "README").write_text("certbot's own README\n")
    (live / "zero").symlink_to("/dev/zero")
    config = node.write_config()
    argv = [sys.executable, "-m", "harper_certd", "install", "--config", str(config), str(live)]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    second = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    processed = node.root / "keys" / "processed"
    [copy] = list(processed.iterdir())
    assert sorted(p.name for p in copy.iterdir()) == ["fullchain.pem", "privkey.pem"]
    assert (copy / "privkey.pem").read_bytes() == leaf.key_pem
    assert oct((copy / "privkey.pem").stat().st_mode & 0o777) == "0o600"
    assert (live / "fullchain.pem").is_symlink()
    assert node.live_fingerprint() == devca.fingerprint_of(leaf.cert)


def test_library_records_become_events_never_raw_lines(tmp_path: Path) -> None:
    """watchdog's log records: an overflow becomes a rescan note for the live watcher, an
    error a certd.library_message event; after stop() neither reaches Python's last-resort
    handler (which would print raw text)."""
    import logging

    from harper_certd.incoming import OVERFLOW
    from harper_certd.watch import Root, Watcher

    notes: list[str] = []
    watcher = Watcher([Root(tmp_path, recursive=False)], notes.append)
    watcher.start()
    with capture_logs() as logged:
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        logging.getLogger("watchdog.observers.api").error("emitter failed: %s", "boom")
    watcher.stop()
    assert notes == [OVERFLOW]
    assert [(e["event"], e["message"]) for e in logged] == [
        ("certd.library_message", "emitter failed: boom")
    ]
    stderr = sys.stderr
    try:
        sys.stderr = captured = io.StringIO()
        logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed")
    finally:
        sys.stderr = stderr
    assert captured.getvalue() == ""
    assert notes == [OVERFLOW]


def test_python_warnings_and_thread_errors_become_events() -> None:
    """What Python itself would print raw (a warning, an exception in a library's thread)
    becomes a certd.library_message event once the daemon's main() has installed its hooks."""
    import warnings

    from harper_certd import run

    saved_show, saved_hook = warnings.showwarning, threading.excepthook
    warnings.showwarning, threading.excepthook = run._warning_shown, run._thread_failed
    try:
        with capture_logs() as logged, warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("an old API", DeprecationWarning, stacklevel=1)

            def boom() -> None:
                raise RuntimeError("emitter thread died")

            thread = threading.Thread(target=boom, name="emitter")
            thread.start()
            thread.join()
    finally:
        warnings.showwarning, threading.excepthook = saved_show, saved_hook
    assert [e["event"] for e in logged] == ["certd.library_message"] * 2
    assert logged[0]["message"] == "an old API"
    assert logged[0]["logger"].startswith("DeprecationWarning at ")
    assert logged[1]["logger"] == "emitter"
    # frames (file, line, source) and the type; a library's own message never (it could
    # quote its input): the exception line is ours
    assert logged[1]["message"].splitlines()[-1] == (
        "RuntimeError (message withheld: a library's text may quote its input)"
    )
    assert "boom" in logged[1]["message"]
