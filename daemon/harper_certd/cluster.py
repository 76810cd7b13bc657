"""``harper-certd cluster``: this node and each peer, as far as this node can observe them.

For this node: the leaf its replication port serves (SHA-256, issuer, days left), the CAs of
its live CA file and Harper's authority records (``list_certificates``).  For each peer
(``system.hdb_nodes``/``cluster_status``): the leaf it serves, whether this node's CA file
verifies it, whether the peer accepts this node's live leaf (the peer probe,
harper_certd.peers), and the CA this node keeps for it (``hdb_nodes.ca_info``, exchanged at
the join; stale after a CA rotation until ``ca remove`` exchanges it again).  What a peer
trusts is only observable through that probe: the peer's CA files are not readable from here.

The phase of a CA rotation (docs/cluster.md, "The rotation: four phases"):

- ``steady``: one CA in the CA file, every served leaf issued by it;
- ``ca-added``: more than one CA in this node's CA file, every served leaf still by an older
  CA (phase 1 done here; run ``ca add`` on every node);
- ``rotating``: served leaves come from different CAs (phase 2 under way);
- ``ready-to-remove``: every served leaf is by the newest CA (notBefore) of the CA file and
  the file holds others (phase 3: ``ca remove`` the old one on every node);
- ``unknown``: something could not be observed.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from typing import Any

from cryptography import x509

from harper_certd import peers, textsafe
from harper_certd.errors import HarperError
from harper_certd.harper.api import Api, hdb_nodes, operations_api
from harper_certd.install.context import Context, read_live
from harper_certd.validate import fingerprint


def _served_leaf(host: str, port: int, now: dt.datetime) -> tuple[str | None, str, float | None]:
    """(sha256, issuer, days left) of the leaf served on ``host:port``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=5.0) as sock,
            context.wrap_socket(sock) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None, "", None
    if not der:
        return None, "", None
    cert = x509.load_der_x509_certificate(der)
    left = (cert.not_valid_after_utc - now).total_seconds() / 86400
    return fingerprint(cert), cert.issuer.rfc4514_string(), round(left, 1)


def view(ctx: Context) -> dict[str, Any]:
    """The cluster as this node sees it (JSON-ready)."""
    live = read_live(ctx)
    ca_certs = x509.load_pem_x509_certificates(live.ca)
    leaf = x509.load_pem_x509_certificates(live.cert)[0]
    port = ctx.harper.secure_ports.get("replication")
    host = ctx.config.verify.host or "127.0.0.1"
    sha, issuer, days = _served_leaf(host, port, ctx.clock()) if port else (None, "", None)
    api = operations_api(ctx.config, ctx.harper)
    authorities: list[str] = []
    if api is not None:
        try:
            rows = api.call({"operation": "list_certificates"})
            records = rows.get("result", rows)
            if isinstance(records, list):
                authorities = sorted(
                    str(r.get("name"))
                    for r in records
                    if isinstance(r, dict) and r.get("is_authority")
                )
        except HarperError:
            authorities = []
    this = {
        "name": ctx.harper.node_name,
        "served_sha256": sha,
        "issuer": issuer,
        "days_left": days,
        "live_sha256": fingerprint(leaf),
        "ca_file": [
            {"sha256": fingerprint(c), "subject": c.subject.rfc4514_string()} for c in ca_certs
        ],
        "authority_records": authorities,
    }
    listed = peers.peer_list(ctx.peer_scope())
    kept = _kept_cas(api)
    rows_out: list[dict[str, Any]] = []
    issuers = {issuer} if issuer else set()
    unknown = isinstance(listed, str) or sha is None
    if not isinstance(listed, str):
        candidate = peers.Candidate(live.cert, live.key, live.ca)
        for peer in listed:
            result = peers.probe_peer(peer, candidate, ctx.config.peers.timeout)
            p_sha, p_issuer, p_days = _served_leaf(peer.host, peer.port, ctx.clock())
            if p_sha is None:
                unknown = True
            else:
                issuers.add(p_issuer)
            rows_out.append(
                {
                    "name": peer.name,
                    "url": peer.url,
                    "served_sha256": p_sha,
                    "issuer": p_issuer,
                    "days_left": p_days,
                    "trusted_by_this_node": result.trusted_by_me.verdict.value,
                    "accepts_this_node": result.accepts_me.verdict.value,
                    # The CA this node keeps for the peer (hdb_nodes ca_info), what a restarted
                    # Harper may trust it by alone (HARPER-RIG-FINDINGS, "Fresh connections
                    # after a CA rotation"); None: not observed.
                    "kept_ca": kept.get(peer.name),
                    "kept_ca_stale": _stale(kept.get(peer.name), p_issuer),
                }
            )
    if unknown:
        phase = "unknown"
    elif len(issuers) > 1:
        phase = "rotating"
    elif len(ca_certs) <= 1:
        phase = "steady"
    else:
        # One issuer serves every leaf and the CA file holds more: which CA is the new one
        # is told by its notBefore (the newest CA is the one rotated to).
        newest = max(ca_certs, key=lambda c: c.not_valid_before_utc)
        phase = "ready-to-remove" if newest.subject.rfc4514_string() in issuers else "ca-added"
    return {
        "this_node": this,
        "peers": rows_out,
        "peers_unlisted": listed if isinstance(listed, str) else None,
        "phase": phase,
    }


def _kept_cas(api: Api | None) -> dict[str, str]:
    """Node name -> subject of the CA kept for it (``hdb_nodes.ca_info``); {} when unknown."""
    if api is None:
        return {}
    try:
        rows = hdb_nodes(api, ["name", "ca_info"])
    except HarperError:
        return {}
    out = {}
    for row in rows:
        info = row.get("ca_info")
        if isinstance(info, dict) and isinstance(info.get("subject"), str):
            out[str(row.get("name"))] = str(info["subject"])
    return out


def _stale(kept: str | None, issuer: str) -> bool | None:
    """Whether the kept CA's subject (Node's text, lines joined by spaces) lacks the CN of the
    issuer the peer's leaf names; None when either is unknown."""
    if kept is None or not issuer:
        return None
    try:
        names = x509.Name.from_rfc4514_string(issuer).get_attributes_for_oid(
            x509.NameOID.COMMON_NAME
        )
    except ValueError:
        return None
    if not names:
        return None
    value = names[0].value
    cn = value.decode(errors="replace") if isinstance(value, bytes) else value
    return f"CN={cn}" not in kept


def render(data: dict[str, Any]) -> str:
    this = data["this_node"]
    lines = [
        f"phase: {data['phase']}",
        f"{this['name']} (this node): serves {str(this['served_sha256'])[:16]}… issued by "
        f"{this['issuer']}, {this['days_left']} days left",
        "  CA file: " + ", ".join(f"{c['subject']} {c['sha256'][:16]}…" for c in this["ca_file"]),
        "  Harper's authority records: " + (", ".join(this["authority_records"]) or "-"),
    ]
    for p in data["peers"]:
        lines.append(
            f"{p['name']} ({p['url']}): serves {str(p['served_sha256'])[:16]}… issued by "
            f"{p['issuer']}, {p['days_left']} days left; trusted by this node: "
            f"{p['trusted_by_this_node']}; accepts this node: {p['accepts_this_node']}"
        )
        if p.get("kept_ca_stale"):
            lines.append(
                f"  warning: the CA kept for {p['name']} is {p['kept_ca']}, not its leaf's "
                "issuer: after a restart this node may refuse it (harper-certd ca remove "
                "exchanges the CAs again; see docs/runbooks/ca-rotation.md)"
            )
    if data["peers_unlisted"]:
        lines.append(f"peers not listed: {data['peers_unlisted']}")
    return "\n".join(textsafe.escape(line) for line in lines)  # names come from certificates
