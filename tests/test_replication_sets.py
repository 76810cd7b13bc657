"""Two real Harper 4.7.29 nodes: replication sets the validator must refuse (issue 8, items 7-8).

* ``certificate.pem`` = leaf + intermediate with ``ca.pem`` = root only (the issue's case) or
  root + intermediate (the issue's fix): the nodes refuse each other (unable to get local
  issuer certificate) although each sends leaf + intermediate; with ``ca.pem`` = intermediate
  + root they replicate.  The product refuses both: ``ca_file_issuer_not_first``.
* The host of ``replication.url`` (an IP here) not in the certificate (DNS node name only):
  the dialling peer fails with ERR_TLS_CERT_ALTNAME_INVALID.  The product refuses the set
  read from the node's own configuration: ``url_host_mismatch``.

Each bad set is forced into both nodes' files and the nodes restarted (a hot reload keeps
open connections), then a row inserted on one node must not reach the other within
``BROKEN_WAIT`` seconds; the good set restores replication.  One module-scoped pair of nodes.
Findings: tests/HARPER-RIG-FINDINGS.md, "Replication sets".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harper_certd import devca, discover
from harper_certd.check import check_entry
from harper_certd.validate import Inputs, Purpose, validate
from harper_rig import (
    HarperError,
    HarperNode,
    fingerprint_pem,
    iter_rig_processes,
    needs_harper,
)

pytestmark = needs_harper(timeout=400)

NODES = (("nodea", "127.0.0.2"), ("nodeb", "127.0.0.3"))
DATABASE = "certd"
TABLE = "probe"
JOIN_TIMEOUT = 60.0
BROKEN_WAIT = 8.0  # replication normally takes 0.1-0.4 s on the rig
EKU = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@dataclass
class Pair:
    root: devca.Issued
    inter: devca.Issued
    nodes: dict[str, HarperNode]

    def leaf(self, node: HarperNode, *, ip_san: bool = True) -> devca.Issued:
        return devca.make_leaf(
            self.inter,
            node.name,
            dns=[node.name],
            ips=[node.ip] if ip_san else [],
            eku=EKU,
            key=devca.make_key("rsa", 2048),
        )

    def write(self, *, ip_san: bool = True, ca_layout: str = "issuer_first") -> None:
        """A new set on both nodes, then both restarted so every connection is made afresh.

        ``ca_layout``: ``issuer_first`` (intermediate + root), ``root_only`` or
        ``root_first`` (root + intermediate)."""
        ca = {
            "issuer_first": self.inter.cert_pem + self.root.cert_pem,
            "root_only": self.root.cert_pem,
            "root_first": self.root.cert_pem + self.inter.cert_pem,
        }[ca_layout]
        served = {}
        for node in self.nodes.values():
            # Harper keeps a CA record per CA-file name in its database; a stale record of
            # the intermediate's name would stand in for the new file (measured).
            for authority in (self.inter, self.root):
                with contextlib.suppress(HarperError):
                    node.operation(
                        {"operation": "remove_certificate", "name": _common_name(authority)}
                    )
            leaf = self.leaf(node, ip_san=ip_san)
            node.write_tls_files(leaf.cert_pem + self.inter.cert_pem, leaf.key_pem, ca)
            served[node.name] = fingerprint_pem(leaf.cert_pem)
        for node in self.nodes.values():
            node.restart(expect_fingerprint=served[node.name])


def _common_name(issued: devca.Issued) -> str:
    value = issued.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return value if isinstance(value, str) else value.decode()


def replicate(src: HarperNode, dst: HarperNode, timeout: float) -> float | None:
    """Seconds until a row inserted on ``src`` is readable on ``dst``; None after ``timeout``."""
    row_id = f"{src.name}-{uuid.uuid4().hex}"
    src.operation(
        {"operation": "insert", "database": DATABASE, "table": TABLE, "records": [{"id": row_id}]}
    )
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        found = dst.operation_raw(
            {
                "operation": "search_by_id",
                "database": DATABASE,
                "table": TABLE,
                "ids": [row_id],
                "get_attributes": ["id"],
            }
        )
        if isinstance(found, list) and found:
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def both_ways(pair: Pair, timeout: float) -> tuple[float | None, float | None]:
    a, b = pair.nodes["nodea"], pair.nodes["nodeb"]
    return replicate(a, b, timeout), replicate(b, a, timeout)


def replicates(pair: Pair, timeout: float) -> tuple[float, float]:
    """Both ways within ``timeout`` seconds, a new row every 3 s (connections take a moment
    after a restart); AssertionError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        ways = both_ways(pair, 3.0)
        if ways[0] is not None and ways[1] is not None:
            return ways[0], ways[1]
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name}\n{n.log_tail(25)}" for n in pair.nodes.values())
            raise AssertionError(f"no replication within {timeout} s: {ways}\n{logs}")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    # Short base path: Harper's rootPath check backtracks on long dotted paths (FINDINGS).
    base = Path(tempfile.mkdtemp(prefix="hc.", dir="/tmp"))
    root = devca.make_ca("replication-sets root", key=devca.make_key("rsa", 2048))
    inter = devca.make_ca(
        "replication-sets intermediate", parent=root, key=devca.make_key("rsa", 2048)
    )
    nodes = {name: HarperNode(base, name, ip, pristine_cache=base / "cache") for name, ip in NODES}
    the_pair = Pair(root, inter, nodes)
    try:
        served = {}
        for node in nodes.values():
            node.install()
            leaf = the_pair.leaf(node)
            node.write_tls_files(
                leaf.cert_pem + inter.cert_pem, leaf.key_pem, inter.cert_pem + root.cert_pem
            )
            served[node.name] = fingerprint_pem(leaf.cert_pem)
        for node in nodes.values():
            node.start(expect_fingerprint=served[node.name])
        for node in nodes.values():
            node.operation({"operation": "create_database", "database": DATABASE})
            node.operation(
                {
                    "operation": "create_table",
                    "database": DATABASE,
                    "table": TABLE,
                    "primary_key": "id",
                }
            )
        a, b = nodes["nodea"], nodes["nodeb"]
        a.operation(
            {
                "operation": "add_node",
                "hostname": b.name,
                "url": f"wss://{b.ip}:{b.ports.replication}",
                "authorization": {"username": "admin", "password": b.password},
            },
            timeout=30,
        )
        # Restart both with a fresh good set: the CA records are in the database from the
        # start, so the replication server's contexts are built with them (the first start
        # races Harper's own records: measured, replication then fails either way).
        the_pair.write()
        replicates(the_pair, JOIN_TIMEOUT)
        yield the_pair
    finally:
        for node in nodes.values():
            with contextlib.suppress(HarperError):
                node.stop()
        assert not list(iter_rig_processes(base))


def _product_report(node: HarperNode) -> set[str]:
    """Codes of ``check`` for the node's replication set, read from its own configuration."""
    config = discover.load_config(node.root)
    entry = next(e for e in config.file_entries() if e.purpose is Purpose.CLUSTER)
    result = check_entry(entry, dt.datetime.now(dt.UTC), 30)
    assert result.report is not None
    return {p.code for p in result.report.problems if p.severity.value == "error"}


@pytest.mark.parametrize("layout", ["root_only", "root_first"])
def test_ca_file_not_starting_with_the_issuer_breaks_replication(pair: Pair, layout: str) -> None:
    """root only (the issue's case) and root + intermediate (the issue's fix): refused by the
    product; forced in, the nodes do not replicate; intermediate + root does."""
    pair.write(ca_layout=layout)
    try:
        for node in pair.nodes.values():
            assert _product_report(node) == {"ca_file_issuer_not_first"}
        broken = both_ways(pair, BROKEN_WAIT)
        log = pair.nodes["nodea"].log_text() + pair.nodes["nodeb"].log_text()
        print(f"\nca.pem {layout}: replication a->b, b->a = {broken}")
        assert broken == (None, None)
        assert "unable to get local issuer certificate" in log.lower() or (
            "UNABLE_TO_GET_ISSUER_CERT_LOCALLY" in log
        )
        # The same files as a server-only (HTTPS) set keep the usual rule.
        node = pair.nodes["nodea"]
        server = validate(
            Inputs(node.certificate_path.read_bytes(), None, node.ca_path.read_bytes()),
            at=dt.datetime.now(dt.UTC),
            purpose=Purpose.SERVER,
        )
        assert server.valid, server.problems
    finally:
        pair.write()
    fixed = replicates(pair, JOIN_TIMEOUT)
    print(f"ca.pem intermediate + root: replication a->b, b->a = {fixed} s")


def _rejoin(pair: Pair) -> str:
    """nodea forgets nodeb and joins it again through its URL; add_node's answer."""
    a, b = pair.nodes["nodea"], pair.nodes["nodeb"]
    for key in ("hostname", "name"):
        with contextlib.suppress(HarperError):
            a.operation({"operation": "remove_node", key: b.name})
            break
    answer = a.operation(
        {
            "operation": "add_node",
            "hostname": b.name,
            "url": f"wss://{b.ip}:{b.ports.replication}",
            "authorization": {"username": "admin", "password": b.password},
        },
        timeout=30,
    )
    return str(answer)


def test_url_host_missing_from_certificate_breaks_replication(pair: Pair) -> None:
    """replication.url dials an IP the certificate does not name: refused by the product;
    forced in, joining the node through its URL fails and nothing replicates."""
    pair.write(ip_san=False)
    try:
        for node in pair.nodes.values():
            assert _product_report(node) == {"url_host_mismatch"}
        answer = _rejoin(pair)
        broken = both_ways(pair, BROKEN_WAIT)
        log = pair.nodes["nodea"].log_text() + pair.nodes["nodeb"].log_text()
        print(f"\nno IP SAN for the URL host: add_node {answer[:200]}; replication {broken}")
        assert "is not in the cert's list" in answer
        assert "ERR_TLS_CERT_ALTNAME_INVALID" in log
        assert broken == (None, None)
    finally:
        pair.write()
        _rejoin(pair)
    replicates(pair, JOIN_TIMEOUT)
