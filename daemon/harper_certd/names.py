"""Host name checks as Node.js's ``tls.checkServerIdentity`` makes them.

Harper's peers are Node.js processes, so a name is valid for a certificate
exactly when Node would accept it: IP addresses against IP SANs only; DNS
names against DNS SANs, and against the subject CN only when the certificate
has no DNS or IP SAN; one wildcard in the leftmost label, never for a name
of two labels or fewer, never in an A-label (``xn--``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

_BAD_CHARS = re.compile(r"[^\u0021-\u007F]")


@dataclass(frozen=True, slots=True)
class Identities:
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    cns: tuple[str, ...]


def identities(cert: x509.Certificate) -> Identities:
    dns: list[str] = []
    ips: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    cns = [
        a.value if isinstance(a.value, str) else a.value.decode("latin-1")
        for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    return Identities(tuple(dns), tuple(ips), tuple(cns))


def _split_host(host: str) -> list[str]:
    return host.lower().removesuffix(".").split(".")


def _matches(host_parts: list[str], pattern: str) -> bool:
    if not pattern:
        return False
    pattern_parts = _split_host(pattern)
    if len(host_parts) != len(pattern_parts) or "" in pattern_parts:
        return False
    if any(_BAD_CHARS.search(p) for p in pattern_parts):
        return False
    if host_parts[1:] != pattern_parts[1:]:
        return False
    host_label, pattern_label = host_parts[0], pattern_parts[0]
    pieces = pattern_label.split("*")
    if len(pieces) == 1 or "xn--" in pattern_label:
        return host_label == pattern_label
    # Node also accepts a partial label ("f*o.example.com"); RFC 6125 6.4.3 and the
    # CA/Browser Forum forbid it, as it matches names nobody meant: refused here.
    if pattern_label != "*" or len(pattern_parts) <= 2:
        return False
    return bool(host_label)


def _as_ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return None


def matches_hostname(ids: Identities, hostname: str) -> bool:
    ip = _as_ip(hostname)
    if ip is not None:
        return any(_as_ip(candidate) == ip for candidate in ids.ips)
    host_parts = _split_host(hostname)
    if ids.dns:
        return any(_matches(host_parts, pattern) for pattern in ids.dns)
    if ids.ips:
        return False
    return any(_matches(host_parts, cn) for cn in ids.cns)
