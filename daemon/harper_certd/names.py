"""Host name checks as Node.js's ``tls.checkServerIdentity`` makes them.

Harper's peers are Node.js processes, so a name is valid for a certificate
exactly when Node would accept it: IP addresses against IP SANs only; DNS
names against DNS SANs, and against the subject CN only when the certificate
has no DNS or IP SAN; one wildcard in the leftmost label, never for a name
of two labels or fewer, never in an A-label (``xn--``).

Names are hostile input: ``safe_name`` renders any subject or issuer, never raising
(an undecodable UTF8String or an odd-length BMPString make cryptography's
``rfc4514_string()`` raise ``ValueError``), and ``identities`` treats a malformed
SAN extension as no SAN.
"""

import functools
import hashlib
import ipaddress
import re
from collections.abc import Callable
from typing import NamedTuple

from cryptography import x509
from cryptography.x509.oid import NameOID

_BAD_CHARS = re.compile(r"[^\u0021-\u007F]")


class Identities(NamedTuple):
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    cns: tuple[str, ...]


def _attribute_text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


def safe_name(get: Callable[[], x509.Name], *, empty: str = "(empty name)") -> str:
    """RFC 4514 text of the name ``get()`` returns; never raises.

    Falls back to the attributes that decode, then to ``(undecodable name)``; the
    fallback never includes raw bytes, only what decoded and our own words.
    """
    try:
        name = get()
    except Exception:  # hostile input: cryptography parses names lazily
        return "(undecodable name)"
    try:
        text = name.rfc4514_string()
    except Exception:  # undecodable UTF8String/BMPString values, unknown string types
        text = None
    if text is not None:
        return text or empty
    parts = []
    try:
        for rdn in name.rdns:
            for attribute in rdn:
                try:
                    parts.append(f"{attribute.rfc4514_string()}")
                except Exception:  # this attribute only
                    parts.append(f"{attribute.oid.dotted_string}=(undecodable)")
    except Exception:  # the name's structure itself
        try:
            digest = hashlib.sha256(name.public_bytes()).hexdigest()[:16]
        except Exception:  # nothing left to describe it by
            return "(undecodable name)"
        return f"(undecodable name, DER sha256 {digest}...)"
    return ",".join(reversed(parts)) or empty


@functools.lru_cache(maxsize=64)  # leaves: the live and the incoming sets
def identities(cert: x509.Certificate) -> Identities:
    """SAN DNS names and IPs, and subject CNs; a malformed SAN or name reads as empty."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except Exception:  # ExtensionNotFound, or a malformed/duplicate extension: no SAN
        dns, ips = [], []
    try:
        cns = [
            _attribute_text(a.value)
            for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    except Exception:  # an undecodable subject names nothing
        cns = []
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


def partial_wildcard(ids: Identities, hostname: str) -> str | None:
    """The SAN pattern with a partial wildcard label ("ba*.example.com") that Node's
    ``checkServerIdentity`` would let cover ``hostname`` and ``matches_hostname`` refuses;
    None when there is none.  Node's rule: one ``*`` in the leftmost label, not an ``xn--``
    label, at least three labels, the rest equal, the host label starting with the part
    before the ``*`` and ending with the part after it."""
    if _as_ip(hostname) is not None:
        return None
    host_parts = _split_host(hostname)
    for pattern in ids.dns if ids.dns else ids.cns:
        parts = _split_host(pattern)
        if len(parts) != len(host_parts) or len(parts) <= 2 or host_parts[1:] != parts[1:]:
            continue
        label = parts[0]
        if label == "*" or label.count("*") != 1 or label.startswith("xn--"):
            continue
        prefix, suffix = label.split("*")
        host = host_parts[0]
        if (
            len(prefix) + len(suffix) <= len(host)
            and host.startswith(prefix)
            and host.endswith(suffix)
        ):
            return pattern
    return None


# What ipaddress.ip_address can take from a string: an IPv6 address holds a colon, an IPv4
# address is four decimal octets.  Anything else (a host name) is no address without asking
# it: its refusal (an exception raised through four frames) cost an install 0.1-0.5 ms a
# name, its code cold after the settle period (bench/'s install phases).
_MAYBE_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def _as_ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    bare = name.strip("[]")
    if ":" not in bare and not _MAYBE_IPV4.fullmatch(bare):
        return None
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return None


def is_ip_address(name: str) -> bool:
    return _as_ip(name) is not None


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
