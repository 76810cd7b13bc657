"""Watch-only on a real Harper 4.7.29 node whose live files are a Kubernetes secret volume.

The node's ``keys/`` holds kubelet's AtomicWriter layout (``..<stamp>/`` payloads, a
``..data`` link, and each file a link through it).  harper-certd must recognise the links as
someone else's, install nothing, and only check what Harper serves.  What Harper does when
kubelet swaps ``..data`` is measured (printed), not assumed: the check must agree with an
independent TLS probe either way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from harper_certd import logs
from harper_certd.adoption import foreign
from harper_certd.config import parse_config
from harper_certd.install.context import build_context
from harper_certd.install.live import check_served
from harper_certd.install.pipeline import install
from harper_rig import CA_FILE, CERT_FILE, KEY_FILE, HarperNode, LeafMaterial, RigCA, needs_harper

pytestmark = needs_harper(timeout=240)

NODE = "nodew.cluster.test"
NODE_IP = "127.0.0.4"


def _volume(keys: Path, leaf: LeafMaterial, ca_pem: bytes, stamp: str) -> None:
    """One kubelet update: a new payload folder, then ``..data`` renamed over to it."""
    payload = keys / f"..{stamp}"
    payload.mkdir()
    (payload / CERT_FILE).write_bytes(leaf.cert_pem)
    (payload / CA_FILE).write_bytes(ca_pem)
    fd = os.open(payload / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, leaf.key_pem)
    os.close(fd)
    tmp = keys / "..data_tmp"
    tmp.symlink_to(payload.name)
    os.rename(tmp, keys / "..data")


def test_secret_volume_is_watched_and_served_set_checked(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = Path(tempfile.mkdtemp(prefix="hw.", dir="/tmp"))
    node = HarperNode(
        base, NODE, NODE_IP, pristine_cache=tmp_path_factory.getbasetemp() / "harper-pristine"
    )
    ca = RigCA("harper-certd watch-only CA")
    try:
        node.install()
        keys = node.keys_dir
        for name in (CERT_FILE, KEY_FILE, CA_FILE):
            with_path = keys / name
            if os.path.lexists(with_path):
                with_path.unlink()
        first = ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        _volume(keys, first, ca.cert_pem, "2026_11_29_1")
        for name in (CERT_FILE, KEY_FILE, CA_FILE):
            (keys / name).symlink_to(f"..data/{name}")
        node.start(expect_fingerprint=first.fingerprint)
        config = parse_config(
            {
                "harper": {"root": str(node.root)},
                "state_dir": str(base / "state"),
                "restart": {"method": "hot-reload"},
                "verify": {"timeout": 10, "interval": 0.2, "host": NODE_IP},
            }
        )
        ctx = build_context(config)
        logs.configure(json=True)
        assert foreign(ctx.store) is not None
        assert check_served(ctx, first.fingerprint) is True

        source = base / "dropped"
        source.mkdir(mode=0o755)
        other = ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        (source / CERT_FILE).write_bytes(other.cert_pem)
        (source / CA_FILE).write_bytes(ca.cert_pem)
        fd = os.open(source / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, other.key_pem)
        os.close(fd)
        refused = install(ctx, source)
        assert refused.status == "refused"
        assert [p.code for p in refused.problems if p.code == "live_not_managed"] == [
            "live_not_managed"
        ]
        assert node.served_fingerprint() == first.fingerprint

        second = ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        _volume(keys, second, ca.cert_pem, "2026_11_29_2")
        t0 = time.monotonic()
        answer = check_served(ctx, second.fingerprint)
        took = round(time.monotonic() - t0, 2)
        probe = node.served_fingerprint()
        seen = {second.fingerprint: "new", first.fingerprint: "old"}.get(str(probe), str(probe))
        print(
            f"\n[kubelet ..data swap] Harper serves the new leaf by itself: {answer} "
            f"(checked for {took} s); probe says {seen}"
        )
        assert answer is (probe == second.fingerprint)
        for name in (CERT_FILE, KEY_FILE, CA_FILE):
            assert os.readlink(keys / name) == f"..data/{name}"
        assert not os.path.lexists(base / "state" / "current")
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)
