"""A set without a CA file (a public certificate: full chain + key), installed per set.

``install --set public``, ``rollback --set public`` and ``status --set public`` on the
two-set node of the issue: its store in ``<state>/sets/public/`` holds two files per
generation, its chain is judged against the system trust store, and the replication set
is never touched. The store is a throw-away root in a bundle named by ``SSL_CERT_FILE``
(with an empty ``SSL_CERT_DIR``) or by ``harper.trust_store``, never the machine's.
Crash tests for this set are in ``tests/test_sets_crash.py``.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID

from harper_certd import devca, roles
from harper_certd.cli import main
from harper_certd.config import parse_config
from harper_certd.install.context import build_context
from harper_certd.install.live import handle_live_change
from harper_certd.roles import SetPaths
from harper_certd.source import SourceRefused, read_source
from nodefix import Node, make_node

PUBLIC = "public"
HOST = "www.example.com"
SERVER_ONLY = [ExtendedKeyUsageOID.SERVER_AUTH]


@dataclass
class PublicNode:
    node: Node
    root: devca.Issued  # the throw-away "public" root, the only one in the bundle
    issuer: devca.Issued  # its intermediate, which signs the public leaves
    bundle: Path  # the trust store: a PEM bundle holding ``root`` only
    live: SetPaths  # fullchain.pem, privkey.pem, no CA file

    @property
    def state(self) -> Path:
        return self.node.state / "sets" / PUBLIC

    @property
    def config(self) -> Path:
        return self.node.write_config()

    def leaf(self, **kwargs: Any) -> devca.Issued:
        kwargs.setdefault("dns", [HOST])
        kwargs.setdefault("eku", SERVER_ONLY)
        return devca.make_leaf(kwargs.pop("issuer", self.issuer), HOST, **kwargs)

    def source(self, name: str, leaf: devca.Issued | None = None) -> Path:
        """A new public set in Harper's names (full chain, key; no CA file)."""
        leaf = leaf or self.leaf()
        folder = self.node.tmp / "src" / name
        folder.mkdir(parents=True)
        (folder / "certificate.pem").write_bytes(leaf.cert_pem + self.issuer.cert_pem)
        devca.write_private(folder / "privateKey.pem", leaf.key_pem)
        return folder

    def served(self) -> str:
        return devca.fingerprint_of(devca.load_cert(self.live.cert.read_bytes()))


def public_node(tmp: Path, *, trust_store_key: bool = True) -> PublicNode:
    """A nodefix node (replication set, private CA) plus the issue's public set.

    ``trust_store_key``: the bundle is named by ``harper.trust_store``; otherwise the
    caller names it with ``SSL_CERT_FILE``.
    """
    node = make_node(tmp)
    root = devca.make_ca("Throwaway Public Root R1")
    issuer = devca.make_ca("Throwaway Public E1", parent=root)
    bundle = tmp / "public-roots.pem"
    bundle.write_bytes(root.cert_pem)
    keys = node.root / "keys" / PUBLIC
    keys.mkdir(parents=True)
    live = SetPaths(keys / "fullchain.pem", keys / "privkey.pem", None)
    first = devca.make_leaf(issuer, HOST, dns=[HOST], eku=SERVER_ONLY)
    live.cert.write_bytes(first.cert_pem + issuer.cert_pem)
    devca.write_private(live.key, first.key_pem)
    path = node.root / "harperdb-config.yaml"
    tree = yaml.safe_load(path.read_text())
    tree["replication"]["enableRootCAs"] = False
    tree["http"] = {"securePort": 9926}
    tree["tls"] = [
        {**tree["tls"], "uses": ["replication"]},
        {
            "certificate": str(live.cert),
            "privateKey": str(live.key),
            "name": PUBLIC,
            "hostname": HOST,
            "uses": ["server", "operations-api"],
        },
    ]
    path.write_text(yaml.safe_dump(tree))
    if trust_store_key:
        node.config_data["harper"]["trust_store"] = str(bundle)
    return PublicNode(node, root, issuer, bundle, live)


@pytest.fixture
def env_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SSL_CERT_FILE names this test's bundle (written by ``public_node``), SSL_CERT_DIR an
    empty folder: OpenSSL's default store is the throw-away root only."""
    bundle = tmp_path / "public-roots.pem"
    (tmp_path / "empty-certs").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty-certs"))
    monkeypatch.delenv("HARPER_CERTD_CONFIG", raising=False)
    return bundle


def _replication(node: Node) -> tuple[bytes, ...]:
    return tuple(p.read_bytes() for p in (node.live.cert, node.live.key, node.ca_file))


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


def test_source_without_ca_file(tmp_path: Path) -> None:
    """Harper's two names, or a certbot lineage (fullchain.pem + privkey.pem; chain.pem is
    not a CA file); a folder with a CA file for this set, or without a key, is refused."""
    pub = public_node(tmp_path)
    trusted = {0, os.geteuid()}
    leaf = pub.leaf()
    harper_names = pub.source("harper", leaf)
    got = read_source(harper_names, trusted_uids=trusted, ca_fallback=None, ca_file=False)
    assert got.data == roles.SetBytes(leaf.cert_pem + pub.issuer.cert_pem, leaf.key_pem, b"")
    assert [n for n, _ in got.members] == ["certificate.pem", "privateKey.pem"]
    # A certbot lineage, read through live/ -> archive/.
    archive, live = tmp_path / "le" / "archive" / "www", tmp_path / "le" / "live" / "www"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (archive / "cert1.pem").write_bytes(leaf.cert_pem)
    (archive / "chain1.pem").write_bytes(pub.issuer.cert_pem)
    (archive / "fullchain1.pem").write_bytes(leaf.cert_pem + pub.issuer.cert_pem)
    devca.write_private(archive / "privkey1.pem", leaf.key_pem)
    for name in ("cert", "chain", "fullchain", "privkey"):
        (live / f"{name}.pem").symlink_to(f"../../archive/www/{name}1.pem")
    lineage = read_source(live, trusted_uids=trusted, ca_fallback=None, ca_file=False)
    assert lineage.data == got.data
    assert lineage.is_certbot_lineage
    assert [n for n, _ in lineage.members] == ["fullchain.pem", "privkey.pem"]
    # A CA file handed over for a set without one: refused by its own code.
    with_ca = pub.source("with-ca", leaf)
    (with_ca / "ca.pem").write_bytes(pub.root.cert_pem)
    with pytest.raises(SourceRefused) as refused:
        read_source(with_ca, trusted_uids=trusted, ca_fallback=None, ca_file=False)
    assert refused.value.code == "source_has_ca_file"
    assert str(refused.value).startswith(f"{with_ca} holds ca.pem, but this set has no CA file")
    no_key = pub.source("no-key", leaf)
    (no_key / "privateKey.pem").unlink()
    with pytest.raises(SourceRefused) as incomplete:
        read_source(no_key, trusted_uids=trusted, ca_fallback=None, ca_file=False)
    assert incomplete.value.code == "source_incomplete"
    message = str(incomplete.value)
    assert message.startswith(f"{no_key} holds no set in a shape known here (Harper's ")
    assert "cert-manager/Vault's tls.crt + tls.key" in message  # roles.HANDOVERS (issue 17)
    assert message.endswith("; found: certificate.pem")


def test_install_status_rollback_public_set(
    tmp_path: Path, env_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """install/status/rollback --set public, with the store named by SSL_CERT_FILE: two
    links into <state>/sets/public/current, generations of two files, one flip each way;
    the replication set's files and store untouched."""
    pub = public_node(tmp_path, trust_store_key=False)
    assert env_store == pub.bundle
    conf = str(pub.config)
    replication = _replication(pub.node)
    first = pub.served()
    new = pub.leaf()
    src = pub.source("new", new)
    assert main(["install", str(src), "--config", conf, "--set", PUBLIC, "--json"]) == 0
    out = json.loads(_out(capsys))
    assert (out["status"], out["generation"], out["previous"]) == ("installed", "000002", "000001")
    assert out["problems"] == []
    assert out["trust_store"] == f"{pub.bundle} + {tmp_path / 'empty-certs'}/"
    assert pub.served() == devca.fingerprint_of(new.cert)
    for path, name in ((pub.live.cert, "certificate.pem"), (pub.live.key, "privateKey.pem")):
        assert os.readlink(path) == str(pub.state / "current" / name)
    assert os.readlink(pub.state / "current") == "generations/000002"
    for gen in ("000001", "000002"):
        folder = pub.state / "generations" / gen
        assert sorted(p.name for p in folder.iterdir()) == [
            "certificate.pem",
            "meta.json",
            "privateKey.pem",
        ]
        assert stat.S_IMODE(os.stat(folder / "privateKey.pem").st_mode) == 0o400
        meta = json.loads((folder / "meta.json").read_text())
        assert sorted(meta["digests"]) == ["cert", "key"]
    assert (pub.live.key.parent / "ca.pem").exists() is False
    assert _replication(pub.node) == replication
    assert not pub.node.live.cert.is_symlink()
    assert not (pub.node.state / "generations").exists()

    assert main(["status", "--config", conf, "--set", PUBLIC, "--json", "--no-probe"]) == 0
    status = json.loads(_out(capsys))
    assert status["current_generation"] == "000002"
    assert status["live_paths"] == {"cert": str(pub.live.cert), "key": str(pub.live.key)}
    assert status["trust_store"] == out["trust_store"]
    assert (status["live"]["valid"], status["live"]["problems"]) == (True, [])
    assert status["live"]["sha256"] == devca.fingerprint_of(new.cert)
    assert [(g["id"], g["outcome"]) for g in status["generations"]] == [
        ("000001", "adopted"),
        ("000002", "installed"),
    ]
    assert main(["status", "--config", conf, "--set", PUBLIC, "--no-probe"]) == 0
    text = _out(capsys)
    assert f"  chain checked against the system trust store: {out['trust_store']}\n" in text

    assert main(["rollback", "--config", conf, "--set", PUBLIC]) == 0
    said = _out(capsys)
    assert said.startswith(
        f"chain checked against the system trust store: {out['trust_store']}\n"
        "generation 000001 is live again"
    )
    assert said.count("\n") == 2
    assert pub.served() == first
    assert os.readlink(pub.state / "current") == "generations/000001"
    assert _replication(pub.node) == replication
    # The same set again: the live one already.
    assert main(["install", str(pub.source("same", new)), "--config", conf, "--set", PUBLIC]) == 0
    assert pub.served() == devca.fingerprint_of(new.cert)
    capsys.readouterr()


def test_public_set_judged_against_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chain to a root of the store, server purpose, the set's host name: each refused by
    its code, with the store named; the live set stays."""
    pub = public_node(tmp_path)
    conf = str(pub.config)
    first = pub.served()
    other_root = devca.make_ca("Not In The Store")
    cases = {
        "other-root": (pub.leaf(issuer=other_root), {"chain_incomplete"}),
        "other-name": (pub.leaf(dns=["other.example.com"]), {"hostname_mismatch"}),
        "client-only": (pub.leaf(eku=[ExtendedKeyUsageOID.CLIENT_AUTH]), {"eku_missing"}),
    }
    for name, (leaf, codes) in cases.items():
        folder = pub.source(name, leaf)
        assert main(["install", str(folder), "--config", conf, "--set", PUBLIC, "--json"]) == 1
        out = json.loads(_out(capsys))
        assert out["status"] == "refused"
        assert {p["code"] for p in out["problems"] if p["severity"] == "error"} == codes, name
        assert out["trust_store"] == str(pub.bundle)
        assert pub.served() == first
    assert (
        main(["install", "--dry-run", str(pub.source("fine")), "--config", conf, "--set", PUBLIC])
        == 0
    )
    assert _out(capsys) == (
        f"chain checked against the system trust store: {pub.bundle}\n"
        "Dry run: harper-certd would install; nothing was changed.\n"
    )


def test_two_file_store_retention_and_change_by_hand(tmp_path: Path) -> None:
    """Retention keeps the newest generations of two files; a set written by hand through
    a live link is taken as a generation of its own, and the generation it was written
    through is put back from its pristine copy (issue 17 item 5), its bytes intact."""
    pub = public_node(tmp_path)
    pub.node.config_data["generations_kept"] = 3
    config = parse_config(pub.node.config_data)
    from harper_certd.install.pipeline import install

    for n in range(4):
        outcome = install(build_context(config, set_name=PUBLIC), pub.source(f"s{n}"))
        assert outcome.status == "installed", outcome.problems
    ctx = build_context(config, set_name=PUBLIC)
    assert [g.id for g in ctx.store.generations()] == ["000003", "000004", "000005"]
    assert [ctx.store.intact(g) for g in ctx.store.generations()] == [None, None, None]
    by_hand = pub.leaf()
    os.chmod(pub.live.cert, 0o644)  # root writes through anyway; the owner must first
    pub.live.cert.write_bytes(by_hand.cert_pem + pub.issuer.cert_pem)
    pub.live.key.chmod(0o600)
    pub.live.key.write_bytes(by_hand.key_pem)
    handle_live_change(ctx)
    gens = ctx.store.generations()
    assert [(g.id, g.meta["outcome"]) for g in gens[-2:]] == [
        ("000005", "installed"),
        ("000006", "adopted"),
    ]
    assert "repaired" in gens[-2].meta
    assert gens[-2].meta["damage"]
    assert ctx.store.intact(gens[-2]) is None
    assert gens[-2].read().cert != by_hand.cert_pem + pub.issuer.cert_pem
    assert pub.served() == devca.fingerprint_of(by_hand.cert)
    assert ctx.store.intact(gens[-1]) is None
    assert os.readlink(pub.state / "current") == "generations/000006"


def test_install_public_set_from_a_certbot_lineage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``install --set public /etc/letsencrypt/live/NAME``: fullchain.pem + privkey.pem are
    installed (chain.pem is not a CA file); certbot's folder is never moved, the members
    read are kept in processed/ (0600)."""
    pub = public_node(tmp_path)
    leaf = pub.leaf()
    archive, live = tmp_path / "le" / "archive" / "www", tmp_path / "le" / "live" / "www"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    (archive / "chain1.pem").write_bytes(pub.issuer.cert_pem)
    (archive / "fullchain1.pem").write_bytes(leaf.cert_pem + pub.issuer.cert_pem)
    devca.write_private(archive / "privkey1.pem", leaf.key_pem)
    for name in ("chain", "fullchain", "privkey"):
        (live / f"{name}.pem").symlink_to(f"../../archive/www/{name}1.pem")
    conf = str(pub.config)
    assert main(["install", str(live), "--config", conf, "--set", PUBLIC, "--json"]) == 0
    out = json.loads(_out(capsys))
    assert (out["status"], out["generation"]) == ("installed", "000002")
    assert pub.served() == devca.fingerprint_of(leaf.cert)
    assert pub.live.cert.read_bytes() == leaf.cert_pem + pub.issuer.cert_pem
    assert sorted(p.name for p in live.iterdir()) == ["chain.pem", "fullchain.pem", "privkey.pem"]
    kept = Path(out["kept_at"])
    assert sorted(p.name for p in kept.iterdir()) == ["fullchain.pem", "privkey.pem"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in kept.iterdir()} == {0o600}


def test_node_whose_only_set_has_no_ca_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One public set and nothing else: ``--set public`` manages it (store in
    <state>/sets/public/); without ``--set`` the refusal says why, as before."""
    pub = public_node(tmp_path)
    path = pub.node.root / "harperdb-config.yaml"
    tree = yaml.safe_load(path.read_text())
    tree["tls"] = tree["tls"][1:]
    path.write_text(yaml.safe_dump(tree))
    conf = str(pub.config)
    new = pub.leaf()
    assert main(["install", str(pub.source("new", new)), "--config", conf, "--set", PUBLIC]) == 0
    assert pub.served() == devca.fingerprint_of(new.cert)
    assert os.readlink(pub.live.cert) == str(pub.state / "current" / "certificate.pem")
    capsys.readouterr()
    assert main(["status", "--config", conf, "--no-probe"]) == 2
    assert "names no certificate files to manage" in capsys.readouterr().err
