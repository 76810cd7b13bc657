"""The NATS route probe (Harper 4.0-4.3 clustering) against the real nats-server v2.10.11
that harperdb 4.3.0 ships (``dependencies/linux-x64/nats-server``), configured as Harper
configures its hub: a cluster (route) port with direct TLS and ``verify: true``.
Measured wall time: about 5 s."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harper_certd import peers
from harper_certd.config import PeersSection
from harper_certd.peers import Candidate, Verdict, probe_nats_route
from harper_certd.roles import SetBytes
from harper_rig import RigCA, free_ports, harper_dir

NATS = harper_dir("4.3.0") / "node_modules/harperdb/dependencies/linux-x64/nats-server"

pytestmark = pytest.mark.skipif(
    not NATS.is_file(), reason="harperdb 4.3.0 is not installed: run tests/install-harper.sh"
)


@pytest.fixture(scope="module")
def route(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, RigCA]]:
    """A nats-server whose route port trusts only ``ca`` (client certificates verified)."""
    work = tmp_path_factory.mktemp("nats")
    ca = RigCA("harper-certd NATS CA")
    leaf = ca.issue("hub", dns_names=["hub"], ip_addresses=["127.0.0.1"])
    (work / "cert.pem").write_bytes(leaf.cert_pem)
    key = work / "key.pem"
    key.write_bytes(leaf.key_pem)
    os.chmod(key, 0o600)
    (work / "ca.pem").write_bytes(ca.cert_pem)
    client_port, route_port = free_ports(2)
    tls = f'tls {{ cert_file: "{work}/cert.pem", key_file: "{key}", ca_file: "{work}/ca.pem",'
    tls += " verify: true, timeout: 5 }"
    (work / "nats.conf").write_text(
        f"listen: 127.0.0.1:{client_port}\n"
        f"cluster {{ name: harperdb, listen: 127.0.0.1:{route_port}, {tls} }}\n"
    )
    proc = subprocess.Popen(
        [str(NATS), "-c", str(work / "nats.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", route_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield route_port, ca
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_route_accepts_a_candidate_of_its_ca(route: tuple[int, RigCA]) -> None:
    port, ca = route
    leaf = ca.issue("nodea", dns_names=["nodea"])
    answer = probe_nats_route("127.0.0.1", port, Candidate(leaf.cert_pem, leaf.key_pem, b""))
    assert answer.verdict is Verdict.ACCEPTED, answer


def test_route_refuses_a_candidate_of_another_ca(route: tuple[int, RigCA]) -> None:
    port, _ = route
    other = RigCA("another CA").issue("nodea", dns_names=["nodea"])
    answer = probe_nats_route("127.0.0.1", port, Candidate(other.cert_pem, other.key_pem, b""))
    assert answer.verdict is Verdict.REFUSED, answer


def test_closed_port_is_unreachable(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    leaf = RigCA().issue("nodea", dns_names=["nodea"])
    answer = probe_nats_route(
        "127.0.0.1", port, Candidate(leaf.cert_pem, leaf.key_pem, b""), timeout=2
    )
    assert answer.verdict is Verdict.UNREACHABLE, answer


def test_peer_guard_probes_the_nats_routes(route: tuple[int, RigCA]) -> None:
    """The install's peer guard on a NATS layout: the configured routes are the peers."""
    port, ca = route
    scope = peers.Scope(
        PeersSection(unreachable="refuse"),
        None,
        "nodea",
        None,
        lambda: dt.datetime.now(dt.UTC),
        nats_routes=(("127.0.0.1", port),),
    )
    good = ca.issue("nodea", dns_names=["nodea"])
    checked = peers.check_set(
        scope, SetBytes(good.cert_pem, good.key_pem, ca.cert_pem), stage="before"
    )
    assert checked.checked
    assert checked.ok, checked.problems
    assert [r.peer.url for r in checked.results] == [f"nats-route://127.0.0.1:{port}"]
    other_ca = RigCA("another CA")
    bad = other_ca.issue("nodea", dns_names=["nodea"])
    refused = peers.check_set(
        scope, SetBytes(bad.cert_pem, bad.key_pem, other_ca.cert_pem), stage="before"
    )
    codes = {p.code for p in refused.problems}
    assert codes == {"ca_not_trusted_by_peers", "peer_not_trusted_by_ca"}, refused.problems
