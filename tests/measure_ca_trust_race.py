"""Measure (not a test): after a CA rotation, does a restarted Harper 4.7.29 node still trust
its peer's new-CA leaf?  tests/HARPER-RIG-FINDINGS.md, "Fresh connections after a CA rotation".

Two nodes joined on CA "old" (so each keeps the other's CA "old" in ``hdb_nodes.ca``), then
both moved to a leaf of CA "new" with the CA file [new] and restarted.  Then, ``ROUNDS``
times: restart nodea, and for ``WATCH`` seconds probe nodea's replication port with nodeb's
leaf (the peer probe, harper_certd.peers: the leaf alone, judged as Harper judges it).  A
round counts as "refused for good" when every probe in the last half of the window is
refused.  Then ``update_node`` (no credentials: nodes are authorised by certificate) re-
exchanges the CAs, and the rounds are repeated.

    .venv/bin/python tests/measure_ca_trust_race.py [ROUNDS]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harper_certd import peers
from harper_rig import HarperNode, LeafMaterial, RigCA
from test_two_nodes import DATABASE, TABLE, _wait_for_table, replicate

WATCH = 8.0


def leaf(ca: RigCA, node: HarperNode) -> LeafMaterial:
    return ca.issue(node.name, dns_names=[node.name], ip_addresses=[node.ip])


def nodes_ca(node: HarperNode) -> dict[str, str]:
    rows = node.operation_raw(
        {
            "operation": "search_by_value",
            "database": "system",
            "table": "hdb_nodes",
            "search_attribute": "name",
            "search_value": "*",
            "get_attributes": ["name", "ca_info"],
        }
    )
    assert isinstance(rows, list)
    return {
        str(r.get("name")): str((r.get("ca_info") or {}).get("subject", "-")).replace("\n", " ")
        for r in rows
    }


def rounds(a: HarperNode, b: HarperNode, b_leaf: LeafMaterial, ca_pem: bytes, n: int) -> list[str]:
    peer = peers.Peer(a.name, f"wss://{a.ip}:{a.ports.replication}")
    candidate = peers.Candidate(b_leaf.cert_pem, b_leaf.key_pem, ca_pem)
    out = []
    for i in range(n):
        a.restart()
        t0 = time.monotonic()
        verdicts: list[tuple[float, str]] = []
        while time.monotonic() - t0 < WATCH:
            got = peers.probe_accepts(peer, candidate, timeout=3.0)
            verdicts.append((time.monotonic() - t0, got.verdict.value))
            time.sleep(0.2)
        late = [v for at, v in verdicts if at >= WATCH / 2]
        first_ok = next((at for at, v in verdicts if v == "accepted"), None)
        if late and all(v == "refused" for v in late):
            label = "refused for good"
        elif late and all(v == "accepted" for v in late):
            label = f"accepted (first at {first_ok:.1f} s)"
        else:
            label = "mixed: " + " ".join(v[0] for _, v in verdicts)
        print(f"  round {i + 1}: {label}", flush=True)
        out.append(label)
    return out


def main(n: int) -> int:
    base = Path(tempfile.mkdtemp(prefix="hc.", dir="/tmp"))
    old, new = RigCA("race old CA"), RigCA("race new CA")
    a = HarperNode(base, "nodea", "127.0.0.2")
    b = HarperNode(base, "nodeb", "127.0.0.3")
    try:
        for node in (a, b):
            node.install()
            first = leaf(old, node)
            node.write_tls_files(first.cert_pem, first.key_pem, old.cert_pem)
            node.start()
        a.operation(
            {
                "operation": "add_node",
                "hostname": b.name,
                "url": f"wss://{b.ip}:{b.ports.replication}",
                "authorization": {"username": "admin", "password": b.password},
            }
        )
        a.operation({"operation": "create_database", "database": DATABASE})
        a.operation(
            {"operation": "create_table", "database": DATABASE, "table": TABLE, "primary_key": "id"}
        )
        _wait_for_table(b, 30)
        a_to_b, b_to_a = replicate(a, b, 30), replicate(b, a, 30)
        print(f"joined on the old CA: A->B {a_to_b:.2f} s, B->A {b_to_a:.2f} s")
        leaves = {node.name: leaf(new, node) for node in (a, b)}
        for node in (a, b):
            node.write_tls_files(
                leaves[node.name].cert_pem, leaves[node.name].key_pem, new.cert_pem
            )
        for node in (a, b):
            node.restart(expect_fingerprint=leaves[node.name].fingerprint)
        print("hdb_nodes ca_info on nodea:", nodes_ca(a), "on nodeb:", nodes_ca(b))
        print(f"both on the new CA, restarted; {n} restarts of nodea, nodeb's leaf probed:")
        before = rounds(a, b, leaves["nodeb"], new.cert_pem, n)
        answer = a.operation_raw(
            {
                "operation": "update_node",
                "hostname": b.name,
                "url": f"wss://{b.ip}:{b.ports.replication}",
            }
        )
        print("update_node:", answer)
        time.sleep(2)
        print("hdb_nodes ca_info on nodea:", nodes_ca(a), "on nodeb:", nodes_ca(b))
        print(f"after update_node; {n} restarts of nodea:")
        after = rounds(a, b, leaves["nodeb"], new.cert_pem, n)
        for label, got in (("before update_node", before), ("after update_node", after)):
            bad = sum(1 for g in got if g == "refused for good")
            print(f"{label}: refused for good in {bad} of {len(got)} restarts")
        print(
            f"replication after: A->B {replicate(a, b, 30):.2f} s, B->A {replicate(b, a, 30):.2f} s"
        )
    finally:
        for node in (a, b):
            node.stop()
        if os.environ.get("KEEP") is None:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
