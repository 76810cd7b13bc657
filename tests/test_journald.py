"""CLI operations reach the journal in the daemon's JSON events (a real datagram socket)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from nodefix import make_node


def _fields(datagram: bytes) -> dict[str, str]:
    out = {}
    for line in datagram.decode().splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def test_install_and_rollback_reach_the_journal(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    cfg = str(node.write_config())
    with tempfile.TemporaryDirectory(prefix="j") as short:  # AF_UNIX paths: 108 bytes at most
        path = os.path.join(short, "journal.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal:
            journal.bind(path)
            journal.settimeout(0.5)
            env = {**os.environ, "HARPER_CERTD_JOURNAL_SOCKET": path}
            for args in (["install", str(node.source("one"))], ["rollback"]):
                done = subprocess.run(
                    [sys.executable, "-m", "harper_certd", *args, "--config", cfg],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=60,
                )
                assert done.returncode == 0, done.stderr
            grams: list[bytes] = []
            while True:
                try:
                    grams.append(journal.recv(65536))
                except TimeoutError:
                    break
    assert all(b"PRIVATE KEY" not in g for g in grams)
    fields = [_fields(g) for g in grams]
    assert {f["SYSLOG_IDENTIFIER"] for f in fields} == {"harper-certd"}
    events = [json.loads(f["MESSAGE"]) for f in fields]
    names = [e["event"] for e in events]
    assert "certd.set_installed" in names
    assert "certd.operator_rollback" in names
    installed = events[names.index("certd.set_installed")]
    assert installed["fingerprint"]
    assert installed["level"] == "info"
    assert fields[names.index("certd.set_installed")]["PRIORITY"] == "6"
    assert fields[names.index("certd.operator_rollback")]["PRIORITY"] == "4"


def test_no_journald_is_a_silent_no_op(tmp_path: Path) -> None:
    from harper_certd import journald

    assert journald.attach({"HARPER_CERTD_JOURNAL_SOCKET": str(tmp_path / "none")}) is None


def test_key_material_is_redacted_in_the_datagram() -> None:
    from harper_certd import devca, journald

    key = devca.make_leaf(devca.make_ca()).key_pem.decode()
    gram = journald._datagram(
        "certd.set_refused", {"level": "error", "reason": key, "nested": {"k": [key]}}
    )
    assert b"PRIVATE KEY" not in gram
    event = json.loads(_fields(gram)["MESSAGE"])
    assert event["reason"] == "[redacted]"
    assert event["nested"] == {"k": ["[redacted]"]}
    assert _fields(gram)["PRIORITY"] == "3"
