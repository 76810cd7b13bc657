"""The peer probe, the guard and the proof on two real Harper 4.7.29 nodes (issue 12).

Reuses the two-node cluster of test_two_nodes (same CA, joined once, replicating).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harper_certd import peers
from harper_certd.config import parse_config
from harper_certd.harper import operations_api
from harper_certd.service import build_context
from harper_rig import RigCA, needs_harper
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


def test_probe_verdicts_leave_replication_alone(cluster: Cluster) -> None:
    a = cluster.members["nodea"]
    b = cluster.members["nodeb"]
    peer_b = _peer_view(cluster, a)
    log_at = b.node.log_size()
    status_before = b.node.operation({"operation": "cluster_status"})
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
    alone = peers.probe_peer(peer_b, peers.Candidate(new_ca.cert_pem, new_ca.key_pem, other.cert_pem))
    assert alone.trusted_by_me.verdict is peers.Verdict.REFUSED, alone
    for row in rows:
        print(f"\n[probe] {row[0]}: {row[1] * 1000:.0f} ms {row[2]}")
    both_ways(cluster)
    status_after = b.node.operation({"operation": "cluster_status"})
    print("[probe] peer log:", b.node.log_text(log_at)[-3000:])
    print("[probe] status before", status_before, "after", status_after)
