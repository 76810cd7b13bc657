"""OpenSSL trust settings of TRUSTED CERTIFICATE entries in the CA file, judged as Node does.

``openssl x509 -trustout -addtrust/-addreject`` writes a root with X509_CERT_AUX trust and
reject uses; Node reads ``ca`` with ``PEM_read_bio_X509_AUX`` and OpenSSL's ``check_trust``
applies them (field case 05's kind).  Each variant is written by the real ``openssl`` and
judged by Node 20 itself (a loopback mutual-TLS handshake: both uses) and by ``validate``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest

from harper_certd import devca, judge
from harper_certd.judge import node as node_judge
from harper_certd.roles import Purpose
from harper_certd.validate import Inputs, validate

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("node") is None,
    reason="needs the openssl command and node (Node.js 20) on PATH",
)

VARIANTS: dict[str, tuple[str, ...]] = {
    "plain certificate": (),
    "trust both": ("-addtrust", "serverAuth", "-addtrust", "clientAuth"),
    "trust anyExtendedKeyUsage": ("-addtrust", "anyExtendedKeyUsage"),
    "trust serverAuth only": ("-addtrust", "serverAuth"),
    "trust clientAuth only": ("-addtrust", "clientAuth"),
    "trust emailProtection only": ("-addtrust", "emailProtection"),
    "reject clientAuth": ("-addreject", "clientAuth"),
    "reject anyExtendedKeyUsage": ("-addreject", "anyExtendedKeyUsage"),
    "trust both, reject serverAuth": (
        "-addtrust",
        "serverAuth",
        "-addtrust",
        "clientAuth",
        "-addreject",
        "serverAuth",
    ),
}


def _trusted(root_pem: Path, args: tuple[str, ...]) -> bytes:
    if not args:
        return root_pem.read_bytes()
    out = subprocess.run(
        ["openssl", "x509", "-in", str(root_pem), "-trustout", *args],
        capture_output=True,
        check=True,
    )
    assert out.stdout.startswith(b"-----BEGIN TRUSTED CERTIFICATE-----")
    return out.stdout


def test_trust_settings_give_nodes_verdict(tmp_path: Path) -> None:
    root = devca.make_ca("Trust Settings Root")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(root.cert_pem)
    cas = {name: _trusted(root_pem, args) for name, args in VARIANTS.items()}
    # Node's verdict through the shipped judge: both sides' verification read after the
    # handshake (a listening-socket oracle can miss the server's TLS 1.3 refusal of the
    # client, which comes after the client's secureConnect).
    requests = [
        node_judge.SetRequest(name, leaf.cert_pem, leaf.key_pem, ca) for name, ca in cas.items()
    ]
    node_path = shutil.which("node")
    assert node_path is not None
    batch = node_judge.judge_sets(node_path, requests)
    node = {k: v.ok for k, v in batch.verdicts.items()}
    now = dt.datetime.now(dt.UTC)
    ours = {}
    for name, ca in cas.items():
        report = validate(Inputs(leaf.cert_pem, leaf.key_pem, ca), at=now, judge=judge.MODEL)
        ours[name] = report.valid
        if not report.valid:
            assert set(report.codes) == {"ca_trust_rejected"}, (name, report.problems)
            assert "-addtrust" in report.problems[0].message
    print("\n" + "\n".join(f"{k:<32} node {node[k]!s:<5} ours {ours[k]}" for k in VARIANTS))
    assert ours == node
    assert set(node.values()) == {True, False}  # the variants are not vacuous


def test_server_purpose_asks_only_server_auth(tmp_path: Path) -> None:
    root = devca.make_ca("Trust Settings Root")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(root.cert_pem)
    now = dt.datetime.now(dt.UTC)
    server_only = _trusted(root_pem, ("-addtrust", "serverAuth"))
    inputs = Inputs(leaf.cert_pem, leaf.key_pem, server_only)
    assert validate(inputs, at=now, purpose=Purpose.SERVER).valid
    cluster = validate(inputs, at=now, purpose=Purpose.CLUSTER)
    assert [p.code for p in cluster.problems] == ["ca_trust_rejected"]
    assert "TLS Web Client Authentication" in cluster.problems[0].message
