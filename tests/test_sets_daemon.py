"""The daemon manages every certificate set of a node on its own (issue 11, item 2).

A real ``harper-certd run`` subprocess on a node with two sets (the replication set and a
server set with its own CA file), real certificates, real folders.  No Harper runs here:
the restart command's exit status is the outcome (``nodefix``); real-Harper evidence of
per-set rotation is in ``tests/test_sets_harper.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID

from daemonfix import DaemonProc
from harper_certd import devca
from nodefix import Node, add_public_set, make_node, status_json

SERVER_ONLY = [ExtendedKeyUsageOID.SERVER_AUTH]
WEB = "www.example.com"


def _fp(leaf: devca.Issued) -> str:
    return devca.fingerprint_of(leaf.cert)


def _drop(incoming: Path, name: str, src: Path) -> Path:
    """A set handed over as people should: copied under a dot-name, then one rename."""
    incoming.mkdir(parents=True, exist_ok=True)
    hidden = incoming / f".{name}"
    shutil.copytree(src, hidden)
    os.rename(hidden, incoming / name)
    return incoming / name


def _leaf_fp(path: Path) -> str:
    return devca.fingerprint_of(devca.load_cert(path.read_bytes()))


@pytest.fixture
def two_sets(tmp_path: Path) -> tuple[Node, devca.Issued]:
    """A nodefix node (replication set for nodea) plus a server set ``web`` with its own CA."""
    node = make_node(
        tmp_path,
        extra={"watch": {"settle_seconds": 0.3}},
    )
    node.config_data["restart"]["restarts_per_hour"] = 20
    web_ca = devca.make_ca("Web Test CA")
    web = devca.write_set(
        node.root / "keys" / "web",
        devca.make_leaf(web_ca, WEB, dns=[WEB], eku=SERVER_ONLY),
        [web_ca],
    )
    config_path = node.root / "harperdb-config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["http"] = {"securePort": 9926}
    config["replication"]["enableRootCAs"] = False  # a private cluster CA (no hazard)
    config["tls"] = [
        {**config["tls"], "uses": ["replication"]},
        {
            "certificate": str(web.cert),
            "certificateAuthority": str(web.ca),
            "privateKey": str(web.key),
            "name": "web",
            "uses": ["server", "operations-api"],
        },
    ]
    config_path.write_text(yaml.safe_dump(config))
    return node, web_ca


def _web_set(tmp: Path, name: str, ca: devca.Issued, dns: list[str]) -> tuple[Path, str]:
    leaf = devca.make_leaf(ca, dns[0], dns=dns, eku=SERVER_ONLY)
    folder = tmp / "src" / name
    devca.write_set(folder, leaf, [ca])
    return folder, _fp(leaf)


def _keys(event: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: event.get(n) for n in names}


def test_each_set_is_installed_on_its_own_and_routed(two_sets: tuple[Node, devca.Issued]) -> None:
    """incoming/web/ goes to the web set; a folder straight in incoming/ goes to the one set
    it fits; one that fits none is refused (set_unroutable) and filed with its reason.  Each
    install leaves the other set's live files byte for byte as they were."""
    node, web_ca = two_sets
    keys = node.root / "keys"
    web_live = keys / "web" / "certificate.pem"
    incoming = keys / "incoming"
    with DaemonProc(node) as d:
        started = d.wait_for("certd.started")
        managed = d.wait_for("certd.set_managed")
        assert [s["set"] for s in started["sets"]] == ["replication", "web"]
        assert _keys(managed, "set", "role", "incoming", "state", "renewal", "valid") == {
            "set": "web",
            "role": "server",
            "incoming": str(incoming / "web"),
            "state": str(node.state / "sets" / "web"),
            "renewal": False,
            "valid": True,
        }

        # 1. placed under incoming/web/: the web set's, whatever it holds
        replication_before = node.live.cert.read_bytes()
        folder, web1 = _web_set(node.tmp, "w1", web_ca, [WEB])
        _drop(incoming / "web", "w1", folder)
        first = d.wait_for("certd.set_installed")
        assert (first["set"], first["fingerprint"]) == ("web", web1)
        assert _leaf_fp(web_live) == web1
        assert node.live.cert.read_bytes() == replication_before

        # 2. a cluster certificate for the node name straight in incoming/: replication
        web_before = web_live.read_bytes()
        cluster = node.source("c1")
        cluster_fp = _leaf_fp(cluster / "certificate.pem")
        _drop(incoming, "c1", cluster)
        second = d.wait_for("certd.set_installed", count=2)
        assert (second["set"], second["fingerprint"]) == ("replication", cluster_fp)
        assert node.live_fingerprint() == cluster_fp
        assert web_live.read_bytes() == web_before
        assert [(r["set"], r["moved_to"]) for r in d.named("certd.set_routed")] == [
            ("replication", str(incoming / "replication" / "c1"))
        ]

        # 3. a server-only certificate for the web names straight in incoming/: routed to web
        folder, web2 = _web_set(node.tmp, "w2", web_ca, [WEB])
        _drop(incoming, "w2", folder)
        routed = d.wait_for("certd.set_routed", count=2)
        third = d.wait_for("certd.set_installed", count=3)
        assert _keys(routed, "source", "set", "moved_to", "reason") == {
            "source": str(incoming / "w2"),
            "set": "web",
            "moved_to": str(incoming / "web" / "w2"),
            "reason": "fits set 'web' only",
        }
        assert (third["set"], third["fingerprint"]) == ("web", web2)
        assert node.live_fingerprint() == cluster_fp

        # 4. fits no set: refused with the reason for each set, filed in rejected/
        folder, _ = _web_set(node.tmp, "x", web_ca, ["other.example.com"])
        _drop(incoming, "x", folder)
        refused = d.wait_for("certd.set_refused")

        # 5. junk placed under incoming/web/: the web set's refusal, named so
        junk = node.tmp / "src" / "junk"
        junk.mkdir()
        for name in ("certificate.pem", "privateKey.pem", "ca.pem"):
            (junk / name).write_text("junk\n")
        _drop(incoming / "web", "junk", junk)
        web_refused = d.wait_for("certd.set_refused", count=2)
        assert d.stop() == 0
    assert (web_refused["set"], web_refused["codes"][0]) == ("web", "cert_unreadable")
    assert refused["codes"] == ["set_unroutable"]
    # the folder named where it is kept (as the command line names it), its source beside
    assert refused["reason"] == (
        f"{refused['kept_at']} cannot be given to one certificate set: it fits no set: "
        "not 'replication' (replication): it is not for TLS Web Server and Client "
        "Authentication; not 'web' (server): it lacks www.example.com."
    )
    assert refused["source"] == str(incoming / "x")
    assert "set" not in refused  # refused by the router of incoming/, for no set
    kept = Path(refused["kept_at"])
    assert kept.parent == keys / "rejected"
    assert json.loads((kept / "reason.json").read_text())["problems"][0]["code"] == (
        "set_unroutable"
    )
    assert sorted(os.listdir(node.state / "sets" / "web" / "generations")) == [
        "000001",
        "000002",
        "000003",
    ]
    assert _leaf_fp(web_live) == web2
    assert node.restarts() == 3
    # status: each set with its own store's generation; the sets' folders are not "waiting"
    out = _status(node, "--no-probe")
    assert [(s["name"], s["generation"], s["managed"]) for s in out["sets"]] == [
        ("replication", "000002", True),
        ("web", "000003", True),
    ]
    assert out["waiting"] == []
    assert [f["code"] for f in out["findings"]] == ["refused"]  # the folder that fit no set
    web_only = _status(node, "--no-probe", "--set", "web")
    assert [s["name"] for s in web_only["sets"]] == ["web", "replication"]
    # a folder that fit no set is every set's concern (its reason.json names no set); a
    # refusal for the web set is the web set's only
    assert [f["code"] for f in web_only["findings"]] == ["refused"]
    assert [r["detail"].split(",")[0] for r in web_only["refusals"]] == [
        "cert_unreadable",
        "set_unroutable",
    ]
    assert [r["detail"] for r in out["refusals"]] == ["set_unroutable"]


def test_folders_the_router_refuses_are_kept_to_the_retention(
    two_sets: tuple[Node, devca.Issued],
) -> None:
    """A folder that fits no set is filed in rejected/ by the router, outside any install:
    the retention applies then too (not only at the next install of a set), so a stream of
    them does not pile up keys past ``retention.keep``."""
    node, web_ca = two_sets
    node.config_data["retention"] = {"keep": 1, "days": None}
    incoming = node.root / "keys" / "incoming"
    rejected = node.root / "keys" / "rejected"
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        for i in range(3):
            folder, _ = _web_set(node.tmp, f"x{i}", web_ca, ["other.example.com"])
            _drop(incoming, f"x{i}", folder)
            d.wait_for("certd.set_refused", count=i + 1)
        d.wait_for("certd.sources_pruned", count=2)
        assert d.stop() == 0
    assert d.named("certd.set_installed") == []
    kept = [p.name for p in rejected.iterdir() if not p.name.startswith(".")]
    assert [name.split("-", 1)[1] for name in kept] == ["x2"]
    pruned = [n for e in d.named("certd.sources_pruned") for n in e["removed"]]
    assert sorted(n.split("-", 1)[1] for n in pruned) == ["x0", "x1"]


def _status(node: Node, *args: str) -> dict[str, Any]:
    return status_json(node, *args)[1]


def test_a_set_whose_name_is_no_folder_name_is_not_managed(
    two_sets: tuple[Node, devca.Issued],
) -> None:
    """A set name that cannot be a folder under incoming/ is said once, never used as a path;
    the primary set is managed as before."""
    node, _ = two_sets
    config_path = node.root / "harperdb-config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["tls"][1]["name"] = "../escape"
    config_path.write_text(yaml.safe_dump(config))
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        unmanaged = d.wait_for("certd.set_unmanaged")
        assert d.stop() == 0
    assert _keys(unmanaged, "set", "reason") == {
        "set": "../escape",
        "reason": "its name is not usable as a folder name under incoming/",
    }
    assert d.named("certd.set_managed") == []
    assert not (node.root / "keys" / "escape").exists()


def test_reload_follows_the_sets_and_says_new_hazards(
    two_sets: tuple[Node, devca.Issued],
) -> None:
    """SIGHUP after the web set's entry lost its ``name`` and its CN became the node name:
    the hazard is said at reload, not only at start, and the set is managed under its new
    name (its role, ``server``)."""
    node, web_ca = two_sets
    config_path = node.root / "harperdb-config.yaml"
    config = yaml.safe_load(config_path.read_text())
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        assert d.named("certd.layout_hazard") == []
        collide = devca.make_leaf(web_ca, "nodea", dns=["nodea"], eku=SERVER_ONLY)
        devca.write_set(node.root / "keys" / "web", collide, [web_ca])
        del config["tls"][1]["name"]
        config_path.write_text(yaml.safe_dump(config))
        d.signal(signal.SIGHUP)
        d.wait_for("certd.config_reloaded")
        hazards = d.named("certd.layout_hazard")
        assert d.stop() == 0
    assert [h["code"] for h in hazards] == ["record_name_collision"]
    assert [m["set"] for m in d.named("certd.set_managed")] == ["web", "server"]
    assert [m["incoming"] for m in d.named("certd.set_managed")] == [
        str(node.root / "keys" / "incoming" / n) for n in ("web", "server")
    ]


def test_each_set_renews_with_its_own_command(two_sets: tuple[Node, devca.Issued]) -> None:
    """``sets: [{name: web, renew: ...}]``: the web set's renewal command runs when the web
    leaf is due, its result arrives in incoming/web/ and is installed there; the replication
    set (no top-level ``renew``) runs nothing."""
    node, web_ca = two_sets
    folder, renewed = _web_set(node.tmp, "renewed", web_ca, [WEB])
    target = node.root / "keys" / "incoming" / "web"
    script = (
        "import shutil, os, sys\n"
        "src, dst = sys.argv[1], sys.argv[2]\n"
        "shutil.copytree(src, dst + '/.r')\n"
        "os.rename(dst + '/.r', dst + '/renewed')\n"
        "print('renewed the web set')\n"
    )
    node.config_data["sets"] = [
        {
            "name": "web",
            "renew": {
                "command": [sys.executable, "-c", script, str(folder), str(target)],
                "before_days": 200,
                "arrival_seconds": 20,
            },
        }
    ]
    with DaemonProc(node) as d:
        started = d.wait_for("certd.renewal_started")
        installed = d.wait_for("certd.set_installed")
        succeeded = d.wait_for("certd.renewal_succeeded")
        assert d.stop() == 0
    assert started["set"] == "web"
    assert (installed["set"], installed["fingerprint"]) == ("web", renewed)
    assert (succeeded["set"], succeeded["fingerprint"]) == ("web", renewed)
    assert succeeded["output"].strip() == "renewed the web set"
    assert len(d.named("certd.renewal_started")) == 1
    assert _leaf_fp(node.root / "keys" / "web" / "certificate.pem") == renewed


def _public_layout(tmp_path: Path) -> tuple[Node, devca.Issued, dict[str, str]]:
    """The issue's layout: the replication set (nodefix) and a public set ``public`` (full
    chain + key, no CA file) from a throw-away root named by ``SSL_CERT_FILE`` in ``env``."""
    node = make_node(tmp_path, extra={"watch": {"settle_seconds": 0.3}})
    root = devca.make_ca("Throwaway Public Root R9")
    issuing = devca.make_ca("Throwaway Public E9", parent=root)
    add_public_set(node, issuing, WEB)
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(root.cert_pem)
    (tmp_path / "no-certs").mkdir()
    env = {"SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(tmp_path / "no-certs")}
    return node, issuing, env


def test_a_public_set_without_ca_file_is_routed_and_installed(tmp_path: Path) -> None:
    """The issue's layout: a public set (full chain + key, no CA file) beside the
    replication set.  A public certificate dropped straight in incoming/ goes to it (it has
    no CA file, it is server-only, it keeps the public names), its chain checked against the
    system trust store the daemon was given (``SSL_CERT_FILE``: a throw-away root)."""
    node, issuing, env = _public_layout(tmp_path)
    keys = node.root / "keys" / "public"
    renewed = devca.make_leaf(issuing, WEB, dns=[WEB, "api.example.com"], eku=SERVER_ONLY)
    src = tmp_path / "src" / "le"
    src.mkdir(parents=True)
    (src / "fullchain.pem").write_bytes(renewed.cert_pem + issuing.cert_pem)
    devca.write_private(src / "privkey.pem", renewed.key_pem)
    replication_before = node.live.cert.read_bytes()
    with DaemonProc(node, env=env) as d:
        managed = d.wait_for("certd.set_managed")
        _drop(node.root / "keys" / "incoming", "le", src)
        routed = d.wait_for("certd.set_routed")
        installed = d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert _keys(managed, "set", "role", "valid") == {
        "set": "public",
        "role": "server",
        "valid": True,
    }
    assert (routed["set"], routed["reason"]) == ("public", "fits set 'public' only")
    assert (installed["set"], installed["fingerprint"]) == ("public", _fp(renewed))
    assert _leaf_fp(keys / "fullchain.pem") == _fp(renewed)
    assert (keys / "fullchain.pem").read_bytes() == renewed.cert_pem + issuing.cert_pem
    assert node.live.cert.read_bytes() == replication_before
    assert sorted(os.listdir(node.state / "sets" / "public" / "generations" / "000002")) == [
        "certificate.pem",
        "meta.json",
        "privateKey.pem",
    ]


def test_install_without_set_names_the_set_a_folder_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``install`` without ``--set`` on a two-set node judges for the replication set; a
    public folder is refused for it, and the output names the set it fits."""
    from harper_certd.cli import main

    node, issuing, env = _public_layout(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    leaf = devca.make_leaf(issuing, WEB, dns=[WEB], eku=SERVER_ONLY)
    src = tmp_path / "src" / "le"
    src.mkdir(parents=True)
    (src / "fullchain.pem").write_bytes(leaf.cert_pem + issuing.cert_pem)
    devca.write_private(src / "privkey.pem", leaf.key_pem)
    config = str(node.write_config())
    assert main(["install", str(src), "--config", config, "--dry-run"]) == 1
    assert capsys.readouterr().err == (
        f"note: {src} fits set 'public', not 'replication': "
        f"harper-certd install --set public {src}\n"
    )
    assert main(["install", str(src), "--config", config, "--set", "public", "--dry-run"]) == 0
    assert capsys.readouterr().err == ""
