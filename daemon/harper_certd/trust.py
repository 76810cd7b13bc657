"""The system trust store: the roots OpenSSL itself would trust on this machine.

A file set without a CA file (a public certificate: a full chain, no
``certificateAuthority``) must chain to one of these. Where they come from follows
OpenSSL's default (``X509_STORE_set_default_paths``), as ``ssl.get_default_verify_paths()``
reports it: the file ``$SSL_CERT_FILE``, else OpenSSL's built-in file
(``/usr/lib/ssl/cert.pem`` -> ``/etc/ssl/certs/ca-certificates.crt`` on Debian), and
the hashed directory ``$SSL_CERT_DIR``, else OpenSSL's built-in directory. The config
key ``harper.trust_store`` (one PEM bundle) replaces both.
"""

from __future__ import annotations

import binascii
import functools
import os
import re
import ssl
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harper_certd import rawio

_HASHED = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")  # c_rehash names: <subject hash>.<n>
_MAX_BUNDLE = 16 << 20  # bytes; Debian's bundle is about 220 KB


@dataclass(frozen=True, slots=True)
class TrustStore:
    """Roots and where they were read from (``where``: the paths, for output)."""

    where: str
    certs: tuple[x509.Certificate, ...]
    # the certificates by subject, built once per store: the layout's hazards ask for every
    # CA of every set at each install, and a system store holds ~150
    by_subject: dict[x509.Name, list[x509.Certificate]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[x509.Name, list[x509.Certificate]] = {}
        for cert in self.certs:
            try:
                index.setdefault(cert.subject, []).append(cert)
            except ValueError:  # a subject that does not decode matches no name
                continue
        object.__setattr__(self, "by_subject", index)

    def _spki(self, cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def contains(self, cert: x509.Certificate) -> bool:
        """True when ``cert`` (same subject and key, as OpenSSL matches roots) is in the store."""
        same_name = self.by_subject.get(cert.subject, ())
        if not same_name:
            return False
        spki = self._spki(cert)
        return any(self._spki(c) == spki for c in same_name)

    def issuers_of(self, certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
        """The store's certificates named as issuer by any of ``certs`` (chain candidates)."""
        wanted = {c.issuer for c in certs}
        return tuple(c for c in self.certs if c.subject in wanted)

    def pem(self, certs: Iterable[x509.Certificate]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# A certificate block (the labels cryptography's PEM loader takes): its base64 body.
_BLOCK = re.compile(
    rb"-----BEGIN (?:X509 )?CERTIFICATE-----(.+?)-----END (?:X509 )?CERTIFICATE-----", re.S
)


def _ders(path: Path) -> list[bytes]:
    """The DER of every certificate block of a PEM file (none when it cannot be read, is
    over ``_MAX_BUNDLE`` or is not a regular file); a block whose base64 does not decode is
    skipped, as OpenSSL skips what it cannot read."""
    data = rawio.read_file(path, _MAX_BUNDLE)  # a FIFO or a device there: nothing, at once
    if data is None:
        return []
    out = []
    for match in _BLOCK.finditer(data):
        try:
            out.append(binascii.a2b_base64(match.group(1)))  # whitespace and newlines skipped
        except binascii.Error:
            continue
    return out


def _dir_ders(path: Path) -> list[bytes]:
    try:
        names = sorted(n for n in os.listdir(path) if _HASHED.match(n))
    except OSError:
        return []
    out = []
    for name in names:
        out += _ders(path / name)
    return out


def _certificates(ders: Iterable[bytes]) -> tuple[x509.Certificate, ...]:
    """Each distinct certificate once, in first-seen order; what does not parse is skipped.
    Equal DER is equal SHA-256 fingerprint, so duplicates (Debian's hashed directory holds
    the bundle's ~150 roots again) are dropped before they are parsed: Debian's store took
    14.5 ms instead of 17-25 ms (warm, 2 cores)."""
    seen: set[bytes] = set()
    out = []
    with warnings.catch_warnings():
        # Old roots with a negative serial number still load (OpenSSL takes them too).
        warnings.simplefilter("ignore")
        for der in ders:
            if der in seen:
                continue
            seen.add(der)
            try:
                out.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
    return tuple(out)


def system_store(override: Path | None = None, env: Mapping[str, str] | None = None) -> TrustStore:
    """The roots OpenSSL would trust by default (see the module docstring for the order).

    Unreadable or absent files give an empty store, not an error: the chain check then
    says which store it looked in.
    """
    if override is not None:
        return TrustStore(str(override), _certificates(_ders(override)))
    env = os.environ if env is None else env
    defaults = ssl.get_default_verify_paths()
    cafile = env.get(defaults.openssl_cafile_env) or defaults.openssl_cafile
    capath = env.get(defaults.openssl_capath_env) or defaults.openssl_capath
    return _cached(cafile, capath, _stamp(cafile), _stamp(capath))


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _cached(
    cafile: str, capath: str, _file: tuple[int, int] | None, _dir: tuple[int, int] | None
) -> TrustStore:
    # Keyed on the paths' mtimes: the daemon rereads the store when the bundle changes.
    ders = _ders(Path(cafile)) + _dir_ders(Path(capath))
    return TrustStore(f"{cafile} + {capath}/", _certificates(ders))
