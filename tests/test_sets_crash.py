"""Crash tests per set (issue 11): SIGKILL at each named step of ``install --set edge``,
and of ``install``/``rollback --set public`` (a set without a CA file: two files).

The second set (``edge``, own CA file, its store in ``<state>/sets/edge/``) is old or new
after every kill and after recovery, never a mix; the replication set's files and its
store are not touched at all.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harper_certd import devca, fsio, load
from harper_certd.check import validate_against_store
from harper_certd.install.context import build_context
from harper_certd.recover import in_flight, recover
from harper_certd.roles import Purpose, SetPaths
from harper_certd.trust import system_store
from harper_certd.validate import Inputs, validate
from nodefix import Node, make_node
from test_crash import AFTER_FLIP, STEPS_FIRST_INSTALL, STEPS_SECOND_INSTALL
from test_sets_public import HOST, PUBLIC, PublicNode, public_node

EDGE = "edge"


def _edge_node(tmp: Path) -> tuple[Node, SetPaths, devca.Issued]:
    node = make_node(tmp)
    ca = devca.make_ca("Edge CA")
    live = devca.write_set(node.root / "keys" / EDGE, devca.make_leaf(ca, "edge.test"), [ca])
    path = node.root / "harperdb-config.yaml"
    tree = yaml.safe_load(path.read_text())
    tree["http"] = {"securePort": 9926}
    tree["tls"] = [
        {**tree["tls"], "uses": ["replication"]},
        {
            "certificate": str(live.cert),
            "certificateAuthority": str(live.ca),
            "privateKey": str(live.key),
            "name": EDGE,
            "uses": ["server", "operations-api"],
        },
    ]
    path.write_text(yaml.safe_dump(tree))
    return node, live, ca


def _identity(live: SetPaths) -> tuple[str, bytes]:
    assert live.ca is not None
    cert, key, ca = (p.read_bytes() for p in (live.cert, live.key, live.ca))
    report = validate(Inputs(cert, key, ca), at=dt.datetime.now(dt.UTC), purpose=Purpose.SERVER)
    assert report.valid, f"live edge set is not whole: {report.problems}"
    return devca.fingerprint_of(load.parse_certificates(cert, name="x").certs[0]), ca


def _replication(node: Node) -> tuple[bytes, ...]:
    return tuple(p.read_bytes() for p in (node.live.cert, node.live.key, node.ca_file))


def _source(tmp: Path, ca: devca.Issued, name: str) -> tuple[Path, tuple[str, bytes]]:
    extra = devca.make_ca(f"Extra CA {name}")
    leaf = devca.make_leaf(ca, "edge.test")
    folder = tmp / "src" / name
    devca.write_set(folder, leaf, [ca, extra])
    return folder, (devca.fingerprint_of(leaf.cert), (folder / "ca.pem").read_bytes())


def _install(cfg: Path, folder: Path, crash_at: str | None) -> int:
    env = {**os.environ}
    if crash_at:
        env[fsio.CRASH_ENV] = crash_at
    argv = ["install", str(folder), "--config", str(cfg), "--set", EDGE]
    done = subprocess.run(
        [sys.executable, "-m", "harper_certd", *argv],
        env=env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    return done.returncode


@pytest.mark.parametrize(
    ("scenario", "step"),
    [("first", s) for s in STEPS_FIRST_INSTALL] + [("second", s) for s in STEPS_SECOND_INSTALL],
)
def test_kill_at_named_step_of_a_second_set(tmp_path: Path, scenario: str, step: str) -> None:
    node, live, ca = _edge_node(tmp_path)
    cfg = node.write_config()
    replication = _replication(node)
    if scenario == "second":
        first, _ = _source(tmp_path, ca, "first")
        assert _install(cfg, first, None) == 0
    old = _identity(live)
    folder, new = _source(tmp_path, ca, "new")
    assert _install(cfg, folder, step) == -signal.SIGKILL
    assert _identity(live) in (old, new)
    ctx = build_context(node.config, set_name=EDGE)
    assert ctx.store.root == node.state / "sets" / EDGE
    with fsio.locked(ctx.store.lock_path):
        recover(ctx.store)
    assert not in_flight(ctx.store)
    assert _identity(live) == (new if step in AFTER_FLIP else old)
    again, newer = _source(tmp_path, ca, "again")
    assert _install(cfg, again, None) == 0
    assert _identity(live) == newer
    # The replication set: same bytes, plain files, no store of its own started.
    assert _replication(node) == replication
    assert not node.live.cert.is_symlink()
    assert not (node.state / "generations").exists()


# --- a set without a CA file (``public``: full chain + key, two links) --------------------

PUBLIC_FIRST = [
    "generation_file_written:key",
    "generation_file_written:cert",
    "generation_written",
    "adopt_flipped",
    "adopt_linked:cert",
    "adopt_linked:key",
    "flipped",
    "journal_cleared",
]
PUBLIC_SECOND = [
    "generation_file_written:key",
    "generation_file_written:cert",
    "generation_written",
    "generation_renamed",
    "flipped",
    "journal_cleared",
]


def _public_identity(pub: PublicNode) -> str:
    """The fingerprint of a whole, valid public set at the live paths (no CA file beside)."""
    report = validate_against_store(
        pub.live.cert,
        pub.live.key,
        system_store(pub.bundle),
        at=dt.datetime.now(dt.UTC),
        purpose=Purpose.SERVER,
        hostnames=[HOST],
    )
    assert report.valid, f"live public set is not whole: {report.problems}"
    assert report.certificate is not None
    assert sorted(p.name for p in pub.live.cert.parent.iterdir()) == [
        "fullchain.pem",
        "privkey.pem",
    ]
    return report.certificate.sha256


def _public_run(pub: PublicNode, argv: list[str], crash_at: str | None) -> int:
    env = {**os.environ}
    env.pop("SSL_CERT_FILE", None)  # harper.trust_store names the bundle
    if crash_at:
        env[fsio.CRASH_ENV] = crash_at
    done = subprocess.run(
        [sys.executable, "-m", "harper_certd", *argv, "--config", str(pub.config), "--set", PUBLIC],
        env=env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    return done.returncode


def _public_install(pub: PublicNode, name: str, crash_at: str | None = None) -> tuple[int, str]:
    leaf = pub.leaf()
    return _public_run(
        pub, ["install", str(pub.source(name, leaf))], crash_at
    ), devca.fingerprint_of(leaf.cert)


def _public_recover(pub: PublicNode) -> None:
    ctx = build_context(pub.node.config, set_name=PUBLIC)
    assert ctx.store.root == pub.state
    assert ctx.store.live_paths() == {"cert": pub.live.cert, "key": pub.live.key}
    with fsio.locked(ctx.store.lock_path):
        recover(ctx.store)
    assert not in_flight(ctx.store)


@pytest.mark.parametrize(
    ("scenario", "step"),
    [("first", s) for s in PUBLIC_FIRST] + [("second", s) for s in PUBLIC_SECOND],
)
def test_kill_at_named_step_of_a_public_set(tmp_path: Path, scenario: str, step: str) -> None:
    """SIGKILL at each named step of ``install --set public``: old or new, never a mix,
    before and after recovery; the replication set untouched."""
    pub = public_node(tmp_path)
    replication = _replication(pub.node)
    if scenario == "second":
        assert _public_install(pub, "first")[0] == 0
    old = _public_identity(pub)
    code, new = _public_install(pub, "new", step)
    assert code == -signal.SIGKILL
    assert _public_identity(pub) in (old, new)
    _public_recover(pub)
    assert _public_identity(pub) == (new if step in AFTER_FLIP else old)
    code, newer = _public_install(pub, "again")
    assert code == 0
    assert _public_identity(pub) == newer
    assert _replication(pub.node) == replication
    assert not (pub.node.state / "generations").exists()


@pytest.mark.parametrize("step", ["flipped", "journal_cleared"])
def test_kill_during_rollback_of_a_public_set(tmp_path: Path, step: str) -> None:
    """SIGKILL in ``rollback --set public``: the flip is the commit point."""
    pub = public_node(tmp_path)
    first = _public_identity(pub)
    code, second = _public_install(pub, "second")
    assert code == 0
    assert _public_run(pub, ["rollback"], step) == -signal.SIGKILL
    assert _public_identity(pub) in (first, second)
    _public_recover(pub)
    assert _public_identity(pub) == first
    assert _public_run(pub, ["rollback", "000002"], None) == 0
    assert _public_identity(pub) == second
