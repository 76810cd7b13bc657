"""The peer probe: would each replication peer accept a candidate set, and it them?

For every peer this node replicates with (``cluster_status`` and ``system.hdb_nodes``
through this node's Operations API, each with its replication URL), two questions:

(a) **Does the peer accept my candidate certificate as this node?**  A fresh connection
    to the peer's replication endpoint presents the candidate certificate and key (the key
    lives in an anonymous ``memfd`` for the handshake, never on disk), upgrades to a
    WebSocket with subprotocol ``harperdb-replication-v1`` and sends one message: Harper's
    ``DISCONNECT`` (msgpack ``[142]``).  Read from Harper 4.7.29's ``bin/harperdb.js``
    (``replicateOverWS``): the server authorises a replication socket on its **first
    message** (``checkAuthorization``); a socket whose TLS client certificate is not
    verified against the peer's CAs, or whose CN/DNS SANs name no ``hdb_nodes`` record,
    has no user and is closed with **1008 ``Unauthorized``**; an authorised one reaches the
    ``DISCONNECT`` handler, which closes **without a status code** (1005).  No node name,
    no database, no subscription is ever sent, so the peer registers nothing and its live
    replication connections are not touched (measured: tests/HARPER-RIG-FINDINGS.md,
    "The peer probe").
(b) **Does my candidate CA file accept the peer's served chain?**  A TLS handshake to the
    same endpoint verifying with the candidate CA file only (OpenSSL, the verifier Node.js
    uses) and the host name of the peer's URL (what Harper's client checks: the URL's IP
    or DNS name; no SNI for an IP).

Each answer is a :class:`Verdict`; a peer that cannot be reached is ``unreachable``, never
"accepted".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import ipaddress
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from harper_certd import events, sdnotify
from harper_certd.config import PeersSection
from harper_certd.errors import HarperError, SwapError
from harper_certd.harper.api import Api, hdb_nodes
from harper_certd.harper.probe import served
from harper_certd.problems import Problem, problem
from harper_certd.roles import SetBytes

SUBPROTOCOL = "harperdb-replication-v1"
# Harper's replication DISCONNECT command (142) as a one-element msgpack array: 0x91
# (fixarray of 1), 0xcc 0x8e (uint8 142).  Harper answers it with a close, nothing else.
DISCONNECT = b"\x91\xcc\x8e"
UNAUTHORIZED = 1008  # RFC 6455 policy violation; Harper's reason text is "Unauthorized"
DEFAULT_TIMEOUT = 5.0
# After the swap, a peer that answers without a verdict (it is up) is asked this many times
# more, not for all of peers.restart_wait_seconds (issue 18: a 60 s wait in the proof).
UNKNOWN_RETRIES = 2
# The probe socket's read timeout, in units of peers.timeout: past the verdict's own wait,
# so that a silent peer is "no verdict" (unknown) rather than a dropped connection.
READ_TIMEOUT_FACTOR = 1.5


class Verdict(enum.StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"  # the peer answered something the probe does not know


@dataclass(frozen=True, slots=True)
class Peer:
    """A node this node replicates with: its ``hdb_nodes`` name and replication URL."""

    name: str
    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parsed = urlsplit(self.url)
        return parsed.port or (443 if parsed.scheme == "wss" else 80)


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    detail: str
    seconds: float


@dataclass(frozen=True, slots=True)
class PeerResult:
    """Both answers for one peer, and what it serves (sha256 hex of its leaf, issuer)."""

    peer: Peer
    accepts_me: Answer  # (a)
    trusted_by_me: Answer  # (b)
    served_sha256: str | None = None
    served_issuer: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.accepts_me.verdict is Verdict.ACCEPTED
            and self.trusted_by_me.verdict is Verdict.ACCEPTED
        )

    @property
    def reachable(self) -> bool:
        return Verdict.UNREACHABLE not in (self.accepts_me.verdict, self.trusted_by_me.verdict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer.name,
            "url": self.peer.url,
            "accepts_this_node": self.accepts_me.verdict.value,
            "accepts_detail": self.accepts_me.detail,
            "trusted_by_this_node": self.trusted_by_me.verdict.value,
            "trusted_detail": self.trusted_by_me.detail,
            "served_sha256": self.served_sha256,
            "seconds": [round(self.accepts_me.seconds, 3), round(self.trusted_by_me.seconds, 3)],
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """The set to judge: leaf (+ chain) PEM, key PEM, CA file PEM (bytes, never logged)."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes


# --- who the peers are -------------------------------------------------------------------------


def list_peers(api: Api, this_node: str | None = None) -> list[Peer]:
    """The replication peers this node knows, by name, with their URL.

    ``system.hdb_nodes`` (``search_by_value``: every record, ``name`` and ``url``) is the
    source of truth; ``cluster_status`` adds the peers it lists with a URL.  ``this_node``
    (``replication.hostname``) and records without a ``wss://``/``ws://`` URL are left
    out.  Raises :class:`harper_certd.errors.HarperError` when the Operations API fails.
    """
    found: dict[str, Peer] = {}
    nodes = hdb_nodes(api, ["name", "url"])
    status = api.call({"operation": "cluster_status"})
    rows = [*nodes, *(status.get("connections") or [])]
    for row in rows:
        if not isinstance(row, dict):
            continue
        name, url = row.get("name"), row.get("url")
        if not isinstance(name, str) or not isinstance(url, str) or name == this_node:
            continue
        if urlsplit(url).scheme not in ("wss", "ws") or name in found:
            continue
        found[name] = Peer(name, url)
    return sorted(found.values(), key=lambda p: p.name)


# --- (a) does the peer accept me ----------------------------------------------------------------


@contextlib.contextmanager
def _memfd(name: str, data: bytes) -> Iterator[str]:
    """A path (``/proc/self/fd/N``) to ``data`` in an anonymous memory file, closed after."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _client_context(candidate: Candidate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # (a) asks what the PEER thinks of us; (b) judges the peer with our candidate CA file.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        _memfd("certd-probe-cert", candidate.cert_pem) as cert,
        _memfd("certd-probe-key", candidate.key_pem) as key,
    ):
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            # OpenSSL's reason names the failure, never the key's bytes.
            raise ValueError(f"candidate certificate/key not usable: {exc.reason}") from None
    return context


NATS_ROUTE = "nats-route"  # the URL scheme of a NATS route peer (Peer.url)


def probe_nats_route(
    host: str, port: int, candidate: Candidate, timeout: float = DEFAULT_TIMEOUT
) -> Answer:
    """(a) for NATS clustering (4.0-4.3): present ``candidate`` as the client certificate
    to a peer's route port (``clustering.hubServer.cluster.network.port``, direct TLS,
    ``clustering.tls.verify: true``) and read what its nats-server answers.

    ``accepted``: the server sends its ``INFO`` line over the session; ``refused``: a TLS
    alert (its CA file does not verify the candidate); ``unreachable``: no TCP/TLS
    connection; ``unknown``: nothing within ``timeout`` seconds.
    """
    started = time.monotonic()

    def answer(verdict: Verdict, detail: str) -> Answer:
        return Answer(verdict, detail, time.monotonic() - started)

    try:
        context = _client_context(candidate)
    except ValueError as exc:
        return answer(Verdict.REFUSED, str(exc))
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return answer(Verdict.UNREACHABLE, str(exc))
    with sock:
        try:
            tls = context.wrap_socket(sock, server_hostname=None if _is_ip(host) else host)
        except ssl.SSLError as exc:
            return answer(Verdict.REFUSED, f"TLS refused: {exc.reason or exc}")
        except OSError as exc:
            return answer(Verdict.UNREACHABLE, str(exc))
        with tls:
            try:
                first = tls.recv(5)
            except ssl.SSLError as exc:  # TLS 1.3: the client certificate's verdict
                return answer(Verdict.REFUSED, f"TLS alert: {exc.reason or exc}")
            except TimeoutError:
                return answer(Verdict.UNKNOWN, f"no INFO within {timeout:g} s")
            except OSError as exc:
                return answer(Verdict.REFUSED, f"closed: {exc}")
    if first.startswith(b"INFO"):
        return answer(Verdict.ACCEPTED, "INFO received over TLS")
    if not first:
        return answer(Verdict.REFUSED, "closed without INFO")
    return answer(Verdict.UNKNOWN, "the route port sent something other than INFO")


def probe_accepts(peer: Peer, candidate: Candidate, timeout: float = DEFAULT_TIMEOUT) -> Answer:
    """(a) Present ``candidate`` to ``peer``'s replication endpoint; Harper's verdict.

    ``accepted``: the peer authorised the socket (its DISCONNECT handler closed it, code
    1005/none).  ``refused``: close 1008 (``Unauthorized``: certificate not verified or no
    ``hdb_nodes`` record for its names).  ``unreachable``: no TCP/TLS/WebSocket connection,
    or the peer closed it or went silent before the upgrade; never an exception.

    Bounded (issue 18 item 3): the whole probe ends within ``bound_seconds(timeout)`` (run
    in a thread joined with that deadline), over the connection's own deadlines
    (``open_timeout``, the verdict's ``recv`` timeout, ``close_timeout``) and a read timeout
    on the socket itself, so the WebSocket client's reader thread never blocks without end.
    """
    started = time.monotonic()
    box: list[Answer] = []

    def run() -> None:
        try:
            box.append(_probe_accepts(peer, candidate, timeout, started))
        except Exception as exc:  # a network probe's failure is an outcome, never a crash
            box.append(
                Answer(
                    Verdict.UNREACHABLE,
                    f"probe failed: {type(exc).__name__}: {exc}",
                    time.monotonic() - started,
                )
            )

    worker = threading.Thread(target=run, name=f"certd-probe-{peer.name}", daemon=True)
    worker.start()
    limit = bound_seconds(timeout)
    worker.join(limit)
    if box:
        return box[0]
    return Answer(
        Verdict.UNREACHABLE,
        f"no answer within {limit:g} s (the probe was abandoned)",
        time.monotonic() - started,
    )


def bound_seconds(timeout: float) -> float:
    """The most one probe of one peer may take (seconds): TCP, TLS, the upgrade, the verdict
    and the close, each bounded by ``timeout``, and one second to spare."""
    return 5 * timeout + 1.0


def _probe_accepts(peer: Peer, candidate: Candidate, timeout: float, started: float) -> Answer:
    # websockets (with http.client, email, concurrent) only where a peer is dialled: a
    # `status --no-probe` that imports this module never pays for it (start-up cost).
    from websockets.exceptions import (
        ConnectionClosed,
        InvalidHandshake,
        InvalidStatus,
        WebSocketException,
    )

    # start-up cost: as above
    from websockets.sync.client import connect

    # start-up cost: as above
    from websockets.typing import Subprotocol

    def answer(verdict: Verdict, detail: str) -> Answer:
        return Answer(verdict, detail, time.monotonic() - started)

    def closed_answer(closed: ConnectionClosed) -> Answer:
        code = closed.rcvd.code if closed.rcvd is not None else None
        reason = closed.rcvd.reason if closed.rcvd is not None else ""
        if code == UNAUTHORIZED:
            return answer(Verdict.REFUSED, f"closed {code} {reason}".strip())
        if code is None:
            # No close frame (1006): the connection dropped, not Harper's DISCONNECT handler,
            # which closes with an empty close frame (ws's close(), read as 1005).
            return answer(Verdict.UNREACHABLE, f"the peer dropped the connection: {closed}")
        if code in (1005, 1000):
            return answer(Verdict.ACCEPTED, "authorised (closed on DISCONNECT)")
        return answer(Verdict.UNKNOWN, f"closed {code} {reason}".strip())

    try:
        context = _client_context(candidate)
    except ValueError as exc:
        return answer(Verdict.REFUSED, str(exc))
    host = peer.host
    server_name = None if _is_ip(host) else host
    try:
        # TCP and TLS here, each bounded by ``timeout``, and the socket keeps a read timeout
        # for the WebSocket client's reader thread.  Left to the client, a wss:// connection
        # clears the socket's timeout after its TLS handshake; its reader thread then blocked
        # in an SSL read of a peer that had sent its TLS session ticket and nothing more, and
        # the client's join() of that thread waited with it, for as long as the peer stayed
        # silent (issue 18's ~75 s stall: reproduced in tests/test_peer_bounds.py,
        # silent_after_tls).  The client is handed the TLS socket over a ws:// URL, so it
        # never touches the timeout; the bytes on the wire are the same.
        raw = socket.create_connection((host, peer.port), timeout=timeout)
        try:
            tls = context.wrap_socket(raw, server_hostname=server_name)
        except BaseException:
            raw.close()
            raise
        tls.settimeout(READ_TIMEOUT_FACTOR * timeout)
    except (OSError, ssl.SSLError) as exc:
        return answer(Verdict.UNREACHABLE, f"{type(exc).__name__}: {exc}")
    try:
        with connect(
            f"ws://{_netloc(host)}:{peer.port}/",
            sock=tls,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            compression=None,
            proxy=None,
            open_timeout=timeout,
            close_timeout=timeout,
            ping_interval=None,
            user_agent_header=None,
        ) as ws:
            try:
                ws.send(DISCONNECT)
            except ConnectionClosed as closed:
                # Closed before our one message was even sent: no verdict on it.
                return answer(Verdict.UNREACHABLE, f"the peer closed the connection: {closed}")
            try:
                ws.recv(timeout=timeout)
            except ConnectionClosed as closed:
                return closed_answer(closed)
            except TimeoutError:
                return answer(Verdict.UNKNOWN, f"no verdict within {timeout:g} s")
            return answer(Verdict.UNKNOWN, "the peer sent data instead of a verdict")
    except InvalidStatus as exc:
        status = exc.response.status_code
        return answer(Verdict.UNKNOWN, f"WebSocket upgrade refused: HTTP {status}")
    except (InvalidHandshake, WebSocketException, EOFError, OSError, ssl.SSLError) as exc:
        # OSError covers TimeoutError and ConnectionResetError: a peer that closes or goes
        # silent mid-handshake is unreachable, an outcome (issue 18 item 3).
        return answer(Verdict.UNREACHABLE, f"{type(exc).__name__}: {exc}")
    finally:
        tls.close()


# --- (b) do I accept the peer -------------------------------------------------------------------


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def probe_trusts(
    peer: Peer, ca_pem: bytes, timeout: float = DEFAULT_TIMEOUT
) -> tuple[Answer, str | None, str]:
    """(b) Verify ``peer``'s served chain with ``ca_pem`` only, and its name against its URL.

    Returns the answer, the served leaf's SHA-256 (hex) and issuer (RFC 4514), both from an
    unverified handshake when verification fails.
    """
    started = time.monotonic()
    host = peer.host
    seen = served(host, peer.port, timeout)
    if seen.sha256 is None:
        return Answer(Verdict.UNREACHABLE, seen.error, time.monotonic() - started), None, ""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=ca_pem.decode("ascii", errors="replace"))
    except ssl.SSLError as exc:
        return (
            Answer(Verdict.REFUSED, f"CA file unusable: {exc.reason}", 0.0),
            seen.sha256,
            seen.issuer,
        )
    context.check_hostname = True
    try:
        with (
            socket.create_connection((host, peer.port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True) or b""
    except ssl.SSLCertVerificationError as exc:
        return (
            Answer(Verdict.REFUSED, exc.verify_message or str(exc), time.monotonic() - started),
            seen.sha256,
            seen.issuer,
        )
    except (OSError, ssl.SSLError) as exc:
        return (
            Answer(Verdict.UNREACHABLE, str(exc), time.monotonic() - started),
            seen.sha256,
            seen.issuer,
        )
    sha = hashlib.sha256(der).hexdigest()
    return (
        Answer(Verdict.ACCEPTED, "chain and name verified", time.monotonic() - started),
        sha,
        (seen.issuer),
    )


# --- both ---------------------------------------------------------------------------------------


def probe_peer(peer: Peer, candidate: Candidate, timeout: float = DEFAULT_TIMEOUT) -> PeerResult:
    """(a) and (b) for one peer (a NATS route peer: its route port, ``probe_nats_route``)."""
    if urlsplit(peer.url).scheme == NATS_ROUTE:
        accepts = probe_nats_route(peer.host, peer.port, candidate, timeout)
    else:
        accepts = probe_accepts(peer, candidate, timeout)
    trusted, sha, issuer = probe_trusts(peer, candidate.ca_pem, timeout)
    return PeerResult(peer, accepts, trusted, sha, issuer)


def probe_all(
    peers: Sequence[Peer], candidate: Candidate, timeout: float = DEFAULT_TIMEOUT
) -> list[PeerResult]:
    return [probe_peer(p, candidate, timeout) for p in peers]


# --- the guard before a swap, the proof after it (the install pipeline's steps) ----------------


@dataclass(frozen=True, slots=True)
class PeerCheck:
    """What the peers said of a set.  ``checked`` False: no probe ran (``why``)."""

    checked: bool
    results: tuple[PeerResult, ...] = ()
    problems: tuple[Problem, ...] = ()
    why: str = ""
    # peers without an answer that already trust the set (not problems), and every peer
    # without an answer (node names)
    trusted: tuple[str, ...] = ()
    without_answer: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> list[dict[str, Any]] | None:
        """Per-peer results for ``certd.set_installed``'s ``peers`` (None: not checked)."""
        return [r.as_dict() for r in self.results] if self.checked else None


def _peer_problems(
    results: Sequence[PeerResult], refuse_live: Collection[str] = ()
) -> tuple[Problem, ...]:
    """The problems of a probe round; ``refuse_live``: names of the peers that refuse the
    live set as well (the cluster is broken already: not a CA problem of the candidate)."""
    out: list[Problem] = []
    broken = [r for r in results if r.peer.name in refuse_live]
    if broken:
        named = "; ".join(f"{r.peer.name} ({r.peer.url}): {r.accepts_me.detail}" for r in broken)
        out.append(
            problem(
                "peer_refuses_live",
                f"Peers refuse this node's live certificate already, not only the new one: "
                f"{named}. Replication with them is broken now; adding a CA cannot help. Look "
                "at the peer's side (its hdb_nodes record of this node, its own certificate).",
            )
        )
    refusing = [
        r
        for r in results
        if r.accepts_me.verdict is Verdict.REFUSED and r.peer.name not in refuse_live
    ]
    if refusing:
        named = "; ".join(f"{r.peer.name} ({r.peer.url}): {r.accepts_me.detail}" for r in refusing)
        out.append(
            problem(
                "ca_not_trusted_by_peers",
                f"Peers would refuse this node's replication connections with this certificate: "
                f"{named}. Add its CA on every peer first (harper-certd ca add, on each node).",
            )
        )
    untrusted = [r for r in results if r.trusted_by_me.verdict is Verdict.REFUSED]
    if untrusted:
        named = "; ".join(
            f"{r.peer.name} ({r.peer.url}, serves {(r.served_sha256 or '?')[:16]}…): "
            f"{r.trusted_by_me.detail}"
            for r in untrusted
        )
        out.append(
            problem(
                "peer_not_trusted_by_ca",
                f"This CA file would not trust peers' served certificates: {named}. Keep their "
                "CA in the CA file until every peer serves a chain to the new one.",
            )
        )
    lost = [r for r in results if not r.reachable or Verdict.UNKNOWN in _verdicts(r)]
    if lost:
        named = "; ".join(
            f"{r.peer.name} ({r.peer.url}): "
            f"{r.accepts_me.detail if r.accepts_me.verdict is not Verdict.ACCEPTED else ''}"
            f"{r.trusted_by_me.detail if r.trusted_by_me.verdict is not Verdict.ACCEPTED else ''}"
            for r in lost
        )
        out.append(problem("peer_unreachable", f"Peers without an answer: {named}."))
    return tuple(out)


def _verdicts(result: PeerResult) -> tuple[Verdict, Verdict]:
    return result.accepts_me.verdict, result.trusted_by_me.verdict


@dataclass(frozen=True, slots=True)
class Scope:
    """What the peer guard needs of the node and the set, built by the caller (the install
    pipeline's context): never the orchestrator's context itself.

    ``not_checked``: why there is nothing to probe for this set (peers.check off, not the
    replication set, no Operations API), or None.  ``clock``: aware UTC datetimes, for the
    ``retry_until`` of ``certd.peer_unreachable``.
    """

    settings: PeersSection
    api: Api | None
    this_node: str | None
    not_checked: str | None
    clock: Callable[[], dt.datetime]
    interrupted: threading.Event | None = None
    # The live set's bytes (read on demand): a peer that refuses the candidate is asked
    # about the live set too (peer_refuses_live: seen on Harper 4.4.18, issue 20).
    live: Callable[[], SetBytes] | None = None
    # NATS clustering (4.0-4.3): the configured routes (host, port), probed directly
    # (probe_nats_route) instead of the replication peers of the Operations API.
    nats_routes: tuple[tuple[str, int], ...] = ()


def peer_list(scope: Scope) -> list[Peer] | str:
    """This node's peers, or why they cannot be listed."""
    if scope.not_checked is not None:
        return scope.not_checked
    if scope.nats_routes:
        return [Peer(f"{h}:{p}", f"{NATS_ROUTE}://{_netloc(h)}:{p}") for h, p in scope.nats_routes]
    assert scope.api is not None  # not_checked says when there is none
    try:
        return list_peers(scope.api, scope.this_node)
    except HarperError as exc:
        return f"the Operations API could not list the peers: {exc}"


def check_set(
    scope: Scope,
    data: SetBytes,
    *,
    stage: str,
    sleep: Callable[[float], None] = sdnotify.sleep,
    hold: bool = True,
    trusts: Callable[[str], str | None] | None = None,
    skip: frozenset[str] = frozenset(),
    source: str = "",
) -> PeerCheck:
    """Probe every peer with ``data``; ``stage`` is "before" or "after" (the swap).

    Before the swap a peer without an answer is retried every ``peers.retry_seconds`` for
    at most ``peers.hold_seconds`` (``peers.unreachable: hold``; ``certd.peer_unreachable``
    each round) and is then a ``peer_unreachable`` problem, unless ``trusts`` (a node name
    -> why it already trusts ``data``, or None; ``peerhold.TrustView.reason``) says it
    cannot refuse the set: then ``certd.peer_unreachable_trusted`` names it (``source``: the
    set's folder or "generation N") instead of a problem.

    After the swap (``hold`` False) an unreachable peer may be restarting itself: its daemon
    takes its stagger slot as soon as this node is connected again (seen in a run of
    tests/test_cluster_daemons.py before this wait: the proof found the other node down).
    It is retried every second for at most ``peers.restart_wait_seconds``, so that the proof
    is a verdict rather than "unreachable"; a peer in ``skip`` (known down before the swap)
    is not waited for, and a peer that answers without a verdict (``unknown``: it is up, not
    restarting) is asked at most ``UNKNOWN_RETRIES`` more times.  Every probe is bounded
    (``bound_seconds``).  Logs ``certd.peers_checked`` once, or ``certd.peers_unchecked``
    when the peers cannot be listed (then ``checked`` False).
    """
    listed = peer_list(scope)
    if isinstance(listed, str):
        if not listed.startswith(("peers.check is off", "not a replication set")):
            # Imported here for start-up cost: `status` loads this module and logs nothing.
            from harper_certd import logs

            logs.emit(events.PeersUnchecked(stage=stage, reason=listed))
        return PeerCheck(False, why=listed)
    if not listed:
        return PeerCheck(True)
    settings = scope.settings
    candidate = Candidate(data.cert, data.key, data.ca)
    results = {p.name: probe_peer(p, candidate, settings.timeout) for p in listed}
    if stage == "after" and not hold:
        wait, every = settings.restart_wait_seconds, min(settings.retry_seconds, 1.0)
    elif hold and settings.unreachable == "hold":
        wait, every = settings.hold_seconds, settings.retry_seconds
    else:
        wait, every = 0.0, settings.retry_seconds
    trusted: dict[str, str] = {}

    def no_answer(r: PeerResult) -> bool:
        return not r.reachable or Verdict.UNKNOWN in _verdicts(r)

    def already_trusts(r: PeerResult) -> bool:
        if trusts is None or not no_answer(r):
            return False
        if r.peer.name not in trusted:
            why = trusts(r.peer.name)
            if why is None:
                return False
            trusted[r.peer.name] = why
        return True

    unknown_tries: dict[str, int] = {}
    deadline = time.monotonic() + wait
    while True:
        # No answer (unreachable, or a verdict the probe does not know): asked again, unless
        # it was down before the swap.  A peer that already trusts the set is asked again too:
        # a peer restarting for a few seconds (two nodes renewing at one instant) gives its
        # real verdict; only one that stays silent for the whole hold is taken on trust.
        waiting = [
            r
            for r in results.values()
            if no_answer(r)
            and r.peer.name not in skip
            and unknown_tries.get(r.peer.name, 0) < UNKNOWN_RETRIES
        ]
        if not waiting or time.monotonic() >= deadline:
            break
        until = scope.clock() + dt.timedelta(seconds=max(0.0, deadline - time.monotonic()))
        for r in waiting:
            # Imported here for start-up cost: `status` loads this module and logs nothing.
            from harper_certd import logs

            logs.emit(
                events.PeerUnreachable(
                    stage=stage,
                    peer=r.peer.name,
                    url=r.peer.url,
                    detail=r.accepts_me.detail or r.trusted_by_me.detail,
                    retry_until=until.isoformat(),
                )
            )
        if scope.interrupted is not None and scope.interrupted.is_set():
            break
        sleep(min(every, max(0.0, deadline - time.monotonic())))
        for r in waiting:
            if stage == "after" and r.reachable:
                unknown_tries[r.peer.name] = unknown_tries.get(r.peer.name, 0) + 1
            results[r.peer.name] = probe_peer(r.peer, candidate, settings.timeout)
    ordered = tuple(results[p.name] for p in listed)
    # start-up cost: `status` loads this module and logs nothing.
    from harper_certd import logs

    for r in ordered:
        if already_trusts(r):
            logs.emit(
                events.PeerUnreachableTrusted(
                    stage=stage,
                    peer=r.peer.name,
                    url=r.peer.url,
                    detail=r.accepts_me.detail or r.trusted_by_me.detail,
                    why=trusted[r.peer.name],
                    source=source,
                )
            )
    # Before the swap only: after it the live set is the candidate itself.
    refuse_live = _refusing_live(scope, ordered) if stage == "before" else set()
    found = _peer_problems(
        [r for r in ordered if not (no_answer(r) and r.peer.name in trusted)], refuse_live
    )
    logs.emit(
        events.PeersChecked(
            stage=stage,
            fingerprint=hashlib.sha256(_first_der(data.cert)).hexdigest(),
            peers=[r.as_dict() for r in ordered],
            codes=[p.code for p in found],
        )
    )
    down = tuple(r.peer.name for r in ordered if no_answer(r))
    return PeerCheck(True, ordered, found, trusted=tuple(sorted(trusted)), without_answer=down)


def _refusing_live(scope: Scope, results: Sequence[PeerResult]) -> set[str]:
    """Names of the peers that refuse the candidate and, asked again, the live set too."""
    refusing = [r for r in results if r.accepts_me.verdict is Verdict.REFUSED]
    if not refusing or scope.live is None:
        return set()
    try:
        live = scope.live()
    except SwapError:
        return set()
    current = Candidate(live.cert, live.key, live.ca)
    return {
        r.peer.name
        for r in refusing
        if probe_accepts(r.peer, current, scope.settings.timeout).verdict is Verdict.REFUSED
    }


def _first_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(
        pem.decode("ascii", errors="replace").split("-----END CERTIFICATE-----")[0]
        + "-----END CERTIFICATE-----\n"
    )


# --- staggered restarts ---------------------------------------------------------------------


def disconnected(api: Api) -> list[str]:
    """Peers (``cluster_status``) this node has no live replication socket to, each with the
    databases whose sockets are down: ``"nodea (certd, system)"``.  A peer with at least one
    connected socket is up (it is not restarting)."""
    status = api.call({"operation": "cluster_status"})
    out = []
    for conn in status.get("connections") or []:
        if not isinstance(conn, dict):
            continue
        if "database_sockets" not in conn and "status" in conn:
            # NATS clustering (4.0-4.3): {"node_name", "status": "open"|"closed", ...}
            if conn.get("status") != "open":
                out.append(f"{conn.get('node_name') or conn.get('name')} ({conn.get('status')})")
            continue
        sockets = [s for s in conn.get("database_sockets") or [] if isinstance(s, dict)]
        if any(s.get("connected") for s in sockets):
            continue
        down = ", ".join(sorted({str(s.get("database")) for s in sockets})) or "no socket"
        out.append(f"{conn.get('name') or conn.get('url')} ({down})")
    return sorted(out)


def stagger_slot(api: Api, this_node: str | None, spacing: float) -> float:
    """Seconds this node waits before it checks its peers: its rank among the node names
    (``cluster_status``) times ``spacing``, so two nodes told to restart at the same instant
    check (and restart) one after the other; 0 for the first name or when unknown."""
    status = api.call({"operation": "cluster_status"})
    names = {
        str(c.get("name") or c.get("node_name"))  # node_name: NATS clustering (4.0-4.3)
        for c in status.get("connections") or []
        if isinstance(c, dict)
    }
    if not this_node:
        return 0.0
    return sorted(names | {this_node}).index(this_node) * spacing


def wait_before_restart(
    api: Api | None,
    this_node: str | None,
    max_wait: float,
    *,
    spacing: float = 8.0,
    sleep: Callable[[float], None] = sdnotify.sleep,
    jitter: Callable[[], float] | None = None,
) -> float:
    """Before a full Harper restart: wait (bounded by ``max_wait``) until every peer is
    connected, sleeping ``stagger_slot`` first and 1-3 s (jittered) between checks; logs
    ``certd.restart_deferred`` while waiting and once more (``proceeding=True``) when the
    wait ran out.  Returns the seconds waited.  No Operations API or no peers: no wait.
    """
    if api is None or max_wait <= 0:
        return 0.0
    draw = jitter or (lambda: random.uniform(1.0, 3.0))  # noqa: S311 - jitter, not a secret
    started = time.monotonic()
    try:
        slot = min(stagger_slot(api, this_node, spacing), max_wait)
        if slot > 0:
            sleep(slot)
        while True:
            waiting = disconnected(api)
            waited = time.monotonic() - started
            if not waiting:
                return waited
            over = waited >= max_wait
            # Imported here for start-up cost: `status` loads this module and logs nothing.
            from harper_certd import logs

            logs.emit(
                events.RestartDeferred(
                    waiting_for=waiting, waited=round(waited, 2), max_wait=max_wait, proceeding=over
                )
            )
            if over:
                return waited
            sleep(min(draw(), max(0.0, max_wait - waited)))
    except HarperError:
        # No cluster view (no credentials, Harper busy): nothing to wait for that can be
        # seen; the guard has said so already (certd.peers_unchecked).
        return time.monotonic() - started
