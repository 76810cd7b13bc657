"""Harper integration: find the process, make it use the live set, verify what it serves.

Facts this rests on (measured on Harper 4.7.29; tests/HARPER-RIG-FINDINGS.md):
- Harper reloads certificate files by itself about 1.5 s after their watched inode
  changes; the swap's nudge provides that change (hot reload, 0 failed handshakes).
- A full restart (Operations API ``restart`` or ``harperdb restart``) loads the set at
  start; about 2.6 s without TLS here.
- ``restart_service http_workers`` restarts workers only: their key comes from the new
  files while the main thread still holds the old certificate, so TLS breaks.  It is
  never used, whatever the Operations API method is asked to do.
- With a mismatched pair at start Harper serves a certificate of its own CA
  (``HarperDB-Certificate-Authority-*``) and reports success; only the fingerprint of
  what is served tells the truth.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from cryptography import x509

from harper_certd import discover
from harper_certd.config import Config
from harper_certd.errors import ConfigError, HarperError, Interrupted
from harper_certd.restart import Applied, Applier, run_command
from harper_certd.roles import Role
from harper_certd.swap import Generation, Store

log = structlog.get_logger("harper_certd")
SELF_SIGNED_ISSUER = "HarperDB-Certificate-Authority-"
HOT_RELOAD_SINCE = (4, 4)
HOT_RELOAD_FIRST_WAIT = 4.0  # seconds; Harper reloads ~1.5 s after its watcher wakes


# --- what is served -----------------------------------------------------------------------


LOCAL_ADDRESSES = ("127.0.0.1", "::1")  # the node itself: no name lookup, no LAN route


@dataclass(frozen=True, slots=True)
class Served:
    port: int
    sha256: str | None  # None: no handshake
    issuer: str = ""
    error: str = ""
    address: str = ""  # the address dialled, "127.0.0.1" or "::1" (or verify.host)
    server_name: str | None = None  # the SNI sent

    @property
    def harper_fallback(self) -> bool:
        return SELF_SIGNED_ISSUER in self.issuer

    @property
    def dialled(self) -> str:
        """``[::1]:9933 (SNI nodea)``: where the handshake went, for every message."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        sni = f" (SNI {self.server_name})" if self.server_name else " (no SNI)"
        return f"{host}:{self.port}{sni}"

    def describe(self) -> str:
        if self.sha256 is None:
            return f"{self.dialled}: no TLS handshake ({self.error})"
        what = f"{self.dialled}: serves {self.sha256[:16]}… issued by {self.issuer}"
        if self.harper_fallback:
            what += " (Harper's own self-signed fallback: its certificate/key pair was refused)"
        return what


def sni_for(name: str | None) -> str | None:
    """The SNI to send for a node name: None for an IP address or no name (RFC 6066 §3)."""
    if not name:
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    return None


def peer_sni(harper_config: discover.HarperConfig) -> str | None:
    """The SNI a peer sends when it dials this node, which verification must send too.

    Peers dial ``replication.url``: its host when that is a DNS name (usually the node
    name), no SNI for an IP address; the node name when there is no URL.  Measured on
    Harper 4.7.29 (tests/test_harper_integration.py, the uppercase/wildcard SAN sets): with
    SNI set to the node name Harper answered with the new certificate while, without SNI
    (what a peer dialling an IP sends), it served its self-signed fallback: an SNI peers
    do not send makes verification pass a set that breaks replication.
    """
    from harper_certd.yamlfile import read_yaml

    try:
        url = discover._get(read_yaml(harper_config.config_path), "replication.url")
    except ConfigError:
        url = None
    if isinstance(url, str) and url:
        return sni_for(urlsplit(url).hostname)
    return sni_for(harper_config.node_name)


def served(host: str, port: int, timeout: float = 3.0, *, server_name: str | None = None) -> Served:
    """The leaf a TLS server presents (no verification: we compare fingerprints)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        error = str(exc) or type(exc).__name__
        return Served(port, None, error=error, address=host, server_name=server_name)
    if not der:
        return Served(
            port, None, error="no certificate presented", address=host, server_name=server_name
        )
    issuer = ""
    with contextlib.suppress(ValueError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Harper's own CA has a one-letter-short C=USA
        issuer = x509.load_der_x509_certificate(der).issuer.rfc4514_string()
    return Served(port, hashlib.sha256(der).hexdigest(), issuer, "", host, server_name)


def served_local(
    hosts: Sequence[str], port: int, timeout: float = 3.0, *, server_name: str | None = None
) -> Served:
    """What the node serves on ``port``, dialling ``hosts`` in order (127.0.0.1, then ::1).

    The first handshake that completes wins; when none does, the last failure is returned
    with every address tried in its error.  Harper may listen on one family only.
    """
    tried: list[Served] = []
    for host in hosts:
        result = served(host, port, timeout, server_name=server_name)
        if result.sha256 is not None:
            return result
        tried.append(result)
    if len(tried) <= 1:
        return tried[0] if tried else Served(port, None, error="no address to dial")
    last = tried[-1]
    error = "; ".join(f"{t.dialled}: {t.error}" for t in tried)
    return Served(port, None, error=error, address=last.address, server_name=server_name)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    seconds: float
    last: tuple[Served, ...]
    pid: int | None
    failed_handshakes: int

    def describe(self) -> str:
        return "; ".join(s.describe() for s in self.last) or "no secure port to check"


Sleep = Callable[[float], None]

# "Served" needs this many consecutive rounds in which every port serves the expected
# certificate, spanning at least SERVED_SPAN seconds: during a rebuild a port can serve
# another set's certificate for 10-60 ms (measured on Harper 4.7.29, issue 11), so one
# probe can lie.
SERVED_STREAK = 3
SERVED_SPAN = 0.3


@dataclass(slots=True)
class ServedStreak:
    """Consecutive matching rounds; ``see(match, now)`` is True once they are enough.

    ``now`` in seconds (monotonic). A mismatch starts over.
    """

    needed: int = SERVED_STREAK
    span: float = SERVED_SPAN
    count: int = 0
    since: float | None = None

    def see(self, match: bool, now: float) -> bool:
        if not match:
            self.count, self.since = 0, None
            return False
        if self.since is None:
            self.since = now
        self.count += 1
        return self.count >= self.needed and now - self.since >= self.span

    def wait(self, interval: float) -> float:
        """Seconds to sleep before the next round: shorter while a streak is building."""
        if self.count == 0:
            return interval
        return min(interval, self.span / max(self.needed - 1, 1))


def verify_served(
    hosts: Sequence[str],
    ports: Mapping[str, int],
    expected: str,
    *,
    root: Path,
    timeout: float,
    interval: float,
    sleep: Sleep = time.sleep,
    server_name: str | None = None,
    now: Callable[[], float] = time.monotonic,
) -> Verification:
    """Wait until Harper is alive and every port serves ``expected``; patient with restarts.

    ``hosts`` are dialled in order per port (``served_local``), with ``server_name`` as SNI.
    Served means SERVED_STREAK consecutive matching rounds over SERVED_SPAN seconds
    (``ServedStreak``); ``timeout`` bounds the whole wait.
    """
    started = now()
    failed = 0
    last: tuple[Served, ...] = ()
    pid = None
    streak = ServedStreak()
    while True:
        pid = harper_pid(root)
        last = tuple(served_local(hosts, port, server_name=server_name) for port in ports.values())
        failed += sum(s.sha256 is None for s in last)
        match = pid is not None and bool(last) and all(s.sha256 == expected for s in last)
        if streak.see(match, now()):
            return Verification(True, now() - started, last, pid, failed)
        # A streak under way may finish a little past the timeout (by at most 2 spans).
        if now() - started >= timeout + (2 * streak.span if streak.count else 0.0):
            return Verification(False, now() - started, last, pid, failed)
        sleep(streak.wait(interval))


# --- the process --------------------------------------------------------------------------


def harper_pid(root: Path) -> int | None:
    """Harper's main PID from ``<root>/hdb.pid``, if that process is alive."""
    import psutil

    try:
        pid = int((root / "hdb.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return pid


def harper_entry(pid: int) -> Path | None:
    """The ``harperdb.js`` a running Harper was started from (its command line)."""
    import psutil

    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return None
    for arg in cmdline[1:]:
        if arg.endswith("harperdb.js"):
            path = Path(arg)
            if not path.is_absolute():
                with contextlib.suppress(psutil.Error):
                    path = Path(psutil.Process(pid).cwd()) / path
            return path
    return None


def harper_version(entry: Path | None) -> str | None:
    if entry is None:
        return None
    try:
        package = json.loads((entry.parent.parent / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = package.get("version")
    return version if isinstance(version, str) else None


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    if version is None:
        return None
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# --- the Operations API -------------------------------------------------------------------


def _credentials(config: Config, env: Mapping[str, str]) -> tuple[str, str] | None:
    section = config.operations_api
    if section.credentials_file is not None:
        path = section.credentials_file
        try:
            st = os.stat(path)
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"operations_api.credentials_file {path}: {exc.strerror}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"operations_api.credentials_file {path} is readable by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        user, sep, password = text.partition(":")
        if not sep:
            raise ConfigError(f"operations_api.credentials_file {path}: expected user:password")
        return user, password
    env_user, env_password = env.get(section.username_env), env.get(section.password_env)
    if env_user and env_password:
        return env_user, env_password
    return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


@dataclass(frozen=True, slots=True)
class OperationsApi:
    target: str  # http://host:port, https://host:port or unix:/path
    credentials: tuple[str, str] | None
    timeout: float = 10.0

    def call(self, operation: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(operation).encode()
        headers = {"Content-Type": "application/json"}
        if self.credentials is not None:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        conn: http.client.HTTPConnection
        if self.target.startswith("unix:"):
            conn = _UnixConnection(self.target[5:], self.timeout)
        else:
            url = urlsplit(self.target)
            if url.scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # our own node on loopback, mid-rotation
                conn = http.client.HTTPSConnection(
                    url.hostname or "127.0.0.1", url.port, timeout=self.timeout, context=ctx
                )
            else:
                conn = http.client.HTTPConnection(
                    url.hostname or "127.0.0.1", url.port, timeout=self.timeout
                )
        try:
            conn.request("POST", "/", body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        except OSError as exc:
            raise HarperError(f"Operations API at {self.target}: {exc}") from None
        finally:
            conn.close()
        if response.status >= 300:
            # Never echo the request: it may carry credentials.
            raise HarperError(
                f"Operations API at {self.target}: HTTP {response.status}: {text[:200]}"
            )
        try:
            data = json.loads(text)
        except ValueError:
            return {"message": text}
        return data if isinstance(data, dict) else {"result": data}


def operations_api(
    config: Config, harper: discover.HarperConfig, env: Mapping[str, str] | None = None
) -> OperationsApi | None:
    env = os.environ if env is None else env
    credentials = _credentials(config, env)
    target = config.operations_api.url
    if target is None:
        if harper.operations_socket is not None:
            target = f"unix:{harper.operations_socket}"
        elif harper.operations_port is not None:
            target = f"http://127.0.0.1:{harper.operations_port}"
        else:
            return None
    return OperationsApi(target, credentials)


# --- making Harper use the set ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Harper:
    """What the applier needs to know about the node, resolved once per context."""

    root: Path
    hosts: tuple[str, ...]  # dialled in order to verify: the node itself by default
    server_name: str | None  # SNI sent: what a peer sends (peer_sni)
    ports: Mapping[str, int]
    api: OperationsApi | None
    config: Config
    env: Mapping[str, str]
    interrupted: threading.Event | None = None  # set when the daemon is asked to stop

    def verify(
        self, expected: str, *, timeout: float | None = None, sleep: Sleep = time.sleep
    ) -> Verification:
        """``verify_served`` on this node's addresses, ports and SNI; ``timeout`` in seconds
        (default ``verify.timeout``), polling every ``verify.interval``."""
        return verify_served(
            self.hosts,
            self.ports,
            expected,
            root=self.root,
            timeout=max(self.config.verify.timeout if timeout is None else timeout, 0.0),
            interval=self.config.verify.interval,
            sleep=sleep,
            server_name=self.server_name,
        )

    def restart_via_api(self) -> str:
        if self.api is None:
            raise HarperError(
                "no Operations API is configured (operationsApi.network in harperdb-config.yaml "
                "or operations_api.url)"
            )
        # "restart", not "restart_service http_workers": workers alone would pair the new
        # key with the main thread's old certificate (see the module docstring).
        answer = self.api.call({"operation": "restart"})
        return str(answer.get("message", answer))

    def restart_via_cli(self) -> str:
        pid = harper_pid(self.root)
        entry = harper_entry(pid) if pid is not None else None
        argv = ["node", str(entry), "restart"] if entry is not None else ["harperdb", "restart"]
        env = {**self.env, "ROOTPATH": str(self.root)}
        return _run(argv, self.config.restart.timeout, env, self.interrupted)

    def restart_via_systemd(self) -> str:
        return _run(
            ["systemctl", "restart", self.config.restart.unit],
            self.config.restart.timeout,
            None,
            self.interrupted,
        )

    def restart_via_command(self) -> str:
        return _run(
            list(self.config.restart.command), self.config.restart.timeout, None, self.interrupted
        )


def _run(
    argv: list[str],
    timeout: float,
    env: Mapping[str, str] | None,
    interrupted: threading.Event | None,
) -> str:
    status, output = run_command(argv, timeout, interrupted, env)
    if status is None:
        raise HarperError(f"{' '.join(argv)} timed out after {timeout:.0f}s")
    if status != 0:
        raise HarperError(f"{' '.join(argv)} exited {status}: {output.strip()[-300:]}")
    return output.strip()[-300:]


def resolve_method(config: Config, harper: Harper) -> str:
    method = config.restart.method
    if method != "auto":
        return method
    pid = harper_pid(harper.root)
    version = version_tuple(harper_version(harper_entry(pid) if pid else None))
    if version is None or version >= HOT_RELOAD_SINCE:
        return "hot-reload"  # 4.4 and later reload certificate files by themselves
    return "operations-api"


def make_harper(
    config: Config,
    harper_config: discover.HarperConfig,
    env: Mapping[str, str] | None = None,
    interrupted: threading.Event | None = None,
    cert: Path | None = None,
) -> Harper:
    """How to reach, restart and verify the node for one set: ``cert`` is its certificate
    path (default: the primary set). A set other than the replication set is verified with
    its first DNS name as SNI, on its own ports."""
    env = os.environ if env is None else env
    hosts = (config.verify.host,) if config.verify.host else LOCAL_ADDRESSES
    ports = dict(harper_config.secure_ports)
    ops_entry = next((e for e in harper_config.entries if e.where == "operationsApi.tls"), None)
    primary = next(
        (e for e in harper_config.file_entries() if e.where != "operationsApi.tls"), None
    )
    if ops_entry is not None and primary is not None and ops_entry.paths != primary.paths:
        ports.pop("operationsApi", None)  # that port serves another set
    target = cert if cert is not None else primary.cert_path if primary is not None else None
    mine = next((c for c in harper_config.sets() if c.first.cert_path == target), None)
    server_name = peer_sni(harper_config)
    if mine is not None and mine.ports:
        # Verification per role (issue 11): only the ports this set is served on. On the
        # two-set layout the HTTP and MQTT ports serve the public set, not this one.
        pool = harper_config.secure_ports if cert is not None else ports
        ports = {k: v for k, v in pool.items() if k in mine.ports}
    if mine is not None and mine.role is not Role.REPLICATION:
        server_name = _first_dns_name(mine.first.cert_path) or server_name
    api = operations_api(config, harper_config, env)
    return Harper(harper_config.root, hosts, server_name, ports, api, config, env, interrupted)


def _first_dns_name(path: Path | None) -> str | None:
    """The first DNS SAN of the certificate at ``path`` (SNI for a server set)."""
    from harper_certd import load

    if path is None:
        return None
    try:
        leaf = load.parse_certificates(load.read_bounded(path), name=str(path)).certs[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (load.Unreadable, x509.ExtensionNotFound):
        return None
    names = san.get_values_for_type(x509.DNSName)
    return sni_for(names[0]) if names else None


def harper_applier(
    config: Config,
    harper_config: discover.HarperConfig,
    store: Store,
    interrupted: threading.Event | None = None,
    cert: Path | None = None,
) -> Applier:
    harper = make_harper(config, harper_config, interrupted=interrupted, cert=cert)

    def sleep(seconds: float) -> None:
        if interrupted is None:
            time.sleep(seconds)
        elif interrupted.wait(seconds):
            raise Interrupted("stopped while waiting for Harper to serve the new certificate")

    def restart(method: str) -> str:
        # h-peers hook (issue 12): never take a node down while a peer is not connected
        # (it may be restarting itself); bounded by peers.restart_wait_seconds.
        from harper_certd.peers import wait_before_restart

        wait_before_restart(
            harper.api, harper_config.node_name, config.peers.restart_wait_seconds, sleep=sleep
        )
        return {
            "operations-api": harper.restart_via_api,
            "cli": harper.restart_via_cli,
            "systemd": harper.restart_via_systemd,
            "command": harper.restart_via_command,
        }[method]()

    def verify(expected: str, timeout: float) -> Verification:
        return harper.verify(expected, timeout=timeout, sleep=sleep)

    def apply(previous: Generation | None, new: Generation) -> Applied:
        started = time.monotonic()
        expected = str(new.meta.get("fingerprint", ""))
        method = resolve_method(config, harper)
        if not harper.ports:
            return Applied(False, method, "harperdb-config.yaml names no secure port to verify on")
        if harper_pid(harper.root) is None:
            # Nothing to reload or verify: Harper reads the live set when it starts. A set
            # must not be rolled back because Harper happens to be stopped.
            log.warning("certd.harper_not_running", root=str(harper.root), generation=new.id)
            return Applied(
                True,
                "none",
                "Harper is not running: it will load this set when it starts (not verified)",
            )
        restarted = False
        try:
            if method != "hot-reload":
                detail = restart(method)
                restarted = True
                log.info("certd.harper_restarted", method=method, detail=detail)
                result = verify(expected, config.verify.timeout)
            else:
                result = verify(expected, min(HOT_RELOAD_FIRST_WAIT, config.verify.timeout))
                if not result.ok:
                    # Harper's watchers may have moved to inodes the first nudge did not
                    # touch (right after the live files were adopted, say): wake every
                    # generation, the live one last, and give it the rest of the time.
                    store.nudge(new, including_live=True)
                    result = verify(expected, config.verify.timeout - result.seconds)
            if not result.ok and method == "hot-reload":
                fallback = (
                    "operations-api" if harper.api is not None and harper.api.credentials else "cli"
                )
                log.warning(
                    "certd.hot_reload_missed",
                    method=method,
                    seen=result.describe(),
                    fallback=fallback,
                )
                restart(fallback)
                restarted = True
                log.info("certd.harper_restarted", method=fallback)
                method = f"hot-reload, then {fallback}"
                result = verify(expected, config.verify.timeout)
        except HarperError as exc:
            return Applied(False, method, str(exc), time.monotonic() - started, restarted)
        seconds = time.monotonic() - started
        if result.ok:
            log.info(
                "certd.served_verified",
                fingerprint=expected,
                ports=dict(harper.ports),
                dialled=[s.dialled for s in result.last],
                pid=result.pid,
                seconds=round(seconds, 2),
                failed_handshakes=result.failed_handshakes,
                method=method,
            )
            return Applied(
                True,
                method,
                f"served on {', '.join(s.dialled for s in result.last)} after {seconds:.1f}s",
                seconds,
                restarted,
                verified=True,
            )
        alive = "Harper is not running" if result.pid is None else f"Harper pid {result.pid}"
        return Applied(
            False, method, f"{alive}; after {seconds:.0f}s: {result.describe()}", seconds, restarted
        )

    return apply
