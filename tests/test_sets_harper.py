"""Two sets on a real Harper 4.7.29 node (issue 11): the layout works, each hazard is
refused on Harper's real config, and the record-name collision is reproduced (the damage)
and refused by ``check`` (the prevention).

One module-scoped node. The "public" CA is a throw-away root in a bundle named by
``SSL_CERT_FILE`` (with ``SSL_CERT_DIR`` an empty folder), never the machine's store.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemonfix import DaemonProc
from harper_certd import devca
from harper_certd.config import parse_config
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_certd.install.rollback import rollback
from harper_certd.release import release
from harper_rig import HandshakePoller, HarperNode, LeafMaterial, RigCA, Sample, needs_harper

pytestmark = needs_harper(timeout=300)

NODE = "nodes.cluster.test"
NODE_IP = "127.0.0.9"


@dataclass
class Rig:
    node: HarperNode
    cluster_ca: RigCA
    public_ca: RigCA
    cluster: LeafMaterial
    public: LeafMaterial
    public_dir: Path
    env: dict[str, str]
    base: Path


def _write_public(folder: Path, leaf: LeafMaterial) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "fullchain.pem").write_bytes(leaf.cert_pem)
    path = folder / "privkey.pem"
    if path.exists():
        path.unlink()
    devca.write_private(path, leaf.key_pem)


def _tls(node: HarperNode, public_dir: Path, *, name: str | None = "public") -> list[Any]:
    public: dict[str, Any] = {
        "certificate": str(public_dir / "fullchain.pem"),
        "privateKey": str(public_dir / "privkey.pem"),
        "uses": ["server", "operations-api"],
    }
    if name:
        public["name"] = name
    return [
        {
            "certificate": str(node.certificate_path),
            "certificateAuthority": str(node.ca_path),
            "privateKey": str(node.key_path),
            "uses": ["replication"],
        },
        public,
    ]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = Path(tempfile.mkdtemp(prefix="hs.", dir="/tmp"))
    node = HarperNode(
        base, NODE, NODE_IP, pristine_cache=tmp_path_factory.getbasetemp() / "harper-pristine"
    )
    cluster_ca = RigCA("harper-certd sets cluster CA")
    public_ca = RigCA("Throwaway Public Root for sets")
    bundle = base / "public-roots.pem"
    bundle.write_bytes(public_ca.cert_pem)
    (base / "empty-certs").mkdir()
    env = {**os.environ, "SSL_CERT_FILE": str(bundle), "SSL_CERT_DIR": str(base / "empty-certs")}
    env.pop("HARPER_CERTD_CONFIG", None)
    try:
        node.install()
        cluster = cluster_ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        node.write_tls_files(cluster.cert_pem, cluster.key_pem, cluster_ca.cert_pem)
        public = public_ca.issue(
            "www.sets.example", dns_names=["www.sets.example"], client_auth=False
        )
        public_dir = node.keys_dir / "public"
        _write_public(public_dir, public)
        node.configure()
        node.update_config(lambda cfg: cfg.__setitem__("tls", _tls(node, public_dir)))
        node.start(expect_fingerprint=cluster.fingerprint)
        yield Rig(node, cluster_ca, public_ca, cluster, public, public_dir, env, base)
    finally:
        node.stop()


def _check(rig: Rig, root: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "harper_certd", "check", "--harper-root", str(root), "--json"],
        capture_output=True,
        text=True,
        env=rig.env,
        check=False,
        timeout=60,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _records(node: HarperNode) -> dict[str, list[str]]:
    reply = node.operation_raw({"operation": "list_certificates"})
    assert isinstance(reply, list)
    return {r["name"]: list(r.get("uses") or []) for r in reply if not r.get("is_authority")}


def _blip(
    samples: list[Sample],
    own: set[str],
    others: set[str],
    *,
    windows: list[tuple[float, float]] | None = None,
) -> list[Sample]:
    """The handshakes on a port that served neither of its own set's certificates.

    Harper rebuilds its contexts on every reload, and for 10-60 ms a port can serve the
    OTHER set's certificate (issue 11, measured: one stray handshake in 4 of 6 reloads).
    That blip is allowed, and nothing else is: only the other set's certificates (``others``,
    old or new), each blip (a run of stray handshakes with none of the port's own between
    them) inside half a second.  A sequence of several reloads (an install, then a
    rollback) may blip once per reload: seen in CI, two blips 1.5 s apart.

    ``windows``: the operations' own spans (monotonic start, and the time its proof came
    back): each blip must lie inside one of them instead, however long Harper took.  Under
    a loaded CI machine a rollback's reload served the other set for 1.5 s, all of it
    before the rollback's own proof (2.36 s); none may come after a proof.
    """
    strays = [x for x in samples if x.fingerprint not in own]
    assert {x.fingerprint for x in strays} <= others, strays
    run: list[Sample] = []
    for sample in [*samples, None]:
        if sample is not None and sample.fingerprint not in own:
            run.append(sample)
            continue
        if run and windows is not None:
            assert any(a <= run[0].at and run[-1].at <= b for a, b in windows), (run, windows)
        elif run:
            assert run[-1].at - run[0].at < 0.5, run
        run = []
    return strays


def test_two_set_layout_is_served_and_checked(rig: Rig) -> None:
    """Replication port: the cluster set (with and without SNI); HTTPS: the public set.
    check: both sets fit, in their roles, the public one against the bundle's root."""
    node = rig.node
    assert node.served_fingerprint() == rig.cluster.fingerprint
    assert node.served_fingerprint(server_name=NODE) == rig.cluster.fingerprint
    assert node.served_fingerprint(node.ports.http_secure) == rig.public.fingerprint
    assert node.served_fingerprint(node.ports.mqtt_secure) == rig.public.fingerprint
    records = _records(node)
    assert records[NODE] == ["replication"]
    assert records["public"] == ["server", "operations-api"]
    code, out = _check(rig, node.root)
    assert code == 0, out
    assert out["hazards"] == []
    sets = [(s["set"], s["role"], s["ports"], s["trust_store"] is not None) for s in out["sets"]]
    assert sets == [
        ("replication", "replication", {"replication": node.ports.replication}, False),
        (
            "public",
            "server",
            {"http": node.ports.http_secure, "mqtt": node.ports.mqtt_secure},
            True,
        ),
    ]
    assert str(rig.env["SSL_CERT_FILE"]) in out["sets"][1]["trust_store"]


def _variant(rig: Rig, name: str, change: Any) -> Path:
    """A copy of the node's real harperdb-config.yaml, changed, in a root of its own."""
    tree = yaml.safe_load(rig.node.config_path.read_text())
    tree = copy.deepcopy(tree)
    change(tree)
    root = rig.base / "variants" / name
    (root / "keys").mkdir(parents=True)
    (root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
    return root


def test_each_hazard_refused_on_the_real_config(rig: Rig) -> None:
    """Each hazard, made on Harper's own config file, is reported by its code alone."""
    node = rig.node
    collide = rig.public_ca.issue(NODE, dns_names=[NODE], client_auth=False)
    _write_public(rig.base / "collide", collide)
    server_only = rig.cluster_ca.issue(NODE, dns_names=[NODE], client_auth=False)
    so_dir = rig.base / "server-only"
    so_dir.mkdir()
    (so_dir / "certificate.pem").write_bytes(server_only.cert_pem)
    devca.write_private(so_dir / "privateKey.pem", server_only.key_pem)
    public_ca_file = rig.base / "public-ca.pem"
    public_ca_file.write_bytes(rig.public_ca.cert_pem)

    def collision(t: dict[str, Any]) -> None:
        t["tls"] = _tls(node, rig.base / "collide", name=None)

    def no_uses(t: dict[str, Any]) -> None:
        for e in t["tls"]:
            e.pop("uses")

    def public_root(t: dict[str, Any]) -> None:
        t["tls"][1]["certificateAuthority"] = str(public_ca_file)

    def root_cas(t: dict[str, Any]) -> None:
        t["replication"].pop("enableRootCAs")

    def replication_server_only(t: dict[str, Any]) -> None:
        t["tls"][0]["certificate"] = str(so_dir / "certificate.pem")
        t["tls"][0]["privateKey"] = str(so_dir / "privateKey.pem")

    cases = {
        "collision": (collision, {"record_name_collision"}, 1),
        "no-uses": (no_uses, {"tls_uses_missing"}, 1),
        "public-root": (public_root, {"public_root_in_ca_file"}, 1),
        "root-cas": (root_cas, {"enable_root_cas_on"}, 0),
        "server-only": (replication_server_only, {"replication_server_only"}, 1),
    }
    seen = {}
    for name, (change, codes, status) in cases.items():
        code, out = _check(rig, _variant(rig, name, change))
        seen[name] = ({h["code"] for h in out["hazards"]}, code)
        assert seen[name][0] == codes, (name, out["hazards"])
        if status:
            assert code == 1, name
    print({k: sorted(v[0]) for k, v in seen.items()})


def test_rotate_replication_set_leaves_public_set_untouched(rig: Rig) -> None:
    """The daemon's install path rotates the replication set on the two-set node: verified
    on the replication port only (the HTTPS port serves the public set), the public set
    served all along with 0 failed handshakes; a candidate adding the public root to the
    CA file is refused before anything changes."""
    node = rig.node
    config = parse_config(
        {
            "harper": {"root": str(node.root)},
            "state_dir": str(rig.base / "state"),
            "restart": {"method": "hot-reload"},
            "verify": {"timeout": 20, "interval": 0.2, "host": NODE_IP},
        }
    )
    saved = {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    os.environ.update({k: rig.env[k] for k in saved})
    try:
        fresh = rig.cluster_ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        wide = _set_folder(
            rig.base / "wide", fresh, rig.cluster_ca.cert_pem + rig.public_ca.cert_pem
        )
        refused = install(build_context(config), wide)
        assert refused.status == "refused"
        assert [p.code for p in refused.problems if p.severity.value == "error"] == [
            "public_root_in_ca_file"
        ]
        assert node.served_fingerprint() == rig.cluster.fingerprint
        ctx = build_context(config)
        assert ctx.managed.live.cert == node.certificate_path
        with (
            HandshakePoller(NODE_IP, node.ports.http_secure, interval=0.05) as https,
            HandshakePoller(NODE_IP, node.ports.replication, interval=0.02) as repl,
        ):
            t0 = time.monotonic()
            outcome = install(ctx, _set_folder(rig.base / "fresh", fresh, rig.cluster_ca.cert_pem))
            done = time.monotonic()
            time.sleep(0.5)
        seen = repl.snapshot(t0)
        stray = [
            s for s in seen if s.fingerprint not in (rig.cluster.fingerprint, fresh.fingerprint)
        ]
        print(
            f"replication port: {len(seen)} handshakes, {len(repl.failures(t0))} failed, "
            f"{len(stray)} served another certificate"
            + (
                f" (public: {sum(s.fingerprint == rig.public.fingerprint for s in stray)})"
                if stray
                else ""
            )
        )
        assert outcome.status == "installed", outcome.problems
        assert node.served_fingerprint() == fresh.fingerprint
        assert node.served_fingerprint(server_name=NODE) == fresh.fingerprint
        samples = https.snapshot(t0)
        print(
            f"replication rotation: installed in {done - t0:.2f} s; HTTPS port: {len(samples)} "
            f"handshakes, {len(https.failures(t0))} failed, "
            f"{sum(s.fingerprint != rig.public.fingerprint for s in samples)} not the public set"
        )
        assert samples
        assert https.failures(t0) == []
        blip = _blip(
            samples, {rig.public.fingerprint}, {rig.cluster.fingerprint, fresh.fingerprint}
        )
        print(f"rebuild blip on the HTTPS port: {len(blip)} handshakes")
        rig.cluster = fresh
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_rotate_public_set_leaves_replication_set_untouched(rig: Rig) -> None:
    """``install --set public`` (no CA file: two files, judged against the bundle named by
    ``harper.trust_store``) on the two-set node: hot reload, verified on the HTTPS ports;
    the replication port serves the replication set all along with 0 failed handshakes;
    ``rollback --set public`` puts the first public certificate back the same way."""
    node = rig.node
    config = parse_config(
        {
            "harper": {"root": str(node.root), "trust_store": rig.env["SSL_CERT_FILE"]},
            "state_dir": str(rig.base / "state"),
            "restart": {"method": "hot-reload"},
            "verify": {"timeout": 20, "interval": 0.2, "host": NODE_IP},
        }
    )
    ctx = build_context(config, set_name="public")
    assert ctx.store.root == rig.base / "state" / "sets" / "public"
    assert ctx.managed.live.ca is None
    fresh = rig.public_ca.issue(
        "www.sets.example", dns_names=["www.sets.example"], client_auth=False
    )
    folder = rig.base / "public-fresh"
    folder.mkdir(mode=0o700)
    (folder / "certificate.pem").write_bytes(fresh.cert_pem)
    devca.write_private(folder / "privateKey.pem", fresh.key_pem)
    replication = node.served_fingerprint()
    with (
        HandshakePoller(NODE_IP, node.ports.http_secure, interval=0.05) as https,
        HandshakePoller(NODE_IP, node.ports.replication, interval=0.05) as repl,
    ):
        t0 = time.monotonic()
        outcome = install(ctx, folder)
        done = time.monotonic()
        back = rollback(build_context(config, set_name="public"))
        undone = time.monotonic()
        time.sleep(0.5)
    assert outcome.status == "installed", outcome.problems
    assert outcome.applied is not None
    assert outcome.applied.verified
    assert outcome.trust_store == rig.env["SSL_CERT_FILE"]
    assert back.status == "rolled_back", back.message
    assert node.served_fingerprint(node.ports.http_secure) == rig.public.fingerprint
    samples, seen = https.snapshot(t0), repl.snapshot(t0)
    print(
        f"public rotation: installed in {done - t0:.2f} s, rolled back in {undone - done:.2f} s; "
        f"HTTPS port: {len(samples)} handshakes, {len(https.failures(t0))} failed; "
        f"replication port: {len(seen)} handshakes, {len(repl.failures(t0))} failed"
    )
    assert https.first_serving(fresh.fingerprint, t0) is not None
    assert https.failures(t0) == []
    https_blip = _blip(
        samples,
        {rig.public.fingerprint, fresh.fingerprint},
        {replication},
        windows=[(t0, done), (done, undone)],
    )
    assert seen
    assert repl.failures(t0) == []
    repl_blip = _blip(seen, {replication}, {rig.public.fingerprint, fresh.fingerprint})
    print(f"rebuild blips: HTTPS {len(https_blip)}, replication {len(repl_blip)}")
    assert node.served_fingerprint() == replication
    # The store stays: the daemon's test after this one takes the public set from it (no
    # adoption during its rotation), then releases it for the tests that write the files.


def _set_folder(folder: Path, leaf: LeafMaterial, ca_pem: bytes) -> Path:
    folder.mkdir(mode=0o700)
    (folder / "certificate.pem").write_bytes(leaf.cert_pem)
    (folder / "ca.pem").write_bytes(ca_pem)
    devca.write_private(folder / "privateKey.pem", leaf.key_pem)
    return folder


@dataclass
class _Config:
    """A daemon configuration file, for ``DaemonProc``."""

    path: Path

    def write_config(self) -> Path:
        return self.path


def test_daemon_rotates_each_set_the_other_untouched(rig: Rig) -> None:
    """``harper-certd run`` on the two-set node: a public set placed straight in incoming/
    is routed to the public set, a replication set placed in incoming/replication/ goes to
    the replication set; each is installed hot and verified where it is served.  While each
    one rotates, the other set's port fails no handshake and serves only its own set."""
    node = rig.node
    config = rig.base / "daemon.yaml"
    state = rig.base / "state"
    settings: dict[str, Any] = {
        "harper": {"root": str(node.root), "trust_store": rig.env["SSL_CERT_FILE"]},
        "state_dir": str(state),
        "restart": {"method": "hot-reload"},
        "verify": {"timeout": 30, "interval": 0.2, "host": NODE_IP},
        "watch": {"settle_seconds": 0.3},
        "peers": {"check": "off"},
    }
    config.write_text(yaml.safe_dump(settings))
    incoming = node.keys_dir / "incoming"
    public = rig.public_ca.issue(
        "www.sets.example", dns_names=["www.sets.example"], client_auth=False
    )
    cluster = rig.cluster_ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
    staged = rig.base / "daemon-src"
    staged.mkdir()
    _write_public(staged / "p1", public)
    os.chmod(staged / "p1", 0o700)
    _set_folder(staged / "c1", cluster, rig.cluster_ca.cert_pem)
    public_before, replication_before = rig.public.fingerprint, node.served_fingerprint()
    with DaemonProc(_Config(config), env=rig.env) as d:
        d.wait_for("certd.started", timeout=60)
        managed = d.wait_for("certd.set_managed")
        with HandshakePoller(NODE_IP, node.ports.replication, interval=0.02) as repl:
            t0 = time.monotonic()
            os.rename(staged / "p1", incoming / "p1")
            first = d.wait_for("certd.set_installed", timeout=90)
            time.sleep(0.5)
        with HandshakePoller(NODE_IP, node.ports.http_secure, interval=0.05) as https:
            t1 = time.monotonic()
            (incoming / "replication").mkdir(exist_ok=True)
            os.rename(staged / "c1", incoming / "replication" / "c1")
            second = d.wait_for("certd.set_installed", count=2, timeout=90)
            time.sleep(0.5)
        assert d.stop() == 0
    said = [e.get("event") for e in d.events]
    assert "certd.hot_reload_missed" not in said, said
    assert "certd.live_adopted" not in said, said  # both stores were in place already
    routed = d.named("certd.set_routed")
    during_public, during_replication = repl.snapshot(t0), https.snapshot(t1)
    print(
        f"daemon, public rotation: replication port {len(during_public)} handshakes, "
        f"{len(repl.failures(t0))} failed; replication rotation: HTTPS port "
        f"{len(during_replication)} handshakes, {len(https.failures(t1))} failed"
    )
    assert (managed["set"], managed["incoming"]) == ("public", str(incoming / "public"))
    assert [(r["set"], r["moved_to"]) for r in routed] == [
        ("public", str(incoming / "public" / "p1"))
    ]
    assert [(e["set"], e["fingerprint"], e["verified"]) for e in (first, second)] == [
        ("public", public.fingerprint, True),
        ("replication", cluster.fingerprint, True),
    ]
    assert during_public
    assert during_replication
    assert repl.failures(t0) == []
    assert https.failures(t1) == []
    blips = (
        len(_blip(during_public, {replication_before}, {public_before, public.fingerprint})),
        len(
            _blip(
                during_replication, {public.fingerprint}, {replication_before, cluster.fingerprint}
            )
        ),
    )
    print(f"rebuild blips (replication port, HTTPS port): {blips}")
    assert public.fingerprint != public_before
    assert node.served_fingerprint(node.ports.http_secure) == public.fingerprint
    assert node.served_fingerprint() == cluster.fingerprint
    rig.public, rig.cluster = public, cluster
    # Plain files again (same bytes) for the test after this one, which writes them.
    ctx = build_context(parse_config(settings), set_name="public")
    assert release(ctx.store).paths == (
        rig.public_dir / "fullchain.pem",
        rig.public_dir / "privkey.pem",
    )


def test_collision_damage_on_real_harper_and_prevention(rig: Rig) -> None:
    """Without ``name``, a public certificate whose CN is the node name replaces the
    replication record: the replication port then serves the serverAuth-only public
    certificate. ``check`` refuses that config before Harper is restarted on it."""
    node = rig.node
    collide = rig.public_ca.issue(NODE, dns_names=[NODE], client_auth=False)
    _write_public(rig.public_dir, collide)
    node.update_config(lambda cfg: cfg.__setitem__("tls", _tls(node, rig.public_dir, name=None)))
    # Prevention: check says so, before anything is restarted.
    code, out = _check(rig, node.root)
    assert code == 1
    assert {h["code"] for h in out["hazards"]} == {"record_name_collision"}
    # The damage, when the operator goes ahead anyway.
    node.restart(expect_fingerprint=None)
    served = node.served_fingerprint()
    records = _records(node)
    print(f"collision: replication port serves {served[:16]}, records {records}")
    assert served == collide.fingerprint != rig.cluster.fingerprint
    assert records[NODE] == ["server", "operations-api"]
    assert "replication" not in {u for uses in records.values() for u in uses}
