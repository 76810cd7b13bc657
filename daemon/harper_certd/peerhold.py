"""A peer that cannot be reached blocks only what it might refuse (issue 18 item 2).

Two questions the peer guard asks of a peer that gave no answer (unreachable, or no
verdict in time):

- **Does it already trust this set?**  (:meth:`TrustView.reason`)  It accepts the new leaf
  as this node when the leaf is issued (signature checked, not names compared) by a CA it
  already accepts this node by: the CA that issued the live leaf (the peer replicated with
  it), or the CA the cluster keeps for this node (``system.hdb_nodes`` ``ca`` of this
  node's record: the PEM Harper exchanged at the join or at ``update_node``, replicated to
  every node; Harper 4.7.29 ``bin/harperdb.js`` parses it with ``new X509Certificate(ca)``).
  And the new CA file still trusts the peer: it keeps every CA of the live CA file, or the
  CA the cluster keeps for the peer.  Such a renewal goes ahead with
  ``certd.peer_unreachable_trusted``.
- **Until when may a set it might refuse wait?**  (:func:`hold_until`)  Until the live
  leaf reaches its last warning threshold (``expiry.warn_days``' smallest): then the live
  leaf is about to break replication with every peer for certain, while the held set risks
  only the peers that cannot be reached.  Before it the set is held and re-tried, never
  refused (``certd.set_held_for_peers``); at it, the set is installed past the unreachable
  peers with ``certd.peer_hold_expired`` (critical) and the proof after the swap still
  rolls back a set a reachable peer refuses.

Fingerprints are SHA-256 of the DER (hex), as everywhere in harper-certd.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from harper_certd import statefile
from harper_certd.errors import HarperError
from harper_certd.harper.api import hdb_nodes
from harper_certd.peers import Scope
from harper_certd.roles import SetBytes

# The ``reason`` of a set held for its peers in state/waiting.json, as status and the
# metrics read it: "peers: nodeb (...)".
REASON_PREFIX = statefile.PEER_HOLD_REASON


def _certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def fingerprints(pem: bytes) -> frozenset[str]:
    """SHA-256 (hex) of every certificate in ``pem``; empty for none or unreadable."""
    return frozenset(_fingerprint(c) for c in _certs(pem))


def issuers(cert_pem: bytes, ca_pem: bytes) -> frozenset[str]:
    """Fingerprints of the certificates of ``ca_pem`` that signed the first certificate of
    ``cert_pem`` (its signature verified with each one's key: RFC 5280 §6.1.3 (a)(1))."""
    leaves = _certs(cert_pem)
    if not leaves:
        return frozenset()
    leaf = leaves[0]
    out = set()
    for ca in _certs(ca_pem):
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        out.add(_fingerprint(ca))
    return frozenset(out)


def kept_cas(scope: Scope) -> dict[str, frozenset[str]]:
    """Node name -> fingerprints of the CA the cluster keeps for it (``hdb_nodes.ca``); {}
    when the Operations API cannot say."""
    if scope.api is None:
        return {}
    try:
        rows = hdb_nodes(scope.api, ["name", "ca"])
    except HarperError:
        return {}
    out = {}
    for row in rows:
        ca = row.get("ca")
        if isinstance(ca, str):
            out[str(row.get("name"))] = fingerprints(ca.encode("ascii", errors="replace"))
    return out


@dataclass
class TrustView:
    """What the peers are known to trust, read once and only when a peer gave no answer.

    ``candidate``: the set under the guard; ``live``: reads the live set (None when there is
    none, or it cannot be read).
    """

    scope: Scope
    candidate: SetBytes
    live: Callable[[], SetBytes | None]
    _known: tuple[frozenset[str], frozenset[str], dict[str, frozenset[str]]] | None = None

    def _read(self) -> tuple[frozenset[str], frozenset[str], dict[str, frozenset[str]]]:
        if self._known is None:
            live = self.live()
            live_issuers = frozenset() if live is None else issuers(live.cert, live.ca)
            live_cas = frozenset() if live is None else fingerprints(live.ca)
            self._known = (live_issuers, live_cas, kept_cas(self.scope))
        return self._known

    def reason(self, peer: str) -> str | None:
        """Why ``peer`` (a node name) already trusts the candidate both ways, or None when
        that is not known (then the peer might refuse it)."""
        live_issuers, live_cas, kept = self._read()
        new_issuers = issuers(self.candidate.cert, self.candidate.ca)
        if not new_issuers:
            return None
        if new_issuers & live_issuers:
            accepts = "its leaf is issued by the CA that issued the live leaf"
        elif new_issuers & kept.get(self.scope.this_node or "", frozenset()):
            accepts = "its leaf is issued by the CA the cluster keeps for this node"
        else:
            return None
        new_cas = fingerprints(self.candidate.ca)
        if live_cas and live_cas <= new_cas:
            trusts = "its CA file keeps every CA of the live one"
        elif kept.get(peer) and kept[peer] <= new_cas:
            trusts = f"its CA file holds the CA the cluster keeps for {peer}"
        else:
            return None
        return f"{accepts}; {trusts}"


def hold_until(
    live_cert: bytes | None, warn_days: Sequence[float], now: dt.datetime
) -> dt.datetime:
    """Until when a set may be held for its peers: the live leaf's notAfter minus the last
    (smallest) warning threshold in days; ``now`` when there is no readable live leaf (a
    node without a working set has nothing to keep)."""
    leaves = _certs(live_cert or b"")
    if not leaves:
        return now
    last = min(warn_days, default=0.0)
    return leaves[0].not_valid_after_utc - dt.timedelta(days=last)


def reason_text(peers: Sequence[str]) -> str:
    """The ``reason`` of a held set (state/waiting.json): which peers, and why."""
    return (
        f"{REASON_PREFIX}{', '.join(peers)} cannot be reached and may not trust this set yet; "
        "re-tried until they answer"
    )


__all__ = [
    "REASON_PREFIX",
    "TrustView",
    "fingerprints",
    "hold_until",
    "issuers",
    "kept_cas",
    "reason_text",
]
