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

import functools
import os
import re
import ssl
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

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


def _read_pem_file(path: Path) -> list[x509.Certificate]:
    with warnings.catch_warnings():
        # Old roots with a negative serial number still load (OpenSSL takes them too).
        warnings.simplefilter("ignore")
        return _read_pem(path)


def _read_pem(path: Path) -> list[x509.Certificate]:
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_BUNDLE + 1)
    except OSError:
        return []
    if len(data) > _MAX_BUNDLE:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        # One bad block spoils the whole parse; fall back to block by block, as OpenSSL
        # skips what it cannot read.
        out = []
        for block in re.findall(
            rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, re.S
        ):
            try:
                out.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
        return out


def _read_dir(path: Path) -> list[x509.Certificate]:
    try:
        names = sorted(n for n in os.listdir(path) if _HASHED.match(n))
    except OSError:
        return []
    out = []
    for name in names:
        out += _read_pem_file(path / name)
    return out


def system_store(override: Path | None = None, env: Mapping[str, str] | None = None) -> TrustStore:
    """The roots OpenSSL would trust by default (see the module docstring for the order).

    Unreadable or absent files give an empty store, not an error: the chain check then
    says which store it looked in.
    """
    if override is not None:
        return TrustStore(str(override), _dedupe(_read_pem_file(override)))
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
    certs = _read_pem_file(Path(cafile)) + _read_dir(Path(capath))
    return TrustStore(f"{cafile} + {capath}/", _dedupe(certs))


def _dedupe(certs: list[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    seen: set[bytes] = set()
    out = []
    for c in certs:
        fp = c.fingerprint(hashes.SHA256())
        if fp not in seen:
            seen.add(fp)
            out.append(c)
    return tuple(out)
