"""Checks of the node certificate and its key, each returning problems and never raising."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from harper_certd import dsakeys, load, spans
from harper_certd.problems import Problem, problem
from harper_certd.roles import Purpose
from harper_certd.validate.certs import (
    EKU_NAMES,
    is_ca,
    key_description,
    name_of,
    required_ekus,
    weak_hash,
    whole_seconds,
)
from harper_certd.validate.public import public_root

MIN_RSA_BITS = 2048


MIN_EC_BITS = 256


def check_key_strength(cert: x509.Certificate, role: str) -> list[Problem]:
    try:
        key = cert.public_key()
    except Exception:  # unknown algorithm: key_type_unusable (leaf) or chain_invalid (CA)
        return []
    _, size = key_description(key)
    if isinstance(key, rsa.RSAPublicKey) and size < MIN_RSA_BITS:
        why = f"an RSA key of {size} bits (at least {MIN_RSA_BITS} needed)"
    elif isinstance(key, ec.EllipticCurvePublicKey) and size < MIN_EC_BITS:
        why = f"an EC key on {key.curve.name} ({size} bits; at least {MIN_EC_BITS} needed)"
    elif isinstance(key, dsakeys.DSAPublicKey):
        why = "a DSA key (TLS 1.3 has no DSA; use RSA, ECDSA or Ed25519)"
    else:
        return []
    return [problem("weak_key", f"The {role} '{name_of(cert)}' has {why}.")]


def check_signature(cert: x509.Certificate, role: str) -> list[Problem]:
    if weak_hash(cert):
        algorithm = cert.signature_hash_algorithm
        assert algorithm is not None
        return [
            problem(
                "weak_signature",
                f"The {role} '{name_of(cert)}' is signed with {algorithm.name.upper()}, "
                "which is broken; reissue it with SHA-256 or better.",
            )
        ]
    return []


def check_leaf_is_ca(leaf: x509.Certificate) -> list[Problem]:
    if is_ca(leaf):
        return [
            problem(
                "leaf_is_ca",
                f"The certificate '{name_of(leaf)}' is a CA (basicConstraints CA:TRUE); "
                "a node certificate must be an end-entity certificate.",
            )
        ]
    return []


def check_eku(
    leaf: x509.Certificate, purpose: Purpose, path: Sequence[x509.Certificate] = ()
) -> list[Problem]:
    """``eku_missing``/``eku_any`` for ``purpose``; ``path`` (leaf first) tells whether a
    serverAuth-only leaf comes from a public CA, to say why that happens now."""
    needed = required_ekus(purpose)
    try:
        usages = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        if purpose is not Purpose.CLUSTER:
            return []  # Node accepts a leaf without EKU for a single purpose.
        return [
            problem(
                "eku_missing",
                "The certificate has no Extended Key Usage extension; Harper's cluster "
                "certificates must list both TLS Web Server Authentication and TLS Web "
                "Client Authentication.",
            )
        ]
    if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages:
        return [
            problem(
                "eku_any",
                "Extended Key Usage includes anyExtendedKeyUsage, which lets the node's key "
                "act for any purpose (CA/Browser Forum 7.1.2.7.10 forbids it); list only TLS "
                "Web Server and TLS Web Client Authentication.",
            )
        ]
    missing = [oid for oid in needed if oid not in usages]
    if not missing:
        return []
    listed = ", ".join(EKU_NAMES.get(u, u.dotted_string) for u in usages) or "nothing"
    wanted = " and ".join(EKU_NAMES[oid] for oid in missing)
    why = ""
    if missing == [ExtendedKeyUsageOID.CLIENT_AUTH] and purpose is Purpose.CLUSTER:
        why = _server_auth_only_advice(path)
    return [
        problem(
            "eku_missing",
            f"Extended Key Usage lists {listed} but not {wanted}, which {purpose.value} use "
            f"needs (peers refuse it with INVALID_PURPOSE).{why}",
        )
    ]


def _server_auth_only_advice(path: Sequence[x509.Certificate]) -> str:
    public = public_root(path)
    source = (
        f" This certificate comes from a public CA (its root '{name_of(public)}' is in the "
        "system trust store)."
        if public is not None
        else ""
    )
    return (
        f"{source} Public CAs no longer issue TLS Web Client Authentication (Let's Encrypt "
        "since 2026-02-11, every public CA by mid-2026: a root-program rule separating server "
        "and client PKIs), so a public certificate cannot serve replication. Use a private CA "
        "(for example step-ca, or openssl) for the replication set, and keep the public "
        "certificate for HTTPS and the Operations API only: `tls` as a list whose entries "
        "have `uses` (this set passes with --purpose server)."
    )


def check_key_usage(leaf: x509.Certificate, purpose: Purpose) -> list[Problem]:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return []
    # keyCertSign on a leaf: RFC 5280 4.2.1.3 forbids it, but OpenSSL 3.0 (so Node) accepts
    # such a leaf (x509-limbo rfc5280::leaf-ku-keycertsign, judged by Node 20): no refusal.
    if usage.digital_signature:
        return []
    if purpose is Purpose.SERVER and isinstance(key, rsa.RSAPublicKey) and usage.key_encipherment:
        # A TLS server may use RSA key transport (TLS 1.2); OpenSSL accepts it for sslserver.
        return []
    why = (
        "a TLS client signs with its key"
        if purpose is not Purpose.SERVER
        else "the TLS handshake signs with the key (for an RSA server, keyEncipherment would do)"
    )
    return [
        problem(
            "key_usage_invalid",
            f"Key Usage does not include digitalSignature, which {purpose.value} use needs: {why}.",
        )
    ]


def check_validity(leaf: x509.Certificate, at: dt.datetime, warn_days: float) -> list[Problem]:
    at = whole_seconds(at)
    if at < leaf.not_valid_before_utc:
        return [
            problem(
                "not_yet_valid",
                f"The certificate is valid only from {leaf.not_valid_before_utc.isoformat()}. "
                "Fix: hand it over once it is valid, or look at the clock of the CA that issued "
                "it (a notBefore ahead is the CA's clock ahead of this node's).",
            )
        ]
    if at >= leaf.not_valid_after_utc:  # OpenSSL: expired from the notAfter second
        return [
            problem(
                "expired",
                f"The certificate expired on {leaf.not_valid_after_utc.isoformat()}. Fix: have a "
                "new one issued for the same names (a renewal) and hand over that set.",
            )
        ]
    days = (leaf.not_valid_after_utc - at).total_seconds() / 86400
    if days < warn_days:
        return [
            problem(
                "expires_soon",
                f"The certificate expires in {spans.span(days * spans.DAY)} "
                f"({leaf.not_valid_after_utc.isoformat()}).",
            )
        ]
    return []


def check_leaf_position(
    certs: Sequence[x509.Certificate], key: PrivateKeyTypes, cert_name: str
) -> list[Problem]:
    """``leaf_not_first`` when the key is not the first certificate's but a later one's."""
    if len(certs) < 2 or not check_pair(certs[0], key):
        return []
    for index, cert in enumerate(certs[1:], start=2):
        if not check_pair(cert, key):
            first = "a CA" if is_ca(certs[0]) else "another certificate"
            return [
                problem(
                    "leaf_not_first",
                    f"The first certificate of {cert_name} is {first} ('{name_of(certs[0])}'); "
                    f"the certificate matching the key is #{index} ('{name_of(cert)}'). Node "
                    "takes the first certificate as the node's and refuses the pair (key "
                    "values mismatch): put the leaf first, then its chain, e.g. "
                    "cat cert.pem chain.pem > certificate.pem.",
                )
            ]
    return []


_CONSISTENCY_MESSAGE = b"harper-certd key consistency check"


def check_key_consistent(leaf: x509.Certificate, key: PrivateKeyTypes) -> list[Problem]:
    """``key_inconsistent`` when the key cannot sign what the certificate's key verifies.

    A sign-and-verify, as the handshake does (CertificateVerify): ~1 ms for RSA-2048
    against ~30 ms for cryptography's full RSA check (primality of p and q), and it judges
    exactly what Node will hit: OpenSSL's RSA signing falls back from a damaged CRT part to
    d, so a key whose damage OpenSSL survives is not refused.  Call it only after
    ``check_pair`` passed.
    """
    try:
        public = leaf.public_key()
    except Exception:  # unknown key algorithm: key_type_unusable says so
        return []
    try:
        message = _CONSISTENCY_MESSAGE
        if isinstance(key, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            public.verify(key.sign(message, pss, hashes.SHA256()), message, pss, hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(
            public, ec.EllipticCurvePublicKey
        ):
            ecdsa = ec.ECDSA(hashes.SHA256())
            public.verify(key.sign(message, ecdsa), message, ecdsa)
        elif (
            isinstance(key, ed25519.Ed25519PrivateKey)
            and isinstance(public, ed25519.Ed25519PublicKey)
        ) or (isinstance(key, ed448.Ed448PrivateKey) and isinstance(public, ed448.Ed448PublicKey)):
            public.verify(key.sign(message), message)
        else:
            return []  # other key types: key_type_unusable or weak_key speak for them
    except Exception:  # InvalidSignature, or OpenSSL refusing to sign with the damaged key
        return [
            problem(
                "key_inconsistent",
                "The private key's public half matches the certificate but its private parts "
                "are damaged: a signature made with it does not verify, so every TLS "
                "handshake fails (openssl pkey -check refuses it too). Use the key the "
                "certificate was issued for, or reissue.",
            )
        ]
    return []


# Curves a TLS 1.2/1.3 handshake in Node 20 (OpenSSL 3.0) can sign with: TLS 1.3's
# ecdsa_secp256r1/384r1/521r1 schemes; OpenSSL's default groups offer no others.
_TLS_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def check_key_type_usable(leaf: x509.Certificate) -> list[Problem]:
    """``key_type_unusable``: a leaf key no TLS handshake can sign with."""
    try:
        key = leaf.public_key()
    except Exception:  # unknown SubjectPublicKeyInfo algorithm
        return [
            problem(
                "key_type_unusable",
                f"The certificate '{name_of(leaf)}' has a public key of an algorithm neither "
                "harper-certd nor Node's TLS can use; reissue it with RSA, ECDSA P-256/P-384 "
                "or Ed25519.",
            )
        ]
    why = None
    if isinstance(key, x25519.X25519PublicKey | x448.X448PublicKey):
        why = "an X25519/X448 key, which can only agree keys, not sign a handshake"
    elif (
        isinstance(key, ec.EllipticCurvePublicKey)
        and key.curve.name not in _TLS_CURVES
        and key.curve.key_size >= MIN_EC_BITS  # smaller curves are weak_key
    ):
        why = f"an EC key on {key.curve.name}, a curve TLS peers do not accept"
    if why is None:
        return []
    return [
        problem(
            "key_type_unusable",
            f"The certificate '{name_of(leaf)}' has {why}; reissue it with RSA, ECDSA "
            "P-256/P-384 or Ed25519.",
        )
    ]


def check_strict_der(certs: Sequence[x509.Certificate], cert_name: str) -> list[Problem]:
    """``cert_not_strict_der`` for certificates load.py had to normalise from BER."""
    return [
        problem(
            "cert_not_strict_der",
            f"{cert_name}: certificate #{index} ('{name_of(cert)}') is BER, not strict DER "
            "(an explicit DEFAULT value, for example 'critical FALSE'); OpenSSL and Node "
            "accept it and its signature was checked over its original bytes, but strict "
            "tools refuse it: ask the CA for a DER-conformant certificate.",
        )
        for index, cert in enumerate(certs, start=1)
        if load.original_der(cert) is not None and not load.lightened(cert)
    ] + [
        problem(
            "cert_not_strict_der",
            f"{cert_name}: certificate #{index} ('{name_of(cert)}') has an extension strict "
            "parsers refuse (malformed, repeated, or an empty nameConstraints) that OpenSSL "
            "does not read; Node accepts the certificate and harper-certd judged it without "
            "that extension, but strict tools refuse it: ask the CA to reissue it.",
        )
        for index, cert in enumerate(certs, start=1)
        if load.lightened(cert)
    ]


# OpenSSL's default limit on a received Certificate message (SSL_MAX_CERT_LIST_DEFAULT,
# 100 KiB; Node 20 does not change it): a peer refuses a longer chain.
MAX_CERT_LIST = 100 * 1024


def certificate_message_size(certs: Sequence[x509.Certificate]) -> int:
    """Bytes of the TLS 1.3 Certificate message body carrying ``certs``: context (1),
    list length (3), then per certificate its length (3), DER and extensions length (2)."""
    total = 1 + 3
    for cert in certs:
        total += 3 + len(cert.public_bytes(serialization.Encoding.DER)) + 2
    return total


def check_certificate_message(
    leaf: x509.Certificate,
    extras: Sequence[x509.Certificate],
    path: Sequence[x509.Certificate],
) -> list[Problem]:
    """``chain_too_large`` when the node's Certificate message exceeds a peer's limit.

    Node sends the certificate file's certificates; with the leaf alone, OpenSSL builds
    the chain to send from the CA file (the path judged).
    """
    sent = [leaf, *extras] if extras else [leaf, *path[1:]]
    size = certificate_message_size(sent)
    if size <= MAX_CERT_LIST:
        return []
    return [
        problem(
            "chain_too_large",
            f"The node would send {len(sent)} certificate(s) in a {size}-byte Certificate "
            f"message; peers (OpenSSL) refuse more than {MAX_CERT_LIST} bytes "
            "(excessive message size). Send only the leaf and its intermediates, with fewer "
            "names in one certificate.",
        )
    ]


def check_key_file_mode(path: Path) -> list[Problem]:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return [
            problem(
                "key_permissions",
                f"{path} has mode {stat.S_IMODE(mode):04o}; a private key should be 0600 "
                f"(chmod 600 {path}).",
            )
        ]
    return []


def check_pair(leaf: x509.Certificate, key: PrivateKeyTypes) -> list[Problem]:
    def spki(public: CertificatePublicKeyTypes) -> bytes:
        return public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    try:
        leaf_key: CertificatePublicKeyTypes | None = leaf.public_key()
    except Exception:  # an unknown or malformed SubjectPublicKeyInfo: key_type_unusable
        leaf_key = None
    try:
        if leaf_key is not None and spki(leaf_key) == spki(key.public_key()):  # type: ignore[arg-type]
            return []
    except (ValueError, UnsupportedAlgorithm):
        pass
    if leaf_key is None:
        return []  # key_type_unusable says what is wrong with the certificate's key
    cert_kind = key_description(leaf_key)
    key_kind = key_description(key)
    return [
        problem(
            "key_mismatch",
            f"The private key ({key_kind[0]} {key_kind[1]}) is not the key of the certificate "
            f"({cert_kind[0]} {cert_kind[1]}, '{name_of(leaf)}'). Fix: hand over the key the "
            "certificate was issued for (the one its CSR was made with), or have the "
            "certificate issued again for this key.",
        )
    ]
