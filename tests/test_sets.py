"""Every certificate set Harper uses, in its role (issue 11): discovery, hazards, plan.

Real certificates (devca), real files, a throw-away "public" root in a bundle named by
``SSL_CERT_FILE`` (never the machine's store), the real CLI. Real-Harper evidence is in
``tests/test_sets_harper.py``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from daemonfix import DaemonProc
from harper_certd import devca, discover, hazards, load, routing, trust
from harper_certd.cli import main
from harper_certd.config import parse_config
from harper_certd.harper.apply import make_harper
from harper_certd.harper.probe import ServedStreak
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_certd.roles import Role
from harper_certd.trust import system_store
from nodefix import Node, add_public_set, make_node, run_cli, status_json

NODE = "node1.example.com"
SERVER_ONLY = [ExtendedKeyUsageOID.SERVER_AUTH]


@dataclass
class Pki:
    private: devca.Issued
    public_root: devca.Issued
    public_int: devca.Issued


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = devca.make_ca("Throwaway Public Root R1")
    return Pki(devca.make_ca("Cluster CA"), root, devca.make_ca("Throwaway Public E1", parent=root))


@pytest.fixture
def store(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system trust store for this test: a bundle holding only the throw-away root."""
    bundle = tmp_path / "public-roots.pem"
    bundle.write_bytes(pki.public_root.cert_pem)
    (tmp_path / "empty-certs").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty-certs"))
    monkeypatch.delenv("HARPER_CERTD_CONFIG", raising=False)
    return bundle


def write_layout(
    root: Path,
    pki: Pki,
    *,
    public_cn: str = "www.example.com",
    public_name: str | None = "public",
    uses: bool = True,
    public_ca: bytes | None = None,
    replication_eku: list[Any] | None = None,
    enable_root_cas: bool | None = False,
    replication_ca: devca.Issued | None = None,
) -> Path:
    """The issue's two-set layout in ``root``, with one knob per hazard."""
    keys = root / "keys"
    cluster = devca.make_leaf(
        pki.private, NODE, dns=[NODE], eku=replication_eku or list(devca.CLUSTER_EKU)
    )
    devca.write_set(keys / "cluster", cluster, [replication_ca or pki.private])
    public = devca.make_leaf(pki.public_int, public_cn, dns=[public_cn, NODE], eku=SERVER_ONLY)
    (keys / "public").mkdir(parents=True)
    (keys / "public" / "fullchain.pem").write_bytes(public.cert_pem + pki.public_int.cert_pem)
    devca.write_private(keys / "public" / "privkey.pem", public.key_pem)
    first: dict[str, Any] = {
        "certificate": str(keys / "cluster" / "certificate.pem"),
        "certificateAuthority": str(keys / "cluster" / "ca.pem"),
        "privateKey": str(keys / "cluster" / "privateKey.pem"),
    }
    second: dict[str, Any] = {
        "certificate": str(keys / "public" / "fullchain.pem"),
        "privateKey": str(keys / "public" / "privkey.pem"),
    }
    if public_ca is not None:
        (keys / "public" / "chain.pem").write_bytes(public_ca)
        second["certificateAuthority"] = str(keys / "public" / "chain.pem")
    if uses:
        first["uses"] = ["replication"]
        second["uses"] = ["server", "operations-api"]
    if public_name:
        second["name"] = public_name
    replication: dict[str, Any] = {
        "hostname": NODE,
        "url": f"wss://{NODE}:9933",
        "securePort": 9933,
    }
    if enable_root_cas is not None:
        replication["enableRootCAs"] = enable_root_cas
    config = {
        "replication": replication,
        "http": {"securePort": 9926},
        "operationsApi": {"network": {"securePort": 9925}},
        "tls": [first, second],
    }
    (root / "harperdb-config.yaml").write_text(yaml.safe_dump(config))
    return root


def _check_json(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    status = main(["check", "--harper-root", str(root), "--json"])
    return status, json.loads(capsys.readouterr().out)


def _codes(out: dict[str, Any]) -> set[str]:
    return {h["code"] for h in out["hazards"]}


def test_two_sets_discovered_in_their_roles(tmp_path: Path, pki: Pki, store: Path) -> None:
    """The issue's layout: two sets, named, in their roles, on their ports."""
    root = write_layout(tmp_path / "hdb", pki)
    config = discover.load_config(root)
    sets = config.sets()
    assert [(s.name, s.role, dict(s.ports)) for s in sets] == [
        ("replication", Role.REPLICATION, {"replication": 9933}),
        ("public", Role.SERVER, {"http": 9926, "operationsApi": 9925}),
    ]
    assert sets[0].purpose.value == "cluster"
    assert sets[1].purpose.value == "server"
    assert sets[1].first.cert_key == (
        root / "keys" / "public" / "fullchain.pem",
        root / "keys" / "public" / "privkey.pem",
    )
    assert sets[1].first.paths is None  # not a "kept in Harper's database" entry
    # The daemon's single-set path still manages the replication set only.
    assert [e.where for e in config.file_entries()] == ["tls[0]"]


def test_check_validates_public_set_against_system_store(
    tmp_path: Path, pki: Pki, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The public set chains to the throw-away root of SSL_CERT_FILE; output names the store."""
    root = write_layout(tmp_path / "hdb", pki)
    status, out = _check_json(root, capsys)
    assert status == 0, out
    public = out["sets"][1]
    assert (public["set"], public["role"], public["purpose"]) == ("public", "server", "server")
    assert public["files"]["certificateAuthority"] is None
    assert str(store) in public["trust_store"]
    assert public["report"]["valid"] is True
    assert [c["subject"] for c in public["report"]["ca_file"]] == ["CN=Throwaway Public Root R1"]
    assert 80 < public["days_left"] < 100
    assert out["hazards"] == []
    # Text output: which store, role and ports.
    assert main(["check", "--harper-root", str(root)]) == 0
    text = capsys.readouterr().out
    assert f"system trust store: {store}" in text
    assert "set 'public' (server)" in text
    assert "ports     http 9926, operationsApi 9925" in text


def test_public_set_not_in_store_is_refused(
    tmp_path: Path, pki: Pki, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the throw-away root out of the store, the public chain reaches no root."""
    root = write_layout(tmp_path / "hdb", pki)
    store.write_bytes(devca.make_ca("Some Other Root").cert_pem)
    status, out = _check_json(root, capsys)
    assert status == 1
    codes = {p["code"] for p in out["sets"][1]["report"]["problems"]}
    assert codes == {"chain_incomplete"}


def test_trust_store_config_key_overrides_env(
    tmp_path: Path, pki: Pki, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """harper.trust_store names another bundle; SSL_CERT_FILE is then not read."""
    root = write_layout(tmp_path / "hdb", pki)
    other = tmp_path / "other.pem"
    other.write_bytes(devca.make_ca("Unrelated").cert_pem)
    conf = tmp_path / "certd.yaml"
    conf.write_text(yaml.safe_dump({"harper": {"root": str(root), "trust_store": str(other)}}))
    assert main(["check", "--config", str(conf), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["sets"][1]["trust_store"] == str(other)
    assert system_store(other).where == str(other)
    assert len(system_store(None).certs) == 1  # the env's bundle


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"public_cn": NODE, "public_name": None}, {"record_name_collision"}),
        ({"uses": False}, {"tls_uses_missing"}),
        ({"enable_root_cas": None}, {"enable_root_cas_on"}),
        ({"enable_root_cas": True}, {"enable_root_cas_on"}),
        ({"replication_eku": SERVER_ONLY}, {"replication_server_only"}),
    ],
    ids=["collision", "no-uses", "root-cas-default", "root-cas-true", "server-only"],
)
def test_each_hazard_on_a_config(
    tmp_path: Path,
    pki: Pki,
    store: Path,
    capsys: pytest.CaptureFixture[str],
    knobs: dict[str, Any],
    expected: set[str],
) -> None:
    """Each hazard is reported by its code alone, on an otherwise sound layout."""
    root = write_layout(tmp_path / "hdb", pki, **knobs)
    status, out = _check_json(root, capsys)
    assert _codes(out) == expected
    errors = any(h["severity"] == "error" for h in out["hazards"])
    # Without uses the public entry is offered for replication too: its own check fails.
    assert status == (1 if errors or knobs == {"uses": False} else 0)


def test_public_root_in_ca_file(
    tmp_path: Path, pki: Pki, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A public root in the public entry's CA file widens replication trust: refused."""
    root = write_layout(tmp_path / "hdb", pki, public_ca=pki.public_root.cert_pem)
    status, out = _check_json(root, capsys)
    assert status == 1
    assert _codes(out) == {"public_root_in_ca_file"}
    assert "Throwaway Public Root R1" in out["hazards"][0]["message"]
    # The same root, when the cluster itself is on a public CA, is not a widening.
    root2 = write_layout(
        tmp_path / "hdb2", pki, public_ca=pki.public_root.cert_pem, replication_ca=pki.public_root
    )
    status, out = _check_json(root2, capsys)
    assert "public_root_in_ca_file" not in _codes(out)


def test_replication_name_missing(tmp_path: Path, pki: Pki, store: Path) -> None:
    root = write_layout(tmp_path / "hdb", pki)
    leaf = devca.make_leaf(pki.private, "other", dns=["other"])
    devca.write_set(root / "keys" / "cluster", leaf, [pki.private])
    config = discover.load_config(root)
    found = {p.code for p in hazards.find(config, system_store())}
    assert found == {"replication_name_missing"}


def test_collision_needs_no_name_and_a_distinct_set(tmp_path: Path, pki: Pki, store: Path) -> None:
    """CN == node name is fine with a name, and on a one-set node (it is the replication set)."""
    named = write_layout(tmp_path / "a", pki, public_cn=NODE, public_name="public")
    assert hazards.find(discover.load_config(named), system_store()) == ()
    # First SAN counts when there is no CN (Harper's record name rule).
    leaf = devca.make_leaf(pki.private, NODE, dns=[NODE])
    assert hazards.record_name(leaf.cert) == NODE


def test_for_candidate_reports_only_new_hazards(tmp_path: Path, pki: Pki, store: Path) -> None:
    """An install whose CA file brings a public root into replication trust is refused."""
    root = write_layout(tmp_path / "hdb", pki)
    config = discover.load_config(root)
    cert_path = root / "keys" / "cluster" / "certificate.pem"
    cert = cert_path.read_bytes()
    same = hazards.for_candidate(config, system_store, cert_path, cert, pki.private.cert_pem)
    assert same == ()
    widened = hazards.for_candidate(
        config, system_store, cert_path, cert, pki.private.cert_pem + pki.public_root.cert_pem
    )
    assert [p.code for p in widened] == ["public_root_in_ca_file"]


def test_for_candidate_judges_again_for_another_store_or_layout(
    tmp_path: Path, pki: Pki, store: Path
) -> None:
    """The hazards of a layout judged before are reused (the next install's live layout is
    the last candidate's) only for the same reading, the same certificates and the same
    trust store: a store without the public root makes the same candidate no hazard."""
    root = write_layout(tmp_path / "hdb", pki)
    config = discover.load_config(root)
    cert_path = root / "keys" / "cluster" / "certificate.pem"
    cert = cert_path.read_bytes()
    widening = pki.private.cert_pem + pki.public_root.cert_pem
    public = trust.TrustStore("public", (pki.public_root.cert.public_bytes(Encoding.DER),))
    empty = trust.TrustStore("empty", ())
    for _ in range(2):  # the second time from the remembered judgements
        found = hazards.for_candidate(config, public, cert_path, cert, widening)
        assert [p.code for p in found] == ["public_root_in_ca_file"]
        assert hazards.for_candidate(config, empty, cert_path, cert, widening) == ()
    # The candidate installed: its layout is the live one, and its hazard no longer new.
    (root / "keys" / "cluster" / "ca.pem").write_bytes(widening)
    again = discover.load_config(root)
    assert hazards.for_candidate(again, public, cert_path, cert, widening) == ()


def test_files_a_swap_wrote_are_not_read_back(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hazards.remember_written``: the certificates a swap just wrote are known under the
    file's stamp (the next install and the next status read nothing of them back); a file
    changed after that has another stamp and is read again."""
    path = tmp_path / "certificate.pem"
    first = devca.make_leaf(pki.private, NODE, dns=[NODE])
    second = devca.make_leaf(pki.private, NODE, dns=[NODE])
    path.write_bytes(first.cert_pem)
    reads: list[Path] = []
    real = load.read_bounded

    def counted(where: Path, *, limit: int = load.MAX_FILE_BYTES) -> bytes:
        reads.append(where)
        return real(where, limit=limit)

    monkeypatch.setattr(load, "read_bounded", counted)
    hazards.remember_written(path, first.cert_pem)
    assert hazards.certificates_at(path) == (first.cert,)
    assert reads == []
    os.utime(path, ns=(1, 1))  # the same bytes, another stamp: read again
    assert hazards.certificates_at(path) == (first.cert,)
    assert reads == [path]
    path.write_bytes(second.cert_pem)  # changed in place
    assert hazards.certificates_at(path) == (second.cert,)
    assert reads == [path, path]
    hazards.remember_written(tmp_path / "missing.pem", first.cert_pem)  # no file: nothing
    assert hazards.certificates_at(tmp_path / "missing.pem") == ()


def test_plan_for_a_one_public_set_node(
    tmp_path: Path, pki: Pki, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check --plan: the two-set layout, and what the private CA must issue."""
    root = tmp_path / "hdb"
    keys = root / "keys"
    public = devca.make_leaf(pki.public_int, NODE, dns=[NODE], eku=SERVER_ONLY)
    keys.mkdir(parents=True)
    (keys / "fullchain.pem").write_bytes(public.cert_pem + pki.public_int.cert_pem)
    devca.write_private(keys / "privkey.pem", public.key_pem)
    config = {
        "replication": {"hostname": NODE, "url": "wss://10.0.0.5:9933", "securePort": 9933},
        "tls": {
            "certificate": str(keys / "fullchain.pem"),
            "privateKey": str(keys / "privkey.pem"),
        },
    }
    (root / "harperdb-config.yaml").write_text(yaml.safe_dump(config))
    # Today: the one public set is the replication set: refused for it.
    status, out = _check_json(root, capsys)
    assert status == 1
    assert _codes(out) == {"replication_server_only"}
    assert main(["check", "--harper-root", str(root), "--plan"]) == 0
    text = capsys.readouterr().out
    assert f"subject       CN={NODE}" in text
    assert f"SAN           DNS:{NODE}, IP:10.0.0.5" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    snippet = "\n".join(
        line[5:] for line in text.splitlines() if line.startswith("     ") and ":" in line
    )
    assert "name: public" in snippet
    assert "enableRootCAs: false" in snippet
    # Apply the plan (files the CA issued, the printed tls list): check is then clean.
    start = text.index("3. In harperdb-config.yaml:")
    block = text[start:].split("\n   'name: public'")[0].split("\n", 1)[1]
    planned = yaml.safe_load("\n".join(line[5:] for line in block.splitlines()))
    cluster = devca.make_leaf(pki.private, NODE, dns=[NODE], ips=["10.0.0.5"])
    devca.write_set(keys / "cluster", cluster, [pki.private])
    (root / "harperdb-config.yaml").write_text(yaml.safe_dump(planned))
    status, out = _check_json(root, capsys)
    assert (status, out["hazards"]) == (0, []), out
    assert [s["set"] for s in out["sets"]] == ["replication", "public"]
    assert main(["check", "--harper-root", str(root), "--plan"]) == 0
    assert "already runs two sets" in capsys.readouterr().out


def test_store_reads_hashed_dir_and_ignores_noise(tmp_path: Path, pki: Pki) -> None:
    """SSL_CERT_DIR: a root filed under its subject's hash is read, other files are not (as
    OpenSSL looks up)."""
    d = tmp_path / "certs"
    d.mkdir()
    hashed = trust.subject_hash(pki.public_root.cert.subject.public_bytes())
    (d / f"{hashed:08x}.0").write_bytes(pki.public_root.cert_pem)
    (d / "README").write_bytes(pki.private.cert_pem)
    s = system_store(None, {"SSL_CERT_FILE": str(tmp_path / "none.pem"), "SSL_CERT_DIR": str(d)})
    assert s.contains(pki.public_root.cert)
    assert not s.contains(pki.private.cert)
    assert s.issuers_of([pki.public_int.cert]) == (pki.public_root.cert,)


def _add_public_set(node: Node, pki: Pki, **kwargs: Any) -> dict[str, Any]:
    """Turn a nodefix node (one cluster set for nodea) into the two-set layout."""
    return add_public_set(node, pki.public_int, **kwargs)


def test_status_shows_every_set(tmp_path: Path, pki: Pki, store: Path) -> None:
    """status --json: the managed replication set and the public set, role, ports, days."""
    node = make_node(tmp_path)
    _add_public_set(node, pki)
    _, data = status_json(node)
    sets = [
        (s["name"], s["harper_role"], s["ports"], s["managed"], s["valid"]) for s in data["sets"]
    ]
    assert sets == [
        ("replication", "replication", {"replication": 9933}, True, True),
        ("public", "server", {"http": 9926}, True, True),
    ]
    assert [s["generation"] for s in data["sets"]] == [None, None]  # no store written yet
    assert data["sets"][1]["next_renewal"] is None  # no sets[].renew for it
    assert 89 < data["sets"][1]["days_left"] <= 90
    assert [c["role"] for c in data["sets"][1]["certificates"]] == ["leaf", "intermediate", "ca"]
    assert not [f for f in data["findings"] if f["code"] in ("layout_hazard", "live_invalid")]
    text = run_cli("status", "--no-probe", "--config", str(node.write_config())).stdout
    assert "set public (server; http 9926): Harper not checked" in text
    assert "next renewal None" not in text


def test_status_reports_layout_hazard(tmp_path: Path, pki: Pki, store: Path) -> None:
    """A public root in a CA file shows in status as a critical finding, by its code."""
    node = make_node(tmp_path)
    config = _add_public_set(node, pki)
    ca = node.root / "keys" / "public" / "chain.pem"
    ca.write_bytes(pki.public_root.cert_pem)
    config["tls"][1]["certificateAuthority"] = str(ca)
    (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(config))
    _, data = status_json(node)
    hazard = [f for f in data["findings"] if f["code"] == "layout_hazard"]
    assert len(hazard) == 1
    assert hazard[0]["message"].startswith("public_root_in_ca_file:")
    assert data["health"] == "critical"


def test_install_refused_when_it_would_widen_replication_trust(
    tmp_path: Path, pki: Pki, store: Path
) -> None:
    """The daemon's install path refuses a replication set whose CA file adds a public root:
    nothing changes; the same set without that root installs."""
    node = make_node(tmp_path)
    before = node.live_fingerprint()
    wide = node.source("wide", cas=[node.ca, pki.public_root])
    outcome = install(build_context(node.config), wide)
    assert outcome.status == "refused"
    assert [p.code for p in outcome.problems if p.severity.value == "error"] == [
        "public_root_in_ca_file"
    ]
    assert node.live_fingerprint() == before
    assert node.restarts() == 0
    ok = install(build_context(node.config), node.source("ok"))
    assert ok.status == "installed", ok.problems


def test_served_needs_consecutive_matches_over_300_ms() -> None:
    """One matching handshake is not "served": a rebuild blip (another set's certificate
    for 10-60 ms) starts over; three matches spanning 0.3 s are."""
    streak = ServedStreak()
    assert streak.see(True, 0.0) is False
    assert streak.see(True, 0.1) is False
    assert streak.see(False, 0.15) is False  # the other set's certificate, for one probe
    assert streak.see(True, 0.2) is False
    assert streak.see(True, 0.3) is False
    assert streak.see(True, 0.4) is False  # three in a row, but only 0.2 s
    assert streak.see(True, 0.5) is True
    fast = ServedStreak()
    assert [fast.see(True, t) for t in (0.0, 0.01, 0.02)] == [False, False, False]
    assert fast.wait(0.5) == pytest.approx(0.15)  # rounds come faster while building
    assert ServedStreak().wait(0.5) == 0.5


def test_replication_set_is_verified_on_its_own_port_only(
    tmp_path: Path, pki: Pki, store: Path
) -> None:
    """On the two-set layout the HTTP port serves the public set: the replication set is
    verified on the replication port only (else every rotation would be rolled back)."""
    root = write_layout(tmp_path / "hdb", pki)
    config = discover.load_config(root)
    harper = make_harper(parse_config({"harper": {"root": str(root)}}), config, env={})
    assert dict(harper.ports) == {"replication": 9933}
    one = tmp_path / "one"
    node = make_node(one)
    path = node.root / "harperdb-config.yaml"
    path.write_text(
        yaml.safe_dump({**yaml.safe_load(path.read_text()), "http": {"securePort": 9926}})
    )
    # One set for everything (no uses): it is served, and verified, on every port.
    single = make_harper(node.config, discover.load_config(node.root), env={})
    assert dict(single.ports) == {"replication": 9933, "http": 9926}


def test_routing_of_a_folder_dropped_in_incoming(tmp_path: Path, pki: Pki, store: Path) -> None:
    """A server-only certificate for the public names goes to the public set, a cluster
    certificate for the node name to the replication set; the rest is refused by reason."""
    root = write_layout(tmp_path / "hdb", pki, public_cn="www.example.com")
    sets = discover.load_config(root).sets()
    live = {s.name: hazards.read_material(s) for s in sets}

    def go(leaf: devca.Issued, *, ca: bool, explicit: str | None = None) -> routing.Routed:
        return routing.route(
            sets, live, leaf.cert, has_ca_file=ca, node_name=NODE, explicit=explicit
        )

    public = devca.make_leaf(
        pki.public_int, "www.example.com", dns=["www.example.com", NODE], eku=SERVER_ONLY
    )
    cluster = devca.make_leaf(pki.private, NODE, dns=[NODE])
    assert go(public, ca=False).set_name == "public"
    assert go(cluster, ca=True).set_name == "replication"
    # A cluster certificate without CA file: fits neither (kind, then EKU).
    refused = go(cluster, ca=False)
    assert refused.set_name is None
    assert "not 'replication' (replication): it has no CA file" in refused.reason
    assert "not 'public' (server): it lacks www.example.com" in refused.reason
    # A public renewal that dropped a name is refused, saying which.
    short = devca.make_leaf(pki.public_int, NODE, dns=[NODE], eku=SERVER_ONLY)
    assert "lacks www.example.com" in go(short, ca=False).reason
    # Placed under incoming/<set name>/: that set; an unknown name is refused.
    assert go(short, ca=False, explicit="public").set_name == "public"
    unknown = go(short, ca=False, explicit="nope")
    assert unknown == routing.Routed(None, "no set is named 'nope' (sets: replication, public)")


def test_install_and_rollback_per_set(
    tmp_path: Path, pki: Pki, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """install/rollback --set NAME: the operations-api set (own CA file) gets its own store
    in <state>/sets/<name>/; the replication set and its store are untouched. A folder with a
    CA file for the set without one, or an unknown name, is refused with the reason."""
    node = make_node(tmp_path)
    ops_ca = devca.make_ca("Ops CA")
    ops_dir = node.root / "keys" / "ops"
    devca.write_set(ops_dir, devca.make_leaf(ops_ca, "ops", dns=["ops"], eku=SERVER_ONLY), [ops_ca])
    _add_public_set(node, pki)
    path = node.root / "harperdb-config.yaml"
    tree = yaml.safe_load(path.read_text())
    tree["operationsApi"] = {
        "network": {"securePort": 9925},
        "tls": {
            "certificate": str(ops_dir / "certificate.pem"),
            "certificateAuthority": str(ops_dir / "ca.pem"),
            "privateKey": str(ops_dir / "privateKey.pem"),
        },
    }
    path.write_text(yaml.safe_dump(tree))
    conf = str(node.write_config())
    replication_before = node.live_fingerprint()
    assert [s.name for s in discover.load_config(node.root).sets()] == [
        "replication",
        "public",
        "operations-api",
    ]
    first = devca.fingerprint_of(devca.load_cert((ops_dir / "certificate.pem").read_bytes()))
    new = devca.make_leaf(ops_ca, "ops", dns=["ops"], eku=SERVER_ONLY)
    src = tmp_path / "ops-new"
    devca.write_set(src, new, [ops_ca])
    assert main(["install", str(src), "--config", conf, "--set", "operations-api", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "installed"
    ops_store = node.state / "sets" / "operations-api"
    assert os.readlink(ops_dir / "certificate.pem") == str(
        ops_store / "current" / "certificate.pem"
    )
    served = devca.fingerprint_of(devca.load_cert((ops_dir / "certificate.pem").read_bytes()))
    assert served == devca.fingerprint_of(new.cert)
    assert node.live_fingerprint() == replication_before
    assert not (node.state / "generations").exists()  # the replication store never started
    assert main(["rollback", "--config", conf, "--set", "operations-api"]) == 0
    capsys.readouterr()
    back = devca.fingerprint_of(devca.load_cert((ops_dir / "certificate.pem").read_bytes()))
    assert back == first
    with_ca = tmp_path / "with-ca"
    devca.write_set(with_ca, new, [ops_ca])
    assert main(["install", str(with_ca), "--config", conf, "--set", "public"]) == 1
    assert "error: source_has_ca_file: " in capsys.readouterr().out
    assert main(["install", str(src), "--config", conf, "--set", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no certificate set is named 'nope'" in err
    assert "replication, public, operations-api" in err


def test_daemon_shows_every_set_and_logs_hazards(tmp_path: Path, pki: Pki, store: Path) -> None:
    """The daemon's discovery and start events list every set with role, ports and days
    left; each hazard of the live layout is one certd.layout_hazard event."""
    node = make_node(tmp_path)
    config = _add_public_set(node, pki)
    ca = node.root / "keys" / "public" / "chain.pem"
    ca.write_bytes(pki.public_root.cert_pem)
    config["tls"][1]["certificateAuthority"] = str(ca)
    (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(config))
    with DaemonProc(node) as d:
        started = d.wait_for("certd.started")
        discovered = d.named("certd.harper_discovered")
        hazard = d.wait_for("certd.layout_hazard")
    assert [(s["set"], s["role"], s["ports"]) for s in discovered[0]["sets"]] == [
        ("replication", "replication", {"replication": 9933}),
        ("public", "server", {"http": 9926}),
    ]
    assert 89 < discovered[0]["sets"][1]["days_left"] <= 90
    assert discovered[0]["hazards"] == ["public_root_in_ca_file"]
    assert [s["set"] for s in started["sets"]] == ["replication", "public"]
    assert {k: hazard[k] for k in ("code", "severity")} == {
        "code": "public_root_in_ca_file",
        "severity": "error",
    }
    assert "Throwaway Public Root R1" in hazard["message"]


def test_plan_for_a_one_private_set_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node on one private-CA set: it stays the replication set, a public set is added."""
    node = make_node(tmp_path)
    assert main(["check", "--harper-root", str(node.root), "--plan"]) == 0
    text = capsys.readouterr().out
    assert "has a CA file (a private CA)" in text
    assert f"certificateAuthority: {node.live.ca}" in text
    assert f"{node.root / 'keys' / 'public'}/" in text
    assert "name: public" in text


def test_stage_into_the_folder_of_the_named_set(
    tmp_path: Path, pki: Pki, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stage --set public on the two-set node: staged in incoming/public/ (the public set's
    folder, where the daemon's public lane takes it); an unknown name is a usage error."""
    node = make_node(tmp_path)
    _add_public_set(node, pki)
    node.state.mkdir(parents=True)
    (node.root / "keys" / "incoming").mkdir()
    cfg = str(node.write_config())
    src = node.source("new")
    assert main(["stage", str(src), "--set", "public", "--config", cfg]) == 0
    out = capsys.readouterr().out
    folder = node.root / "keys" / "incoming" / "public"
    staged = [p.name for p in folder.iterdir()]
    assert len(staged) == 1
    assert staged[0].startswith("stage-")
    assert out == f"Staged as {folder / staged[0]}; the daemon takes it from there.\n"
    assert sorted(os.listdir(folder / staged[0])) == ["ca.pem", "certificate.pem", "privateKey.pem"]
    assert main(["stage", str(src), "--set", "nope", "--config", cfg]) == 2
    assert "(sets: replication, public)" in capsys.readouterr().err


def test_layout_files_are_read_again_when_they_change(tmp_path: Path) -> None:
    """The layout's certificate files are parsed once per change of what the path leads to
    (device, inode, size, mtime, ctime): the same certificates while nothing changed, the
    new ones after an install swaps the link's target or a file is written over in place."""
    node = make_node(tmp_path)
    [cert_set] = discover.load_config(node.root).sets()
    first = hazards.read_material(cert_set)
    assert hazards.read_material(cert_set).leaf is first.leaf  # unchanged: not parsed again
    assert install(build_context(node.config), node.source("swapped")).status == "installed"
    swapped = hazards.read_material(cert_set).leaf
    assert swapped is not None
    assert first.leaf is not None
    assert devca.fingerprint_of(swapped) != devca.fingerprint_of(first.leaf)
    # written over in place (same path, same inode): read again too
    other = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    live = Path(os.path.realpath(node.root / "keys" / "certificate.pem"))
    os.chmod(live, 0o644)
    live.write_bytes(other.cert_pem)
    again = hazards.read_material(cert_set).leaf
    assert again is not None
    assert devca.fingerprint_of(again) == devca.fingerprint_of(devca.load_cert(other.cert_pem))
