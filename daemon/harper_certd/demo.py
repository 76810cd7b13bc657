"""``harper-certd demo``: a newcomer's first look, in a temporary folder, in seconds.

A test CA, a Harper-style root with a live set, the real daemon as a child process
with a ``command`` restart that only records its calls; a valid replacement is
dropped, then a broken one, and the daemon's log lines are shown as they come.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harper_certd import devca, discover
from harper_certd.pyyaml import yaml

DEADLINE = 30.0  # the whole demo, seconds (Node judges each set: one short process a set)
RECORDER = "import sys, time; open(sys.argv[1], 'a').write(f'{time.time()}\\n')"


def make_demo_root(root: Path) -> devca.Issued:
    """A Harper-style root: config naming files in keys/, a valid live set; returns the CA."""
    ca = devca.make_ca("harper-certd demo root")
    leaf = devca.make_leaf(ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    devca.write_set(root / "keys", leaf, [ca])
    config = {
        "replication": {
            "hostname": "nodea",
            "url": "wss://127.0.0.2:9933",
            "securePort": 9933,
            "enableRootCAs": False,
        },
        "tls": {
            "certificate": str(root / "keys" / "certificate.pem"),
            "certificateAuthority": str(root / "keys" / "ca.pem"),
            "privateKey": str(root / "keys" / "privateKey.pem"),
        },
    }
    (root / discover.CONFIG_NAME).write_text(yaml.safe_dump(config))
    return ca


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text[:16] + "…"  # a fingerprint
    return text if len(text) <= 70 else text[:67] + "…"


def render(event: dict[str, Any], folder: Path) -> str:
    skip = {"ts", "level", "event", "version"}
    fields = " ".join(
        f"{k}={_short(v).replace(str(folder), '…')}" for k, v in event.items() if k not in skip
    )
    ts = str(event.get("ts", ""))[11:19]
    return f"{ts} {event.get('level', '?'):<8} {event.get('event', '?'):<22} {fields}"


def _drop(folder: Path, incoming: Path, name: str, ca: devca.Issued, *, broken: bool) -> None:
    leaf = devca.make_leaf(ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    staging = folder / "staging" / name
    devca.write_set(staging, leaf, [ca])
    os.chmod(staging, 0o755)  # noqa: S103 - an ordinary folder; the daemon refuses looser ones
    if broken:  # the key of another certificate: Harper would fall back to a self-signed one
        devca.write_private(staging / "privateKey.pem", devca.make_leaf(ca).key_pem)
    os.rename(staging, incoming / name)


def _wait(events: queue.Queue[dict[str, Any]], name: str, started: float) -> dict[str, Any]:
    while True:
        left = DEADLINE - (time.monotonic() - started)
        if left <= 0:
            raise TimeoutError(f"the demo timed out waiting for {name}")
        event = events.get(timeout=left)
        if event.get("event") == name:
            return event


def run_demo(*, keep: bool = False) -> int:
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="harper-certd-demo-"))
    proc: subprocess.Popen[str] | None = None
    try:
        root = folder / "hdb"
        root.mkdir()
        ca = make_demo_root(root)
        calls = folder / "restart-calls.txt"
        config = {
            "harper": {"root": str(root)},
            "state_dir": str(folder / "state"),
            "restart": {
                "method": "command",
                "command": [sys.executable, "-c", RECORDER, str(calls)],
            },
            "watch": {"settle_seconds": 0.5},
            "verify": {"enabled": False},  # no Harper runs in the demo: trust the command
            "log": {"format": "json"},
        }
        config_path = folder / "harper-certd.yaml"
        config_path.write_text(yaml.safe_dump(config))
        print(f"demo folder {folder}: a Harper root with a live set, and a daemon watching it\n")
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "harper_certd", "run", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        events: queue.Queue[dict[str, Any]] = queue.Queue()

        def read() -> None:
            assert proc is not None
            assert proc.stdout is not None
            for line in proc.stdout:
                body = line.split(">", 1)[1] if line.startswith("<") else line
                try:
                    event = json.loads(body)
                except ValueError:
                    event = {"event": "(output)", "line": line.strip()}
                print(render(event, folder), flush=True)
                events.put(event)

        threading.Thread(target=read, daemon=True).start()

        def wait(name: str) -> dict[str, Any]:
            return _wait(events, name, started)

        incoming = root / "keys" / "incoming"
        wait("certd.started")
        print("\n>>> dropping a valid replacement into keys/incoming/", flush=True)
        _drop(folder, incoming, "renewed-set", ca, broken=False)
        wait("certd.set_installed")
        print("\n>>> dropping a broken set (the key of another certificate)", flush=True)
        _drop(folder, incoming, "broken-set", ca, broken=True)
        wait("certd.set_refused")
        proc.send_signal(signal.SIGTERM)
        wait("certd.stopped")
        code = proc.wait(timeout=max(1.0, DEADLINE - (time.monotonic() - started)))
        restarts = len(calls.read_text().splitlines()) if calls.exists() else 0
        rejected = sorted((root / "keys" / "rejected").glob("*/reason.json"))
        print(
            f"\nHarper restarts requested: {restarts} (one for the valid set, none for the "
            "broken one)"
        )
        if rejected:
            where = rejected[0].parent
            print(
                f"the broken set is kept, with its reason.json, in {where}"
                + ("" if keep else " (run with --keep to look at it)")
            )
        print(f"daemon exit status {code}; demo took {time.monotonic() - started:.1f}s")
    except (TimeoutError, queue.Empty, subprocess.TimeoutExpired) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    else:
        return 0 if code == 0 and restarts == 1 and rejected else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
