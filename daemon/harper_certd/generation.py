"""A generation of the store: one complete set written once, and what is read from it.

``<state>/generations/<id>/`` holds the set's files (``KEY_FILES`` names, read-only:
certificate and CA file ``0444``, the key ``0400``, the live files' modes without their
write bits) and ``meta.json`` (``GenerationMeta``: outcome, the leaf's fingerprint,
subject, not_after, each file's SHA-256).  Everything here only reads: writing is the
store's (``swap.write_generation``).
"""

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509

from harper_certd import fsio, load, names
from harper_certd.journal import GenerationMeta
from harper_certd.roles import KEY_FILES, SetBytes
from harper_certd.validate import summarize

ROLES = ("key", "ca", "cert")  # write order inside a generation; the key first
ROLES_NO_CA = ("key", "cert")  # a set without a CA file (a public certificate)


class FileAttrs(NamedTuple):
    """A live file's mode (``st_mode``), owner and group: what a generation file copies."""

    mode: int
    uid: int
    gid: int


class Generation(NamedTuple):
    """``generations/<id>``: its folder and its ``meta.json`` as read (a dict, see ``info``)."""

    id: str
    path: Path
    meta: dict[str, Any]

    def file(self, role: str) -> Path:
        """The path of ``role``'s file (``KEY_FILES``) in this generation."""
        return self.path / KEY_FILES[role]

    @property
    def info(self) -> GenerationMeta:
        """``meta``, typed."""
        return GenerationMeta.from_dict(self.id, self.meta)

    def read(self) -> SetBytes:
        """The files' bytes; ``ca`` ``b""`` when the generation has no CA file."""
        ca = self.file("ca")
        with_ca = os.path.lexists(ca) or "ca" in (self.meta.get("digests") or {})
        return SetBytes(
            read_file(self.file("cert")),
            read_file(self.file("key")),
            read_file(ca) if with_ca else b"",
        )


def cert_meta(cert_pem: bytes) -> dict[str, str]:
    """The leaf's ``fingerprint`` (SHA-256 hex), ``subject`` (RFC 4514), ``not_after``
    (ISO 8601, UTC) and ``record_name``: what verification, rollback and ``status`` need
    from a generation.

    ``record_name`` is the name Harper 4.7 files the certificate under in
    ``system.hdb_certificate``: its CN, or its first SAN (tests/HARPER-RIG-FINDINGS.md);
    ``cn`` and ``first_san`` (DNS names before IP addresses) are kept beside it.
    Empty when the certificate cannot be parsed (an adopted set may be broken).
    """
    try:
        cert = load.parse_certificates(cert_pem, name="certificate").certs[0]
    except (load.Unreadable, IndexError, ValueError):
        return {}
    return leaf_meta(cert)


def leaf_meta(cert: x509.Certificate) -> dict[str, str]:
    """``cert_meta`` of a leaf parsed already (an install's validated chain holds it); empty
    when its names cannot be decoded."""
    try:
        leaf = summarize(cert)
        ids = names.identities(cert)
    except ValueError:
        return {}
    record = next(iter((*ids.cns, *ids.dns, *ids.ips)), "")
    return {
        "fingerprint": leaf.sha256,
        "subject": leaf.subject,
        "not_after": leaf.not_after.isoformat(),
        "record_name": record,
        "cn": next(iter(ids.cns), ""),
        "first_san": next(iter((*ids.dns, *ids.ips)), ""),
    }


CERT_KEYS = ("fingerprint", "subject", "not_after", "record_name", "cn", "first_san")


def read_only(mode: int, role: str) -> int:
    """A generation file's mode: the live file's, without write bits; a key never for others."""
    mode = stat.S_IMODE(mode) & ~0o222
    return mode & 0o770 if role == "key" else mode


def read_file(path: Path) -> bytes:
    """A file of the state directory: a regular file, no link followed, at most
    ``load.MAX_CA_FILE_BYTES`` (a generation's CA file may be as large as Node loads;
    ``fsio.read_regular``); OSError otherwise."""
    return fsio.read_regular(path, load.MAX_CA_FILE_BYTES)


def digest_file(path: Path) -> str:
    """SHA-256 hex of a file of the state directory (``read_file``); OSError as it."""
    return hashlib.sha256(read_file(path)).hexdigest()
