"""What this node serves: a TLS handshake per secure port, compared by fingerprint.

No verification on these handshakes (the fingerprint is the question).  Facts:
- Harper serves its own self-signed fallback (issuer ``HarperDB-Certificate-Authority-*``)
  when its pair was refused, and says it started successfully: only the served
  fingerprint tells the truth.
- During a rebuild a port can serve another set's certificate for 10-60 ms (measured on
  Harper 4.7.29, issue 11): "served" needs a streak of matching rounds.
- Peers dial ``replication.url``; the SNI they send (its host, or none for an IP) decides
  which certificate Harper answers with, so verification sends the same (``peer_sni``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from harper_certd import discover, sdnotify
from harper_certd.errors import ConfigError
from harper_certd.harper.process import harper_pid
from harper_certd.yamlfile import read_yaml

SELF_SIGNED_ISSUER = "HarperDB-Certificate-Authority-"
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
# With ``threads.count`` workers each holding its own pair, a worker that kept the old pair
# (HarperFast/harper#586) is seen only by a connection the kernel hands to it: each round
# is a fresh connection, so a streak of SERVED_STREAK + PER_WORKER * workers rounds misses
# one worker of two with probability 2 * 2**-11 (about 0.1 %).
PER_WORKER = 4


def streak_for(workers: int) -> int:
    """Matching rounds needed for ``workers`` worker threads (1: SERVED_STREAK)."""
    return SERVED_STREAK if workers <= 1 else SERVED_STREAK + PER_WORKER * workers


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
    sleep: Sleep = sdnotify.sleep,
    server_name: str | None = None,
    now: Callable[[], float] = time.monotonic,
    connections: int = 1,
) -> Verification:
    """Wait until Harper is alive and every port serves ``expected``; patient with restarts.

    ``hosts`` are dialled in order per port (``served_local``), with ``server_name`` as SNI.
    Served means SERVED_STREAK consecutive matching rounds over SERVED_SPAN seconds
    (``ServedStreak``), more with ``connections`` > 1 worker threads (``streak_for``);
    ``timeout`` bounds the whole wait.
    """
    started = now()
    failed = 0
    last: tuple[Served, ...] = ()
    pid = None
    streak = ServedStreak(needed=streak_for(connections))
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
