"""Two ``harper-certd run`` daemons, one per real Harper 4.7.29 node, and ``ca remove`` (issue 12).

The module's own two-node cluster (test_two_nodes' fixture: one CA, joined once,
replicating).  Each node gets its own daemon process with its own config and state
directory (``restart.method: operations-api``, so each renewal takes a full restart).  A
renewal (a new leaf of the same CA) is renamed into both incoming folders at the same
instant; the test reads both daemons' JSON log lines and asserts the timeline: each guard
passes, the two restarts never overlap, each proof after the swap passes, and replication
works both ways after.  Then ``harper-certd ca remove`` through the command line.

Run with ``-s`` to see the timeline.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from daemonfix import DaemonProc
from harper_certd import cafile
from harper_certd.config import parse_config
from harper_certd.harper.api import operations_api
from harper_certd.install.context import build_context
from harper_certd.logs import EVENTS
from harper_rig import HandshakePoller, RigCA, needs_harper, outages
from test_two_nodes import Cluster, Member, both_ways, cluster

__all__ = ["cluster"]  # the module-scoped fixture, imported on purpose: this module's own rig

pytestmark = needs_harper(timeout=400)

RENEWAL_TIMEOUT = 150.0  # both renewals, with the second node's stagger slot and deferral
FAILED = ("certd.set_refused", "certd.rolled_back", "certd.rollback_failed", "certd.crashed")
# The events of one renewal with a full restart, in the order each daemon must log them.
TIMELINE = (
    "certd.set_detected",
    "certd.peers_checked",  # stage "before": the guard
    "certd.harper_restarted",
    "certd.served_verified",
    "certd.peers_checked",  # stage "after": the proof
    "certd.set_installed",
)
# A CA file with a comment above the certificate: what ca add / ca remove must keep verbatim.
CA_FILE_HEADER = b"# cluster CA of the two-node rig (this line must survive ca add/remove)\n"


class DaemonConfig:
    """A member's daemon configuration (restart through the Operations API), its own file."""

    def __init__(self, member: Member) -> None:
        self.member = member

    def write_config(self) -> Path:
        data = self.member.config_data("operations-api")
        data["log"] = {"format": "json", "level": "info"}
        path = self.member.work / "certd-run.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path


def _ts(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(event["ts"]))


def _wait_installed(daemon: DaemonProc, fingerprint: str, deadline: float) -> dict[str, Any]:
    while True:
        found = [e for e in daemon.named("certd.set_installed") if e["fingerprint"] == fingerprint]
        if found:
            return found[0]
        bad = [e for e in daemon.events if e.get("event") in FAILED]
        if bad or time.monotonic() > deadline or daemon.proc.poll() is not None:
            raise AssertionError(f"no certd.set_installed for {fingerprint}: {bad or daemon.raw}")
        time.sleep(0.2)


def _connected_both_ways(cluster: Cluster) -> None:
    for member in cluster.members.values():
        status = member.node.operation({"operation": "cluster_status"})
        peer = cluster.peer(member).name
        sockets = [
            s
            for c in status.get("connections") or []
            if isinstance(c, dict) and c.get("name") == peer
            for s in c.get("database_sockets") or []
        ]
        assert sockets, status
        assert any(s.get("connected") for s in sockets), status


def test_two_daemons_renew_at_the_same_instant(cluster: Cluster) -> None:
    """One ``harper-certd run`` per node, renewals dropped at one instant: each guard passes,
    the restarts take turns (log timeline and the ports seen from outside), each proof after
    the swap passes, replication works both ways after."""
    members = [cluster.members["nodea"], cluster.members["nodeb"]]
    leaves = {m.name: cluster.issue(m) for m in members}
    folders = {m.name: m.staged_set(leaves[m.name], cluster.ca) for m in members}
    # nodea's CA file gets a comment line (kept verbatim by ca add/remove, the next test).
    ca_a = folders["nodea"] / "ca.pem"
    ca_a.write_bytes(CA_FILE_HEADER + ca_a.read_bytes())
    for member in members:
        member.incoming.mkdir(mode=0o700, exist_ok=True)
    daemons = {m.name: DaemonProc(DaemonConfig(m)) for m in members}
    pollers = [HandshakePoller(m.node.ip, m.node.ports.replication, interval=0.1) for m in members]
    try:
        for daemon in daemons.values():
            daemon.wait_for("certd.started", 60.0)
        for poller in pollers:
            poller.start()
        t0 = time.monotonic()
        for member in members:  # the same instant, as far as two renames go
            os.rename(folders[member.name], member.incoming / folders[member.name].name)
        deadline = t0 + RENEWAL_TIMEOUT
        installed = {
            m.name: _wait_installed(daemons[m.name], leaves[m.name].fingerprint, deadline)
            for m in members
        }
        took = time.monotonic() - t0
    finally:
        for poller in pollers:
            poller.stop()
        codes = {name: d.stop() for name, d in daemons.items()}
        for d in daemons.values():
            d.__exit__()
    assert codes == {"nodea": 0, "nodeb": 0}, {n: d.raw[-20:] for n, d in daemons.items()}
    for member in members:
        cluster.serving[member.name] = leaves[member.name].fingerprint

    down = {m.name: outages(p.snapshot()) for m, p in zip(members, pollers, strict=True)}
    shown = (*TIMELINE, "certd.restart_deferred", "certd.peer_unreachable")
    lines = sorted(
        (
            (_ts(e), member.name, e)
            for member in members
            for e in daemons[member.name].events
            if e["event"] in shown
        ),
        key=lambda row: (row[0], row[1]),
    )
    start = lines[0][0]
    print(f"\n[two daemons] both renewals installed {took:.1f} s after the drop")
    for at, name, e in lines:
        extra = e.get("stage") or e.get("method") or e.get("waiting_for") or ""
        print(f"  {(at - start).total_seconds():6.2f} s {name} {e['event']} {extra}")
    for name, runs in down.items():
        print(f"  {name} port down: " + ", ".join(f"{a - t0:.1f}-{b - t0:.1f}" for a, b in runs))

    # Every event is a documented one; each daemon's own timeline is in order.
    windows: dict[str, tuple[dt.datetime, dt.datetime]] = {}
    for member in members:
        events = daemons[member.name].events
        assert {e["event"] for e in events} <= set(EVENTS), events
        assert events[-1]["event"] == "certd.stopped"
        of_renewal = [e for e in events if e["event"] in TIMELINE]
        assert [e["event"] for e in of_renewal] == list(TIMELINE), of_renewal
        _detected, before, restarted, verified, after, done = of_renewal
        assert before["stage"] == "before"
        assert after["stage"] == "after"
        peer = cluster.peer(member).name
        for check in (before, after):
            assert check["codes"] == [], check
            assert [
                (p["peer"], p["accepts_this_node"], p["trusted_by_this_node"])
                for p in check["peers"]
            ] == [(peer, "accepted", "accepted")], check
        assert restarted["method"] == "operations-api", restarted
        assert verified["fingerprint"] == leaves[member.name].fingerprint
        assert done["peers"] == after["peers"], done  # set_installed carries the proof
        assert done["method"] == "operations-api"
        assert done is installed[member.name]
        times = [_ts(e) for e in of_renewal]
        assert times == sorted(times), of_renewal
        windows[member.name] = (_ts(restarted), _ts(verified))
    (a_from, a_to), (b_from, b_to) = windows["nodea"], windows["nodeb"]
    assert a_to < b_from or b_to < a_from, windows  # never both restarting
    first = min(windows, key=lambda n: windows[n][0])
    assert not daemons[first].named("certd.restart_deferred")

    # The replication ports, seen from outside: both did go down, never at the same time.
    assert all(down.values()), down
    for a_start, a_end in down["nodea"]:
        for b_start, b_end in down["nodeb"]:
            assert a_end < b_start or b_end < a_start, (down, t0)
    _connected_both_ways(cluster)
    a_to_b, b_to_a = both_ways(cluster, 30.0)
    print(f"  after: A->B {a_to_b * 1000:.0f} ms, B->A {b_to_a * 1000:.0f} ms")


def _ca(member: Member, *args: str) -> tuple[int, list[str]]:
    """``harper-certd ca ARGS --config FILE``: exit status and the printed lines (the JSON log
    lines, journal-prefixed ``<N>{…}``, left out)."""
    run = subprocess.run(
        [sys.executable, "-m", "harper_certd", "ca", *args, "--config", str(member.write_config())],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    printed = [line for line in run.stdout.splitlines() if not line.startswith("<")]
    return run.returncode, printed


def test_ca_remove_through_the_command_line(cluster: Cluster) -> None:
    """Refused while the CA is in the node's live chain (nothing changes); a CA nobody uses is
    removed from the file (the other bytes, comment included, stay as they were) and from
    Harper's authority records; replication works after."""
    a = cluster.members["nodea"]
    ctx = build_context(parse_config(a.config_data()))
    api = operations_api(ctx.config, ctx.harper)
    assert api is not None
    live_ca = a.node.ca_path
    original = live_ca.read_bytes()
    assert original.startswith(CA_FILE_HEADER), original[:200]  # set by the daemons' test
    serving = a.node.try_fingerprint()
    assert serving == cluster.serving["nodea"]
    cluster_fp = cluster.ca.fingerprint
    spare = RigCA("harper-certd spare CA")
    nothing_changed = " (nothing changed)"

    code, out = _ca(a, "remove", cluster_fp)
    assert (code, out) == (
        1,
        [
            "refused: it is the only CA in the CA file: add the new one first (ca add)"
            + nothing_changed
        ],
    )
    assert live_ca.read_bytes() == original

    spare_file = a.work / "spare-ca.pem"
    spare_file.write_bytes(spare.cert_pem)
    code, out = _ca(a, "add", str(spare_file))
    assert code == 0, out
    assert out[-1].startswith("Installed as generation"), out
    with_spare = live_ca.read_bytes()
    assert with_spare == original + spare.cert_pem, with_spare  # appended, the rest verbatim
    assert cafile.authority_records(api, spare.fingerprint)
    assert a.node.try_fingerprint() == serving

    # In the live chain (nodea's leaf is issued by it): refused, nothing changes.
    code, out = _ca(a, "remove", cluster_fp)
    assert (code, out) == (
        1,
        [
            "refused: this node's own certificate is issued by it: rotate this node's leaf "
            "first" + nothing_changed
        ],
    )
    assert live_ca.read_bytes() == with_spare

    # Unused: removed (fingerprint given as openssl prints it: upper case, colons).
    colons = ":".join(spare.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    code, out = _ca(a, "remove", colons)
    assert code == 0, out
    assert out[-1].startswith("Installed as generation"), out
    assert live_ca.read_bytes() == original  # byte for byte, the comment line too
    assert a.node.try_fingerprint() == serving
    assert cafile.authority_records(api, spare.fingerprint) == [], out
    assert cafile.authority_records(api, cluster_fp)

    code, out = _ca(a, "remove", spare.fingerprint)
    assert (code, out) == (0, ["that CA is not in the live CA file"])
    assert live_ca.read_bytes() == original
    both_ways(cluster, 30.0)
