"""The peer probe, the guard and the proof on two real Harper 4.7.29 nodes (issue 12).

Reuses the two-node cluster of test_two_nodes (same CA, joined once, replicating).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
from typing import Any

import structlog

from harper_certd import cafile, harden, peers
from harper_certd import cluster as cluster_view
from harper_certd.config import parse_config
from harper_certd.generation import cert_meta
from harper_certd.harper.api import operations_api
from harper_certd.install.context import Context, build_context
from harper_certd.install.live import prove_recovered
from harper_certd.install.pipeline import install
from harper_certd.install.rollback import rollback
from harper_certd.recover import recover
from harper_certd.roles import SetBytes
from harper_rig import HandshakePoller, LeafMaterial, RigCA, needs_harper, outages
from test_two_nodes import Cluster, Member, both_ways, cluster

__all__ = ["cluster"]  # the module-scoped fixture, imported on purpose

pytestmark = needs_harper(timeout=400)


def _api(member: Member) -> Any:
    ctx = build_context(parse_config(member.config_data("operations-api")))
    api = operations_api(ctx.config, ctx.harper)
    assert api is not None
    return api


def _peer_view(cluster: Cluster, member: Member) -> peers.Peer:
    found = peers.list_peers(_api(member), member.name)
    assert [p.name for p in found] == [cluster.peer(member).name], found
    return found[0]


def _connections(member: Member) -> list[tuple[str, list[tuple[str, bool]]]]:
    status = member.node.operation({"operation": "cluster_status"})
    return sorted(
        (c["name"], sorted((s["database"], s["connected"]) for s in c["database_sockets"]))
        for c in status["connections"]
    )


def _nodes(member: Member) -> list[Any]:
    found = member.node.operation_raw(
        {
            "operation": "search_by_value",
            "database": "system",
            "table": "hdb_nodes",
            "search_attribute": "name",
            "search_value": "*",
            "get_attributes": ["*"],
        }
    )
    assert isinstance(found, list)
    return sorted(found, key=lambda r: str(r.get("name")))


def test_probe_verdicts_leave_replication_alone(cluster: Cluster) -> None:
    a = cluster.members["nodea"]
    b = cluster.members["nodeb"]
    peer_b = _peer_view(cluster, a)
    log_at = b.node.log_size()
    _connections_before = _connections(b)
    nodes_before = _nodes(b)
    same_ca = cluster.issue(a)
    other = RigCA("harper-certd other CA")
    new_ca = other.issue(a.name, dns_names=[a.name], ip_addresses=[a.node.ip])
    stranger = cluster.ca.issue("nodez", dns_names=["nodez"], ip_addresses=[a.node.ip])
    rows = []
    for label, leaf, ca_pem, want_a in (
        ("same CA", same_ca, cluster.ca.cert_pem, peers.Verdict.ACCEPTED),
        ("new CA", new_ca, other.cert_pem + cluster.ca.cert_pem, peers.Verdict.REFUSED),
        ("unknown name", stranger, cluster.ca.cert_pem, peers.Verdict.REFUSED),
    ):
        t0 = time.monotonic()
        result = peers.probe_peer(peer_b, peers.Candidate(leaf.cert_pem, leaf.key_pem, ca_pem))
        rows.append((label, time.monotonic() - t0, result.as_dict()))
        assert result.accepts_me.verdict is want_a, (label, result)
        assert result.trusted_by_me.verdict is peers.Verdict.ACCEPTED, (label, result)
    # (b): a CA file without the cluster CA does not trust the peer's served chain.
    lone = peers.Candidate(new_ca.cert_pem, new_ca.key_pem, other.cert_pem)
    alone = peers.probe_peer(peer_b, lone)
    assert alone.trusted_by_me.verdict is peers.Verdict.REFUSED, alone
    for row in rows:
        print(f"\n[probe] {row[0]}: {row[1] * 1000:.0f} ms {row[2]}")
    both_ways(cluster)
    # Nothing left on the peer: the same connections, the same hdb_nodes records; Harper's
    # own verdict in its log for each refused probe (and none for the accepted one).
    assert _connections(b) == _connections_before
    assert _nodes(b) == nodes_before
    # One line per probe the peer closed with 1008 (the three above, and the lone probe's
    # own (a), refused every time but once in a CI run, where neither its verdict nor its
    # absence from the log was printed: the count follows the verdicts measured, and the
    # log, written by Harper's logging thread, is read until it holds them (bounded).
    refused = sum(
        1
        for r in (*(row[2] for row in rows), alone.as_dict())
        if r["accepts_this_node"] == "refused"
    )
    assert refused >= 2, rows
    deadline = time.monotonic() + 10.0
    log = b.node.log_text(log_at)
    while log.count("No authorization provided") < refused and time.monotonic() < deadline:
        time.sleep(0.2)
        log = b.node.log_text(log_at)
    print(f"\n[probe] CA file without the cluster CA: {alone.as_dict()}")
    assert log.count("No authorization provided") == refused, log[-3000:]
    assert "Node name mismatch" not in log
    assert "received node name" not in log


@functools.cache
def new_ca() -> RigCA:
    """The CA rotated to: made after the cluster's CA (cluster reads "newest" by notBefore)."""
    return RigCA("harper-certd new CA")


def _ctx(member: Member) -> Context:
    return build_context(parse_config(member.config_data()))


def _live_state(member: Member) -> tuple[str | None, str | None]:
    ctx = _ctx(member)
    return ctx.store.current_id(), member.node.try_fingerprint()


def _new_ca_leaf(member: Member) -> LeafMaterial:
    return new_ca().issue(member.name, dns_names=[member.name], ip_addresses=[member.node.ip])


def _staged_new_ca(cluster: Cluster, member: Member, leaf: LeafMaterial) -> Any:
    """A set with a leaf of the new CA and a CA file holding the new and the old CA."""
    folder = member.staged_set(leaf, cluster.ca)
    (folder / "ca.pem").write_bytes(new_ca().cert_pem + cluster.ca.cert_pem)
    return folder


def test_guard_refuses_a_leaf_the_peer_does_not_trust(cluster: Cluster) -> None:
    """Issue 12's new-CA renewal: refused before the swap, nothing changed, replication on."""
    a = cluster.members["nodea"]
    before = _live_state(a)
    leaf = _new_ca_leaf(a)
    outcome = install(_ctx(a), _staged_new_ca(cluster, a, leaf))
    assert outcome.status == "refused", outcome.as_dict()
    codes = {p.code for p in outcome.problems if p.severity.value == "error"}
    assert codes == {"ca_not_trusted_by_peers"}, outcome.as_dict()
    message = next(p.message for p in outcome.problems if p.code == "ca_not_trusted_by_peers")
    assert "nodeb" in message, message
    assert "1008 Unauthorized" in message, message
    assert _live_state(a) == before
    assert before[1] == cluster.serving["nodea"]
    both_ways(cluster)


def test_forced_bad_rotation_is_rolled_back_by_the_proof(cluster: Cluster) -> None:
    """--force gets past the guard (critical event); the probe after the swap rolls back."""
    a = cluster.members["nodea"]
    before = _live_state(a)
    leaf = _new_ca_leaf(a)
    t0 = time.monotonic()
    outcome = install(_ctx(a), _staged_new_ca(cluster, a, leaf), force_peers=True)
    took = time.monotonic() - t0
    assert outcome.status == "rolled_back", outcome.as_dict()
    codes = {p.code for p in outcome.problems if p.severity.value == "error"}
    assert codes == {"applied_failed", "ca_not_trusted_by_peers"}, outcome.as_dict()
    failed = next(p.message for p in outcome.problems if p.code == "applied_failed")
    assert "nodeb" in failed, failed
    assert "1008 Unauthorized" in failed, failed
    assert _live_state(a)[1] == before[1]  # the old leaf is served again
    assert _live_state(a)[0] == before[0]  # the previous generation is live again
    print(f"\n[proof] forced rotation + rollback took {took:.2f} s")
    both_ways(cluster)


def _forced_new_ca_generation(cluster: Cluster, member: Member) -> str:
    """A kept generation the peers refuse: a new-CA set forced past the guard, which the proof
    then rolled back (it stays in the store, valid: its CA file holds the new and old CA)."""
    outcome = install(
        _ctx(member), _staged_new_ca(cluster, member, _new_ca_leaf(member)), force_peers=True
    )
    assert outcome.status == "rolled_back", outcome.as_dict()
    assert outcome.generation is not None
    return outcome.generation


def test_rollback_to_a_set_the_peers_refuse_is_refused(cluster: Cluster) -> None:
    """Issue 18 item 1: ``rollback`` to a generation the peers would refuse is refused with
    the peers named, exit 1, nothing changed, no restart; replication on."""
    a = cluster.members["nodea"]
    refused_gen = _forced_new_ca_generation(cluster, a)
    before = _live_state(a)
    with structlog.testing.capture_logs() as events:
        outcome = rollback(_ctx(a), refused_gen)
    assert outcome.status == "refused", outcome
    assert outcome.exit_code == 1
    assert [p.code for p in outcome.problems] == ["ca_not_trusted_by_peers"], outcome
    assert "nodeb" in outcome.message, outcome.message
    assert "1008 Unauthorized" in outcome.message, outcome.message
    assert "--force" in outcome.message, outcome.message
    checked = [e for e in events if e["event"] == "certd.peers_checked"]
    assert [e["stage"] for e in checked] == ["before"], events
    assert not [
        e for e in events if e["event"] in ("certd.operator_rollback", "certd.harper_restarted")
    ]
    assert _live_state(a) == before
    both_ways(cluster)


def test_forced_rollback_is_loud_and_still_proven(cluster: Cluster) -> None:
    """``rollback --force`` to a set the peers refuse: the override is a critical event naming
    the generation, the switch happens, the proof after it finds the peer refusing and
    switches back (exit 3, the peer named); the set live before is served again."""
    a = cluster.members["nodea"]
    refused_gen = _forced_new_ca_generation(cluster, a)
    before = _live_state(a)
    with structlog.testing.capture_logs() as events:
        outcome = rollback(_ctx(a), refused_gen, force=True)
    overridden = [e for e in events if e["event"] == "certd.peers_overridden"]
    assert len(overridden) == 1, events
    assert overridden[0]["log_level"] == "critical"
    assert overridden[0]["source"] == f"generation {refused_gen}"
    assert overridden[0]["codes"] == ["ca_not_trusted_by_peers"]
    stages = [e["stage"] for e in events if e["event"] == "certd.peers_checked"]
    assert stages == ["before", "after"], events
    assert outcome.status == "rollback_failed", outcome
    assert outcome.exit_code == 3
    assert [p.code for p in outcome.problems] == ["ca_not_trusted_by_peers"], outcome
    assert "nodeb" in outcome.message
    assert f"generation {before[0]} is live again" in outcome.message
    back = [e for e in events if e["event"] == "certd.rolled_back"]
    assert [(e["failed_generation"], e["restored_generation"]) for e in back] == [
        (refused_gen, before[0])
    ], events
    assert _live_state(a) == before
    both_ways(cluster)


def _crashed_after_flip(member: Member, leaf: LeafMaterial, ca_pem: bytes) -> tuple[Context, str]:
    """The store as a crash right after the flip leaves it (the generation flipped to, its
    metadata still "pending", never finished): written through the store's own steps."""
    ctx = _ctx(member)
    data = SetBytes(leaf.cert_pem, leaf.key_pem, ca_pem)
    meta = {**cert_meta(leaf.cert_pem), "source": "crash test"}
    with ctx.store.locked():
        gen = ctx.store.stage(data, meta, "crash test")
        ctx.store.commit_flip(gen)
    return ctx, gen.id


def test_recovered_swap_is_peer_checked_and_reported(cluster: Cluster) -> None:
    """Issue 18 item 1: a swap completed after a crash is proven like an install: served,
    then the peers asked (``certd.peers_checked`` after), and ``certd.set_installed``; a
    recovered swap the peers refuse is rolled back with the failure outcome."""
    a = cluster.members["nodea"]
    leaf = cluster.issue(a)
    ctx, gen_id = _crashed_after_flip(a, leaf, cluster.ca.cert_pem)
    with ctx.store.locked():
        recovery = recover(ctx.store)
    assert recovery is not None
    assert recovery.needs_verify, recovery
    with structlog.testing.capture_logs() as events:
        status = prove_recovered(ctx, recovery)
    assert status == "installed", events
    checked = [e for e in events if e["event"] == "certd.peers_checked"]
    assert [(e["stage"], e["codes"]) for e in checked] == [("after", [])], events
    assert [p["accepts_this_node"] for p in checked[0]["peers"]] == ["accepted"]
    installed = [e for e in events if e["event"] == "certd.set_installed"]
    assert len(installed) == 1, events
    assert installed[0]["generation"] == gen_id
    assert installed[0]["fingerprint"] == leaf.fingerprint
    assert installed[0]["source"] == "crash test"
    assert installed[0]["verified"] is True
    assert [p["peer"] for p in installed[0]["peers"]] == ["nodeb"]
    cluster.serving["nodea"] = leaf.fingerprint
    assert _live_state(a) == (gen_id, leaf.fingerprint)

    # The same after a crash mid-install of a set the peer refuses: rolled back, reported.
    before = _live_state(a)
    bad = _new_ca_leaf(a)
    ctx, bad_id = _crashed_after_flip(a, bad, new_ca().cert_pem + cluster.ca.cert_pem)
    with ctx.store.locked():
        recovery = recover(ctx.store)
    assert recovery is not None
    assert recovery.needs_verify, recovery
    with structlog.testing.capture_logs() as events:
        status = prove_recovered(ctx, recovery)
    assert status == "rolled_back", events
    assert not [e for e in events if e["event"] == "certd.set_installed"]
    back = [e for e in events if e["event"] == "certd.rolled_back"]
    assert [(e["failed_generation"], e["restored_generation"]) for e in back] == [
        (bad_id, before[0])
    ], events
    assert "nodeb" in back[0]["failure"]
    assert "peers refuse it" in back[0]["failure"]
    assert _live_state(a) == before
    both_ways(cluster)


def _wait_accepted(member: Member, peer_of: Member, leaf: LeafMaterial, ca_pem: bytes) -> float:
    """Seconds until ``peer_of`` accepts ``leaf`` as ``member`` (a peer's CA reload is hot,
    ~1.5 s after its CA file changes); AssertionError after 15 s."""
    peer = _peer_view_of(member, peer_of)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 15:
        got = peers.probe_accepts(peer, peers.Candidate(leaf.cert_pem, leaf.key_pem, ca_pem))
        if got.verdict is peers.Verdict.ACCEPTED:
            return time.monotonic() - t0
        time.sleep(0.25)
    raise AssertionError(f"{peer_of.name} never accepted the new-CA leaf of {member.name}")


def _peer_view_of(member: Member, peer_of: Member) -> peers.Peer:
    found = {p.name: p for p in peers.list_peers(_api(member), member.name)}
    return found[peer_of.name]


def test_harden_keeps_comments_and_replication(cluster: Cluster) -> None:
    """enableRootCAs left on (with comments around it): harden turns it off, the diff is that
    one line, every comment stays, a backup is kept, replication works after."""
    b = cluster.members["nodeb"]
    path = b.node.root / "harperdb-config.yaml"
    text = path.read_text()
    assert "enableRootCAs: false" in text
    dev = "# harperdb-config.yaml of a development setup (comments must survive)\n" + text.replace(
        "enableRootCAs: false",
        "enableRootCAs: true # left on by the dev install\n  # trust: private CA below",
    )
    path.write_text(dev)
    b.node.restart(expect_fingerprint=cluster.serving["nodeb"])
    both_ways(cluster, 30.0)
    result = harden.harden(_ctx(b))
    after = path.read_text()
    changed = [
        line
        for line in result.diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    print("\n[harden] diff:\n" + result.diff)
    assert [(line[0], line[1:].strip()) for line in changed] == [
        ("-", "enableRootCAs: true # left on by the dev install"),
        ("+", "enableRootCAs: false # left on by the dev install"),
    ], changed
    for line in dev.splitlines():
        if line.strip().startswith("#"):
            assert line in after, line
    assert result.backup is not None
    assert result.backup.read_text() == dev
    assert harden.planned(harden._yaml().load(after)) == []
    both_ways(cluster, 30.0)


def test_simultaneous_restarts_never_overlap(cluster: Cluster) -> None:
    """Two renewals at the same instant with a full restart each (restart.method
    operations-api): the nodes take turns, so one of them always serves replication."""
    members = [cluster.members["nodea"], cluster.members["nodeb"]]
    contexts = {
        m.name: build_context(parse_config(m.config_data("operations-api"))) for m in members
    }
    leaves = {m.name: cluster.issue(m) for m in members}
    folders = {m.name: m.staged_set(leaves[m.name], cluster.ca) for m in members}
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(len(members))

    def renew(member: Member) -> None:
        barrier.wait()
        outcomes[member.name] = install(contexts[member.name], folders[member.name])

    pollers = [HandshakePoller(m.node.ip, m.node.ports.replication, interval=0.1) for m in members]
    for poller in pollers:
        poller.start()
    t0 = time.monotonic()
    try:
        threads = [threading.Thread(target=renew, args=(m,)) for m in members]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
    finally:
        for poller in pollers:
            poller.stop()
    for member in members:
        assert outcomes[member.name].status == "installed", outcomes[member.name].as_dict()
        cluster.serving[member.name] = leaves[member.name].fingerprint
    down = {m.name: outages(p.snapshot()) for m, p in zip(members, pollers, strict=True)}
    print("\n[staggered] outages (s from the common start):")
    for name, runs in down.items():
        print(f"  {name}: " + ", ".join(f"{a - t0:.1f}-{b - t0:.1f}" for a, b in runs))
    assert all(down.values()), down  # both did restart
    for a_start, a_end in down["nodea"]:
        for b_start, b_end in down["nodeb"]:
            assert a_end < b_start or b_end < a_start, (down, t0)
    both_ways(cluster, 30.0)


def test_unreachable_peer_holds_a_new_ca_set(cluster: Cluster) -> None:
    """nodeb stopped: nodea's new-CA set is retried within the call (certd.peer_unreachable),
    then held where it is (held_for_peers, certd.set_held_for_peers with the hold's end),
    never refused into rejected/ (issue 18 item 2); nothing changes; replication resumes once
    nodeb is back.  (A same-CA renewal goes ahead instead: tests/test_peer_hold_harper.py.)"""
    a, b = cluster.members["nodea"], cluster.members["nodeb"]
    data = a.config_data()
    data["peers"] = {"hold_seconds": 2.0, "retry_seconds": 0.5, "timeout": 2.0}
    ctx = build_context(parse_config(data))
    before = _live_state(a)
    folder = _staged_new_ca(cluster, a, _new_ca_leaf(a))
    b.node.stop()
    try:
        with structlog.testing.capture_logs() as events:
            t0 = time.monotonic()
            outcome = install(ctx, folder)
            took = time.monotonic() - t0
    finally:
        b.node.start(expect_fingerprint=cluster.serving["nodeb"])
    assert outcome.status == "held_for_peers", outcome.as_dict()
    assert outcome.exit_code == 1
    assert {p.code for p in outcome.problems if p.severity.value == "error"} == {"peer_unreachable"}
    assert outcome.held_for == ("nodeb",)
    assert folder.exists()  # held where it is, not filed in rejected/
    assert outcome.kept_at is None
    retried = [e for e in events if e["event"] == "certd.peer_unreachable"]
    assert len(retried) >= 2, events  # retried within the call's hold
    assert all(e["peer"] == "nodeb" for e in retried)
    held = [e for e in events if e["event"] == "certd.set_held_for_peers"]
    assert [(e["peers"], e["until"], e["next_try"]) for e in held] == [
        (["nodeb"], outcome.held_until, None)
    ], events
    assert not [e for e in events if e["event"] == "certd.set_refused"]
    assert 2.0 <= took < 30.0, took
    assert _live_state(a) == before
    print(f"\n[unreachable] retried {took:.1f} s ({len(retried)} rounds), then held")
    both_ways(cluster, 30.0)


def test_three_phase_ca_rotation(cluster: Cluster) -> None:
    """ca add on both nodes, new-CA leaves on both, ca remove of the old CA on both;
    replication checked both ways after every step, then on fresh connections."""
    a, b = cluster.members["nodea"], cluster.members["nodeb"]
    steps: list[tuple[str, float, float]] = []

    def step(label: str) -> None:
        steps.append((label, *both_ways(cluster)))

    # Phase 1: the new CA in every node's CA file (and Harper's authority records): on nodeb
    # through the command line, on nodea through the function.
    ca_file = b.work / "new-ca.pem"
    ca_file.write_bytes(new_ca().cert_pem)
    cli_add = subprocess.run(
        [
            sys.executable,
            "-m",
            "harper_certd",
            "ca",
            "add",
            str(ca_file),
            "--config",
            str(b.write_config()),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert cli_add.returncode == 0, (cli_add.stdout, cli_add.stderr[-2000:])
    assert "not loaded" not in cli_add.stdout, cli_add.stdout
    assert cafile.authority_records(_api(b), new_ca().fingerprint)
    assert b.node.try_fingerprint() == cluster.serving["nodeb"]  # same leaf
    step("ca add on nodeb (CLI)")
    added = cafile.ca_add(_ctx(a), new_ca().cert_pem)
    assert added.outcome is not None
    assert added.outcome.status == "installed", added.outcome.as_dict()
    assert added.authority_loaded is True
    assert a.node.try_fingerprint() == cluster.serving["nodea"]
    step("ca add on nodea")
    again = cafile.ca_add(_ctx(a), new_ca().cert_pem)
    assert again.outcome is None  # idempotent
    assert cluster_view.view(_ctx(a))["phase"] == "ca-added"

    # Phase 2: leaves of the new CA; the guard lets them through now.
    leaf_a = _new_ca_leaf(a)
    accepted_after = _wait_accepted(a, b, leaf_a, new_ca().cert_pem + cluster.ca.cert_pem)
    outcome = install(_ctx(a), _staged_new_ca(cluster, a, leaf_a))
    assert outcome.status == "installed", outcome.as_dict()
    assert a.node.try_fingerprint() == leaf_a.fingerprint
    cluster.serving["nodea"] = leaf_a.fingerprint
    step("new-CA leaf on nodea")
    assert cluster_view.view(_ctx(a))["phase"] == "rotating"
    # Phase 3 is refused on nodea while nodeb still serves a chain to the old CA.
    refused_text = ""
    try:
        cafile.ca_remove(_ctx(a), cluster.ca.fingerprint)
    except cafile.CaError as exc:
        refused_text = str(exc)
    assert "nodeb" in refused_text, refused_text
    leaf_b = _new_ca_leaf(b)
    outcome = install(_ctx(b), _staged_new_ca(cluster, b, leaf_b))
    assert outcome.status == "installed", outcome.as_dict()
    cluster.serving["nodeb"] = leaf_b.fingerprint
    step("new-CA leaf on nodeb")
    seen = cluster_view.view(_ctx(a))
    assert seen["phase"] == "ready-to-remove", seen
    assert [p["accepts_this_node"] for p in seen["peers"]] == ["accepted"]
    # The CA nodea keeps for nodeb is still the join's (the old one): what ca remove fixes.
    assert [(p["kept_ca"], p["kept_ca_stale"]) for p in seen["peers"]] == [
        ("CN=harper-certd two-node CA", True)
    ], seen

    # Phase 3: the old CA out of every CA file and out of Harper's authority records.
    for member in (a, b):
        records_before = _api(member).call({"operation": "list_certificates"})
        removal = cafile.ca_remove(_ctx(member), cluster.ca.fingerprint)
        assert removal.outcome is not None
        assert removal.outcome.status == "installed", removal.outcome.as_dict()
        left = cafile.authority_records(_api(member), cluster.ca.fingerprint)
        print(
            f"\n[ca remove] {member.name}: removed {removal.records_removed}, "
            f"kept {removal.records_kept}, left {[r.get('name') for r in left]}"
        )
        assert removal.records_removed or removal.records_kept, records_before
        # The CAs the nodes keep for each other (hdb_nodes.ca: the peer's authority record at
        # the time of the exchange) are exchanged again with every peer by each ca remove: one
        # exchanged while the peer still held the old CA keeps it even though its subject names
        # the new CA (measured on three nodes, tests/test_ca_rotation.py).
        other = "nodeb" if member is a else "nodea"
        assert [p.split(":")[0] for p in removal.peers_refreshed] == [other], removal
        assert removal.peers_not_refreshed == (), removal
        print(f"  CAs exchanged again: {removal.peers_refreshed}")
        if removal.records_removed:
            assert not left
        # never a key file: the node's own key is still where Harper reads it
        assert member.node.key_path.exists()
        step(f"ca remove on {member.name}")
    assert cluster_view.view(_ctx(a))["phase"] == "steady"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "harper_certd",
            "cluster",
            "--json",
            "--config",
            str(b.write_config()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    shown = json.loads(cli.stdout)
    assert shown["phase"] == "steady"
    assert [p["accepts_this_node"] for p in shown["peers"]] == ["accepted"]
    assert [(p["kept_ca"], p["kept_ca_stale"]) for p in shown["peers"]] == [
        ("CN=harper-certd new CA", False)
    ], shown
    cluster.ca = new_ca()  # the cluster's CA from here on
    print(f"\n[three phases] peer accepted the new CA {accepted_after:.2f} s after ca add")
    for label, ab, ba in steps:
        print(f"  {label}: A->B {ab * 1000:.0f} ms, B->A {ba * 1000:.0f} ms")


def test_fresh_connections_after_ca_rotation(cluster: Cluster) -> None:
    """Runs last: both nodes restarted after the three phases replicate on fresh connections.

    Before ca remove exchanged the CAs again (update_node), 1 run in 4 failed here: nodea
    refused nodeb (SELF_SIGNED_CERT_IN_CHAIN), see tests/HARPER-RIG-FINDINGS.md, "Fresh
    connections after a CA rotation"."""
    assert cluster.ca is new_ca(), "needs test_three_phase_ca_rotation first"
    for member in cluster.members.values():
        member.node.restart(expect_fingerprint=cluster.serving[member.name])
    a_to_b, b_to_a = both_ways(cluster, 30.0)
    print(
        f"\n[after the rotation, restarted] A->B {a_to_b * 1000:.0f} ms, "
        f"B->A {b_to_a * 1000:.0f} ms"
    )
    # Each node keeps the other's new CA (what its replication server trusts after a restart).
    for member in cluster.members.values():
        kept = {
            r["name"]: (r.get("ca_info") or {}).get("subject")
            for r in _nodes(member)
            if r.get("name") == cluster.peer(member).name
        }
        assert kept == {cluster.peer(member).name: "CN=harper-certd new CA"}, kept
