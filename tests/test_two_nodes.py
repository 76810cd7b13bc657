"""Two real Harper 4.7.29 nodes replicating over mTLS while harper-certd rotates their sets.

``nodea`` (127.0.0.2) and ``nodeb`` (127.0.0.3) share one CA, are joined once with
``add_node`` and from then on authenticate each other by certificate only
(``authorizeLocal: false``, ``enableRootCAs: false``).  Each node gets three rotations,
first A then B; after every rotation a row inserted on one node must be readable on the
other within a few seconds, both ways.

Two drivers make the rotations:

* ``daemon``: one ``harper-certd run --config FILE`` process per node; a rotation is a
  folder renamed into the node's ``incoming_dir`` and ends with the daemon's
  ``certd.set_installed`` event for the new fingerprint.  Skipped while the ``run``
  command does not exist.
* ``service``: ``harper_certd.install.pipeline.install`` called in-process, the same code path
  the daemon runs for each incoming set.

A last test restarts both nodes, so that every replication connection is made afresh with
the rotated certificates (a hot reload keeps the connections that are already open).

Latencies are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import pytest
import yaml

from harper_certd.config import parse_config
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_rig import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    HarperError,
    HarperNode,
    LeafMaterial,
    RigCA,
    iter_rig_processes,
    needs_harper,
)

pytestmark = needs_harper(timeout=300)

NODES = (("nodea", "127.0.0.2"), ("nodeb", "127.0.0.3"))
DATABASE = "certd"
TABLE = "probe"
ROTATIONS = ("nodea", "nodea", "nodea", "nodeb", "nodeb", "nodeb")
REPLICATION_TIMEOUT = 5.0  # "within a few seconds"
JOIN_TIMEOUT = 30.0  # the first connection after add_node or a restart
ROTATION_TIMEOUT = 60.0
DAEMON_START_TIMEOUT = 30.0


@dataclass
class Member:
    """One node of the cluster and the daemon configuration that manages it."""

    node: HarperNode
    work: Path
    credentials: Path
    _sets: int = field(default=0, init=False)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def incoming(self) -> Path:
        return self.work / "incoming"

    def config_data(self, method: str = "auto") -> dict[str, Any]:
        return {
            "harper": {"root": str(self.node.root)},
            "state_dir": str(self.work / "state"),
            "incoming_dir": str(self.incoming),
            "processed_dir": str(self.work / "processed"),
            "rejected_dir": str(self.work / "rejected"),
            "restart": {"method": method},
            "verify": {"timeout": 30, "interval": 0.1, "host": self.node.ip},
            "operations_api": {"credentials_file": str(self.credentials)},
            "watch": {"settle_seconds": 0.5},
            "log": {"format": "json", "level": "info"},
        }

    def write_config(self) -> Path:
        path = self.work / "certd.yaml"
        path.write_text(yaml.safe_dump(self.config_data(), sort_keys=False))
        return path

    def staged_set(self, leaf: LeafMaterial, ca: RigCA) -> Path:
        """A complete set in a new 0755 folder on the same filesystem as ``incoming``."""
        self._sets += 1
        folder = self.work / "staging" / f"set-{self._sets:03d}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        os.chmod(folder, 0o755)  # noqa: S103 - an ordinary source folder
        (folder / CERT_FILE).write_bytes(leaf.cert_pem)
        (folder / KEY_FILE).write_bytes(leaf.key_pem)
        os.chmod(folder / KEY_FILE, 0o600)
        (folder / CA_FILE).write_bytes(ca.cert_pem)
        return folder

    def secure_ports(self) -> dict[str, int]:
        ports = self.node.ports
        return {
            "replication": ports.replication,
            "http": ports.http_secure,
            "mqtt": ports.mqtt_secure,
        }


@dataclass
class Cluster:
    ca: RigCA
    members: dict[str, Member]
    serving: dict[str, str] = field(default_factory=dict)  # node name -> leaf fingerprint

    def issue(self, member: Member) -> LeafMaterial:
        return self.ca.issue(member.name, dns_names=[member.name], ip_addresses=[member.node.ip])

    def peer(self, member: Member) -> Member:
        return next(m for m in self.members.values() if m is not member)


# --------------------------------------------------------------------------- replication


def replicate(src: HarperNode, dst: HarperNode, timeout: float) -> float:
    """Insert a row on ``src``; seconds until ``dst`` returns it (AssertionError on timeout)."""
    row_id = f"{src.name}-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    src.operation(
        {
            "operation": "insert",
            "database": DATABASE,
            "table": TABLE,
            "records": [{"id": row_id, "origin": src.name}],
        }
    )
    while time.monotonic() - t0 < timeout:
        found = dst.operation_raw(
            {
                "operation": "search_by_id",
                "database": DATABASE,
                "table": TABLE,
                "ids": [row_id],
                "get_attributes": ["*"],
            }
        )
        if isinstance(found, list) and found:
            return time.monotonic() - t0
        time.sleep(0.01)
    status = {n.name: n.operation({"operation": "cluster_status"}) for n in (src, dst)}
    raise AssertionError(
        f"row {row_id} from {src.name} not on {dst.name} within {timeout} s; "
        f"cluster_status: {json.dumps(status)[:3000]}"
    )


def both_ways(cluster: Cluster, timeout: float = REPLICATION_TIMEOUT) -> tuple[float, float]:
    a, b = (cluster.members[name].node for name, _ in NODES)
    return replicate(a, b, timeout), replicate(b, a, timeout)


def _wait_for_table(node: HarperNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            node.operation({"operation": "describe_table", "database": DATABASE, "table": TABLE})
        except HarperError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two started nodes with the same CA, joined once, with a replicated table."""
    base = tmp_path_factory.mktemp("two-nodes")
    cache = tmp_path_factory.getbasetemp() / "harper-pristine"
    ca = RigCA("harper-certd two-node CA")
    members: dict[str, Member] = {}
    for name, ip in NODES:
        node = HarperNode(base, name, ip, pristine_cache=cache)
        work = base / f"{name}-certd"
        work.mkdir()
        credentials = work / "credentials"
        credentials.write_text(f"admin:{node.password}\n")
        os.chmod(credentials, 0o600)
        members[name] = Member(node, work, credentials)
    the_cluster = Cluster(ca, members)
    a, b = members["nodea"], members["nodeb"]
    try:
        for member in members.values():
            member.node.install()
            first = the_cluster.issue(member)
            member.node.write_tls_files(first.cert_pem, first.key_pem, ca.cert_pem)
        for member in members.values():
            member.node.start()
        a.node.operation(
            {
                "operation": "add_node",
                "hostname": b.name,
                "url": f"wss://{b.node.ip}:{b.node.ports.replication}",
                "authorization": {"username": "admin", "password": b.node.password},
            }
        )
        a.node.operation({"operation": "create_database", "database": DATABASE})
        a.node.operation(
            {"operation": "create_table", "database": DATABASE, "table": TABLE, "primary_key": "id"}
        )
        _wait_for_table(b.node, JOIN_TIMEOUT)
        both_ways(the_cluster, JOIN_TIMEOUT)
        # The first install adopts the live files (they become links into the state
        # directory).  A restart method makes that independent of the daemon's
        # adoption/hot-reload race (see test_harper_integration), so that every measured
        # rotation below is a steady-state one.
        for member in members.values():
            ctx = build_context(parse_config(member.config_data("operations-api")))
            leaf = the_cluster.issue(member)
            outcome = install(ctx, member.staged_set(leaf, ca))
            assert outcome.status == "installed", outcome.as_dict()
            the_cluster.serving[member.name] = leaf.fingerprint
        both_ways(the_cluster, JOIN_TIMEOUT)
        yield the_cluster
    finally:
        for member in members.values():
            member.node.stop()
        leftovers = list(iter_rig_processes(base))
        assert not leftovers, f"Harper processes left behind: {leftovers}"


# --------------------------------------------------------------------------- drivers


class Driver(Protocol):
    def rotate(self, member: Member, leaf: LeafMaterial) -> float: ...

    def close(self) -> None: ...


class ServiceDriver:
    """Rotations through ``harper_certd.install.pipeline.install`` in this process."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def rotate(self, member: Member, leaf: LeafMaterial) -> float:
        ctx = build_context(parse_config(member.config_data()))
        t0 = time.monotonic()
        outcome = install(ctx, member.staged_set(leaf, self.cluster.ca))
        assert outcome.status == "installed", outcome.as_dict()
        return time.monotonic() - t0

    def close(self) -> None:
        pass


def daemon_available() -> bool:
    """Whether ``harper-certd run`` exists in this checkout."""
    probe = subprocess.run(
        [sys.executable, "-m", "harper_certd", "run", "--help"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0


class Daemon:
    """``harper-certd run --config FILE`` as a subprocess; its JSON log lines as events."""

    def __init__(self, config: Path, stderr_path: Path) -> None:
        self.config = config
        self.stderr_path = stderr_path
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._new: queue.Queue[None] = queue.Queue()
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harper_certd", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, name="certd-reader", daemon=True)
        self._reader.start()
        self.wait_event("certd.started", DAEMON_START_TIMEOUT)

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            text = line.strip()
            # Journal stream format: "<6>{...json...}".
            if text.startswith("<") and ">" in text[:4]:
                text = text[text.index(">") + 1 :]
            with self._lock:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    event = json.loads(text)
                    if isinstance(event, dict):
                        self.events.append(event)
            self._new.put(None)
        self._new.put(None)

    def wait_event(
        self, name: str, timeout: float, *, since: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The first event ``name`` (index >= ``since``) whose fields match ``fields``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for event in self.events[since:]:
                    if event.get("event") == name and all(
                        event.get(k) == v for k, v in fields.items()
                    ):
                        return event
                bad = [
                    e
                    for e in self.events[since:]
                    if e.get("event")
                    in ("certd.set_refused", "certd.rolled_back", "certd.rollback_failed")
                ]
            if bad:
                raise AssertionError(f"waiting for {name}, the daemon said: {bad}")
            if self.proc is not None and self.proc.poll() is not None and self._new.empty():
                raise AssertionError(
                    f"harper-certd run exited {self.proc.returncode} while waiting for {name}; "
                    f"stderr: {self.stderr_path.read_text()[-2000:]}"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {name} {fields} within {timeout} s; last lines: {self.raw[-10:]}"
                )
            with contextlib.suppress(queue.Empty):
                self._new.get(timeout=min(left, 0.2))

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 20 s); the exit status, None if it never ran."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode


class DaemonDriver:
    """Rotations through one ``harper-certd run`` per node: rename a folder into incoming."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.daemons: dict[str, Daemon] = {}
        self.exit_codes: dict[str, int | None] = {}

    def __enter__(self) -> DaemonDriver:
        try:
            for member in self.cluster.members.values():
                member.incoming.mkdir(mode=0o700, exist_ok=True)
                daemon = Daemon(member.write_config(), member.work / "certd-stderr.log")
                self.daemons[member.name] = daemon
                daemon.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def rotate(self, member: Member, leaf: LeafMaterial) -> float:
        daemon = self.daemons[member.name]
        staged = member.staged_set(leaf, self.cluster.ca)
        since = daemon.mark()
        t0 = time.monotonic()
        os.rename(staged, member.incoming / staged.name)
        daemon.wait_event(
            "certd.set_installed", ROTATION_TIMEOUT, since=since, fingerprint=leaf.fingerprint
        )
        return time.monotonic() - t0

    def close(self) -> None:
        for name, daemon in self.daemons.items():
            self.exit_codes[name] = daemon.stop()


# --------------------------------------------------------------------------- tests


def _rotate_six_times(cluster: Cluster, driver: Driver, label: str) -> None:
    rows = []
    for name in ROTATIONS:
        member = cluster.members[name]
        leaf = cluster.issue(member)
        installed_after = driver.rotate(member, leaf)
        served = {p: member.node.try_fingerprint(port) for p, port in member.secure_ports().items()}
        assert served == dict.fromkeys(served, leaf.fingerprint), f"{name}: {served}"
        cluster.serving[name] = leaf.fingerprint
        a_to_b, b_to_a = both_ways(cluster)
        rows.append((name, installed_after, a_to_b, b_to_a))
    print(f"\n[{label}] rotation | installed after (s) | A->B (ms) | B->A (ms)")
    for name, installed_after, a_to_b, b_to_a in rows:
        print(f"  {name} | {installed_after:.2f} | {a_to_b * 1000:.0f} | {b_to_a * 1000:.0f}")
    latencies = [r[2] for r in rows] + [r[3] for r in rows]
    print(f"  replication latency median {statistics.median(latencies) * 1000:.0f} ms")


def test_rotations_through_service_keep_replication(cluster: Cluster) -> None:
    """Three rotations per node by service.install keep replication working both ways."""
    driver = ServiceDriver(cluster)
    try:
        _rotate_six_times(cluster, driver, "service.install")
    finally:
        driver.close()


def test_rotations_through_daemon_keep_replication(cluster: Cluster) -> None:
    """Three rotations per node by ``harper-certd run`` keep replication working both ways."""
    if not daemon_available():
        pytest.skip("`harper-certd run` is not available yet in this checkout")
    with DaemonDriver(cluster) as driver:
        _rotate_six_times(cluster, driver, "harper-certd run")
    for name, daemon in driver.daemons.items():
        assert driver.exit_codes[name] == 0, daemon.stderr_path.read_text()[-2000:]
        daemon.wait_event("certd.stopped", 0.0)


def test_fresh_connections_after_rotations(cluster: Cluster) -> None:
    """After both nodes restart, new mTLS connections with the rotated sets replicate."""
    for member in cluster.members.values():
        member.node.restart(expect_fingerprint=cluster.serving[member.name])
    a_to_b, b_to_a = both_ways(cluster, JOIN_TIMEOUT)
    print(f"\n[after restarts] A->B {a_to_b * 1000:.0f} ms, B->A {b_to_a * 1000:.0f} ms")
    # Replication is proven both ways above; cluster_status reports each database's socket,
    # and one may still be (re)connecting at that instant (CI saw it under load): every one
    # must report connected within JOIN_TIMEOUT.
    for member in cluster.members.values():
        peer = cluster.peer(member).name
        deadline = time.monotonic() + JOIN_TIMEOUT
        while True:
            status = member.node.operation({"operation": "cluster_status"})
            connections = status.get("connections")
            assert isinstance(connections, list)
            sockets = [
                s
                for c in connections
                if isinstance(c, dict) and c.get("name") == peer
                for s in c.get("database_sockets", [])
            ]
            if sockets and all(s.get("connected") for s in sockets):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
