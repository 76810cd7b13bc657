"""Load stage: read certificate, key and CA files as hostile input.

Every failure is an ``Unreadable`` carrying one sentence for a person; the
validate stage turns it into a problem with the ``*_unreadable`` code of the
file's role.  Nothing here trusts sizes, encodings or symlinks.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

MAX_FILE_BYTES = 1 << 20

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----(.*?)-----END \1-----", re.DOTALL)
_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]{1,64}-----")
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE"}
_KEY_LABELS = {b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
_ANY_KEY_LABELS = {
    *_KEY_LABELS,
    b"ENCRYPTED PRIVATE KEY",
    b"OPENSSH PRIVATE KEY",
    b"DSA PRIVATE KEY",
}


class Unreadable(Exception):
    """A file that cannot be used; ``str()`` is the sentence for a person."""


@dataclass(frozen=True, slots=True)
class PemBlock:
    label: bytes
    pem: bytes  # the whole block, BEGIN to END


@dataclass(frozen=True, slots=True)
class CertFile:
    certs: tuple[x509.Certificate, ...]
    holds_private_key: bool


def _world_or_group_writable(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def check_symlinks(path: Path) -> None:
    """Refuse a path whose symlinks sit in directories that others can write.

    Such a link could be swapped under us to point at any file the daemon can
    read (a key of another service, say) between validation and use.
    """
    current = Path(path.anchor) if path.is_absolute() else Path()
    for part in path.parts[1:] if path.is_absolute() else path.parts:
        parent = current
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            pst = os.stat(parent if str(parent) else ".")
            if _world_or_group_writable(pst.st_mode) and not (
                pst.st_mode & stat.S_ISVTX and st.st_uid in (0, os.geteuid())
            ):
                raise Unreadable(
                    f"{path}: {current} is a symlink in {parent}, a directory that group or "
                    "others can write; refusing to follow it"
                )
            target = Path(os.readlink(current))
            current = target if target.is_absolute() else parent / target


def read_bounded(path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read a regular file of at most ``limit`` bytes, refusing anything else before parsing."""
    check_symlinks(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable(f"{path} does not exist") from None
    except PermissionError:
        raise Unreadable(f"{path} cannot be read: permission denied") from None
    except OSError as exc:
        raise Unreadable(
            f"{path} cannot be opened: {os.strerror(exc.errno or errno.EIO)}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(f"{path} is not a regular file")
        if st.st_size > limit:
            raise Unreadable(
                f"{path} is {st.st_size} bytes, over the {limit} byte limit for a PEM file"
            )
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Unreadable(f"{path} grew over the {limit} byte limit while being read")
    return data


def pem_blocks(data: bytes, *, name: str) -> list[PemBlock]:
    """The complete PEM blocks of ``data``; refuses empty, DER, garbage and truncated input."""
    if not data.strip():
        raise Unreadable(f"{name} is empty")
    blocks = [PemBlock(m.group(1), m.group(0)) for m in _BLOCK.finditer(data)]
    begins = len(_BEGIN.findall(data))
    if begins == 0:
        if data[:1] == b"\x30":
            raise Unreadable(
                f"{name} looks like DER (binary); Harper needs PEM: "
                f"openssl x509 -inform der -in {name} -out {name}.pem"
            )
        raise Unreadable(f"{name} is not PEM: it has no '-----BEGIN' line")
    if begins > len(blocks):
        raise Unreadable(
            f"{name} is truncated or damaged: {begins} '-----BEGIN' lines but only "
            f"{len(blocks)} complete block(s)"
        )
    return blocks


def _fast_certificates(data: bytes, eager: bool) -> CertFile | None:
    """The common case (only whole CERTIFICATE blocks) in one call; None sends to the slow path."""
    begins = data.count(b"-----BEGIN ")
    if begins == 0 or begins != data.count(b"-----BEGIN CERTIFICATE-----"):
        return None
    if data.count(b"-----END CERTIFICATE-----") != begins:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(data)
            for cert in certs if eager else ():
                _ = cert.extensions
    except Exception:  # any doubt: the slow path names the damaged block
        return None
    return CertFile(tuple(certs), holds_private_key=False) if len(certs) == begins else None


def parse_certificates(data: bytes, *, name: str, eager: bool = True) -> CertFile:
    """Certificates of a PEM file, in file order.

    ``eager``: parse every extension now, so that a malformed one is this file's fault.
    A CA file of hundreds of roots is parsed lazily (most roots are never looked at); the
    validator checks the extensions of the certificates its chain uses.
    """
    fast = _fast_certificates(data, eager)
    if fast is not None:
        return fast
    blocks = pem_blocks(data, name=name)
    certs: list[x509.Certificate] = []
    for index, block in enumerate(b for b in blocks if b.label in _CERT_LABELS):
        try:
            with warnings.catch_warnings():
                # Negative serials and similar oddities warn; OpenSSL accepts them too.
                warnings.simplefilter("ignore")
                cert = x509.load_pem_x509_certificate(block.pem)
                if eager:  # extensions parse lazily; a malformed one is found here
                    _ = cert.extensions
                certs.append(cert)
        except Exception as exc:  # hostile input: any parse failure, DuplicateExtension too
            raise Unreadable(f"{name}: certificate #{index + 1} is damaged: {exc}") from None
    holds_key = any(b.label in _ANY_KEY_LABELS for b in blocks)
    if not certs:
        labels = ", ".join(sorted({b.label.decode() for b in blocks}))
        hint = " (the key and certificate files swapped?)" if holds_key else ""
        raise Unreadable(f"{name} holds no certificate, only: {labels}{hint}")
    return CertFile(tuple(certs), holds_key)


def parse_private_key(data: bytes, *, name: str) -> PrivateKeyTypes:
    """The one unencrypted private key of a PEM file (PKCS#8, PKCS#1 or SEC1)."""
    blocks = pem_blocks(data, name=name)
    if any(b.label == b"ENCRYPTED PRIVATE KEY" for b in blocks) or any(
        b.label in _KEY_LABELS and b"ENCRYPTED" in b.pem.split(b"\n\n", 1)[0] for b in blocks
    ):
        raise Unreadable(
            f"{name} is encrypted; Harper needs an unencrypted key: "
            f"openssl pkey -in {name} -out {name}.plain (then protect it with mode 0600)"
        )
    if any(b.label == b"OPENSSH PRIVATE KEY" for b in blocks):
        raise Unreadable(
            f"{name} is in OpenSSH format; Harper needs PEM: ssh-keygen -p -m PEM -f {name}"
        )
    keys = [b for b in blocks if b.label in _KEY_LABELS or b.label == b"DSA PRIVATE KEY"]
    if not keys:
        labels = ", ".join(sorted({b.label.decode() for b in blocks}))
        hint = (
            " (the key and certificate files swapped?)" if b"CERTIFICATE" in labels.encode() else ""
        )
        raise Unreadable(f"{name} holds no private key, only: {labels}{hint}")
    if len(keys) > 1:
        raise Unreadable(f"{name} holds {len(keys)} private keys; Harper reads one per file")
    try:
        # The RSA consistency check costs ~30 ms a key; what matters here, that the key is
        # the certificate's, is checked by comparing public keys (as openssl's modulus test).
        return serialization.load_pem_private_key(
            keys[0].pem, password=None, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        raise Unreadable(f"{name} is encrypted; Harper needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Unreadable(
            f"{name}: the private key is damaged or of an unknown type: {exc}"
        ) from None
