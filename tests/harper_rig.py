"""Run real Harper (HarperDB 4.7.29) nodes for integration tests.

Plain functions and classes, no pytest fixtures: tests wrap them.

* :func:`find_harper` locates ``harperdb.js`` installed by ``tests/install-harper.sh``.
* :class:`HarperNode` installs, configures, starts and stops one node, with its own
  ``HOME``, ``ROOTPATH`` and free ports, and talks to it (TLS probe, Operations API).
* :class:`RigCA` / :class:`LeafMaterial` make test certificates (RSA, so that Harper's
  node-forge code paths can parse them too).
* :class:`GenerationStore` builds the Kubernetes AtomicWriter-style symlink layout
  (``keys/<file> -> <state>/current/<file>``, ``current -> generations/<id>``).
* :class:`HandshakePoller` records, in a thread, which certificate a port serves over time.

Every wait is bounded by a timeout. :meth:`HarperNode.stop` always leaves no process of
the node behind: it finds them by the ``ROOTPATH`` in their environment and by
``hdb.pid``, and kills their process group if ``harperdb stop`` is not enough.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from harper_certd import devca
from harper_certd.harper.probe import served
from harper_certd.harper.process import harper_pid

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "HARPER_VERSION",
    "KEY_FILE",
    "GenerationStore",
    "HandshakePoller",
    "HarperError",
    "HarperNode",
    "HarperPorts",
    "LeafMaterial",
    "RigCA",
    "Sample",
    "find_harper",
    "fingerprint_der",
    "fingerprint_pem",
    "free_ports",
    "harper_dir",
    "iter_rig_processes",
    "probe_fingerprint",
]

HARPER_VERSION = "4.7.29"

CERT_FILE = "certificate.pem"
KEY_FILE = "privateKey.pem"
CA_FILE = "ca.pem"
TLS_FILES = (CERT_FILE, KEY_FILE, CA_FILE)

ADMIN_USERNAME = "admin"
DEFAULT_PASSWORD = "rig-admin-password"  # noqa: S105 - throw-away test nodes

# A Unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100


class HarperError(RuntimeError):
    """A Harper node did not do what the rig asked within its timeout."""


# --------------------------------------------------------------------------- finding


def harper_dir(version: str = HARPER_VERSION) -> Path:
    """The directory ``tests/install-harper.sh`` installs harperdb ``version`` into.

    For 4.7.29 ``$HARPER_CERTD_HARPER_DIR`` when set; else
    ``${XDG_CACHE_HOME:-$HOME/.cache}/harper-certd/harperdb-<version>``.
    """
    override = os.environ.get("HARPER_CERTD_HARPER_DIR")
    if override and version == HARPER_VERSION:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "harper-certd" / f"harperdb-{version}"


def find_harper(version: str = HARPER_VERSION) -> Path | None:
    """The ``harperdb.js`` entry point of an installed harperdb ``version``, or None."""
    base = harper_dir(version) / "node_modules" / "harperdb"
    entry = base / "bin" / "harperdb.js"
    try:
        meta = json.loads((base / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("version") != version:
        return None
    if not entry.is_file() or shutil.which("node") is None:
        return None
    return entry


def needs_harper(timeout: int, *lines: str) -> list[pytest.MarkDecorator]:
    """The marks of a module that runs real Harper nodes: marked, bounded, skipped without
    them (``lines``: the versions it runs, default 4.7.29)."""
    missing = [v for v in lines or (HARPER_VERSION,) if find_harper(v) is None]
    return [
        pytest.mark.harper,
        pytest.mark.timeout(timeout),
        pytest.mark.skipif(
            bool(missing),
            reason=f"harperdb {', '.join(missing)} not installed: run tests/install-harper.sh "
            "(or set HARPER_CERTD_HARPER_DIR)",
        ),
    ]


# --------------------------------------------------------------------------- ports

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on all interfaces (Harper binds ``*``).

    Ports handed out earlier in this process are never returned again, so nodes that
    are created before any of them starts do not collide.
    """
    with _ports_lock:
        held: list[socket.socket] = []
        ports: list[int] = []
        try:
            for _ in range(count * 20):
                if len(ports) == count:
                    break
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                held.append(sock)
                sock.bind(("", 0))
                port = int(sock.getsockname()[1])
                if port not in _handed_out and port not in ports:
                    ports.append(port)
        finally:
            for sock in held:
                sock.close()
        if len(ports) != count:
            raise HarperError(f"could not find {count} free ports")
        _handed_out.update(ports)
        return ports


# --------------------------------------------------------------------------- certificates


def fingerprint_der(der: bytes) -> str:
    """SHA-256 of a DER certificate, lowercase hex without separators."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: bytes | str) -> str:
    """SHA-256 fingerprint of the first certificate in ``pem``."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    cert = x509.load_pem_x509_certificate(data)
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class LeafMaterial:
    """A leaf certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint_pem(self.cert_pem)


class RigCA:
    """A throw-away certificate authority (RSA 2048, SHA-256), made by harper_certd.devca."""

    def __init__(self, common_name: str = "harper-certd rig CA", *, days: int = 365) -> None:
        now = dt.datetime.now(dt.UTC)
        self.issued = devca.make_ca(
            common_name,
            key=devca.make_key("rsa", 2048),
            not_before=now - dt.timedelta(hours=1),
            not_after=now + dt.timedelta(days=days),
        )
        self.key = self.issued.key
        self.cert = self.issued.cert

    @property
    def cert_pem(self) -> bytes:
        return self.issued.cert_pem

    @property
    def fingerprint(self) -> str:
        return devca.fingerprint_of(self.cert)

    def issue(
        self,
        common_name: str,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        days: int = 30,
        not_before: dt.datetime | None = None,
        server_auth: bool = True,
        client_auth: bool = True,
    ) -> LeafMaterial:
        """A leaf with CN ``common_name``, the given SANs and EKUs (RSA 2048)."""
        start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
        ekus = [
            oid
            for oid, wanted in (
                (ExtendedKeyUsageOID.SERVER_AUTH, server_auth),
                (ExtendedKeyUsageOID.CLIENT_AUTH, client_auth),
            )
            if wanted
        ]
        leaf = devca.make_leaf(
            self.issued,
            common_name,
            dns=list(dns_names),
            ips=ip_addresses,
            eku=ekus or None,
            key=devca.make_key("rsa", 2048),
            not_before=start,
            not_after=start + dt.timedelta(days=days),
            key_encipherment=True,
        )
        return LeafMaterial(leaf.cert_pem, leaf.key_pem)


# --------------------------------------------------------------------------- TLS probing


def probe_fingerprint(
    host: str, port: int, *, server_name: str | None = None, timeout: float = 3.0
) -> str:
    """Fingerprint of the leaf served on ``host:port`` (verification off), by the daemon's
    own probe.  Without ``server_name`` no SNI is sent, like a peer that dials an address.
    Raises ``OSError`` when the handshake fails.
    """
    seen = served(host, port, timeout, server_name=server_name)
    if seen.sha256 is None:
        raise OSError(seen.error)
    return seen.sha256


@dataclass(frozen=True)
class Sample:
    """One handshake: when it started (``time.monotonic()``) and what it returned."""

    at: float
    fingerprint: str | None
    error: str | None = None


def outages(samples: list[Sample]) -> list[tuple[float, float]]:
    """Runs of failed handshakes as (first failure, last failure) in monotonic time."""
    runs: list[tuple[float, float]] = []
    start: float | None = None
    last = 0.0
    for sample in samples:
        if sample.fingerprint is None:
            start = sample.at if start is None else start
            last = sample.at
        elif start is not None:
            runs.append((start, last))
            start = None
    if start is not None:
        runs.append((start, last))
    return runs


@dataclass
class HandshakePoller:
    """Handshake with ``host:port`` every ``interval`` seconds in a background thread."""

    host: str
    port: int
    interval: float = 0.05
    server_name: str | None = None
    timeout: float = 2.0
    samples: list[Sample] = field(default_factory=list, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def start(self) -> HandshakePoller:
        if self._thread is not None:
            raise RuntimeError("poller already started")
        self._thread = threading.Thread(target=self._run, name="handshake-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def __enter__(self) -> HandshakePoller:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            try:
                sample = Sample(
                    at,
                    probe_fingerprint(
                        self.host, self.port, server_name=self.server_name, timeout=self.timeout
                    ),
                )
            except OSError as exc:
                sample = Sample(at, None, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - at)))

    def snapshot(self, since: float = 0.0) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.at >= since]

    def first_serving(self, fingerprint: str, since: float = 0.0) -> float | None:
        """Seconds from ``since`` to the first handshake that returned ``fingerprint``."""
        for s in self.snapshot(since):
            if s.fingerprint == fingerprint:
                return s.at - since
        return None

    def failures(self, since: float = 0.0, until: float | None = None) -> list[Sample]:
        return [
            s
            for s in self.snapshot(since)
            if s.fingerprint is None and (until is None or s.at <= until)
        ]

    def wait_for(self, fingerprint: str, since: float, timeout: float) -> float | None:
        """Wait (bounded) until ``fingerprint`` was served after ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.first_serving(fingerprint, since)
            if found is not None:
                return found
            time.sleep(self.interval / 2)
        return self.first_serving(fingerprint, since)


# --------------------------------------------------------------------------- files


def _atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to a temp file in ``path``'s directory, then rename it over ``path``.

    A symlink at ``path`` is replaced by the file, not followed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else data


class GenerationStore:
    """Kubernetes AtomicWriter-style layout of the three TLS files.

    ``<state>/generations/<id>/{certificate.pem,privateKey.pem,ca.pem}`` hold real
    files, ``<state>/current`` is a symlink to one generation, and
    :meth:`link_into` makes ``<keys>/<file>`` symlinks to ``<state>/current/<file>``.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.generations = state_dir / "generations"
        self.current = state_dir / "current"

    def generation_dir(self, gen_id: str) -> Path:
        return self.generations / gen_id

    def write_generation(
        self, gen_id: str, cert_pem: bytes | str, key_pem: bytes | str, ca_pem: bytes | str
    ) -> Path:
        gdir = self.generation_dir(gen_id)
        if gdir.exists():
            raise FileExistsError(gdir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{gen_id}.", dir=self._ensure_generations()))
        (tmp / CERT_FILE).write_bytes(_as_bytes(cert_pem))
        (tmp / KEY_FILE).write_bytes(_as_bytes(key_pem))
        (tmp / CA_FILE).write_bytes(_as_bytes(ca_pem))
        for name in TLS_FILES:
            os.chmod(tmp / name, 0o600)
        os.rename(tmp, gdir)
        return gdir

    def _ensure_generations(self) -> Path:
        self.generations.mkdir(parents=True, exist_ok=True)
        return self.generations

    def current_id(self) -> str | None:
        try:
            return Path(os.readlink(self.current)).name
        except OSError:
            return None

    def flip(self, gen_id: str) -> str | None:
        """Point ``current`` at ``gen_id`` atomically; return the previous id."""
        if not self.generation_dir(gen_id).is_dir():
            raise FileNotFoundError(self.generation_dir(gen_id))
        previous = self.current_id()
        tmp = self.state_dir / f".current.{os.getpid()}.{time.monotonic_ns()}"
        os.symlink(Path("generations") / gen_id, tmp)
        try:
            os.replace(tmp, self.current)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return previous

    def link_into(self, keys_dir: Path) -> None:
        """Make ``keys_dir/<file>`` symlinks to ``<state>/current/<file>``."""
        keys_dir.mkdir(parents=True, exist_ok=True)
        for name in TLS_FILES:
            link = keys_dir / name
            tmp = keys_dir / f".{name}.link.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.current / name, tmp)
            os.replace(tmp, link)

    def touch(self, gen_id: str, names: Sequence[str] = TLS_FILES) -> None:
        """``os.utime()`` (now) on files of one generation."""
        for name in names:
            os.utime(self.generation_dir(gen_id) / name)

    def nudge(self, previous_id: str, pause: float = 0.3) -> None:
        """Touch the previous generation's key, wait ``pause``, then its cert and CA.

        Harper's watchers (chokidar over fs.watch/inotify) hold the inodes that the
        symlinks resolved to when they were set up, i.e. the previous generation's
        files; touching them wakes the watchers, which then stat the path again (now
        resolving to the new generation) and re-watch the new inode.
        """
        self.touch(previous_id, (KEY_FILE,))
        time.sleep(pause)
        self.touch(previous_id, (CERT_FILE, CA_FILE))


# --------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class HarperPorts:
    replication: int
    operations: int
    http: int
    http_secure: int
    mqtt: int
    mqtt_secure: int
    operations_secure: int | None = None
    # NATS clustering (4.0-4.3): hub routes (direct TLS), hub client, hub leaf, leaf server
    nats: tuple[int, int, int, int] | None = None


def _short_socket_path(root: Path) -> tuple[Path, Path | None]:
    """A domain-socket path short enough for sun_path, and a temp dir to remove."""
    candidate = root / "ops.sock"
    if len(str(candidate)) <= _MAX_SOCKET_PATH:
        return candidate, None
    tmpdir = Path(tempfile.mkdtemp(prefix="hrig-"))
    return tmpdir / "ops.sock", tmpdir


class HarperNode:
    """One real Harper node under ``<base_dir>/<name>/{home,root}``.

    Typical use::

        node = HarperNode(tmp_path, "nodea", "127.0.0.2")
        node.install()
        node.write_tls_files(leaf.cert_pem, leaf.key_pem, ca.cert_pem)
        try:
            node.start(expect_fingerprint=leaf.fingerprint)
            ...
        finally:
            node.stop()

    ``pristine_cache``: a directory where the first ``install()`` of a node name keeps a
    copy of the freshly installed root and home; later installs of that name copy it
    (about 0.05 s instead of about 4 s) and rewrite the paths. Harper bakes the node
    name into the self-signed certificates it stores at install time, so the cache is
    per name.
    """

    def __init__(
        self,
        base_dir: Path,
        name: str,
        ip: str = "127.0.0.2",
        *,
        password: str = DEFAULT_PASSWORD,
        harper_js: Path | None = None,
        operations_secure: bool = False,
        pristine_cache: Path | None = None,
        line: str = HARPER_VERSION,
        threads: int = 1,
        nats_routes: Sequence[tuple[str, int]] = (),
    ) -> None:
        if not ipaddress.ip_address(ip).is_loopback:
            raise ValueError(f"the rig only uses loopback addresses, not {ip}")
        self.name = name
        self.ip = ip
        self.password = password
        self.line = line
        self.threads = threads
        self.nats_routes = tuple(nats_routes)  # (ip, route port) of the NATS peers
        self.harper_js = harper_js or find_harper(line)
        self.pristine_cache = pristine_cache
        self.node_dir = Path(base_dir).resolve() / name
        self.home = self.node_dir / "home"
        self.root = self.node_dir / "root"
        self.keys_dir = self.root / "keys"
        self.config_path = self.root / "harperdb-config.yaml"
        self.log_path = self.root / "log" / "hdb.log"
        self.pid_path = self.root / "hdb.pid"
        self.cli_log_path = self.node_dir / "harperdb-cli.log"
        self.certificate_path = self.keys_dir / CERT_FILE
        self.key_path = self.keys_dir / KEY_FILE
        self.ca_path = self.keys_dir / CA_FILE
        self.socket_path, self._socket_tmpdir = _short_socket_path(self.root)
        p = free_ports(7 if operations_secure else 6)
        self.ports = HarperPorts(
            replication=p[0],
            operations=p[1],
            http=p[2],
            http_secure=p[3],
            mqtt=p[4],
            mqtt_secure=p[5],
            operations_secure=p[6] if operations_secure else None,
            nats=(q[0], q[1], q[2], q[3]) if (q := free_ports(4)) and self.nats_lines else None,
        )

    @property
    def nats_lines(self) -> bool:
        """4.0-4.3: NATS clustering, no ``replication`` section, no hdb.pid on 4.0."""
        return self.line.split(".")[:2] in (["4", "0"], ["4", "1"], ["4", "2"], ["4", "3"])

    @property
    def legacy_https(self) -> bool:
        """4.0-4.1: TLS by ``*.network.https`` on the plain port."""
        return self.line.split(".")[:2] in (["4", "0"], ["4", "1"])

    @property
    def tls_port(self) -> int:
        """The port the rig waits on for a handshake: replication (4.4 on), the HTTPS port
        (4.2-4.3), the Operations API's plain port with ``https`` (4.0-4.1)."""
        if self.legacy_https:
            return self.ports.operations
        if self.nats_lines:
            return self.ports.http_secure
        return self.ports.replication

    # ----------------------------------------------------------------- plumbing

    def _require_harper(self) -> Path:
        if self.harper_js is None:
            raise HarperError("harperdb is not installed: run tests/install-harper.sh")
        return self.harper_js

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment every Harper command of this node runs with."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),
            "ROOTPATH": str(self.root),
        }
        if extra:
            env.update(extra)
        return env

    def cli(
        self,
        *args: str,
        timeout: float = 60.0,
        extra_env: dict[str, str] | None = None,
        until: Callable[[], bool] | None = None,
    ) -> int:
        """Run ``node harperdb.js <args>``; output goes to ``harperdb-cli.log``.

        The command runs in its own session; on timeout its process group is killed
        and :class:`HarperError` raised. Returns the exit code. ``until``: a command that
        keeps running once done (4.3's ``install`` goes on as the server) counts as
        finished (0) as soon as ``until()`` is true.
        """
        harper_js = self._require_harper()
        node_bin = shutil.which("node") or "node"
        self.node_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cli_log_path, "ab") as out:
            out.write(f"\n$ harperdb {' '.join(args)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [node_bin, str(harper_js), *args],
                env=self.env(extra_env),
                cwd=self.node_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                return _wait_until(proc, timeout, until)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
                raise HarperError(
                    f"`harperdb {' '.join(args)}` did not finish within {timeout:.0f} s"
                ) from None

    def cli_output(self) -> str:
        try:
            return self.cli_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ----------------------------------------------------------------- install

    def install(self, timeout: float = 120.0) -> float:
        """Install (or copy a pristine install) and configure; returns seconds taken."""
        t0 = time.monotonic()
        if self.config_path.exists():
            raise HarperError(f"{self.root} is already installed")
        self.home.mkdir(parents=True, exist_ok=True)
        cached = self._pristine_dir()
        if cached is not None and (cached / "root" / "harperdb-config.yaml").is_file():
            self._copy_pristine(cached)
        else:
            rc = self.cli(
                "install",
                timeout=timeout,
                extra_env={
                    "TC_AGREEMENT": "yes",
                    "HDB_ADMIN_USERNAME": ADMIN_USERNAME,
                    "HDB_ADMIN_PASSWORD": self.password,
                    "DEFAULTS_MODE": "dev",
                    "REPLICATION_HOSTNAME": self.name,
                    **self._install_env(),
                },
                until=self._installed if self.line != HARPER_VERSION else None,
            )
            # 4.0-4.4 start the node at the end of `install` (in the foreground, or under
            # PM2): stop it by its processes, never by `harperdb stop`.
            self._kill_processes()
            if rc != 0 or not self.config_path.is_file():
                raise HarperError(f"harperdb install failed (rc={rc}):\n{self.cli_output()}")
            if cached is not None:
                self._save_pristine(cached)
        self.configure()
        return time.monotonic() - t0

    def _install_env(self) -> dict[str, str]:
        """Older lines ask for more at install and start the node right after: unique
        ports, so that the start cannot collide with another node."""
        if self.line == HARPER_VERSION:
            return {}
        env = {
            "OPERATIONSAPI_NETWORK_PORT": str(self.ports.operations),
            "HTTP_PORT": str(self.ports.http),
            "HTTP_SECUREPORT": str(self.ports.http_secure),
            "MQTT_NETWORK_PORT": str(self.ports.mqtt),
            "MQTT_NETWORK_SECUREPORT": str(self.ports.mqtt_secure),
            "CUSTOMFUNCTIONS_NETWORK_PORT": str(self.ports.http),
            "IPC_NETWORK_PORT": str(self.ports.mqtt_secure),
            "CLUSTERING_NODENAME": self.name,
            "CLUSTERING_ENABLED": "false",
            "CLUSTERING_USER": "cluster_user",
            "CLUSTERING_PASSWORD": self.password,
            "THREADS_COUNT": str(self.threads),
        }
        if self.ports.nats is not None:
            route, hub, leaf, leaf_server = self.ports.nats
            env.update(
                CLUSTERING_HUBSERVER_CLUSTER_NETWORK_PORT=str(route),
                CLUSTERING_HUBSERVER_NETWORK_PORT=str(hub),
                CLUSTERING_HUBSERVER_LEAFNODES_NETWORK_PORT=str(leaf),
                CLUSTERING_LEAFSERVER_NETWORK_PORT=str(leaf_server),
            )
        return env

    def _installed(self) -> bool:
        # 4.0 and 4.3 print this once the node they started after installing is up.
        return self.config_path.is_file() and "successfully started" in self.cli_output()

    def _kill_processes(self) -> None:
        left = self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in left:
                _signal_group_or_process(proc, sig)
                _signal_group_or_process(proc, signal.SIGCONT)
            left = _wait_gone(self.processes, 10.0)
            if not left:
                return
        raise HarperError(f"{self.name}: processes survived SIGKILL: {left}")

    def _pristine_dir(self) -> Path | None:
        if self.pristine_cache is None:
            return None
        # The admin password is stored hashed in the copied database.
        tag = hashlib.sha256(self.password.encode()).hexdigest()[:12]
        return self.pristine_cache / f"{self.line}-{self.name}-{tag}"

    def _save_pristine(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        shutil.copytree(self.root, tmp / "root", symlinks=True)
        shutil.copytree(self.home, tmp / "home", symlinks=True)
        (tmp / "source-root").write_text(str(self.root))
        try:
            os.rename(tmp, target)
        except OSError:  # another process saved it first
            shutil.rmtree(tmp, ignore_errors=True)

    def _copy_pristine(self, source: Path) -> None:
        old_root = (source / "source-root").read_text()
        shutil.copytree(source / "root", self.root, symlinks=True)
        shutil.copytree(source / "home", self.home, symlinks=True, dirs_exist_ok=True)
        for text_file in (
            self.config_path,
            self.home / ".harperdb" / "hdb_boot_properties.file",
        ):
            text = text_file.read_text()
            text_file.write_text(text.replace(old_root, str(self.root)))
        for log in (self.root / "log").glob("*"):
            if log.is_file():
                log.unlink()

    # ----------------------------------------------------------------- config

    def read_config(self) -> dict[str, Any]:
        data = yaml.safe_load(self.config_path.read_text())
        if not isinstance(data, dict):
            raise HarperError(f"{self.config_path} is not a mapping")
        return data

    def write_config(self, config: dict[str, Any]) -> None:
        # The rig does not keep the comments of the file (fine for tests only).
        text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
        _atomic_write(self.config_path, text.encode(), mode=0o644)

    def update_config(self, change: Callable[[dict[str, Any]], None]) -> None:
        config = self.read_config()
        change(config)
        self.write_config(config)

    def configure(self) -> None:
        """Apply the rig's settings (ports, replication, tls files) to the config."""

        def sub(cfg: dict[str, Any], key: str) -> dict[str, Any]:
            value = cfg.get(key)
            if not isinstance(value, dict):
                value = {}
                cfg[key] = value
            return value

        def change(cfg: dict[str, Any]) -> None:
            if self.nats_lines:
                self._configure_nats_line(cfg, sub)
                return
            sub(cfg, "authentication")["authorizeLocal"] = False
            threads = sub(cfg, "threads")
            threads["debug"] = False
            threads["count"] = self.threads
            http = sub(cfg, "http")
            http["port"] = self.ports.http
            http["securePort"] = self.ports.http_secure
            ops_net = sub(sub(cfg, "operationsApi"), "network")
            ops_net["port"] = self.ports.operations
            ops_net["securePort"] = self.ports.operations_secure
            ops_net["domainSocket"] = str(self.socket_path)
            mqtt_net = sub(sub(cfg, "mqtt"), "network")
            mqtt_net["port"] = self.ports.mqtt
            mqtt_net["securePort"] = self.ports.mqtt_secure
            repl = sub(cfg, "replication")
            repl["hostname"] = self.name
            repl["url"] = f"wss://{self.ip}:{self.ports.replication}"
            repl["securePort"] = self.ports.replication
            repl["enableRootCAs"] = False
            cfg["tls"] = {
                "certificate": str(self.certificate_path),
                "certificateAuthority": str(self.ca_path),
                "privateKey": str(self.key_path),
            }

        self.update_config(change)

    def _configure_nats_line(
        self, cfg: dict[str, Any], sub: Callable[[dict[str, Any], str], dict[str, Any]]
    ) -> None:
        """4.0-4.3: TLS files in ``tls`` (4.2-4.3) or ``operationsApi.tls`` /
        ``customFunctions.tls`` with ``network.https`` (4.0-4.1); NATS clustering with
        ``clustering.tls`` on the same files when ``nats_routes`` are given."""
        files = {
            "certificate": str(self.certificate_path),
            "certificateAuthority": str(self.ca_path),
            "privateKey": str(self.key_path),
        }
        ops = sub(cfg, "operationsApi")
        ops_net = sub(ops, "network")
        ops_net["port"] = self.ports.operations
        if self.legacy_https:
            ops_net["https"] = True
            ops["tls"] = dict(files)
            functions = sub(cfg, "customFunctions")
            functions["enabled"] = False
            sub(functions, "network")["port"] = self.ports.http
            sub(cfg, "http")["threads"] = self.threads
            sub(sub(cfg, "ipc"), "network")["port"] = self.ports.mqtt_secure
        else:
            sub(cfg, "authentication")["authorizeLocal"] = False
            threads = sub(cfg, "threads")
            threads["debug"] = False
            threads["count"] = self.threads
            http = sub(cfg, "http")
            http["port"] = self.ports.http
            http["securePort"] = self.ports.http_secure
            ops_net["securePort"] = None
            ops_net["domainSocket"] = str(self.socket_path)
            mqtt_net = sub(sub(cfg, "mqtt"), "network")
            mqtt_net["port"] = self.ports.mqtt
            mqtt_net["securePort"] = self.ports.mqtt_secure
            cfg["tls"] = dict(files)
        clustering = sub(cfg, "clustering")
        clustering["enabled"] = bool(self.nats_routes)
        clustering["nodeName"] = self.name
        if self.ports.nats is not None:
            route, hub, leaf, leaf_server = self.ports.nats
            hubserver = sub(clustering, "hubServer")
            cluster_net = sub(sub(hubserver, "cluster"), "network")
            cluster_net["port"] = route
            cluster_net["routes"] = [{"host": h, "port": p} for h, p in self.nats_routes] or None
            sub(hubserver, "network")["port"] = hub
            sub(sub(hubserver, "leafNodes"), "network")["port"] = leaf
            sub(sub(clustering, "leafServer"), "network")["port"] = leaf_server
            clustering["tls"] = {**files, "insecure": False, "verify": True}

    def write_tls_files(
        self,
        cert_pem: bytes | str,
        key_pem: bytes | str,
        ca_pem: bytes | str,
        *,
        pause: float = 0.0,
    ) -> None:
        """Write the three files as temp files renamed over the real ones.

        Order: key, CA, certificate (``pause`` seconds between). A symlink at a path is
        replaced by a regular file.
        """
        _atomic_write(self.key_path, _as_bytes(key_pem))
        time.sleep(pause)
        _atomic_write(self.ca_path, _as_bytes(ca_pem), mode=0o644)
        time.sleep(pause)
        _atomic_write(self.certificate_path, _as_bytes(cert_pem), mode=0o644)

    # ----------------------------------------------------------------- processes

    def pid(self) -> int | None:
        """The main PID from ``<root>/hdb.pid`` if that process is alive, else None."""
        return harper_pid(self.root)

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node (``ROOTPATH`` in its environment, ``hdb.pid``)."""
        found: dict[int, psutil.Process] = {}
        root = str(self.root)
        me = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            try:
                if proc.environ().get("ROOTPATH") == root and proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
            except psutil.Error:
                continue
        pid = self.pid()
        if pid is not None and pid not in found:
            with contextlib.suppress(psutil.Error):
                found[pid] = psutil.Process(pid)
        return list(found.values())

    def is_running(self) -> bool:
        return bool(self.processes())

    def start(
        self,
        timeout: float = 60.0,
        *,
        expect_fingerprint: str | None = None,
    ) -> float:
        """``harperdb start`` and wait until the replication port completes a TLS handshake
        (serving ``expect_fingerprint`` if given). Returns seconds taken."""
        t0 = time.monotonic()
        if self.processes():
            raise HarperError(f"{self.name} is already running")
        for path in (self.certificate_path, self.key_path, self.ca_path):
            if not path.exists():  # follows symlinks
                raise HarperError(f"TLS file missing: {path} (call write_tls_files first)")
        if self.pid_path.exists():
            self.pid_path.unlink()  # stale, the process is gone
        try:
            self._start_and_wait(t0 + timeout, expect_fingerprint)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def _start_and_wait(self, deadline: float, expect_fingerprint: str | None) -> None:
        rc = self.cli("start", timeout=max(1.0, deadline - time.monotonic()))
        if rc != 0:
            raise HarperError(f"harperdb start failed (rc={rc}):\n{self.cli_output()}")
        self.wait_ready(deadline - time.monotonic(), expect_fingerprint=expect_fingerprint)

    def wait_ready(
        self,
        timeout: float,
        *,
        expect_fingerprint: str | None = None,
        port: int | None = None,
        not_pid: int | None = None,
    ) -> float:
        """Wait for a live ``hdb.pid`` (other than ``not_pid``) and a TLS handshake."""
        t0 = time.monotonic()
        deadline = t0 + max(timeout, 0.0)
        port = port or self.tls_port
        last = "no handshake yet"
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None and pid != not_pid:
                fp = self.try_fingerprint(port, timeout=1.0)
                if fp is not None and (expect_fingerprint is None or fp == expect_fingerprint):
                    return time.monotonic() - t0
                last = f"served {fp}" if fp else "handshake failed"
            else:
                last = "no live hdb.pid"
            time.sleep(0.1)
        raise HarperError(
            f"{self.name} not ready on {self.ip}:{port} within {timeout:.0f} s ({last});"
            f" log tail:\n{self.log_tail()}"
        )

    def restart(self, timeout: float = 60.0, *, expect_fingerprint: str | None = None) -> float:
        """``harperdb restart`` and wait for a new PID serving TLS; returns seconds."""
        t0 = time.monotonic()
        old = self.pid()
        rc = self.cli("restart", timeout=timeout)
        if rc != 0:
            raise HarperError(f"harperdb restart failed (rc={rc}):\n{self.cli_output()}")
        self.wait_ready(
            t0 + timeout - time.monotonic(), expect_fingerprint=expect_fingerprint, not_pid=old
        )
        return time.monotonic() - t0

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node; afterwards none of its processes is left (or HarperError)."""
        deadline = time.monotonic() + timeout
        try:
            # `harperdb stop` on 4.3/4.4 kills every nats-server of the machine (other
            # nodes' too): the older lines are stopped by their processes only.
            if self.processes() and self.line == HARPER_VERSION:
                with contextlib.suppress(HarperError, OSError):
                    self.cli("stop", timeout=max(1.0, min(20.0, deadline - time.monotonic())))
                _wait_gone(self.processes, min(10.0, max(0.0, deadline - time.monotonic())))
            left = self.processes()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for proc in left:
                    _signal_group_or_process(proc, sig)
                    # A stopped (SIGSTOP) process only acts on SIGTERM once continued.
                    _signal_group_or_process(proc, signal.SIGCONT)
                left = _wait_gone(self.processes, 5.0)
                if not left:
                    break
            if left:
                raise HarperError(f"{self.name}: processes survived SIGKILL: {left}")
        finally:
            if self._socket_tmpdir is not None:
                shutil.rmtree(self._socket_tmpdir, ignore_errors=True)

    def __enter__(self) -> HarperNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- talking

    def try_fingerprint(
        self, port: int | None = None, *, server_name: str | None = None, timeout: float = 2.0
    ) -> str | None:
        try:
            return self.served_fingerprint(port, server_name=server_name, timeout=timeout)
        except OSError:
            return None

    def served_fingerprint(
        self, port: int | None = None, *, server_name: str | None = None, timeout: float = 3.0
    ) -> str:
        """SHA-256 hex of the leaf served on ``port`` (default: replication securePort)."""
        return probe_fingerprint(
            self.ip, port or self.tls_port, server_name=server_name, timeout=timeout
        )

    def wait_for_fingerprint(
        self, fingerprint: str, *, port: int | None = None, timeout: float = 15.0
    ) -> float:
        """Poll every 50 ms until ``fingerprint`` is served; seconds waited or HarperError."""
        t0 = time.monotonic()
        last: str | None = None
        while time.monotonic() - t0 < timeout:
            last = self.try_fingerprint(port, timeout=1.0)
            if last == fingerprint:
                return time.monotonic() - t0
            time.sleep(0.05)
        raise HarperError(
            f"{self.name} did not serve {fingerprint[:16]} within {timeout:.0f} s"
            f" (last: {last and last[:16]})"
        )

    def operation_raw(self, op: dict[str, Any], timeout: float = 15.0) -> object:
        """POST ``op`` as JSON to the Operations API with basic auth; the decoded reply."""
        token = base64.b64encode(f"{ADMIN_USERNAME}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"http://{self.ip}:{self.ports.operations}/",
            data=json.dumps(op).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
            method="POST",
        )
        try:
            # S310: the URL is always http://<loopback>:<port>/ built above.
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
                body = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise HarperError(
                f"operation {op.get('operation')}: HTTP {exc.code}: {detail}"
            ) from None
        result: object = json.loads(body) if body else None
        return result

    def operation(self, op: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        """Like :meth:`operation_raw` for operations whose reply is a JSON object."""
        result = self.operation_raw(op, timeout)
        if not isinstance(result, dict):
            raise HarperError(
                f"operation {op.get('operation')}: expected an object, got {result!r}"
            )
        return result

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        """``hdb.log`` from byte offset ``since`` (see :meth:`log_size`)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# --------------------------------------------------------------------------- killing


def _wait_until(
    proc: subprocess.Popen[bytes], timeout: float, until: Callable[[], bool] | None
) -> int:
    """``proc``'s exit status, or 0 once ``until()`` holds; TimeoutExpired after ``timeout``."""
    if until is None:
        return proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if until():
            return 0
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.2)
    return proc.returncode


def _wait_gone(
    list_procs: Callable[[], list[psutil.Process]], timeout: float
) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    left = list_procs()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = list_procs()
    return left


def _kill_group(pgid: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _signal_group_or_process(proc: psutil.Process, sig: signal.Signals) -> None:
    """Signal ``proc``'s process group when it leads one (``harperdb start`` detaches
    the server into its own session), else only ``proc``; never the rig's own group."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    try:
        if pgid == proc.pid and pgid != os.getpgrp():
            os.killpg(pgid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass


def iter_rig_processes(root_prefix: Path) -> Iterator[psutil.Process]:
    """Processes whose ``ROOTPATH`` lies under ``root_prefix`` (leak checks)."""
    prefix = str(Path(root_prefix).resolve())
    for proc in psutil.process_iter():
        try:
            rp = proc.environ().get("ROOTPATH")
        except psutil.Error:
            continue
        if rp and (rp == prefix or rp.startswith(prefix + os.sep)):
            yield proc
