"""Operating under the shipped unit: local verification, refusals at start, one config path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from harper_certd import discover, environment
from harper_certd.cli import main
from harper_certd.errors import ConfigError
from harper_certd.harper.apply import make_harper
from harper_certd.harper.probe import LOCAL_ADDRESSES, peer_sni, served_local, sni_for
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from nodefix import Node, make_node, run_cli
from tlsfix import LiveTlsServer, ipv6_loopback

# conftest's CACHE_DIRECTORY: the YAML memo of these daemons stays in the run's own folder
UNIT_ENV = {
    "INVOCATION_ID": "0123456789abcdef",
    "PATH": os.environ.get("PATH", ""),
    "CACHE_DIRECTORY": os.environ["CACHE_DIRECTORY"],
}


def _serve_on(node: Node, port: int) -> Node:
    """The node's replication port becomes ``port``, its URL a name peers dial (which need
    not resolve: verification dials the node itself), this test process 'Harper'."""
    tree = yaml.safe_load((node.root / "harperdb-config.yaml").read_text())
    tree["replication"]["securePort"] = port
    tree["replication"]["url"] = f"wss://nodea:{port}"
    (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
    (node.root / "hdb.pid").write_text(f"{os.getpid()}\n")
    node.config_data["verify"] = {"enabled": True, "timeout": 10, "interval": 0.1}
    return node


def test_verification_dials_the_node_itself_with_the_node_name_as_sni(tmp_path: Path) -> None:
    """By default the applier dials 127.0.0.1 then ::1, sends the SNI peers send (the
    replication URL's host), and the
    verification names the address dialled."""
    node = make_node(tmp_path, method="hot-reload")
    with LiveTlsServer(node.live.cert, node.live.key) as server:
        _serve_on(node, server.port)
        harper = make_harper(node.config, discover.load_config(node.root))
        assert harper.hosts == LOCAL_ADDRESSES == ("127.0.0.1", "::1")
        assert harper.server_name == "nodea"
        src = node.source("new")
        with capture_logs() as logs:
            outcome = install(build_context(node.config), src)
        assert outcome.status == "installed", outcome.as_dict()
        assert outcome.applied is not None
        assert f"127.0.0.1:{server.port} (SNI nodea)" in outcome.applied.detail
        verified = [e for e in logs if e["event"] == "certd.served_verified"]
        assert verified[0]["dialled"] == [f"127.0.0.1:{server.port} (SNI nodea)"]
        assert "nodea" in server.sni


def test_a_failed_verification_names_every_address_dialled(tmp_path: Path) -> None:
    """Nothing listening: the message names 127.0.0.1 and ::1 with the port and SNI."""
    with LiveTlsServer(tmp_path / "x", tmp_path / "y") as server:
        port = server.port  # bound, then closed below: a port nothing listens on
    seen = served_local(LOCAL_ADDRESSES, port, 1.0, server_name="nodea")
    assert seen.sha256 is None
    text = seen.describe()
    assert f"127.0.0.1:{port} (SNI nodea)" in text
    assert f"[::1]:{port} (SNI nodea)" in text


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_only_node_is_reached_on_the_second_address(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with LiveTlsServer(node.live.cert, node.live.key, host="::1") as server:
        seen = served_local(LOCAL_ADDRESSES, server.port, 2.0, server_name="nodea")
    assert seen.sha256 is not None, seen.describe()
    assert seen.address == "::1"
    assert seen.dialled == f"[::1]:{server.port} (SNI nodea)"


def test_sni_is_what_peers_send(tmp_path: Path) -> None:
    """The replication URL's host when it is a name; none for an IP URL (peers send none);
    the node name without a URL."""
    node = make_node(tmp_path)  # url wss://127.0.0.2:9933
    config = tmp_path / "hdb" / "harperdb-config.yaml"
    assert peer_sni(discover.load_config(node.root)) is None
    tree = yaml.safe_load(config.read_text())
    tree["replication"]["url"] = "wss://node1.example.com:9933"
    config.write_text(yaml.safe_dump(tree))
    assert peer_sni(discover.load_config(node.root)) == "node1.example.com"
    del tree["replication"]["url"]
    config.write_text(yaml.safe_dump(tree))
    assert peer_sni(discover.load_config(node.root)) == "nodea"


def test_no_sni_for_an_ip_node_name() -> None:
    assert sni_for("nodea.example.com") == "nodea.example.com"
    assert sni_for("127.0.0.2") is None
    assert sni_for("::1") is None
    assert sni_for(None) is None


# --- refusals at start under systemd ---------------------------------------------------------


def _findings(node: Node, env: dict[str, str]) -> list[environment.Finding]:
    return environment.findings(node.config, discover.load_config(node.root), env)


def test_cli_restart_and_cli_fallback_refused_only_under_systemd(tmp_path: Path) -> None:
    node = make_node(tmp_path, method="auto")
    assert _findings(node, {}) == []  # a shell: the CLI works there
    for method in ("auto", "hot-reload", "cli"):
        node.config_data["restart"] = {"method": method}
        found = _findings(node, UNIT_ENV)
        assert [(f.fatal, f.key) for f in found] == [(True, "restart.method")]
        assert "LoadCredential=" in found[0].fix
        assert "restart.method: systemd" in found[0].fix
    node.config_data["restart"] = {"method": "command", "command": ["harperdb", "restart"]}
    assert [(f.fatal, f.key) for f in _findings(node, UNIT_ENV)] == [(True, "restart.command")]
    for ok in ({"method": "systemd"}, {"method": "operations-api"}, {"method": "none"}):
        node.config_data["restart"] = ok
        assert _findings(node, {"NOTIFY_SOCKET": "/run/x"}) == []


def test_credentials_make_the_hot_reload_fallback_workable(tmp_path: Path) -> None:
    node = make_node(tmp_path, method="auto")
    tree = yaml.safe_load((node.root / "harperdb-config.yaml").read_text())
    tree["operationsApi"] = {"network": {"port": 9925}}
    (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
    creds = tmp_path / "ops"
    creds.write_text("admin:pw\n")
    os.chmod(creds, 0o600)
    node.config_data["operations_api"] = {"credentials_file": str(creds)}
    assert _findings(node, UNIT_ENV) == []
    os.chmod(creds, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        _findings(node, UNIT_ENV)


def test_renew_command_under_the_unit_is_a_warning(tmp_path: Path) -> None:
    node = make_node(tmp_path, method="systemd")
    node.config_data["renew"] = {"command": ["certbot", "renew"]}
    found = _findings(node, UNIT_ENV)
    assert [(f.fatal, f.key) for f in found] == [(False, "renew.command")]
    assert "harper-certd stage" in found[0].fix
    assert environment.require_workable(node.config, discover.load_config(node.root), UNIT_ENV)


def _run_daemon(node: Node, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harper_certd", "run", "--config", str(node.write_config())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**UNIT_ENV, **env},
    )


def test_daemon_under_a_unit_refuses_the_cli_fallback_and_exits_2(tmp_path: Path) -> None:
    """The real daemon, started with systemd's INVOCATION_ID, refuses at start with the fix."""
    node = make_node(tmp_path, method="auto")
    done = _run_daemon(node, {})
    assert done.returncode == 2, done.stdout + done.stderr
    events = [json.loads(line[3:]) for line in done.stdout.splitlines() if line.startswith("<")]
    refused = [e for e in events if e["event"] == "certd.config_refused"]
    assert refused, done.stdout
    assert "cannot work under systemd" in refused[0]["error"]
    assert "LoadCredential=" in refused[0]["error"]
    assert not node.state.joinpath("generations").exists() or not any(
        node.state.joinpath("generations").iterdir()
    )


# --- one configuration path for every command -------------------------------------------------


def test_harper_certd_config_env_is_the_default_for_every_command(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    cfg = node.write_config()
    env = {**os.environ, "HARPER_CERTD_CONFIG": str(cfg)}
    env.pop("ROOTPATH", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=env)

    status = cli("status", "--json", "--no-probe")  # no Harper here: nothing to dial
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["live_paths"]["cert"] == str(node.live.cert)
    check = cli("check", "--json")  # harper.root comes from the same file
    assert check.returncode == 0, check.stderr
    assert str(node.root) in check.stdout
    env["HARPER_CERTD_CONFIG"] = str(tmp_path / "missing.yaml")
    missing = cli("status")
    assert missing.returncode == 2
    assert "missing.yaml does not exist" in missing.stderr


def test_check_takes_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = make_node(tmp_path)
    assert main(["check", "--config", str(node.write_config()), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["harper_root"] == str(node.root)


def test_a_second_state_directory_for_one_root_is_refused(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    install(build_context(node.config), node.source("one"))
    before = os.readlink(node.live.cert)
    node.config_data["state_dir"] = str(tmp_path / "other-state")
    with pytest.raises(ConfigError, match=r"managed by the state directory .*state"):
        build_context(node.config)
    assert os.readlink(node.live.cert) == before
    assert not (tmp_path / "other-state").exists()
    node.config_data["state_dir"] = str(node.state)
    build_context(node.config)  # the right one is fine


NETNS_SCRIPT = """
import json, os, socket, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import yaml
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from nodefix import make_node
from tlsfix import LiveTlsServer

try:
    socket.getaddrinfo("nodea", 9933)
    resolves = True
except OSError:
    resolves = False
node = make_node(Path(sys.argv[2]), method="hot-reload")
with LiveTlsServer(node.live.cert, node.live.key) as server:
    tree = yaml.safe_load((node.root / "harperdb-config.yaml").read_text())
    tree["replication"] = {"hostname": "nodea", "url": "wss://nodea:9933",
                           "securePort": server.port}
    (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
    (node.root / "hdb.pid").write_text(f"{os.getpid()}\\n")
    node.config_data["verify"] = {"enabled": True, "timeout": 10, "interval": 0.1}
    out = install(build_context(node.config), node.source("new"))
    print(json.dumps({"resolves": resolves, "status": out.status,
                      "detail": out.applied.detail if out.applied else None,
                      "interfaces": [n for _, n in socket.if_nameindex()]}))
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
    reason="needs root, unshare and ip to make a network namespace",
)
def test_verification_works_with_localhost_only(tmp_path: Path) -> None:
    """The unit's IPAddressAllow=localhost emulated by a network namespace holding only
    `lo`: the node's name (its replication URL's host, which its certificate covers) does not
    resolve there, and a swap is still verified."""
    script = tmp_path / "netns.py"
    script.write_text(NETNS_SCRIPT)
    done = subprocess.run(
        [
            "unshare",
            "--net",
            "--",
            "sh",
            "-c",
            'ip link set lo up && exec "$0" "$@"',
            sys.executable,
            str(script),
            str(Path(__file__).parent),
            str(tmp_path / "node"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip(f"no network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["interfaces"] == ["lo"]
    assert result["resolves"] is False
    assert result["status"] == "installed", result
    assert "127.0.0.1:" in result["detail"]
