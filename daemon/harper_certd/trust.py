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

import _ssl
import binascii
import functools
import os
import re
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
    """Roots and where they were read from (``where``: the paths, for output); ``ders``: each
    root's DER, in ``certs``' order."""

    where: str
    certs: tuple[x509.Certificate, ...]
    ders: tuple[bytes, ...]
    # every DER one after the other: one search answers "no such key here" (the usual answer)
    joined: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "joined", b"".join(self.ders))

    def _spki(self, cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def contains(self, cert: x509.Certificate) -> bool:
        """True when ``cert`` (same subject and key, as OpenSSL matches roots) is in the store.

        A root's DER holds its SubjectPublicKeyInfo verbatim, so only the roots whose DER
        contains ``cert``'s are decoded and compared (key, then subject): the same answer
        as comparing every root's subject, without decoding ~150 of them (about 5 ms)."""
        spki = self._spki(cert)
        if spki not in self.joined:  # in no root: 0.02 ms for ~150 roots, a loop over them 0.1 ms
            return False
        for der, root in zip(self.ders, self.certs, strict=True):
            if spki not in der or self._spki(root) != spki:
                continue
            try:
                if root.subject == cert.subject:
                    return True
            except ValueError:  # a subject that does not decode matches no name
                continue
        return False

    def issuers_of(self, certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
        """The store's certificates named as issuer by any of ``certs`` (chain candidates)."""
        wanted = {c.issuer for c in certs}
        return tuple(c for c in self.certs if c.subject in wanted)

    def pem(self, certs: Iterable[x509.Certificate]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# A certificate block (the labels cryptography's PEM loader takes): its base64 body.
# Base64 and whitespace only between the lines (OpenSSL's PEM reader refuses anything else in
# a certificate's body): a third of the time of a lazy ``.+?`` over a 220 KB bundle.
_BLOCK = re.compile(
    rb"-----BEGIN (?:X509 )?CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END (?:X509 )?CERTIFICATE-----"
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


def _certificates(
    ders: Iterable[bytes],
) -> tuple[tuple[x509.Certificate, ...], tuple[bytes, ...]]:
    """Each distinct certificate once, in first-seen order, and its DER; what does not parse
    is skipped.
    Equal DER is equal SHA-256 fingerprint, so duplicates (Debian's hashed directory holds
    the bundle's ~150 roots again) are dropped before they are parsed: Debian's store took
    14.5 ms instead of 17-25 ms (warm, 2 cores)."""
    seen: set[bytes] = set()
    out = []
    kept: list[bytes] = []
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
            kept.append(der)
    return tuple(out), tuple(kept)


def system_store(override: Path | None = None, env: Mapping[str, str] | None = None) -> TrustStore:
    """The roots OpenSSL would trust by default (see the module docstring for the order).

    Unreadable or absent files give an empty store, not an error: the chain check then
    says which store it looked in.
    """
    if override is not None:
        return TrustStore(str(override), *_certificates(_ders(override)))
    env = os.environ if env is None else env
    # ssl.get_default_verify_paths() without ssl.py (2 ms of start-up): the C function it
    # wraps, (cafile variable, cafile, capath variable, capath) as OpenSSL was built
    cafile_env, default_cafile, capath_env, default_capath = _ssl.get_default_verify_paths()
    cafile = env.get(cafile_env) or default_cafile
    capath = env.get(capath_env) or default_capath
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
    return TrustStore(f"{cafile} + {capath}/", *_certificates(ders))
