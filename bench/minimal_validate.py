"""The bare-cryptography baseline for timing ``harper-certd validate`` as a fresh process.

Loads the three files, verifies the chain with cryptography's PolicyBuilder and compares
the public keys; nothing else.  Usage: ``python bench/minimal_validate.py CERT KEY CA``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError


def main(argv: list[str]) -> int:
    cert_path, key_path, ca_path = (Path(a) for a in argv)
    certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    roots = x509.load_pem_x509_certificates(ca_path.read_bytes())
    leaf, intermediates = certs[0], certs[1:]
    verifier = (
        PolicyBuilder().store(Store(roots)).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        print(f"invalid chain: {exc}")
        return 1
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        print("the key is not the certificate's")
        return 1
    print("valid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
