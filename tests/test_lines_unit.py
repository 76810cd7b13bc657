"""The lines table, version and entry discovery on rewritten process titles, and each
line's layout as ``discover`` reads it (no Harper needed: real processes, real YAML).
Measured wall time: about 3 s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from harper_certd import discover, hazards, peers
from harper_certd.config import parse_config
from harper_certd.harper import apply, process
from harper_certd.harper.lines import line_of, support, version_tuple
from harper_certd.harper.method import RestartMethod
from harper_certd.harper.probe import SERVED_STREAK, streak_for
from harper_certd.trust import TrustStore


@pytest.mark.parametrize(
    ("version", "name", "hot"),
    [
        ("4.0.7", "4.0", False),
        ("4.3.0", "4.2-4.3", False),
        ("4.4.18", "4.4", True),
        ("4.7.29", "4.5-4.7", True),
        ("5.1.22", "5.x", True),
    ],
)
def test_line_of(version: str, name: str, hot: bool) -> None:
    line = line_of(version)
    assert line is not None
    assert (line.name, line.hot_reload) == (name, hot)
    assert line.second_change_event is (name == "4.4")
    assert line.root_cas is (name not in ("4.0", "4.2-4.3"))


def test_unknown_and_documented_versions_are_said() -> None:
    assert line_of(None) is None
    assert line_of("3.3.0") is None
    assert line_of("garbage") is None
    assert version_tuple("5.0.0-beta.3") == (5, 0, 0)
    assert "unknown" in support(None)
    # A Harper found running whose version was not read is not "no running Harper found".
    assert "no running Harper found" in support(None)
    assert "no running Harper found" not in support(None, 4242)
    assert "package.json was not read" in support(None, 4242)
    assert "documentation, not yet from a real node" in support("5.1.22")
    assert "measured" in support("4.3.0")
    assert "outside" in support("3.3.0")


def test_streak_grows_with_workers() -> None:
    assert streak_for(1) == SERVED_STREAK
    assert streak_for(2) > streak_for(1)
    # one worker of two missed by every fresh connection: below 1 %
    assert 2 * 0.5 ** streak_for(2) < 0.01


def _package(tmp_path: Path, version: str, script: str) -> Path:
    package = tmp_path / "node_modules" / "harperdb"
    (package / "bin").mkdir(parents=True)
    (package / "launchServiceScripts").mkdir()
    (package / "package.json").write_text(json.dumps({"name": "harperdb", "version": version}))
    (package / "bin" / "harperdb.js").write_text("")
    target = package / script
    # A script that rewrites its own title the way PM2-run Harper does: one string, padded.
    target.write_text(
        "process.title = 'node ' + __filename + '\\0'.repeat(20);\nsetInterval(() => {}, 1000);\n"
    )
    return target


@pytest.fixture
def titled(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """A real node process running launchHarperDB.js (4.0's server) with a rewritten title,
    ROOTPATH in its environment, and no hdb.pid."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    script = _package(tmp_path, "4.0.7", "launchServiceScripts/launchHarperDB.js")
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.Popen(
        [node, str(script)], env={**os.environ, "ROOTPATH": str(root)}, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            if cmdline.startswith(b"node /"):
                break
            time.sleep(0.05)
        yield proc, script, root
    finally:
        proc.kill()
        proc.wait()


def test_version_and_entry_on_a_rewritten_title_without_hdb_pid(
    titled: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    proc, script, root = titled
    assert not (root / "hdb.pid").exists()
    assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().count(b"\0") > 1
    assert process.harper_pid(root) == proc.pid
    entry = process.harper_entry(proc.pid)
    assert entry == script
    assert process.harper_version(entry) == "4.0.7"
    # restart.method cli runs the line's own bin/harperdb.js, not the PM2 launcher
    assert process.cli_entry(entry) == script.parent.parent / "bin" / "harperdb.js"
    assert process.harper_pid(root.parent / "other-root") is None


def test_process_read_from_proc_as_psutil_reads_it(tmp_path: Path) -> None:
    """Harper's process is read from /proc without psutil (its import cost 20-30 ms of each
    `status`): a live process, a zombie, a gone one and a script named relative to the cwd
    read as psutil reads them, and no psutil is imported for them."""
    import psutil

    script = tmp_path / "bin" / "harperdb.js"
    script.parent.mkdir()
    script.write_text("")
    live = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "bin/harperdb.js"], cwd=tmp_path
    )
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.02)
        for pid in (live.pid, zombie.pid):
            assert process._alive(pid) is (psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        assert process._alive(live.pid)
        assert not process._alive(zombie.pid)
        assert process._cmdline(live.pid) == psutil.Process(live.pid).cmdline()
        assert process.harper_entry(live.pid) == script
        assert process.harper_entry(os.getpid()) is None  # no server script in its arguments
        (tmp_path / "hdb.pid").write_text(f"{live.pid}\n")
        assert process.harper_pid(tmp_path) == live.pid
        (tmp_path / "hdb.pid").write_text(f"{zombie.pid}\n")
        assert process.harper_pid(tmp_path) is None
    finally:
        live.kill()
        live.wait()
        zombie.wait()
    assert not process._alive(zombie.pid)  # reaped: gone
    assert process._cmdline(zombie.pid) is None
    for pid in (0, -1):
        assert not process._alive(pid)
    probe = (
        "import sys; from harper_certd.harper import process; "
        "print(process._alive(int(sys.argv[1])), 'psutil' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(os.getpid())], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "False"]


def test_stale_hdb_pid_is_not_running(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / "hdb.pid").write_text(done.stdout)
    assert process.harper_pid(tmp_path) is None


def _parse(tmp_path: Path, tree: dict[str, object]) -> discover.HarperConfig:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    return discover.parse(tree, tmp_path, tmp_path / "harperdb-config.yaml")


FILES = {
    "certificate": "certificate.pem",
    "certificateAuthority": "ca.pem",
    "privateKey": "privateKey.pem",
}


def test_layout_43_nats(tmp_path: Path) -> None:
    """4.3: tls for HTTPS/MQTT, clustering.tls for NATS with the route port (direct TLS)."""
    config = _parse(
        tmp_path,
        {
            "http": {"securePort": 9927},
            "mqtt": {"network": {"securePort": 8883}},
            "operationsApi": {"network": {"port": 9925}},
            "threads": {"count": 2},
            "tls": dict(FILES),
            "clustering": {
                "enabled": True,
                "nodeName": "n1",
                "hubServer": {"cluster": {"network": {"port": 9932}}},
                "tls": {
                    "certificate": "nats.pem",
                    "certificateAuthority": "ca.pem",
                    "privateKey": "nats-key.pem",
                    "insecure": True,
                    "verify": False,
                },
            },
        },
    )
    assert config.secure_ports == {"http": 9927, "mqtt": 8883, "clusteringRoutes": 9932}
    assert config.threads == 2
    assert not config.has_replication
    sets = {s.name: s for s in config.sets()}
    assert set(sets) == {"clustering", "server"}
    assert dict(sets["clustering"].ports) == {"clusteringRoutes": 9932}
    codes = {p.code for p in hazards.find(config, _no_public_roots)}
    assert {"clustering_tls_insecure", "clustering_tls_verify_off"} <= codes
    assert "enable_root_cas_on" not in codes


def test_layout_44_replication_on_the_operations_secure_port(tmp_path: Path) -> None:
    config = _parse(
        tmp_path,
        {
            "operationsApi": {"network": {"port": 9925, "securePort": 9924}},
            "replication": {"hostname": "n1", "url": "wss://n1:9924"},
            "tls": dict(FILES),
        },
    )
    assert config.secure_ports["replication"] == 9924
    assert config.has_replication


def test_layout_40_https_on_the_plain_port(tmp_path: Path) -> None:
    config = _parse(
        tmp_path,
        {
            "operationsApi": {"network": {"port": 9925, "https": True}, "tls": dict(FILES)},
            "customFunctions": {
                "enabled": True,
                "network": {"port": 9926, "https": True},
                "tls": {**FILES, "certificate": "cf.pem"},
            },
            "http": {"threads": 3},
        },
    )
    assert config.secure_ports == {"operationsApi": 9925, "customFunctions": 9926}
    assert config.threads == 3
    owners = {s.first.where: dict(s.ports) for s in config.sets()}
    assert owners["customFunctions.tls"] == {"customFunctions": 9926}


_no_public_roots = TrustStore("no public roots (test)", ())


def _result(name: str, verdict: peers.Verdict) -> peers.PeerResult:
    return peers.PeerResult(
        peers.Peer(name, f"wss://{name}:9933"),
        peers.Answer(verdict, "close 1008 Unauthorized", 0.1),
        peers.Answer(peers.Verdict.ACCEPTED, "chain and name verified", 0.1),
    )


def test_a_peer_refusing_the_live_set_is_not_a_ca_problem() -> None:
    """Seen on 4.4.18: two nodes refusing each other whatever the set. A peer that refuses
    the live set too is ``peer_refuses_live``; the others stay ``ca_not_trusted_by_peers``."""
    results = [_result("nodeb", peers.Verdict.REFUSED), _result("nodec", peers.Verdict.REFUSED)]
    codes = [p.code for p in peers._peer_problems(results, {"nodeb"})]
    assert codes == ["peer_refuses_live", "ca_not_trusted_by_peers"]
    only_live = peers._peer_problems(results[:1], {"nodeb"})
    assert [p.code for p in only_live] == ["peer_refuses_live"]
    assert "adding a CA cannot help" in only_live[0].message


class _Status:
    """cluster_status answers as a NATS (4.3) node gives them."""

    def __init__(self, answer: dict[str, object]) -> None:
        self.answer = answer

    def call(self, operation: object) -> dict[str, object]:
        return self.answer


def test_nats_cluster_status_connections_are_read() -> None:
    status = {
        "node_name": "a",
        "is_enabled": True,
        "connections": [
            {"node_name": "b", "status": "open", "ports": {}},
            {"node_name": "c", "status": "closed", "ports": {}},
        ],
    }
    api: Any = _Status(status)
    assert peers.disconnected(api) == ["c (closed)"]
    assert peers.stagger_slot(api, "d", 8.0) == 16.0  # after b and c


def test_layout_44_replication_keys_name_the_replication_set(tmp_path: Path) -> None:
    config = _parse(
        tmp_path,
        {
            "operationsApi": {"network": {"port": 9925, "securePort": 9924}},
            "http": {"securePort": 9926},
            "replication": {
                "hostname": "n1",
                "certificate": "repl.pem",
                "certificateAuthority": "ca.pem",
                "privateKey": "repl-key.pem",
            },
            "tls": {**FILES, "uses": ["server", "operations-api"]},
        },
    )
    sets = {s.name: s for s in config.sets()}
    assert sets["replication"].first.where == "replication"
    assert sets["replication"].first.paths is not None
    assert sets["replication"].first.paths.cert == tmp_path / "keys" / "repl.pem"
    assert dict(sets["replication"].ports) == {"replication": 9924}
    assert "http" in sets["server"].ports


@pytest.mark.parametrize(
    ("version", "method", "said"),
    [
        ("4.3.0", RestartMethod.CLI, False),  # no hot reload on 4.3; no credentials: the CLI
        ("4.4.18", RestartMethod.HOT_RELOAD, False),
        (None, RestartMethod.CLI, True),  # not running: unknown, said, a restart
    ],
)
def test_auto_by_line(
    tmp_path: Path, version: str | None, method: RestartMethod, said: bool
) -> None:
    """restart.method auto from the running Harper's line (a real process with the title
    Harper's PM2 gives it); an unknown version is said and never taken for the newest."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    root = tmp_path / "hdb"
    (root / "keys").mkdir(parents=True)
    (root / "harperdb-config.yaml").write_text(
        f"tls:\n  certificate: {root}/keys/c.pem\n  certificateAuthority: {root}/keys/a.pem\n"
        f"  privateKey: {root}/keys/k.pem\nhttp:\n  securePort: 1\n"
    )
    harper_config = discover.load_config(root)
    config = parse_config({"harper": {"root": str(root)}, "restart": {"method": "auto"}})
    harper = apply.make_harper(config, harper_config, env={})
    proc = None
    if version is not None:
        script = _package(tmp_path, version, "bin/harperdb.js")
        proc = subprocess.Popen([node, str(script)], env={**os.environ, "ROOTPATH": str(root)})
    try:
        if proc is not None:
            deadline = time.monotonic() + 10
            while harper.version() != version and time.monotonic() < deadline:
                time.sleep(0.05)
        with structlog.testing.capture_logs() as seen:
            assert apply.resolve_method(config, harper) is method
        unknown = [e for e in seen if e.get("event") == "certd.harper_version_unknown"]
        assert bool(unknown) is said, seen
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
