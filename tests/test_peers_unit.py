"""harper_certd.peers' restart stagger and harper_certd.harden's YAML edit, without Harper.

The probe itself is tested on real Harper nodes (tests/test_peers_harper.py).  Here the
Operations API is a scripted object: ``cluster_status`` replies shaped like Harper 4.7.29's
(copied from a real node's answer in test_peers_harper's run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from harper_certd import harden, peers

REAL_STATUS_CONNECTED: dict[str, Any] = {
    "type": "cluster-status",
    "connections": [
        {
            "url": "wss://127.0.0.2:42041",
            "name": "nodea",
            "replicates": True,
            "database_sockets": [
                {"database": "certd", "connected": True, "nodes": ["nodea"]},
                {"database": "system", "connected": True, "nodes": ["nodea"]},
            ],
        }
    ],
    "node_name": "nodeb",
    "url": "wss://127.0.0.3:42685",
    "is_enabled": True,
}


def _down() -> dict[str, Any]:
    status: dict[str, Any] = {**REAL_STATUS_CONNECTED}
    conn = dict(status["connections"][0])
    conn["database_sockets"] = [{"database": "certd", "connected": False}]
    status["connections"] = [conn]
    return status


class Scripted:
    """cluster_status answers in order (the last one repeats)."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def call(self, operation: Mapping[str, Any]) -> dict[str, Any]:
        assert operation == {"operation": "cluster_status"}
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_connected_peers_no_wait_for_the_first_name() -> None:
    """nodea ranks before nodeb: no slot; every peer connected: no wait, no event."""
    slept: list[float] = []
    with structlog.testing.capture_logs() as events:
        waited = peers.wait_before_restart(
            Scripted(REAL_STATUS_CONNECTED), "nodea", 60.0, sleep=slept.append
        )
    assert slept == []
    assert waited < 1.0
    assert events == []


def test_second_name_waits_its_slot_then_for_the_peer() -> None:
    """nodeb waits one slot, then while nodea is down (jitter between checks)."""
    slept: list[float] = []
    api = Scripted(REAL_STATUS_CONNECTED, _down(), _down(), REAL_STATUS_CONNECTED)
    with structlog.testing.capture_logs() as events:
        peers.wait_before_restart(
            api, "nodeb", 60.0, spacing=8.0, sleep=slept.append, jitter=lambda: 2.5
        )
    assert slept == [8.0, 2.5, 2.5]
    assert [e["event"] for e in events] == ["certd.restart_deferred"] * 2
    assert events[0]["waiting_for"] == ["nodea (certd)"]
    assert events[0]["proceeding"] is False


def test_gives_up_after_the_bound_with_a_warning() -> None:
    """A peer that never comes back: the restart proceeds, said with proceeding=true."""
    with structlog.testing.capture_logs() as events:
        peers.wait_before_restart(Scripted(_down()), "nodea", 0.05, sleep=lambda s: None)
    assert events[-1]["event"] == "certd.restart_deferred"
    assert events[-1]["proceeding"] is True
    assert all(e["log_level"] == "warning" for e in events)


DEV_CONFIG = """\
# Harper's configuration (a development install)
replication:
  hostname: nodea   # DNS-style name
  url: wss://127.0.0.2:9933
  # left on by DEFAULTS_MODE=dev:
  enableRootCAs: true
  securePort: 9933
clustering:
  enabled: true
  tls:
    insecure: true    # dev only
    verify: false
databases: '*'   # every database
"""


def test_harden_plan_keeps_every_comment_and_the_order() -> None:
    rt = harden._yaml()
    tree = rt.load(DEV_CONFIG)
    changes = harden.planned(tree)
    assert changes == [
        (("replication", "enableRootCAs"), False),
        (("clustering", "tls", "insecure"), False),
        (("clustering", "tls", "verify"), True),
    ]
    edited = harden.edit_text(DEV_CONFIG, changes)
    before, after = DEV_CONFIG.splitlines(), edited.splitlines()
    assert len(before) == len(after)
    differing = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert differing == [
        ("  enableRootCAs: true", "  enableRootCAs: false"),
        ("    insecure: true    # dev only", "    insecure: false    # dev only"),
        ("    verify: false", "    verify: true"),
    ]
    assert harden.planned(rt.load(edited)) == []


def test_harden_inserts_an_absent_key_and_keeps_nulls() -> None:
    """enableRootCAs absent (Harper's default is on): one line inserted; ``null`` stays."""
    text = "replication:\n  # the node\n  hostname: nodea\n  routes: null\n"
    edited = harden.edit_text(text, harden.planned(harden._yaml().load(text)))
    assert edited == (
        "replication:\n  # the node\n  enableRootCAs: false\n  hostname: nodea\n  routes: null\n"
    )


# --- ca add / ca remove keep the CA file's other bytes (harper_certd.cafile) -------------------


def test_ca_file_edits_keep_every_other_byte() -> None:
    from cryptography import x509

    from harper_certd import cafile
    from harper_rig import RigCA

    old, spare, new = RigCA("unit old CA"), RigCA("unit spare CA"), RigCA("unit new CA")
    # A comment, CRLF line ends and a blank line between blocks: none of it is ours to change.
    live = (
        b"# cluster CA (kept)\r\n" + old.cert_pem.replace(b"\n", b"\r\n") + b"\r\n" + spare.cert_pem
    )
    added = cafile._with(live, x509.load_pem_x509_certificates(new.cert_pem))
    assert added == live + new.cert_pem
    assert cafile._with(live.rstrip(b"\n"), [x509.load_pem_x509_certificate(new.cert_pem)]) == (
        live + new.cert_pem
    )
    remaining = [c for c in x509.load_pem_x509_certificates(added) if c != spare.cert]
    assert cafile._without(added, spare.fingerprint, remaining) == (
        b"# cluster CA (kept)\r\n" + old.cert_pem.replace(b"\n", b"\r\n") + b"\r\n" + new.cert_pem
    )
    # A fingerprint that is in no block: the re-encoded remaining certificates (never a guess).
    assert cafile._without(added, "00" * 32, remaining) == cafile._pem(remaining)
