"""harper-certd on the older Harper lines, only where they behave differently from 4.7.29
(docs/harper-lines.md).  One module-scoped fixture per line:

- 4.0.7 (PM2, no ``hdb.pid``, ``operationsApi.network.https``): ``check`` finds the node,
  its version and line, and its TLS on the plain Operations API port.
- 4.3.0, two nodes in a NATS cluster over ``clustering.tls``: the peer guard probes the
  other node's route port with the candidate; an install restarts through the Operations
  API at once (no hot reload to wait for), the NATS route port (direct TLS) serves the new
  leaf, and the routes are up again afterwards.
- 4.4.18 with ``threads.count: 2``: an install is verified by hot reload with the
  deliberate second change event (no restart rescue), on enough fresh connections to
  reach both worker threads.

Timings are printed (``-s``); none is asserted.  Measured wall time of the module: 165 s
(less loaded) to 275 s (7 helpers on 2 cores); node set-up is most of it (4.0.7 24-42 s,
the 4.3.0 pair 75-105 s, 4.4.18 19-66 s).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from harper_certd.config import Config, parse_config
from harper_certd.harper import apply as harper_apply
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_rig import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    HarperNode,
    LeafMaterial,
    RigCA,
    iter_rig_processes,
    needs_harper,
)

pytestmark = needs_harper(300, "4.0.7", "4.3.0", "4.4.18")

SERVE_TIMEOUT = 60.0


@dataclass
class Line:
    """The nodes of one line, their CA, and daemon configurations for the first node."""

    nodes: list[HarperNode]
    ca: RigCA
    work: Path
    _sources: int = field(default=0, init=False)

    @property
    def node(self) -> HarperNode:
        return self.nodes[0]

    def credentials(self) -> Path:
        path = self.work / "credentials"
        if not path.exists():
            path.write_text(f"admin:{self.node.password}\n")
            os.chmod(path, 0o600)
        return path

    def config(self, method: str = "auto", *, peers: str = "off") -> Config:
        return parse_config(
            {
                "harper": {"root": str(self.node.root)},
                "state_dir": str(self.work / "state"),
                "restart": {"method": method, "timeout": 60},
                "verify": {"timeout": SERVE_TIMEOUT, "interval": 0.1, "host": self.node.ip},
                "operations_api": {"credentials_file": str(self.credentials())},
                "peers": {"check": peers, "unreachable": "refuse"},
            }
        )

    def leaf(self, node: HarperNode) -> LeafMaterial:
        return self.ca.issue(node.name, dns_names=[node.name], ip_addresses=[node.ip])

    def source(self, leaf: LeafMaterial) -> Path:
        self._sources += 1
        folder = self.work / "sources" / f"set-{self._sources:03d}"
        folder.mkdir(parents=True)
        (folder / CERT_FILE).write_bytes(leaf.cert_pem)
        key = folder / KEY_FILE
        key.write_bytes(leaf.key_pem)
        os.chmod(key, 0o600)
        (folder / CA_FILE).write_bytes(self.ca.cert_pem)
        return folder


def _line(
    version: str, names: list[str], *, threads: int = 1, nats: bool = False
) -> Iterator[Line]:
    # A short base with a dot (see test_harper_integration: Harper's rootPath regex).
    base = Path(tempfile.mkdtemp(prefix=f"hl{version}.", dir="/tmp"))
    ca = RigCA(f"harper-certd {version} CA")
    nodes = [
        HarperNode(base, name, f"127.0.0.{10 + i}", line=version, threads=threads)
        for i, name in enumerate(names)
    ]
    if nats:
        for node in nodes:
            assert node.ports.nats is not None
            node.nats_routes = tuple(
                (o.ip, o.ports.nats[0]) for o in nodes if o is not node and o.ports.nats
            )
    line = Line(nodes, ca, base)
    try:
        t0 = time.monotonic()
        for node in nodes:
            node.install()
            first = line.leaf(node)
            node.write_tls_files(first.cert_pem, first.key_pem, ca.cert_pem)
        for node in nodes:
            node.start(timeout=120)
        print(
            f"\n[{version}] {len(nodes)} node(s) installed and started in "
            f"{time.monotonic() - t0:.1f} s"
        )
        yield line
    finally:
        for node in nodes:
            node.stop()
        leftovers = list(iter_rig_processes(base))
        if not leftovers:
            shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"Harper processes left behind: {leftovers}"


@pytest.fixture(scope="module")
def line_40() -> Iterator[Line]:
    yield from _line("4.0.7", ["node40"])


@pytest.fixture(scope="module")
def line_43() -> Iterator[Line]:
    yield from _line("4.3.0", ["node43a", "node43b"], nats=True)


@pytest.fixture(scope="module")
def line_44() -> Iterator[Line]:
    yield from _line("4.4.18", ["node44"], threads=2)


def _cli(*args: str, node: HarperNode) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harper_certd", *args, "--harper-root", str(node.root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(node.home)},
    )


def _routes_up(node: HarperNode, peer: str, timeout: float = SERVE_TIMEOUT) -> list[Any]:
    """``cluster_network`` until ``peer`` is listed (4.3 has no ``cluster_status`` routes
    with a state: ``cluster_network`` lists the nodes the NATS servers reach)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = node.operation({"operation": "cluster_network"}).get("nodes", [])
        except Exception as exc:
            last = repr(exc)
        if isinstance(last, list) and any(n.get("name") == peer for n in last):
            return last
        time.sleep(0.5)
    raise AssertionError(f"{node.name} does not reach {peer}: {last}")


# --------------------------------------------------------------------------- 4.0.7


def test_40_check_finds_pm2_node_its_version_and_https_port(line_40: Line) -> None:
    """No hdb.pid, a rewritten title: check still names the process, 4.0.7, its line, and
    the Operations API's plain port as its TLS port (network.https)."""
    node = line_40.node
    assert not node.pid_path.exists()
    result = _cli("check", "--json", node=node)
    data = json.loads(result.stdout)
    print(f"\n[4.0.7] check: {data['harper']}, ports {data['secure_ports']}")
    assert data["harper"]["pid"] is not None, result.stderr
    assert data["harper"]["version"] == "4.0.7"
    assert data["harper"]["line"] == "4.0"
    assert "measured on a real node" in data["harper"]["support"]
    assert data["secure_ports"] == {"operationsApi": node.ports.operations}
    assert node.try_fingerprint(node.ports.operations) is not None


# --------------------------------------------------------------------------- 4.3.0


def test_43_install_restarts_at_once_and_the_route_port_serves_it(line_43: Line) -> None:
    """auto on 4.3 is the Operations API (restart_service clustering_config, then restart):
    no hot-reload wait first; the NATS route port serves the new leaf; routes come back."""
    a, b = line_43.nodes
    assert a.ports.nats is not None
    route = a.ports.nats[0]
    _routes_up(a, b.name)
    leaf = line_43.leaf(a)
    ctx = build_context(line_43.config(peers="auto"))
    assert "clusteringRoutes" in ctx.harper.secure_ports
    t0 = time.monotonic()
    with structlog.testing.capture_logs() as seen:
        outcome = install(ctx, line_43.source(leaf))
    took = time.monotonic() - t0
    # The peer guard probed node b's route port with the candidate: accepted both ways.
    checked = [e for e in seen if e.get("event") == "certd.peers_checked"]
    assert checked, [e.get("event") for e in seen]
    assert b.ports.nats is not None
    probed = checked[0]["peers"]
    assert [p["url"] for p in probed] == [f"nats-route://{b.ip}:{b.ports.nats[0]}"]
    assert probed[0]["accepts_this_node"] == "accepted", probed
    assert probed[0]["trusted_by_this_node"] == "accepted", probed
    assert outcome.status == "installed", outcome.as_dict()
    assert outcome.applied is not None
    print(f"\n[4.3.0] install {took:.1f} s: {outcome.applied.method}, {outcome.applied.detail}")
    assert outcome.applied.method == "operations-api"
    assert outcome.applied.verified
    assert a.try_fingerprint(route) == leaf.fingerprint
    assert a.try_fingerprint(a.ports.http_secure) == leaf.fingerprint
    nodes = _routes_up(a, b.name)
    print(f"[4.3.0] routes after {time.monotonic() - t0:.1f} s: {nodes}")


def test_43_check_names_the_nats_set_and_its_switches(line_43: Line) -> None:
    """check on 4.3: its line, the route port, no enableRootCAs hazard (4.4 on only)."""
    data = json.loads(_cli("check", "--json", node=line_43.node).stdout)
    assert data["harper"]["version"] == "4.3.0"
    assert "clusteringRoutes" in data["secure_ports"]
    hazards = {h["code"] for h in data.get("hazards", [])}
    assert "enable_root_cas_on" not in hazards


# --------------------------------------------------------------------------- 4.4.18


def test_44_install_hot_with_second_change_event_on_two_workers(line_44: Line) -> None:
    """4.4.18, threads.count 2: hot reload verified with the deliberate second change event,
    no restart; the new leaf on every fresh connection afterwards (both workers)."""
    node = line_44.node
    pid = node.pid()
    ctx = build_context(line_44.config())
    leaf = line_44.leaf(node)
    t0 = time.monotonic()
    outcome = install(ctx, line_44.source(leaf))
    took = time.monotonic() - t0
    assert outcome.status == "installed", outcome.as_dict()
    assert outcome.applied is not None
    print(f"\n[4.4.18] install {took:.1f} s: {outcome.applied.method}, {outcome.applied.detail}")
    assert outcome.applied.method == "hot-reload"
    assert not outcome.applied.restarted
    assert node.pid() == pid
    seen = {node.try_fingerprint(timeout=2.0) for _ in range(16)}
    assert seen == {leaf.fingerprint}


def test_44_hot_reload_survives_a_swallowed_change_event(
    line_44: Line, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4.4.18: the deliberate change event sent 50 ms after the flip, before Harper's own
    first reload (as on a loaded host, where that reload starts late and swallows it): the
    repeated change events still make Harper load the new pair, without a restart."""
    monkeypatch.setattr(harper_apply, "FIRST_RELOAD_SECONDS", 0.05)
    node = line_44.node
    pid = node.pid()
    ctx = build_context(line_44.config())
    leaf = line_44.leaf(node)
    outcome = install(ctx, line_44.source(leaf))
    assert outcome.status == "installed", outcome.as_dict()
    assert outcome.applied is not None
    print(f"\n[4.4.18] early nudge: {outcome.applied.method}, {outcome.applied.detail}")
    assert outcome.applied.method == "hot-reload"
    assert node.pid() == pid
    assert {node.try_fingerprint(timeout=2.0) for _ in range(16)} == {leaf.fingerprint}


def test_40_status_says_the_version_and_its_support(line_40: Line) -> None:
    """status (no daemon ever ran: an empty state dir) names 4.0.7 and what is supported."""
    node = line_40.node
    state = line_40.work / "status-state"
    result = _cli("status", "--json", "--no-probe", "--state-dir", str(state), node=node)
    data = json.loads(result.stdout)
    print(f"\n[4.0.7] status: {data['harper']}")
    assert data["harper"]["version"] == "4.0.7", result.stderr
    assert data["harper"]["line"] == "4.0"
    text = _cli("status", "--no-probe", "--state-dir", str(state), node=node).stdout
    assert "Harper 4.0.7 (line 4.0) is supported, measured on a real node" in text


def test_40_install_with_restart_method_cli_on_pm2(
    line_40: Line, monkeypatch: pytest.MonkeyPatch
) -> None:
    """restart.method cli on 4.0 (PM2): the line's own bin/harperdb.js restart, found from
    the server's launchHarperDB.js; the new leaf served on the https Operations API port."""
    node = line_40.node
    # The CLI talks to the PM2 daemon of the Harper user's HOME (the daemon's environment).
    monkeypatch.setenv("HOME", str(node.home))
    monkeypatch.setenv("ROOTPATH", str(node.root))
    leaf = line_40.leaf(node)
    ctx = build_context(line_40.config("cli"))
    t0 = time.monotonic()
    outcome = install(ctx, line_40.source(leaf))
    took = time.monotonic() - t0
    assert outcome.status == "installed", outcome.as_dict()
    assert outcome.applied is not None
    print(f"\n[4.0.7] cli install {took:.1f} s: {outcome.applied.detail}")
    assert outcome.applied.method == "cli"
    assert outcome.applied.verified
    assert node.try_fingerprint(node.ports.operations) == leaf.fingerprint
