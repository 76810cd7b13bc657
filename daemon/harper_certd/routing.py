"""Which set an incoming folder is for (issue 11): a pure decision.

A folder under ``incoming/<set name>/`` goes to that set. A folder directly in
``incoming/`` goes to the one set whose role, names and kind it fits:

* role: the replication set needs TLS Web Server and Client Authentication (or no EKU),
  the others TLS Web Server Authentication (or no EKU);
* names: the replication set needs the node name (CN or SAN), the others every DNS name
  of their live certificate (a renewal keeps its names);
* kind: a folder with a CA file fits a set with a CA file, one without (a public
  certificate, a full chain) a set without.

None or several: refused with the reason (``set_unroutable``). Called by the daemon's router
of ``incoming/`` (``node/router.py``) and by ``install``'s hint of the set a folder fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from harper_certd.discover import CertSet
from harper_certd.hazards import Material, names_of
from harper_certd.roles import Role


@dataclass(frozen=True, slots=True)
class Routed:
    """``set_name`` None: refused, ``reason`` says why (for reason.json)."""

    set_name: str | None
    reason: str


def _ekus(leaf: x509.Certificate) -> set[x509.ObjectIdentifier] | None:
    try:
        return set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def _dns(leaf: x509.Certificate) -> set[str]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {n.lower() for n in san.get_values_for_type(x509.DNSName)}


def why_not(
    cert_set: CertSet,
    live: Material,
    leaf: x509.Certificate,
    has_ca_file: bool,
    node_name: str | None,
) -> str | None:
    """Why ``leaf`` does not fit ``cert_set`` (None: it fits)."""
    ekus = _ekus(leaf)
    server = ExtendedKeyUsageOID.SERVER_AUTH
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    set_has_ca = cert_set.first.paths is not None
    if has_ca_file != set_has_ca:
        return "it has a CA file" if has_ca_file else "it has no CA file"
    if cert_set.role is Role.REPLICATION:
        if ekus is not None and not {server, client} <= ekus:
            return "it is not for TLS Web Server and Client Authentication"
        if node_name is not None and node_name not in names_of(leaf):
            return f"it does not hold the node name {node_name}"
        return None
    if ekus is not None and server not in ekus:
        return "it is not for TLS Web Server Authentication"
    wanted = _dns(live.leaf) if live.leaf is not None else set()
    missing = sorted(wanted - _dns(leaf))
    if missing:
        return f"it lacks {', '.join(missing)}"
    return None


def route(
    sets: Sequence[CertSet],
    live: Mapping[str, Material],
    leaf: x509.Certificate,
    *,
    has_ca_file: bool,
    node_name: str | None,
    explicit: str | None = None,
) -> Routed:
    """The set a candidate goes to. ``explicit``: the ``incoming/<set name>/`` it sat in."""
    names = [s.name for s in sets]
    if explicit is not None:
        if explicit in names:
            return Routed(explicit, f"placed under incoming/{explicit}/")
        return Routed(None, f"no set is named '{explicit}' (sets: {', '.join(names)})")
    fits, refusals = [], []
    for s in sets:
        reason = why_not(s, live.get(s.name, Material((), ())), leaf, has_ca_file, node_name)
        if reason is None:
            fits.append(s.name)
        else:
            refusals.append(f"not '{s.name}' ({s.role.value}): {reason}")
    if len(fits) == 1:
        return Routed(fits[0], f"fits set '{fits[0]}' only")
    if not fits:
        return Routed(None, "it fits no set: " + "; ".join(refusals))
    return Routed(
        None,
        f"it fits several sets ({', '.join(fits)}): place it under incoming/<set name>/",
    )
