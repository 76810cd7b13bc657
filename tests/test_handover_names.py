"""Other tools' file names (issue 17 item 6): one table, ``roles.HANDOVERS``, read by the
incoming folder (``read_source``) and ``stage`` (``read_folder``), and a set in
cert-manager's names dropped into a real daemon's incoming folder is installed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemonfix import DaemonProc, drop
from harper_certd import devca, stage
from harper_certd.roles import HANDOVERS, handover_names
from harper_certd.source import SourceRefused, read_source
from nodefix import Node, make_node

TRUSTED = {os.geteuid(), 0}


def _renamed(node: Node, name: str, names: dict[str, str], extra: dict[str, bytes]) -> Path:
    """A set in Harper's names, then renamed to another tool's (``names``: ours -> theirs)."""
    folder = node.source(name)
    for ours, theirs in names.items():
        os.rename(folder / ours, folder / theirs)
    for file_name, data in extra.items():
        (folder / file_name).write_bytes(data)
    return folder


def test_the_table_names_each_tool_once() -> None:
    tools = [h.tool for h in HANDOVERS]
    assert tools == ["Harper", "certbot", "cert-manager/Vault", "acme.sh", "step"]
    acme = HANDOVERS[3]
    listing = ["fullchain.cer", "a.example.key", "ca.cer", "a.example.cer", "a.example.conf"]
    assert handover_names(acme, listing) == ("fullchain.cer", "a.example.key", None, None)
    assert handover_names(acme, [*listing, "other.key"]) is None  # two keys: which one?
    step = HANDOVERS[4]
    assert handover_names(step, ["srv.crt", "srv.key", "root_ca.crt"]) == (
        "srv.crt",
        "srv.key",
        "root_ca.crt",
        None,
    )
    assert handover_names(step, ["srv.crt", "other.key"]) is None  # not one stem
    certbot = HANDOVERS[1]
    assert handover_names(certbot, ["cert.pem", "chain.pem", "privkey.pem"]) == (
        "cert.pem",
        "privkey.pem",
        None,
        "chain.pem",
    )


def test_each_tools_folder_is_read(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    fallback = node.ca_file
    live_ca = fallback.read_bytes()
    cm = _renamed(
        node,
        "cm",
        {"certificate.pem": "tls.crt", "privateKey.pem": "tls.key", "ca.pem": "ca.crt"},
        {},
    )
    got = read_source(cm, trusted_uids=TRUSTED, ca_fallback=None)
    assert got.data.cert == (cm / "tls.crt").read_bytes()
    assert got.data.key == (cm / "tls.key").read_bytes()
    assert got.data.ca == (cm / "ca.crt").read_bytes()
    acme = _renamed(
        node,
        "acme",
        {"certificate.pem": "fullchain.cer", "privateKey.pem": "nodea.key", "ca.pem": "ca.cer"},
        {"nodea.conf": b"Le_Domain='nodea'\n"},
    )
    got = read_source(acme, trusted_uids=TRUSTED, ca_fallback=fallback)
    assert got.data.cert == (acme / "fullchain.cer").read_bytes()
    assert got.data.key == (acme / "nodea.key").read_bytes()
    assert got.data.ca == live_ca  # ca.cer is intermediates, never a CA file
    step = _renamed(
        node,
        "step",
        {"certificate.pem": "nodea.crt", "privateKey.pem": "nodea.key", "ca.pem": "root_ca.crt"},
        {},
    )
    got = read_source(step, trusted_uids=TRUSTED, ca_fallback=None)
    assert got.data.ca == (step / "root_ca.crt").read_bytes()
    assert got.data.key == (step / "nodea.key").read_bytes()
    # stage copies them under certbot's names (+ the tool's CA file as ca.pem)
    staged = stage.read_folder(cm, TRUSTED)
    assert set(staged) == {"fullchain.pem", "privkey.pem", "ca.pem"}
    assert staged["privkey.pem"] == (cm / "tls.key").read_bytes()
    assert set(stage.read_folder(acme, TRUSTED)) == {"fullchain.pem", "privkey.pem"}
    # no known shape: the refusal lists every tool's names
    odd = _renamed(node, "odd", {"privateKey.pem": "key.txt"}, {})
    with pytest.raises(SourceRefused) as refused:
        read_source(odd, trusted_uids=TRUSTED, ca_fallback=fallback)
    assert refused.value.code == "source_incomplete"
    for h in HANDOVERS:
        assert f"{h.tool}'s " in str(refused.value)


def test_cert_manager_names_installed_by_the_daemon(tmp_path: Path) -> None:
    node = make_node(tmp_path, extra={"watch": {"settle_seconds": 0.3}})
    leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    folder = tmp_path / "src" / "from-cert-manager"
    folder.mkdir(parents=True)
    (folder / "tls.crt").write_bytes(leaf.cert_pem)
    devca.write_private(folder / "tls.key", leaf.key_pem)
    (folder / "ca.crt").write_bytes(node.ca.cert_pem)
    (node.root / "keys" / "incoming").mkdir(parents=True)
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        drop(node, "from-cert-manager", folder)
        installed = d.wait_for("certd.set_installed", timeout=60)
        assert installed["source"].endswith("/incoming/from-cert-manager")
        assert node.live.cert.read_bytes() == leaf.cert_pem
        assert d.stop() == 0
