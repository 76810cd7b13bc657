"""A small certificate authority for the demo, the tests and the benchmarks.

Everything it makes is real (pyca/cryptography); nothing here is used on the
path that validates or installs an operator's certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harper_certd.clock import utc_now
from harper_certd.roles import SetPaths

CLUSTER_EKU = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
PrivateKey = CertificateIssuerPrivateKeyTypes


def make_key(kind: str = "ec", size: int = 256) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1(), 192: ec.SECP192R1()}[
        size
    ]
    return ec.generate_private_key(curve)


def key_pem(key: PrivateKey, fmt: serialization.PrivateFormat | None = None) -> bytes:
    if fmt is None:
        fmt = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self.key)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return utc_now().replace(microsecond=0)


def _sign_hash(
    key: PrivateKey, hash_algorithm: hashes.HashAlgorithm | None
) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    return hash_algorithm or hashes.SHA256()


def make_ca(
    cn: str = "harper-certd test root",
    *,
    parent: Issued | None = None,
    key: PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    path_length: int | None = None,
    hash_algorithm: hashes.HashAlgorithm | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = None,
) -> Issued:
    key = key or make_key()
    now = _now()
    subject = _name(cn)
    issuer_key = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.cert.subject if parent else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
            critical=False,
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = builder.sign(issuer_key, _sign_hash(issuer_key, hash_algorithm))  # type: ignore[arg-type]
    return Issued(cert, key)


def make_leaf(
    issuer: Issued,
    cn: str = "nodea",
    *,
    dns: Sequence[str] | None = None,
    ips: Sequence[str] = (),
    eku: Sequence[x509.ObjectIdentifier] | None = CLUSTER_EKU,
    key: PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    is_ca: bool = False,
    digital_signature: bool = True,
    key_encipherment: bool = False,
    hash_algorithm: hashes.HashAlgorithm | None = None,
    san: bool = True,
) -> Issued:
    """A node certificate; ``eku=None`` leaves the EKU extension out."""
    key = key or make_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=False,
                key_encipherment=key_encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in ([cn] if dns is None else dns)]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if san and names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    cert = builder.sign(issuer.key, _sign_hash(issuer.key, hash_algorithm))  # type: ignore[arg-type]
    return Issued(cert, key)


def make_self_signed_leaf(cn: str = "nodea", *, key: PrivateKey | None = None) -> Issued:
    """An end-entity certificate signed by its own key (Harper's own fallback is like this)."""
    key = key or make_key()
    me = Issued(make_ca(cn, key=key).cert, key)  # only its subject and key are used
    return make_leaf(me, cn, key=key)


def load_cert(pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM file."""
    return x509.load_pem_x509_certificates(pem)[0]


def fingerprint_of(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file that is ``mode`` from its first byte (no umask race)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_set(
    folder: Path,
    leaf: Issued,
    cas: Sequence[Issued],
    *,
    chain: Sequence[Issued] = (),
    names: tuple[str, str, str] = ("certificate.pem", "privateKey.pem", "ca.pem"),
) -> SetPaths:
    """Write a set in Harper's names: ``chain`` certificates go after the leaf."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = SetPaths(folder / names[0], folder / names[1], folder / names[2])
    paths.cert.write_bytes(leaf.cert_pem + b"".join(c.cert_pem for c in chain))
    write_private(paths.key, leaf.key_pem)
    folder.joinpath(names[2]).write_bytes(b"".join(c.cert_pem for c in cas))
    return paths
