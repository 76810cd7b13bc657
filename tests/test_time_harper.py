"""The restart budget against a real Harper 4.7.29: hot reloads are not restarts (issue 9
item 6).  The daemon runs as a subprocess on the node's root with ``restart.method:
hot-reload`` and one restart an hour; two rotations in a row are both installed."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonfix import DaemonProc, drop
from harper_certd import devca
from harper_certd.roles import SetPaths
from harper_rig import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    HarperNode,
    RigCA,
    iter_rig_processes,
    needs_harper,
)
from nodefix import Node

pytestmark = needs_harper(timeout=300)

NODE = "nodet.cluster.test"
NODE_IP = "127.0.0.2"


@pytest.fixture(scope="module")
def harper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HarperNode, RigCA]]:
    # A short base with a dot: see test_harper_integration's rig fixture for why.
    base = Path(tempfile.mkdtemp(prefix="ht.", dir="/tmp"))
    node = HarperNode(
        base, NODE, NODE_IP, pristine_cache=tmp_path_factory.getbasetemp() / "pristine"
    )
    ca = RigCA("harper-certd time CA")
    try:
        node.install()
        first = ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        node.write_tls_files(first.cert_pem, first.key_pem, ca.cert_pem)
        node.start(expect_fingerprint=first.fingerprint)
        yield node, ca
    finally:
        node.stop()
        leftovers = list(iter_rig_processes(base))
        if not leftovers:
            shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"Harper processes left behind: {leftovers}"


def test_hot_reloads_do_not_spend_the_restart_budget(
    harper: tuple[HarperNode, RigCA], tmp_path: Path
) -> None:
    """restarts_per_hour 1 and two hot-reload rotations: both installed and served, no
    restart_held, no restart recorded (before: the second set waited an hour)."""
    node, ca = harper
    config = {
        "harper": {"root": str(node.root)},
        "state_dir": str(tmp_path / "state"),
        "restart": {"method": "hot-reload", "restarts_per_hour": 1},
        "verify": {"timeout": 30, "interval": 0.1, "host": node.ip},
        "watch": {"settle_seconds": 0.3},
    }
    keys = node.keys_dir
    fake = Node(
        tmp_path,
        node.root,
        tmp_path / "state",
        devca.make_ca("unused"),
        SetPaths(keys / CERT_FILE, keys / KEY_FILE, keys / CA_FILE),
        tmp_path / "calls",
        tmp_path / "exit",
        config,
    )
    leaves = []
    for name in ("one", "two"):
        leaf = ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        folder = tmp_path / "src" / name
        folder.mkdir(parents=True)
        (folder / CERT_FILE).write_bytes(leaf.cert_pem)
        devca.write_private(folder / KEY_FILE, leaf.key_pem)
        (folder / CA_FILE).write_bytes(ca.cert_pem)
        os.chmod(folder, 0o755)  # noqa: S103 - an ordinary source folder
        leaves.append((name, folder, leaf))
    with DaemonProc(fake) as d:
        d.wait_for("certd.started")
        for count, (name, folder, _) in enumerate(leaves, start=1):
            drop(fake, name, folder)
            d.wait_for("certd.set_installed", count=count, timeout=90)
        assert d.stop() == 0
    installed = d.named("certd.set_installed")
    assert [e["method"] for e in installed] == ["hot-reload", "hot-reload"]
    assert [e["fingerprint"] for e in installed] == [leaf.fingerprint for _, _, leaf in leaves]
    assert d.named("certd.restart_held") == []
    assert d.named("certd.harper_restarted") == []
    budget = tmp_path / "state" / "restart-budget.json"
    assert not budget.exists() or json.loads(budget.read_text())["restarts"] == []
    node.wait_for_fingerprint(leaves[-1][2].fingerprint, timeout=30)
