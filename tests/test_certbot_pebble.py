"""certbot (from PyPI) against a local ACME server (Debian's pebble), handing over through the
README's one-line deploy hook to the real daemon.

Runs where both are installed: ``apt-get install pebble`` and ``pip install certbot`` (the
test looks for ``certbot`` beside this Python, on PATH, or in ``$HARPER_CERTD_CERTBOT``);
skipped with the reason otherwise.  Pebble runs with ``PEBBLE_VA_ALWAYS_VALID=1`` (no
challenge is checked: nothing here can answer one for a real name) and
``PEBBLE_WFE_NONCEREJECT=0``; its ACME endpoint's HTTPS certificate comes from a throw-away
CA that certbot is told to trust (``REQUESTS_CA_BUNDLE``).  Pebble's own root, which signs
the issued chain, is read from its management interface and becomes the node's CA file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from daemonfix import DaemonProc
from harper_certd import devca
from nodefix import Node, make_node

NAME = "nodea.example.test"


def _certbot() -> str | None:
    beside = Path(sys.executable).parent / "certbot"
    return os.environ.get("HARPER_CERTD_CERTBOT") or (
        str(beside) if beside.exists() else shutil.which("certbot")
    )


CERTBOT = _certbot()
PEBBLE = shutil.which("pebble")
pytestmark = pytest.mark.skipif(
    CERTBOT is None or PEBBLE is None,
    reason="needs pebble (apt-get install pebble) and certbot (pip install certbot, or "
    "HARPER_CERTD_CERTBOT=/path/to/certbot)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Pebble:
    def __init__(self, work: Path) -> None:
        work.mkdir(parents=True)
        self.ca = devca.make_ca("pebble endpoint test CA")
        leaf = devca.make_leaf(self.ca, "localhost", dns=["localhost"], ips=["127.0.0.1"])
        (work / "ca.pem").write_bytes(self.ca.cert_pem)
        (work / "cert.pem").write_bytes(leaf.cert_pem)
        devca.write_private(work / "key.pem", leaf.key_pem)
        self.acme, self.mgmt, self.http = _free_port(), _free_port(), _free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme}",
                "managementListenAddress": f"127.0.0.1:{self.mgmt}",
                "certificate": str(work / "cert.pem"),
                "privateKey": str(work / "key.pem"),
                "httpPort": self.http,
                "tlsPort": _free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        (work / "pebble.json").write_text(json.dumps(config))
        self.work = work
        assert PEBBLE is not None
        env = {**os.environ, "PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
        self.log = (work / "pebble.log").open("w")
        self.proc = subprocess.Popen(
            [PEBBLE, "-config", str(work / "pebble.json")],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                self.root_pem = self._get(f"https://127.0.0.1:{self.mgmt}/roots/0")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _get(self, url: str) -> bytes:
        ctx = ssl.create_default_context(cafile=str(self.work / "ca.pem"))
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:  # noqa: S310 - https, ours
            data: bytes = r.read()
            return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    server = Pebble(tmp_path / "pebble")
    try:
        yield server
    finally:
        server.stop()


def _certbot_run(pebble: Pebble, base: Path, env: dict[str, str], *args: str) -> str:
    assert CERTBOT is not None
    done = subprocess.run(
        [
            CERTBOT,
            *args,
            "--non-interactive",
            "--server",
            f"https://127.0.0.1:{pebble.acme}/dir",
            "--config-dir",
            str(base / "config"),
            "--work-dir",
            str(base / "work"),
            "--logs-dir",
            str(base / "logs"),
        ],
        env={**env, "REQUESTS_CA_BUNDLE": str(pebble.work / "ca.pem")},
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _node_for(tmp_path: Path, live: Path, root_pem: bytes) -> Node:
    """A node named NAME whose live set is certbot's first certificate."""
    node = make_node(tmp_path / "n")
    tree = yaml.safe_load((node.root / "harperdb-config.yaml").read_text())
    tree["replication"] = {"hostname": NAME, "url": f"wss://{NAME}:9933", "securePort": 9933}
    (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
    node.live.cert.write_bytes((live / "fullchain.pem").read_bytes())
    node.live.key.write_bytes((live / "privkey.pem").read_bytes())
    node.ca_file.write_bytes(root_pem)
    node.config_data["watch"] = {"settle_seconds": 0.3}
    return node


def test_certbot_renewal_reaches_the_daemon_through_the_deploy_hook(
    pebble: Pebble, tmp_path: Path
) -> None:
    base = tmp_path / "letsencrypt"
    env = {**os.environ}
    _certbot_run(
        pebble,
        base,
        env,
        "certonly",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--standalone",
        "--http-01-address",
        "127.0.0.1",
        "--http-01-port",
        str(pebble.http),
        "-d",
        NAME,
        "--key-type",
        "ecdsa",
    )
    live = base / "config" / "live" / NAME
    assert (live / "cert.pem").is_symlink()  # certbot's own layout
    node = _node_for(tmp_path, live, pebble.root_pem)
    harper_certd = Path(sys.executable).parent / "harper-certd"
    env["HARPER_CERTD_CONFIG"] = str(node.write_config())
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        # The README's one line, as certbot runs it (through a shell, RENEWED_LINEAGE set).
        _certbot_run(
            pebble,
            base,
            env,
            "renew",
            "--force-renewal",
            "--http-01-address",
            "127.0.0.1",
            "--http-01-port",
            str(pebble.http),
            "--deploy-hook",
            f'{harper_certd} stage "$RENEWED_LINEAGE" --wait',
        )
        installed = d.wait_for("certd.set_installed", timeout=60)
        assert d.stop() == 0
    renewed = devca.fingerprint_of(devca.load_cert((live / "cert.pem").read_bytes()))
    assert os.readlink(live / "cert.pem").endswith("cert2.pem")  # certbot's renewal, in place
    assert installed["fingerprint"] == renewed
    assert node.live_fingerprint() == renewed
