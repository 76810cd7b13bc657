"""The README's operator path, start to finish, on a real Harper 4.7.29 node.

One configuration file named by ``HARPER_CERTD_CONFIG`` (as /etc/harper-certd/config.yaml
would be) for every command; the daemon started the way the unit starts it (systemd's
``INVOCATION_ID`` set, Operations API credentials from a 0600 file, verification dialling
the node itself); pre-flight ``check``; ``status`` as a Nagios check; a certbot lineage
(its real ``live/`` links into ``archive/``) handed over with ``stage --wait``; the
Prometheus textfile; the daemon stopped and ``release`` handing plain files back, Harper
still serving the same certificate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harper_rig import HarperNode, LeafMaterial, RigCA, iter_rig_processes, needs_harper

pytestmark = needs_harper(timeout=300)

NODE = "nodew.cluster.test"
NODE_IP = "127.0.0.5"


@dataclass
class Walk:
    node: HarperNode
    ca: RigCA
    base: Path
    env: dict[str, str]
    prom: Path

    def leaf(self) -> LeafMaterial:
        return self.ca.issue(NODE, dns_names=(NODE,), ip_addresses=[NODE_IP])

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harper_certd", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    # A short base with a dot: Harper's rootPath regex backtracks on long runs (see
    # test_harper_integration's rig fixture).
    base = Path(tempfile.mkdtemp(prefix="hw.", dir="/tmp"))
    node = HarperNode(
        base,
        NODE,
        NODE_IP,
        operations_secure=True,
        pristine_cache=tmp_path_factory.getbasetemp() / "harper-pristine-walk",
    )
    ca = RigCA("harper-certd walkthrough CA")
    etc = base / "etc"
    etc.mkdir()
    credentials = etc / "ops-credentials"
    credentials.write_text(f"admin:{node.password}\n")
    os.chmod(credentials, 0o600)
    (base / "prom").mkdir()
    config = {
        "harper": {"root": str(node.root)},
        "state_dir": str(base / "state"),
        "operations_api": {"credentials_file": str(credentials)},
        "metrics": {"textfile": str(base / "prom" / "harper-certd.prom")},
        "watch": {"settle_seconds": 0.5},
        "verify": {"timeout": 30, "interval": 0.1},
    }
    (etc / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HARPER_CERTD_CONFIG": str(etc / "config.yaml")}
    env.pop("ROOTPATH", None)
    env.pop("INVOCATION_ID", None)
    walk = Walk(node, ca, base, env, base / "prom" / "harper-certd.prom")
    try:
        node.install()
        first = walk.leaf()
        node.write_tls_files(first.cert_pem, first.key_pem, ca.cert_pem)
        node.start(expect_fingerprint=first.fingerprint)
        yield walk
    finally:
        node.stop()
        leftovers = list(iter_rig_processes(base))
        if not leftovers:
            shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"Harper processes left behind: {leftovers}"


class Daemon:
    """``harper-certd run`` as the unit starts it, its JSON lines collected."""

    def __init__(self, walk: Walk) -> None:
        env = {**walk.env, "INVOCATION_ID": "walkthrough"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harper_certd", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("<"):
                with self.cond:
                    self.events.append(json.loads(line.split(">", 1)[1]))
                    self.cond.notify_all()

    def wait_for(self, name: str, timeout: float = 60) -> dict[str, Any]:
        with self.cond:
            assert self.cond.wait_for(
                lambda: any(e["event"] == name for e in self.events), timeout
            ), [e["event"] for e in self.events]
            return next(e for e in self.events if e["event"] == name)

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(30)


def _certbot_lineage(walk: Walk, leaf: LeafMaterial) -> Path:
    le = walk.base / "letsencrypt"
    archive, live = le / "archive" / NODE, le / "live" / NODE
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    for kind, data in (
        ("cert", leaf.cert_pem),
        ("chain", walk.ca.cert_pem),
        ("fullchain", leaf.cert_pem + walk.ca.cert_pem),
        ("privkey", leaf.key_pem),
    ):
        (archive / f"{kind}1.pem").write_bytes(data)
        os.chmod(archive / f"{kind}1.pem", 0o600 if kind == "privkey" else 0o644)
        (live / f"{kind}.pem").symlink_to(f"../../archive/{NODE}/{kind}1.pem")
    return live


def _prom(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_the_operator_path(walk: Walk) -> None:
    check = walk.cli("check")
    assert check.returncode == 0, check.stdout + check.stderr
    status = walk.cli("status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    data = json.loads(status.stdout)
    assert data["sets"][0]["served_matches_live"] is True
    assert data["sets"][0]["served"][0]["dialled"].startswith("127.0.0.1:")

    daemon = Daemon(walk)
    try:
        daemon.wait_for("certd.started")
        renewed = walk.leaf()
        lineage = _certbot_lineage(walk, renewed)
        staged = walk.cli("stage", str(lineage), "--wait", "--timeout", "90")
        assert staged.returncode == 0, staged.stdout + staged.stderr
        verified = daemon.wait_for("certd.served_verified")
        assert verified["fingerprint"] == renewed.fingerprint
        assert all(
            # the rig's replication URL is an IP: peers send no SNI, nor does verification
            d.startswith("127.0.0.1:") and d.endswith("(no SNI)")
            for d in verified["dialled"]
        )
        assert walk.node.served_fingerprint() == renewed.fingerprint
        leaf_rows = []
        for _ in range(100):
            prom = _prom(walk.prom)
            leaf_rows = [
                lab
                for lab, _ in prom["harper_certd_certificate_not_after_seconds"]
                if lab["role"] == "leaf"
            ]
            if leaf_rows and leaf_rows[0]["sha256"] == renewed.fingerprint:
                break
            threading.Event().wait(0.1)
        assert leaf_rows[0]["sha256"] == renewed.fingerprint
        assert prom["harper_certd_served_matches_live"][0][1] == 1.0
    finally:
        assert daemon.stop() == 0

    after = walk.cli("status", "--json")
    assert after.returncode == 0, after.stdout
    data = json.loads(after.stdout)
    assert data["sets"][0]["live_sha256"] == renewed.fingerprint
    assert data["last"]["rotation"]["outcome"] == "installed"

    released = walk.cli("release")
    assert released.returncode == 0, released.stdout + released.stderr
    for path in (walk.node.certificate_path, walk.node.key_path, walk.node.ca_path):
        assert path.is_file()
        assert not path.is_symlink()
    assert walk.node.served_fingerprint() == renewed.fingerprint
    assert lineage.joinpath("cert.pem").is_symlink()  # certbot's lineage untouched
