"""The system trust store (OpenSSL's default paths): is a chain's root a public CA."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from harper_certd import load
from harper_certd.validate.certs import fingerprint

_MAX_STORE_FILES = 4096


def _store_paths(folder: str) -> list[Path]:
    """The files of an OpenSSL hashed certificate directory (bounded)."""
    files: list[Path] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if len(files) >= _MAX_STORE_FILES:
                    break
                if entry.is_file():
                    files.append(Path(entry.path))
    except OSError:
        return []
    return files


@functools.lru_cache(maxsize=4)
def _store_fingerprints(key: tuple[tuple[str, int, int], ...]) -> frozenset[str]:
    out: set[str] = set()
    for name, _, _ in key:
        files = _store_paths(name) if os.path.isdir(name) else [Path(name)]
        for path in files:
            out.update(fingerprint(c) for c in _store_file_certs(path))
    return frozenset(out)


def _store_file_certs(path: Path) -> tuple[x509.Certificate, ...]:
    try:
        data = load.read_bounded(path)
        return load.parse_certificates(data, name=str(path), eager=False).certs
    except Exception:  # a file of the store that is not a certificate bundle
        return ()


def system_trust_fingerprints() -> frozenset[str]:
    """SHA-256 fingerprints of OpenSSL's default trust store (``ssl.get_default_verify_paths``:
    the CA file and hashed directory, honouring SSL_CERT_FILE / SSL_CERT_DIR as OpenSSL
    does), read once per change of the file's or the directory's mtime."""
    # start-up cost: ssl (about 3.5 ms with _ssl) only when a chain is asked about, which
    # is rare (an EKU finding), not on every ``validate``
    import ssl

    paths = ssl.get_default_verify_paths()
    key = []
    for name in (paths.cafile, paths.capath):
        if not name:
            continue
        try:
            st = os.stat(name)
        except OSError:
            continue
        key.append((name, st.st_mtime_ns, st.st_size))
    return _store_fingerprints(tuple(key))


def public_root(path: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The certificate of ``path`` (above the leaf) that the system trust store holds:
    the sign of a public CA, whatever its name."""
    if len(path) < 2:
        return None
    store = system_trust_fingerprints()
    for cert in reversed(path[1:]):
        if fingerprint(cert) in store:
            return cert
    return None
