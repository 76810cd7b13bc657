"""Integration tests against a real Harper 4.7.29 node (see tests/harper_rig.py).

Skipped when harperdb is not installed (run ``tests/install-harper.sh``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harper_rig import (
    GenerationStore,
    HandshakePoller,
    HarperNode,
    LeafMaterial,
    RigCA,
    iter_rig_processes,
    needs_harper,
)

pytestmark = needs_harper(timeout=120)

NODE = "nodea"
NODE_IP = "127.0.0.2"
# Harper reloads ~1.5 s after the certificate watcher fires; leave plenty of room.
RELOAD_TIMEOUT = 10.0


def _leaf(ca: RigCA) -> LeafMaterial:
    return ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])


@pytest.fixture(scope="session")
def pristine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real ``harperdb install`` per session; later nodes copy it (~4 s -> ~0.05 s)."""
    return tmp_path_factory.mktemp("harper-pristine")


@pytest.fixture
def ca() -> RigCA:
    return RigCA("harper-certd test CA")


@pytest.fixture
def node(tmp_path: Path, pristine_cache: Path) -> Iterator[HarperNode]:
    harper = HarperNode(tmp_path, NODE, NODE_IP, pristine_cache=pristine_cache)
    try:
        harper.install()
        yield harper
    finally:
        harper.stop()
        leftovers = list(iter_rig_processes(tmp_path))
        assert not leftovers, f"Harper processes left behind: {leftovers}"


def test_node_serves_configured_certificate(node: HarperNode, ca: RigCA) -> None:
    leaf = _leaf(ca)
    node.write_tls_files(leaf.cert_pem, leaf.key_pem, ca.cert_pem)

    node.start(expect_fingerprint=leaf.fingerprint)

    assert node.pid() is not None
    assert node.served_fingerprint(node.ports.replication) == leaf.fingerprint
    assert node.served_fingerprint(node.ports.http_secure) == leaf.fingerprint
    assert node.operation({"operation": "get_configuration"})["tls"] == {
        "certificate": str(node.certificate_path),
        "certificateAuthority": str(node.ca_path),
        "privateKey": str(node.key_path),
    }


def test_hot_reload_symlink_flip_and_nudge(node: HarperNode, ca: RigCA) -> None:
    """The swap that works hot: flip ``current``, then touch the previous generation.

    Harper's watchers hold the inodes the symlinks resolved to when they were set up;
    a flip alone is never noticed. Touching the previous generation's key, then its
    certificate and CA, wakes them; they re-read the paths and re-watch the new inodes.
    """
    store = GenerationStore(node.node_dir / "state")
    gen1 = _leaf(ca)
    store.write_generation("1", gen1.cert_pem, gen1.key_pem, ca.cert_pem)
    store.flip("1")
    store.link_into(node.keys_dir)
    node.start(expect_fingerprint=gen1.fingerprint)

    with HandshakePoller(node.ip, node.ports.replication, interval=0.05) as poller:
        # A flip alone: Harper keeps serving generation 1.
        gen2 = _leaf(ca)
        store.write_generation("2", gen2.cert_pem, gen2.key_pem, ca.cert_pem)
        previous = store.flip("2")
        assert previous == "1"
        time.sleep(3.0)
        assert node.served_fingerprint() == gen1.fingerprint

        # The nudge makes it reload.
        t0 = time.monotonic()
        store.nudge(previous)
        took = poller.wait_for(gen2.fingerprint, t0, RELOAD_TIMEOUT)
        assert took is not None, f"gen2 not served within {RELOAD_TIMEOUT} s"

        # Rollback to generation 1: its files are older than the certificate Harper
        # recorded, so they must get a fresh mtime BEFORE the flip or Harper ignores them.
        store.touch("1")
        t1 = time.monotonic()
        previous = store.flip("1")
        assert previous == "2"
        store.nudge(previous)
        took = poller.wait_for(gen1.fingerprint, t1, RELOAD_TIMEOUT)
        assert took is not None, f"rollback to gen1 not served within {RELOAD_TIMEOUT} s"
        time.sleep(0.5)

    failed = poller.failures()
    assert not failed, f"{len(failed)} handshakes failed during hot reloads: {failed[:3]}"
    assert node.served_fingerprint(node.ports.http_secure) == gen1.fingerprint
    assert "key values mismatch" not in node.log_text()
