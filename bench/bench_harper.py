"""How long a rotation takes on a real Harper 4.7.29 node, per restart method, and what it costs.

One node (``tests/harper_rig.py``, ``nodea`` on 127.0.0.2, ``threads.count: 1``) with an
RSA-2048 set; its live files are adopted first by one install with a restart (the first
install after adoption misses the hot reload, see ``tests/test_harper_integration.py``),
so every measured rotation is a steady-state one.  For each restart method, ``--runs``
rotations (default 3) through ``harper_certd.install.pipeline.install``, each with a fresh leaf
from the same CA, while a thread handshakes with the replication securePort every 50 ms:

* served after: from the ``install()`` call to the first handshake that returned the new
  leaf;
* install returned: how long ``install()`` took (it returns after its own verification);
* failed handshakes: handshakes that failed (refused, reset, TLS alert) from the call to
  0.5 s after the new leaf was first seen.

The medians per method go to a markdown table and to ``bench/results/harper.json``.

Run through ``python -m bench`` (``bench/suite.py``).  Reports only: nothing here asserts
a time.  Needs harperdb 4.7.29 (``tests/install-harper.sh``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harper_certd.config import Config, parse_config
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results" / "harper.json"
sys.path.insert(0, str(REPO / "tests"))

from harper_rig import (  # noqa: E402
    CA_FILE,
    CERT_FILE,
    HARPER_VERSION,
    KEY_FILE,
    HandshakePoller,
    HarperNode,
    LeafMaterial,
    RigCA,
    find_harper,
)

METHODS = ("hot-reload", "operations-api", "cli")
NODE = "nodea"
NODE_IP = "127.0.0.2"
POLL_INTERVAL = 0.05
SERVE_TIMEOUT = 60.0
AFTER_SERVED = 0.5  # keep polling this long after the new leaf is first seen
SETTLE = 2.0  # between rotations: Harper's 1.5 s TLS update timers run out


@dataclass(frozen=True)
class Rotation:
    method: str
    run: int
    served_after: float | None
    install_returned: float
    failed_handshakes: int
    handshakes: int
    status: str
    applied_method: str | None
    new_pid: bool


@dataclass(frozen=True)
class Summary:
    method: str
    runs: int
    served_after_median: float | None
    served_after_min: float | None
    served_after_max: float | None
    install_returned_median: float
    failed_handshakes_median: float
    failed_handshakes_max: int
    all_installed: bool


class Bench:
    def __init__(self, work: Path, node: HarperNode, ca: RigCA) -> None:
        self.work = work
        self.node = node
        self.ca = ca
        self.credentials = work / "credentials"
        self.credentials.write_text(f"admin:{node.password}\n")
        os.chmod(self.credentials, 0o600)
        self._sources = 0

    def config(self, method: str) -> Config:
        return parse_config(
            {
                "harper": {"root": str(self.node.root)},
                "state_dir": str(self.work / "state"),
                "restart": {"method": method, "timeout": 60},
                "verify": {"timeout": SERVE_TIMEOUT, "interval": 0.1, "host": self.node.ip},
                "operations_api": {"credentials_file": str(self.credentials)},
            }
        )

    def leaf(self) -> LeafMaterial:
        return self.ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])

    def source(self, leaf: LeafMaterial) -> Path:
        self._sources += 1
        folder = self.work / "sources" / f"set-{self._sources:03d}"
        folder.mkdir(parents=True)
        os.chmod(folder, 0o755)  # noqa: S103 - an ordinary source folder
        (folder / CERT_FILE).write_bytes(leaf.cert_pem)
        (folder / KEY_FILE).write_bytes(leaf.key_pem)
        os.chmod(folder / KEY_FILE, 0o600)
        (folder / CA_FILE).write_bytes(self.ca.cert_pem)
        return folder

    def adopt(self) -> None:
        """The first install: the live files become links through the state directory."""
        leaf = self.leaf()
        outcome = install(build_context(self.config("operations-api")), self.source(leaf))
        if outcome.status != "installed":
            raise RuntimeError(f"adoption failed: {outcome.as_dict()}")
        self.node.wait_for_fingerprint(leaf.fingerprint, timeout=SERVE_TIMEOUT)

    def rotate(self, method: str, run: int) -> Rotation:
        ctx = build_context(self.config(method))
        leaf = self.leaf()
        folder = self.source(leaf)
        pid = self.node.pid()
        with HandshakePoller(self.node.ip, self.node.ports.replication, POLL_INTERVAL) as poller:
            t0 = time.monotonic()
            outcome = install(ctx, folder)
            returned = time.monotonic() - t0
            served = poller.wait_for(leaf.fingerprint, t0, SERVE_TIMEOUT)
            time.sleep(AFTER_SERVED)
        until = None if served is None else t0 + served + AFTER_SERVED
        samples = [s for s in poller.snapshot(t0) if until is None or s.at <= until]
        return Rotation(
            method=method,
            run=run,
            served_after=served,
            install_returned=returned,
            failed_handshakes=sum(s.fingerprint is None for s in samples),
            handshakes=len(samples),
            status=outcome.status,
            applied_method=outcome.applied.method if outcome.applied else None,
            new_pid=self.node.pid() != pid,
        )


def summarize(method: str, rotations: list[Rotation]) -> Summary:
    served = [r.served_after for r in rotations if r.served_after is not None]
    failed = [r.failed_handshakes for r in rotations]
    return Summary(
        method=method,
        runs=len(rotations),
        served_after_median=statistics.median(served) if served else None,
        served_after_min=min(served) if served else None,
        served_after_max=max(served) if served else None,
        install_returned_median=statistics.median(r.install_returned for r in rotations),
        failed_handshakes_median=statistics.median(failed),
        failed_handshakes_max=max(failed),
        all_installed=all(r.status == "installed" for r in rotations),
    )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def table(summaries: list[Summary]) -> list[str]:
    lines = [
        "| method | served after, median (min-max) s | install() returned, median s "
        "| failed handshakes, median (max) | all installed |",
        "|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.method} | {_seconds(s.served_after_median)} "
            f"({_seconds(s.served_after_min)}-{_seconds(s.served_after_max)}) "
            f"| {s.install_returned_median:.2f} "
            f"| {s.failed_handshakes_median:g} ({s.failed_handshakes_max}) "
            f"| {'yes' if s.all_installed else 'NO'} |"
        )
    return lines


def environment() -> dict[str, Any]:
    node_bin = shutil.which("node") or "node"
    node_version = subprocess.run(
        [node_bin, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    return {
        "harper": HARPER_VERSION,
        "node": node_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "poll_interval": POLL_INTERVAL,
        "at": dt.datetime.now(dt.UTC).isoformat(),
    }


def run_rotations(runs: int, progress: Callable[[str], None] = print) -> list[Rotation] | None:
    """``runs`` rotations per method on one real Harper node (None when harperdb 4.7.29 is
    not installed: ``tests/install-harper.sh``).  The node runs on a loopback address with
    its own root under a temporary folder and is stopped through its own pid."""
    if find_harper() is None:
        return None
    work = Path(tempfile.mkdtemp(prefix="bench-harper-"))
    node = HarperNode(work, NODE, NODE_IP, pristine_cache=work / "pristine")
    rotations: list[Rotation] = []
    try:
        ca = RigCA("harper-certd bench CA")
        node.install()
        first = ca.issue(NODE, dns_names=[NODE], ip_addresses=[NODE_IP])
        node.write_tls_files(first.cert_pem, first.key_pem, ca.cert_pem)
        node.start(expect_fingerprint=first.fingerprint)
        bench = Bench(work, node, ca)
        bench.adopt()
        for method in METHODS:
            for run in range(1, runs + 1):
                time.sleep(SETTLE)
                rotation = bench.rotate(method, run)
                rotations.append(rotation)
                progress(
                    f"{method} #{run}: served after {_seconds(rotation.served_after)} s, "
                    f"{rotation.failed_handshakes}/{rotation.handshakes} handshakes failed, "
                    f"{rotation.status}{', new pid' if rotation.new_pid else ''}"
                )
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)
    return rotations


