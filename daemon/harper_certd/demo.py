"""``harper-certd demo``: a newcomer's first look, in a temporary folder."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

import yaml

from harper_certd import devca, discover, render
from harper_certd.check import check


def make_demo_root(root: Path) -> None:
    """A Harper-style root: config naming files in keys/, a valid live set."""
    ca = devca.make_ca("harper-certd demo root")
    leaf = devca.make_leaf(ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    devca.write_set(root / "keys", leaf, [ca])
    config = {
        "replication": {"hostname": "nodea", "url": "wss://127.0.0.2:9933", "securePort": 9933},
        "tls": {
            "certificate": str(root / "keys" / "certificate.pem"),
            "certificateAuthority": str(root / "keys" / "ca.pem"),
            "privateKey": str(root / "keys" / "privateKey.pem"),
        },
    }
    (root / discover.CONFIG_NAME).write_text(yaml.safe_dump(config))


def run_demo(*, keep: bool = False) -> int:
    folder = Path(tempfile.mkdtemp(prefix="harper-certd-demo-"))
    try:
        root = folder / "hdb"
        root.mkdir()
        make_demo_root(root)
        print(f"Demo Harper root with a fresh certificate set: {root}\n")
        result = check(discover.load_config(root), dt.datetime.now(dt.UTC))
        print("\n".join(render.check_lines(result)))
        return 0 if result.valid else 1
    finally:
        if keep:
            print(f"\nkept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
