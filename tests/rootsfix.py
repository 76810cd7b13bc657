"""Many CA certificates fast, for CA-file size tests: self-signed EC P-256 roots."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# A private, non-critical extension OpenSSL ignores: body to make a root larger.
_FILLER = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")


def root(cn: str, *, serial: int = 1, body: int = 0) -> bytes:
    """One self-signed EC P-256 CA certificate, PEM; ``body``: bytes of an extension OpenSSL
    ignores (a larger certificate with the same short name)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if body:
        # An OCTET STRING of ``body`` zero bytes (DER length in two bytes: body < 65,536).
        value = b"\x04\x82" + body.to_bytes(2, "big") + bytes(body)
        builder = builder.add_extension(x509.UnrecognizedExtension(_FILLER, value), False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def strangers(count: int, *, body: int = 0) -> bytes:
    """``count`` roots named ``Stranger Root <i>`` (about 490 bytes each, + ``body`` x 4/3)."""
    return b"".join(root(f"Stranger Root {i}", serial=i + 1, body=body) for i in range(count))
