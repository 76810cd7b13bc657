"""A Harper-style node on disk for install and daemon tests: root, config, live set, state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harper_certd import devca
from harper_certd.config import Config, parse_config
from harper_certd.roles import SetPaths

# A restart command that records each call (a real process): argv[1] file, argv[2] exit status.
RECORDER = (
    "import sys, pathlib, time\n"
    "p = pathlib.Path(sys.argv[1])\n"
    "with p.open('a') as f: f.write(f'{time.time()}\\n')\n"
    "sys.exit(int(pathlib.Path(sys.argv[2]).read_text()) if pathlib.Path(sys.argv[2]).exists()"
    " else 0)\n"
)


@dataclass
class Node:
    tmp: Path
    root: Path
    state: Path
    ca: devca.Issued
    live: SetPaths
    calls: Path
    exit_file: Path
    config_data: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return parse_config(self.config_data)

    @property
    def ca_file(self) -> Path:
        """The live CA file (a nodefix node's set always has one)."""
        assert self.live.ca is not None
        return self.live.ca

    def write_config(self) -> Path:
        path = self.tmp / "certd.yaml"
        path.write_text(yaml.safe_dump(self.config_data))
        return path

    def restarts(self) -> int:
        return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    def fail_restarts(self, status: int = 1) -> None:
        self.exit_file.write_text(str(status))

    def source(
        self,
        name: str,
        leaf: devca.Issued | None = None,
        *,
        cas: list[devca.Issued] | None = None,
        cn: str = "nodea",
        **leaf_kwargs: Any,
    ) -> Path:
        """A replacement set in Harper's names in a new folder under tmp/src."""
        leaf = leaf or devca.make_leaf(self.ca, cn, dns=["nodea"], ips=["127.0.0.2"], **leaf_kwargs)
        folder = self.tmp / "src" / name
        devca.write_set(folder, leaf, cas or [self.ca])
        os.chmod(folder, 0o755)  # noqa: S103 - an ordinary source folder
        return folder

    def live_fingerprint(self) -> str:
        from harper_certd import load

        cert = load.parse_certificates(self.live.cert.read_bytes(), name="live").certs[0]
        return devca.fingerprint_of(cert)


def make_node(tmp: Path, *, method: str = "command", extra: dict[str, Any] | None = None) -> Node:
    root = tmp / "hdb"
    keys = root / "keys"
    ca = devca.make_ca("Node Test Root")
    leaf = devca.make_leaf(ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    live = devca.write_set(keys, leaf, [ca])
    harper_config = {
        "replication": {"hostname": "nodea", "url": "wss://127.0.0.2:9933", "securePort": 9933},
        "tls": {
            "certificate": str(live.cert),
            "certificateAuthority": str(live.ca),
            "privateKey": str(live.key),
        },
    }
    (root / "harperdb-config.yaml").write_text(yaml.safe_dump(harper_config))
    calls = tmp / "restart-calls.txt"
    exit_file = tmp / "restart-exit.txt"
    state = tmp / "state"
    config: dict[str, Any] = {
        "harper": {"root": str(root)},
        "state_dir": str(state),
        "restart": {"method": method},
        # No Harper runs on these roots: the restart command's exit status is the outcome.
        "verify": {"enabled": False},
    }
    if method == "command":
        config["restart"]["command"] = [sys.executable, "-c", RECORDER, str(calls), str(exit_file)]
    config.update(extra or {})
    return Node(tmp, root, state, ca, live, calls, exit_file, config)


def reason(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "reason.json").read_text())
    return data


def add_public_set(
    node: Node, issuing: devca.Issued, cn: str = "www.example.com", **leaf_kwargs: Any
) -> dict[str, Any]:
    """Turn the node (one cluster set for nodea) into the issue-11 two-set layout: a public
    set ``public`` (a serverAuth-only leaf for ``cn`` from ``issuing``, full chain + key, no
    CA file, ``uses: [server, operations-api]``); returns Harper's new config tree."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    keys = node.root / "keys" / "public"
    keys.mkdir(parents=True)
    public = devca.make_leaf(issuing, cn, eku=[ExtendedKeyUsageOID.SERVER_AUTH], **leaf_kwargs)
    (keys / "fullchain.pem").write_bytes(public.cert_pem + issuing.cert_pem)
    devca.write_private(keys / "privkey.pem", public.key_pem)
    config_path = node.root / "harperdb-config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["replication"]["enableRootCAs"] = False
    config["http"] = {"securePort": 9926}
    config["tls"] = [
        {**config["tls"], "uses": ["replication"]},
        {
            "certificate": str(keys / "fullchain.pem"),
            "privateKey": str(keys / "privkey.pem"),
            "name": "public",
            "uses": ["server", "operations-api"],
        },
    ]
    config_path.write_text(yaml.safe_dump(config))
    return dict(config)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m harper_certd ARGS`` as a real process (60 s at most), text captured."""
    return subprocess.run(
        [sys.executable, "-m", "harper_certd", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )


def status_json(node: Node, *args: str) -> tuple[int, dict[str, Any]]:
    """``status --json`` for the node's configuration: (exit status, the JSON)."""
    done = run_cli("status", "--json", "--config", str(node.write_config()), *args)
    assert done.stdout, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, data
