"""Validate stage: is a certificate set fit for a Harper node, and if not, why.

The reference is what Harper's TLS stack (Node.js 20 on OpenSSL 3.0) accepts
between two nodes, plus what Harper itself needs (measured on real nodes: the
replication CA file starts with the leaf's issuer, the replication URL's host is
in the certificate), plus a short security policy (weak keys and signatures, CA
leaves).  Chain building is pyca/cryptography's verifier, used as a tool: when
its web-PKI profile refuses a chain for a rule OpenSSL does not apply (AKI/SKI
presence, RSASSA-PSS salt length, EdDSA CAs, a BER certificate), the chain is
judged again without that profile or by our own walk (signatures verified as
OpenSSL does) plus the RFC 5280 rules OpenSSL applies.  The rules that differ
from web-PKI (CN-only certificates, per-purpose EKU, self-signed roots only as
anchors) are checked here, so that every refusal has its own code.

``validate`` never raises: every input, however hostile, yields a Report
(names that cannot be decoded are rendered by ``names.safe_name``; a failure of
a check itself is the error ``check_failed``).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import os
import ssl
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
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
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from harper_certd import der, load, names
from harper_certd.problems import Problem, Severity, has_errors, problem
from harper_certd.roles import Purpose, SetPaths

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
DEFAULT_EXPIRY_WARNING_DAYS = 30
# Bounds the diagnostic path search, whatever the CA file holds.
_MAX_DEPTH = 10
_MAX_SIGNATURE_CHECKS = 64


_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "TLS Web Server Authentication",
    ExtendedKeyUsageOID.CLIENT_AUTH: "TLS Web Client Authentication",
}


def required_ekus(purpose: Purpose) -> tuple[x509.ObjectIdentifier, ...]:
    return {
        Purpose.CLUSTER: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        Purpose.SERVER: (ExtendedKeyUsageOID.SERVER_AUTH,),
        Purpose.CLIENT: (ExtendedKeyUsageOID.CLIENT_AUTH,),
    }[purpose]


@dataclass(frozen=True, slots=True)
class CertSummary:
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    key_type: str
    key_size: int
    is_ca: bool

    def days_left(self, at: dt.datetime) -> float:
        return (self.not_after - at).total_seconds() / 86400

    def as_dict(self, at: dt.datetime | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "sha256": self.sha256,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "san": {"dns": list(self.dns_names), "ip": list(self.ip_addresses)},
            "key": {"type": self.key_type, "size": self.key_size},
            "is_ca": self.is_ca,
        }
        if at is not None:
            out["days_left"] = round(self.days_left(at), 2)
        return out


@dataclass(frozen=True, slots=True)
class Report:
    """What validation found; ``valid`` when no problem is an error."""

    problems: tuple[Problem, ...]
    certificate: CertSummary | None = None
    chain_certs: tuple[x509.Certificate, ...] = ()  # the validated chain, leaf first
    ca_certs: tuple[x509.Certificate, ...] = ()
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def chain(self) -> tuple[CertSummary, ...]:
        """The validated chain, summarised only when someone looks."""
        return tuple(summarize(c) for c in self.chain_certs)

    @property
    def ca_file(self) -> tuple[CertSummary, ...]:
        """Every certificate of the CA file, summarised only when someone looks."""
        return tuple(summarize(c) for c in self.ca_certs)

    @property
    def valid(self) -> bool:
        return not has_errors(self.problems)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.problems)

    def as_dict(self) -> dict[str, object]:
        cert: dict[str, object] | None = None
        if self.certificate is not None:
            cert = self.certificate.as_dict(self.at)
            cert["chain"] = [c.as_dict(self.at) for c in self.chain]
        return {
            "valid": self.valid,
            "at": self.at.isoformat(),
            "problems": [p.as_dict() for p in self.problems],
            "certificate": cert,
            "ca_file": [c.as_dict(self.at) for c in self.ca_file],
        }


@functools.lru_cache(maxsize=4096)
def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _key_description(key: CertificatePublicKeyTypes | PrivateKeyTypes) -> tuple[str, int]:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return "DSA", key.key_size
    return type(key).__name__, 0


@functools.lru_cache(maxsize=4096)
def summarize(cert: x509.Certificate) -> CertSummary:
    """The certificate in plain values; never raises, whatever the certificate holds."""
    with warnings.catch_warnings():
        # cryptography warns about names OpenSSL accepts (Harper's own C=USA, for one).
        warnings.simplefilter("ignore")
        return _summarize(cert)


def _summarize(cert: x509.Certificate) -> CertSummary:
    ids = names.identities(cert)
    try:
        key_type, key_size = _key_description(cert.public_key())
    except Exception:  # an unknown or malformed SubjectPublicKeyInfo
        key_type, key_size = "unsupported", 0
    return CertSummary(
        subject=_name(cert),
        issuer=_issuer_name(cert),
        serial=_serial(cert),
        sha256=fingerprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=ids.dns,
        ip_addresses=ids.ips,
        key_type=key_type,
        key_size=key_size,
        is_ca=_is_ca(cert),
    )


def _serial(cert: x509.Certificate) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative serials: OpenSSL takes them too
        return format(cert.serial_number, "x")


_E = TypeVar("_E", bound=x509.ExtensionType)
_T = TypeVar("_T")


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """The extension's value; None when absent or when the extensions cannot be parsed
    (a malformed or duplicate extension is reported where the certificate is used)."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except Exception:  # ExtensionNotFound, ValueError, DuplicateExtension
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    except Exception:  # a malformed CA-file entry, reported where it matters
        return False


def _der_header(data: bytes, pos: int) -> tuple[int, int]:
    """(start of the value, end of the element) of the DER element at ``pos``; ValueError
    when the structure is broken there."""
    try:
        element = der.tlv(data, pos)
    except der.DerError:
        raise ValueError(f"DER broken at byte {pos}") from None
    return element.content, element.end


@functools.lru_cache(maxsize=4096)
def _raw_names(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(issuer, subject) as encoded in the TBS bytes; never raises.

    Building cryptography's Name objects costs ~13 us a certificate (a CA file of hundreds
    of roots turns that into ms) and raises on undecodable strings; the encoded bytes do
    neither.  The names are compared as encoded, as the issuer/subject match of a chain
    written by one CA always is.
    """
    tbs = cert.tbs_certificate_bytes
    try:
        pos, _ = _der_header(tbs, 0)  # into TBSCertificate
        if tbs[pos] == 0xA0:  # [0] version
            pos = _der_header(tbs, pos)[1]
        pos = _der_header(tbs, pos)[1]  # serialNumber
        pos = _der_header(tbs, pos)[1]  # signature AlgorithmIdentifier
        issuer_end = _der_header(tbs, pos)[1]
        issuer = tbs[pos:issuer_end]
        validity_end = _der_header(tbs, issuer_end)[1]
        subject = tbs[validity_end : _der_header(tbs, validity_end)[1]]
    except IndexError:
        return b"", b"?"
    return issuer, subject


_EC_PUBLIC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, DER


@functools.lru_cache(maxsize=4096)
def _explicit_ec_parameters(cert: x509.Certificate) -> bool:
    """Whether the key is EC with explicit curve parameters, which OpenSSL 3 refuses in
    verification (X509_V_ERR_EC_KEY_EXPLICIT_PARAMS, checked with openssl verify 3.0)."""
    tbs = cert.tbs_certificate_bytes
    try:
        pos, _ = _der_header(tbs, 0)
        if tbs[pos] == 0xA0:  # [0] version
            pos = _der_header(tbs, pos)[1]
        for _ in range(5):  # serialNumber, signature, issuer, validity, subject
            pos = _der_header(tbs, pos)[1]
        spki_start, _ = _der_header(tbs, pos)
        alg_start, alg_end = _der_header(tbs, spki_start)
        oid_end = _der_header(tbs, alg_start)[1]
    except IndexError:
        return False
    is_ec = tbs[alg_start:oid_end] == _EC_PUBLIC_KEY_OID
    return is_ec and oid_end < alg_end and tbs[oid_end] == 0x30


_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "latin-1",  # PrintableString
    0x16: "latin-1",  # IA5String
    0x14: "latin-1",  # T61String
    0x1A: "latin-1",  # VisibleString
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def _tlv_items(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, value, whole element) of a run of DER elements; IndexError when damaged."""
    out = []
    pos = 0
    while pos < len(data):
        start, end = _der_header(data, pos)
        if end > len(data):
            raise IndexError(pos)
        out.append((data[pos], data[start:end], data[pos:end]))
        pos = end
    return out


def _canonical_name(encoded: bytes) -> bytes:
    """A DER Name as OpenSSL compares names (x509_name_canon): string values as UTF-8,
    ASCII lowercased, leading/trailing whitespace dropped and inner runs folded to one
    space; other values as encoded.  Falls back to the encoding itself when damaged."""
    try:
        ((_, rdns, _),) = _tlv_items(encoded)
        parts = []
        for _, rdn, _ in _tlv_items(rdns):
            for _, atv, _ in _tlv_items(rdn):
                (_, _, oid), (vtag, value, whole) = _tlv_items(atv)
                codec = _STRING_CODECS.get(vtag)
                if codec is None:
                    parts.append(oid + whole)
                    continue
                text = " ".join(value.decode(codec).split()).encode("utf-8")
                parts.append(oid + b"\x0c" + bytes(c + 32 if 65 <= c <= 90 else c for c in text))
            parts.append(b"\x00|")
    except (IndexError, ValueError, UnicodeDecodeError):
        return encoded
    return b"".join(parts)


@functools.lru_cache(maxsize=4096)
def _name_keys(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(issuer, subject) as OpenSSL compares them (``_canonical_name``)."""
    issuer, subject = _raw_names(cert)
    return _canonical_name(issuer), _canonical_name(subject)


def _self_issued(cert: x509.Certificate) -> bool:
    issuer, subject = _name_keys(cert)
    return issuer == subject


def _signed_bytes(cert: x509.Certificate) -> bytes:
    """The tbsCertificate bytes the signature covers: the original encoding when load.py
    normalised a BER certificate (OpenSSL verifies over the bytes as received)."""
    original = load.original_der(cert)
    if original is None:
        return cert.tbs_certificate_bytes
    try:
        start, _ = _der_header(original, 0)
        _, end = _der_header(original, start)
    except IndexError:
        return cert.tbs_certificate_bytes
    return original[start:end]


def _verify_signature(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """Verify ``child``'s signature with ``issuer``'s key as OpenSSL does.

    Unlike ``verify_directly_issued_by``: RSASSA-PSS with any salt length (OpenSSL reads
    the salt from the signature, ``PSS.AUTO``), and over the original bytes of a BER
    certificate.  Raises InvalidSignature, ValueError, TypeError or UnsupportedAlgorithm.
    """
    key = issuer.public_key()
    tbs = _signed_bytes(child)
    params = child.signature_algorithm_parameters
    algorithm = child.signature_hash_algorithm
    if isinstance(key, rsa.RSAPublicKey):
        if isinstance(params, padding.PSS):
            params = padding.PSS(mgf=params.mgf, salt_length=padding.PSS.AUTO)
        if not isinstance(params, padding.PSS | padding.PKCS1v15) or algorithm is None:
            raise UnsupportedAlgorithm("not an RSA signature")
        key.verify(child.signature, tbs, params, algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(params, ec.ECDSA):
            raise UnsupportedAlgorithm("not an ECDSA signature")
        key.verify(child.signature, tbs, params)
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        expected = (
            SignatureAlgorithmOID.ED25519
            if isinstance(key, ed25519.Ed25519PublicKey)
            else SignatureAlgorithmOID.ED448
        )
        if child.signature_algorithm_oid != expected:
            raise UnsupportedAlgorithm("signature algorithm does not fit the issuer's key")
        key.verify(child.signature, tbs)
    elif isinstance(key, dsa.DSAPublicKey) and algorithm is not None:
        key.verify(child.signature, tbs, algorithm)
    else:
        raise UnsupportedAlgorithm("unknown issuer key type")


def _directly_issued(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError, UnsupportedAlgorithm, TypeError
        return False
    return True


def _algorithms_agree(cert: x509.Certificate) -> bool:
    """Whether the outer signatureAlgorithm equals the TBS's signature field (OpenSSL's
    X509_verify refuses a certificate where they differ)."""
    der = load.original_der(cert) or cert.public_bytes(serialization.Encoding.DER)
    try:
        inner, _ = _der_header(der, 0)
        tbs_start, tbs_end = _der_header(der, inner)
        outer = der[tbs_end : _der_header(der, tbs_end)[1]]
        pos = tbs_start
        if der[pos] == 0xA0:  # [0] version
            pos = _der_header(der, pos)[1]
        pos = _der_header(der, pos)[1]  # serialNumber
        return der[pos : _der_header(der, pos)[1]] == outer
    except IndexError:
        return False


def _invalid_utf8(encoded: bytes) -> bool:
    """Whether a DER Name holds a UTF8String that is not UTF-8 (OpenSSL 3's decoder refuses
    such a certificate: ERR_OSSL_ASN1_INVALID_UTF8STRING; measured with Node 20)."""
    if b"\x0c" not in encoded:
        return False
    stack = [(0, len(encoded))]
    while stack:
        pos, end = stack.pop()
        while pos < end:
            try:
                start, stop = _der_header(encoded, pos)
            except IndexError:
                return False
            tag = encoded[pos]
            if tag & 0x20:  # constructed: SEQUENCE, SET
                stack.append((start, min(stop, end)))
            elif tag == 0x0C:
                try:
                    encoded[start:stop].decode("utf-8")
                except UnicodeDecodeError:
                    return True
            pos = stop
    return False


@functools.lru_cache(maxsize=4096)
def undecodable_by_openssl(cert: x509.Certificate) -> bool:
    """Whether OpenSSL (so Node) refuses to load ``cert`` though cryptography loads it."""
    issuer, subject = _raw_names(cert)
    return _invalid_utf8(issuer) or _invalid_utf8(subject)


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if not _algorithms_agree(child):
        return False
    if _name_keys(child)[0] != _name_keys(issuer)[1]:
        return False
    if _directly_issued(child, issuer):
        return True
    try:
        _verify_signature(child, issuer)
    except (ValueError, UnsupportedAlgorithm):
        if _weak_hash(child):
            # A SHA-1/MD5 signature cryptography will not verify: the path is real and
            # weak_signature says what is wrong with it.  Nothing else passes unverified
            # (an issuer key cryptography cannot load, such as explicit EC parameters,
            # which OpenSSL refuses too: EC_KEY_EXPLICIT_PARAMS).
            return _key_ids_match(child, issuer)
        return False
    except Exception:  # InvalidSignature, TypeError: not signed by this key
        return False
    return True


def _weak_hash(cert: x509.Certificate) -> bool:
    try:
        return isinstance(cert.signature_hash_algorithm, hashes.SHA1 | hashes.MD5)
    except UnsupportedAlgorithm:
        return False


def _key_ids_match(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        aki = child.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True  # names match and nothing says otherwise
    except Exception:  # malformed: the path check reports it
        return True
    return aki.key_identifier is None or aki.key_identifier == ski.digest


def _name(cert: x509.Certificate) -> str:
    return names.safe_name(lambda: cert.subject, empty="(empty subject)")


def _issuer_name(cert: x509.Certificate) -> str:
    return names.safe_name(lambda: cert.issuer, empty="(empty issuer)")


# --- individual checks: each returns problems, never raises -----------------------


def check_key_strength(cert: x509.Certificate, role: str) -> list[Problem]:
    try:
        key = cert.public_key()
    except Exception:  # unknown algorithm: key_type_unusable (leaf) or chain_invalid (CA)
        return []
    _, size = _key_description(key)
    if isinstance(key, rsa.RSAPublicKey) and size < MIN_RSA_BITS:
        why = f"an RSA key of {size} bits (at least {MIN_RSA_BITS} needed)"
    elif isinstance(key, ec.EllipticCurvePublicKey) and size < MIN_EC_BITS:
        why = f"an EC key on {key.curve.name} ({size} bits; at least {MIN_EC_BITS} needed)"
    elif isinstance(key, dsa.DSAPublicKey):
        why = "a DSA key (TLS 1.3 has no DSA; use RSA, ECDSA or Ed25519)"
    else:
        return []
    return [problem("weak_key", f"The {role} '{_name(cert)}' has {why}.")]


def check_signature(cert: x509.Certificate, role: str) -> list[Problem]:
    if _weak_hash(cert):
        algorithm = cert.signature_hash_algorithm
        assert algorithm is not None
        return [
            problem(
                "weak_signature",
                f"The {role} '{_name(cert)}' is signed with {algorithm.name.upper()}, "
                "which is broken; reissue it with SHA-256 or better.",
            )
        ]
    return []


def check_leaf_is_ca(leaf: x509.Certificate) -> list[Problem]:
    if _is_ca(leaf):
        return [
            problem(
                "leaf_is_ca",
                f"The certificate '{_name(leaf)}' is a CA (basicConstraints CA:TRUE); "
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
    listed = ", ".join(_EKU_NAMES.get(u, u.dotted_string) for u in usages) or "nothing"
    wanted = " and ".join(_EKU_NAMES[oid] for oid in missing)
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
        f" This certificate comes from a public CA (its root '{_name(public)}' is in the "
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


def check_key_usage(leaf: x509.Certificate, purpose: Purpose) -> list[Problem]:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return []
    if usage.key_cert_sign and not _is_ca(leaf):
        return [
            problem(
                "key_usage_invalid",
                "Key Usage asserts keyCertSign on a certificate that is not a CA "
                "(RFC 5280 4.2.1.3 forbids it; OpenSSL's strict mode refuses it).",
            )
        ]
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


def _seconds(at: dt.datetime) -> dt.datetime:
    # Validity is stated in whole seconds; notAfter is inclusive to its last fraction.
    return at.replace(microsecond=0)


def check_validity(leaf: x509.Certificate, at: dt.datetime, warn_days: float) -> list[Problem]:
    at = _seconds(at)
    if at < leaf.not_valid_before_utc:
        return [
            problem(
                "not_yet_valid",
                f"The certificate is valid only from {leaf.not_valid_before_utc.isoformat()}.",
            )
        ]
    if at > leaf.not_valid_after_utc:
        return [
            problem(
                "expired", f"The certificate expired on {leaf.not_valid_after_utc.isoformat()}."
            )
        ]
    days = (leaf.not_valid_after_utc - at).total_seconds() / 86400
    if days < warn_days:
        return [
            problem(
                "expires_soon",
                f"The certificate expires in {days:.1f} days "
                f"({leaf.not_valid_after_utc.isoformat()}).",
            )
        ]
    return []


def check_hostnames(leaf: x509.Certificate, hostnames: Sequence[str]) -> list[Problem]:
    ids = names.identities(leaf)
    out = []
    for hostname in hostnames:
        if not names.matches_hostname(ids, hostname):
            offered = [f"DNS:{d}" for d in ids.dns] + [f"IP:{i}" for i in ids.ips]
            if not offered:
                offered = [f"CN={c}" for c in ids.cns]
            out.append(
                problem(
                    "hostname_mismatch",
                    f"The certificate is not valid for '{hostname}'; it names "
                    f"{', '.join(offered) or 'nothing'}.",
                )
            )
    return out


def check_node_names(leaf: x509.Certificate, node_names: Sequence[str]) -> list[Problem]:
    """Harper 4.7 finds its replication certificate by an exact lookup of the node name.

    The keys are the SAN entries as written (the CN when there is no SAN): a wildcard or
    a different case passes Node's name check but not this lookup, and at its next start
    Harper then serves a self-signed certificate of its own and replication breaks.
    """
    ids = names.identities(leaf)
    written = set(ids.dns) | set(ids.ips) if (ids.dns or ids.ips) else set(ids.cns)
    return [
        problem(
            "node_name_not_verbatim",
            f"The node name '{name}' is not written as such among the certificate's "
            f"{'SAN entries' if ids.dns or ids.ips else 'CN'} "
            f"({', '.join(sorted(written)) or 'none'}); Harper looks its replication "
            "certificate up by that exact name and, at its next restart, would fall back to "
            "a self-signed certificate of its own. Add the name verbatim as a DNS SAN.",
        )
        for name in node_names
        if name not in written
    ]


def check_url_hosts(leaf: x509.Certificate, url_hosts: Sequence[str]) -> list[Problem]:
    """The hosts of ``replication.url`` that peers dial, checked as Node's
    ``checkServerIdentity`` does (an IP address only against IP SANs)."""
    ids = names.identities(leaf)
    out = []
    for host in url_hosts:
        if names.matches_hostname(ids, host):
            continue
        offered = [f"DNS:{d}" for d in ids.dns] + [f"IP:{i}" for i in ids.ips]
        if not offered:
            offered = [f"CN={c}" for c in ids.cns]
        is_ip = names.is_ip_address(host)
        need = f"IP:{host.strip('[]')} (an IP SAN)" if is_ip else f"DNS:{host}"
        out.append(
            problem(
                "url_host_mismatch",
                f"Peers dial replication.url's host '{host}' and check the certificate against "
                f"it (Node's checkServerIdentity; ERR_TLS_CERT_ALTNAME_INVALID), but it names "
                f"{', '.join(offered) or 'nothing'}; add {need} to its Subject Alternative Name.",
            )
        )
    return out


def check_leaf_position(
    certs: Sequence[x509.Certificate], key: PrivateKeyTypes, cert_name: str
) -> list[Problem]:
    """``leaf_not_first`` when the key is not the first certificate's but a later one's."""
    if len(certs) < 2 or not check_pair(certs[0], key):
        return []
    for index, cert in enumerate(certs[1:], start=2):
        if not check_pair(cert, key):
            first = "a CA" if _is_ca(certs[0]) else "another certificate"
            return [
                problem(
                    "leaf_not_first",
                    f"The first certificate of {cert_name} is {first} ('{_name(certs[0])}'); "
                    f"the certificate matching the key is #{index} ('{_name(cert)}'). Node "
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
                f"The certificate '{_name(leaf)}' has a public key of an algorithm neither "
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
            f"The certificate '{_name(leaf)}' has {why}; reissue it with RSA, ECDSA "
            "P-256/P-384 or Ed25519.",
        )
    ]


def check_strict_der(certs: Sequence[x509.Certificate], cert_name: str) -> list[Problem]:
    """``cert_not_strict_der`` for certificates load.py had to normalise from BER."""
    return [
        problem(
            "cert_not_strict_der",
            f"{cert_name}: certificate #{index} ('{_name(cert)}') is BER, not strict DER "
            "(an explicit DEFAULT value, for example 'critical FALSE'); OpenSSL and Node "
            "accept it and its signature was checked over its original bytes, but strict "
            "tools refuse it: ask the CA for a DER-conformant certificate.",
        )
        for index, cert in enumerate(certs, start=1)
        if load.original_der(cert) is not None
    ]


def _trust_verdict(aux: der.CertAux | None, oid: str, self_signed: bool) -> bool | None:
    """OpenSSL's ``obj_trust`` for the SSL trust ids (``trust_1oidany``: anyEKU counts,
    self-signed compat on): True trusted, False rejected, None no verdict (look higher)."""
    any_eku = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string
    if aux is not None and (oid in aux.reject or any_eku in aux.reject):
        return False
    if aux is not None and aux.trust:
        # Explicit trust uses, none of them this one: rejected (crypto/x509/x509_trust.c).
        return oid in aux.trust or any_eku in aux.trust
    return True if self_signed else None


def check_trust_settings(
    chain: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    purpose: Purpose,
    ca_name: str,
) -> list[Problem]:
    """``ca_trust_rejected``: OpenSSL's trust settings of TRUSTED CERTIFICATE entries.

    Node reads ``ca`` with ``PEM_read_bio_X509_AUX``, so a CA file entry written with
    ``openssl x509 -trustout -addtrust/-addreject`` carries trust and reject uses, which
    ``X509_verify_cert``'s ``check_trust`` applies to the chain's trusted certificates, from
    the first one taken from the CA file up to the root: the first with a verdict decides.
    The uses asked are the purpose's (a replication peer checks serverAuth when it dials and
    clientAuth when it is dialled).
    """
    in_ca = {fingerprint(c) for c in ca_certs}
    trusted = [c for c in chain[1:] if fingerprint(c) in in_ca]
    out = []
    for oid in required_ekus(purpose):
        for cert in trusted:
            verdict = _trust_verdict(load.aux_trust(cert), oid.dotted_string, _self_issued(cert))
            if verdict is None:
                continue
            if not verdict:
                use = "serverAuth" if oid == ExtendedKeyUsageOID.SERVER_AUTH else "clientAuth"
                out.append(
                    problem(
                        "ca_trust_rejected",
                        f"{ca_name} holds '{_name(cert)}' as a TRUSTED CERTIFICATE whose OpenSSL "
                        f"trust settings do not allow {_EKU_NAMES[oid]}; Node (OpenSSL) refuses "
                        "the chain for that use. Write it as a plain certificate "
                        f"(openssl x509 -in {ca_name} -out ca.plain.pem) or add the use "
                        f"(-addtrust {use}).",
                    )
                )
            break
    return out


def check_ca_file_issuer_first(
    chain: Sequence[x509.Certificate], ca_certs: Sequence[x509.Certificate], ca_name: str
) -> list[Problem]:
    """``ca_file_issuer_not_first``: a replication set's CA file must start with the leaf's
    issuer and hold every intermediate.

    Measured on two fresh Harper 4.7.29 nodes joined with add_node (tests/HARPER-RIG-FINDINGS.md):
    with a root -> intermediate -> leaf chain, replication works with ca.pem = intermediate +
    root and fails (unable to get local issuer certificate) with root only, and mostly with
    root + intermediate.  Harper names a CA record after the first certificate of the CA file
    and, at the join, hands peers the record named like the leaf's issuer
    (``getReplicationCertAuth`` in ``bin/harperdb.js``); joined nodes keep that CA.
    """
    if len(chain) < 2 or not ca_certs:
        return []
    issuer = chain[1]
    in_ca = [fingerprint(c) for c in ca_certs]
    missing = [c for c in chain[1:] if not _self_issued(c) and fingerprint(c) not in in_ca]
    first_ok = _name_keys(ca_certs[0])[1] == _name_keys(chain[0])[0]
    if first_ok and not missing:
        return []
    fix = (
        "Harper names the CA file after its first certificate and, when a node joins "
        "(add_node), hands its peers the CA named like the leaf's issuer; with another first "
        "certificate the peers get no CA and, in most joins, refuse the node (unable to get "
        "local issuer certificate). Put the issuer first, then the rest of the chain, on "
        "every node: cat intermediate.pem root.pem > ca.pem."
    )
    if fingerprint(issuer) not in in_ca:
        where = f"is not in {ca_name} (only in the certificate file)"
    elif not first_ok:
        index = in_ca.index(fingerprint(issuer)) + 1
        where = f"is certificate #{index} of {ca_name}, whose first is '{_name(ca_certs[0])}'"
    else:
        names_ = ", ".join(f"'{_name(c)}'" for c in missing)
        where = f"is first in {ca_name}, but the intermediate(s) {names_} are not in it"
    return [
        problem(
            "ca_file_issuer_not_first",
            f"The leaf's issuer '{_name(issuer)}' {where}. {fix}",
        )
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
    cert_kind = _key_description(leaf_key)
    key_kind = _key_description(key)
    return [
        problem(
            "key_mismatch",
            f"The private key ({key_kind[0]} {key_kind[1]}) is not the key of the certificate "
            f"({cert_kind[0]} {cert_kind[1]}, '{_name(leaf)}').",
        )
    ]


# --- the chain ----------------------------------------------------------------------


def _extension_policies() -> tuple[ExtensionPolicy, ExtensionPolicy]:
    # EKU, SAN and basicConstraints of the leaf have codes of their own (and Node
    # accepts CN-only leaves); intermediates' EKU is checked per purpose below.
    ee = ExtensionPolicy.webpki_defaults_ee()
    for ext in (
        x509.SubjectAlternativeName,
        x509.ExtendedKeyUsage,
        x509.BasicConstraints,
        x509.KeyUsage,
    ):
        ee = ee.may_be_present(ext, Criticality.AGNOSTIC, None)
    ca = ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None
    )
    return ca, ee


_CA_POLICY, _EE_POLICY = _extension_policies()


@dataclass(slots=True)
class _Walk:
    """Depth-first search over issuer names, for diagnosis; bounded in checks."""

    by_subject: dict[bytes, list[x509.Certificate]]
    anchors: set[str]
    budget: int = _MAX_SIGNATURE_CHECKS
    deepest: list[x509.Certificate] = field(default_factory=list)
    wrong_key: tuple[x509.Certificate, x509.Certificate] | None = None

    def find(self, path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cert = path[-1]
        if len(path) > len(self.deepest):
            self.deepest = list(path)
        if _self_issued(cert) and fingerprint(cert) in self.anchors:
            return path
        if len(path) > _MAX_DEPTH:
            return None
        for candidate in self.by_subject.get(_name_keys(cert)[0], []):
            if candidate in path or self.budget <= 0:
                continue
            self.budget -= 1
            if not _signed_by(cert, candidate):
                self.wrong_key = (cert, candidate)
                continue
            found = self.find([*path, candidate])
            if found is not None:
                return found
        return None


def _diagnose_path(
    leaf: x509.Certificate, pool: Iterable[x509.Certificate], anchors: set[str]
) -> tuple[list[x509.Certificate] | None, Problem | None]:
    by_subject: dict[bytes, list[x509.Certificate]] = {}
    for cert in pool:
        by_subject.setdefault(_name_keys(cert)[1], []).append(cert)
    walk = _Walk(by_subject, anchors)
    found = walk.find([leaf])
    if found is not None:
        return found, None
    top = walk.deepest[-1]
    if walk.wrong_key is not None and walk.wrong_key[0] is top:
        child, candidate = walk.wrong_key
        return None, problem(
            "chain_invalid",
            f"'{_name(candidate)}' has the name of the issuer of '{_name(child)}' but did not "
            "sign it (another key: an older or a different CA of the same name?).",
        )
    if _self_issued(top):
        return None, problem(
            "chain_incomplete",
            f"'{_name(top)}' is self-signed but not in the CA file; add it to the CA file if "
            "it is the root to trust.",
        )
    if top is not leaf:
        return None, problem(
            "chain_incomplete",
            f"The chain reaches '{_name(top)}' but not its issuer '{_issuer_name(top)}'"
            "; Harper's Node.js needs the whole chain up to the self-signed root in the CA file.",
        )
    return None, problem(
        "chain_incomplete",
        f"No certificate in the CA file or after the leaf in the certificate file is the issuer "
        f"'{_issuer_name(top)}' of '{_name(top)}'.",
    )


def _chain_time(leaf: x509.Certificate, at: dt.datetime) -> dt.datetime:
    # The chain is judged at an instant the leaf is valid, so that an expired leaf
    # reports "expired" and, separately, whatever else is wrong with its chain.
    second = dt.timedelta(seconds=1)
    at = _seconds(at)
    if at > leaf.not_valid_after_utc:
        return leaf.not_valid_after_utc - second
    if at < leaf.not_valid_before_utc:
        return leaf.not_valid_before_utc + second
    return at


def _build_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    max_chain_depth: int | None,
    *,
    web_pki: bool,
) -> tuple[tuple[x509.Certificate, ...], str | None]:
    """cryptography's chain builder: (chain, None) or ((), why it refused)."""
    if web_pki:
        ca_policy, ee_policy = _CA_POLICY, _EE_POLICY
    else:
        ca_policy, ee_policy = ExtensionPolicy.permit_all(), ExtensionPolicy.permit_all()
    try:
        builder = (
            PolicyBuilder()
            .store(Store(list(anchors)))
            .time(_chain_time(leaf, at))
            .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy)
        )
        if max_chain_depth is not None:
            builder = builder.max_chain_depth(max_chain_depth)
        return tuple(builder.build_client_verifier().verify(leaf, list(intermediates)).chain), None
    except VerificationError as exc:
        return (), str(exc)
    except Exception as exc:  # a malformed extension in a lazily parsed CA certificate
        return (), f"a CA certificate could not be parsed ({type(exc).__name__})"


# cryptography's error texts that the report shortens (pinned by tests/test_validate.py).
_LIBRARY_DUMP_MARKERS = ("AlgorithmIdentifier", "(encountered processing")


def _failure_text(failure: str | None) -> str:
    """The verifier's refusal without Rust Debug dumps of certificates or algorithms."""
    if not failure:
        return "no reason given"
    if "Forbidden signature algorithm" in failure:
        return "the web-PKI profile forbids its signature algorithm"
    if "Forbidden public key algorithm" in failure:
        return "the web-PKI profile forbids its public key algorithm"
    for marker in _LIBRARY_DUMP_MARKERS:
        failure = failure.split(marker, 1)[0]
    return failure.strip().rstrip(":(").strip()[:300] or "no reason given"


def check_chain(
    leaf: x509.Certificate,
    extras: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    purpose: Purpose,
    at: dt.datetime,
    max_chain_depth: int | None = None,
) -> tuple[tuple[x509.Certificate, ...], list[Problem], tuple[x509.Certificate, ...]]:
    """(validated chain, problems, path judged): chains leaf first.

    The path judged is the validated chain, or the path the diagnosis walked when there is
    none, so that a report names the certificates it judged as "on the chain".

    Three tiers, because OpenSSL (so Harper) is the reference, not the web PKI:
    cryptography's verifier with its web-PKI profile (relaxed for the leaf); when that
    refuses, the same verifier without the extension profile (AKI/SKI rules and the like,
    which OpenSSL does not apply) plus the RFC 5280 rules checked here; when that refuses
    too, the own walk (signatures verified as OpenSSL does: RSASSA-PSS with any salt, the
    original bytes of a BER certificate; Ed25519/Ed448 CAs) plus the same rules.
    """
    anchors: list[x509.Certificate] = []
    intermediates = list(extras)
    for cert in ca_certs:
        (anchors if _self_issued(cert) else intermediates).append(cert)
    if _self_issued(leaf) and leaf in anchors and _signed_by(leaf, leaf):
        # A self-signed node certificate trusted as itself: OpenSSL accepts this.
        return (leaf,), [], (leaf,)
    chain: tuple[x509.Certificate, ...] = ()
    failure: str | None = None
    problems: list[Problem] = []
    path: tuple[x509.Certificate, ...] = ()
    if anchors:
        chain, failure = _build_chain(
            leaf, intermediates, anchors, at, max_chain_depth, web_pki=True
        )
        path = chain
        if not chain:
            relaxed, _ = _build_chain(
                leaf, intermediates, anchors, at, max_chain_depth, web_pki=False
            )
            if relaxed:
                path = relaxed
                rules = _openssl_path_problems(relaxed, max_chain_depth)
                problems += rules
                if not rules:
                    chain = relaxed
    if not path:
        anchor_fps = {fingerprint(c) for c in anchors}
        found, missing = _diagnose_path(leaf, [*extras, *ca_certs], anchor_fps)
        if missing is not None:
            return (), [missing], ()
        assert found is not None
        path = tuple(found)
        rules = _openssl_path_problems(path, max_chain_depth)
        rules += _name_constraints_unchecked(path)
        problems += rules
        if not rules and _malformed_ca(path) is None:
            chain = path
    bad = _malformed_ca(path)
    if bad is not None:
        return (
            (),
            [
                problem(
                    "chain_invalid",
                    f"The CA certificate '{_name(bad)}' on the chain has a malformed extension "
                    "(or a duplicate one); OpenSSL refuses to use it.",
                )
            ],
            path,
        )
    for child, issuer in itertools.pairwise(path):
        if not _key_ids_match(child, issuer):
            problems.append(
                problem(
                    "chain_invalid",
                    f"The Authority Key Identifier of '{_name(child)}' does not match the "
                    f"Subject Key Identifier of '{_name(issuer)}', so OpenSSL does not take it "
                    "as the issuer (AKID_SKID_MISMATCH): a CA of that name with another key?",
                )
            )
    for cert in path[1:]:
        problems += check_key_strength(cert, "CA certificate")
        if not _self_issued(cert):
            problems += check_signature(cert, "CA certificate")
        problems += _check_ca_validity(cert, at, path)
        problems += _check_ca_eku(cert, purpose)
    problems += _check_name_constraints_apply(leaf, path)
    if has_errors(problems):
        chain = ()
    # A weak leaf is why the verifier refused; weak_* already say so, for the leaf too.
    leaf_weak = _weak_hash(leaf) or bool(check_key_strength(leaf, "certificate"))
    if not chain and not has_errors(problems) and not leaf_weak:
        problems.append(
            problem(
                "chain_invalid",
                f"The chain {' -> '.join(_name(c) for c in path)} was refused: "
                f"{_failure_text(failure)}.",
            )
        )
    return chain, problems, path


def _malformed_ca(path: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for cert in path[1:]:
        try:
            _ = cert.extensions
        except Exception:  # hostile input: any parse failure, DuplicateExtension too
            return cert
    return None


# Extensions OpenSSL 3 handles when critical (X509_supported_extension in crypto/x509/v3_purp.c);
# a certificate with any other critical extension is refused (UNHANDLED_CRITICAL_EXTENSION).
_OPENSSL_HANDLED_CRITICAL = frozenset(
    {
        "2.16.840.1.113730.1.1",  # nsCertType
        "2.5.29.15",  # keyUsage
        "2.5.29.17",  # subjectAltName
        "2.5.29.19",  # basicConstraints
        "2.5.29.32",  # certificatePolicies
        "2.5.29.31",  # cRLDistributionPoints
        "2.5.29.37",  # extKeyUsage
        "1.3.6.1.5.5.7.1.7",  # sbgp-ipAddrBlock
        "1.3.6.1.5.5.7.1.8",  # sbgp-autonomousSysNum
        "1.3.6.1.5.5.7.48.1.5",  # OCSP noCheck
        "2.5.29.36",  # policyConstraints
        "1.3.6.1.5.5.7.1.14",  # proxyCertInfo
        "2.5.29.30",  # nameConstraints
        "2.5.29.33",  # policyMappings
        "2.5.29.54",  # inhibitAnyPolicy
    }
)


def _unhandled_critical(cert: x509.Certificate) -> str | None:
    try:
        extensions = cert.extensions
    except Exception:  # reported as a malformed extension
        return None
    for ext in extensions:
        oid: str = ext.oid.dotted_string
        if ext.critical and oid not in _OPENSSL_HANDLED_CRITICAL:
            return oid
    return None


def _openssl_path_problems(
    path: Sequence[x509.Certificate], max_chain_depth: int | None
) -> list[Problem]:
    """The RFC 5280 rules OpenSSL applies, on a path whose signatures are verified."""
    out = _basic_path_problems(path)
    for cert in path:
        if _explicit_ec_parameters(cert):
            out.append(
                problem(
                    "chain_invalid",
                    f"'{_name(cert)}' has an EC key with explicit curve parameters, which "
                    "OpenSSL refuses (EC_KEY_EXPLICIT_PARAMS); reissue it with a named curve.",
                )
            )
        oid = _unhandled_critical(cert)
        if oid is not None:
            out.append(
                problem(
                    "chain_invalid",
                    f"'{_name(cert)}' has a critical extension {oid} that OpenSSL does not "
                    "handle, so it refuses the certificate (unhandled critical extension).",
                )
            )
    if max_chain_depth is not None and len(path) - 2 > max_chain_depth:
        out.append(
            problem(
                "chain_invalid",
                f"The chain has {len(path) - 2} intermediates, more than the {max_chain_depth} "
                "allowed.",
            )
        )
    return out


def _name_constraints_unchecked(path: Sequence[x509.Certificate]) -> list[Problem]:
    # The own walk does not evaluate name constraints; a path that needs it is refused
    # rather than accepted unchecked.
    for cert in path[1:]:
        if _extension(cert, x509.NameConstraints) is None:
            continue
        return [
            problem(
                "chain_invalid",
                f"The CA certificate '{_name(cert)}' has name constraints on a chain that "
                "cryptography's verifier refuses for its algorithms or encoding; harper-certd "
                "cannot check them, so it does not accept the chain.",
            )
        ]
    return []


def _basic_path_problems(path: Sequence[x509.Certificate]) -> list[Problem]:
    """RFC 5280's CA rules on a path whose signatures are already verified."""
    out = []
    for depth, cert in enumerate(path[1:], start=1):
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except Exception:  # ExtensionNotFound (malformed: reported by the caller)
            bc = None
        if bc is None or not bc.ca:
            out.append(
                problem(
                    "chain_invalid",
                    f"'{_name(cert)}' signs certificates but is not "
                    "a CA (basicConstraints CA:TRUE is missing).",
                )
            )
            continue
        below = depth - 1  # CAs under this one, the leaf not counted
        if bc.path_length is not None and below > bc.path_length:
            out.append(
                problem(
                    "chain_invalid",
                    f"'{_name(cert)}' allows {bc.path_length} "
                    f"CA(s) below it (pathLenConstraint), the chain has {below}.",
                )
            )
        usage = _extension(cert, x509.KeyUsage)
        if usage is None:
            continue
        if not usage.key_cert_sign:
            out.append(
                problem("chain_invalid", f"'{_name(cert)}' has Key Usage without keyCertSign.")
            )
    return out


def _cross_sign_hint(cert: x509.Certificate, path: Sequence[x509.Certificate]) -> str:
    """How to leave an expired CA behind when the path reaches it through a cross-sign."""
    if not _self_issued(cert):
        # An expired CA certificate that is not a root: a cross-signed root, most often.
        return (
            f" If '{_name(cert)}' also exists as a self-signed root (a cross-signed root), "
            "trust that root instead: add the self-signed one to the CA file and drop this "
            "one from the certificate file."
        )
    index = next((i for i, c in enumerate(path) if c is cert), 0)
    below = path[index - 1] if index > 1 else None
    if below is not None and not _self_issued(below):
        return (
            f" The chain reaches it through '{_name(below)}', a CA certificate it signed "
            f"(a cross-sign): trust the self-signed '{_name(below)}' instead (add it to the CA "
            f"file) and drop the cross-signed '{_name(below)}' from the certificate file."
        )
    return " Replace it in the CA file with the CA's current root."


def _check_ca_validity(
    cert: x509.Certificate, at: dt.datetime, path: Sequence[x509.Certificate] = ()
) -> list[Problem]:
    at = _seconds(at)
    if at > cert.not_valid_after_utc:
        return [
            problem(
                "ca_expired",
                f"The CA certificate '{_name(cert)}' on the chain expired on "
                f"{cert.not_valid_after_utc.isoformat()}.{_cross_sign_hint(cert, path)}",
            )
        ]
    if at < cert.not_valid_before_utc:
        return [
            problem(
                "ca_not_yet_valid",
                f"The CA certificate '{_name(cert)}' on the chain is valid only from "
                f"{cert.not_valid_before_utc.isoformat()}.",
            )
        ]
    return []


def _check_name_constraints_apply(
    leaf: x509.Certificate, path: Sequence[x509.Certificate]
) -> list[Problem]:
    # A leaf named only by its subject CN slips past name constraints in verifiers
    # that apply them to SANs only; refuse the combination rather than guess.
    try:
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        return []
    for cert in path[1:]:
        try:
            cert.extensions.get_extension_for_class(x509.NameConstraints)
        except x509.ExtensionNotFound:
            continue
        return [
            problem(
                "chain_invalid",
                f"The CA certificate '{_name(cert)}' has name constraints but the certificate "
                "has no Subject Alternative Name for them to apply to; add a SAN.",
            )
        ]
    return []


def _check_ca_eku(cert: x509.Certificate, purpose: Purpose) -> list[Problem]:
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []
    # anyExtendedKeyUsage does not count: OpenSSL 3 refuses such a CA for TLS purposes.
    missing = [oid for oid in required_ekus(purpose) if oid not in usages]
    if not missing:
        return []
    return [
        problem(
            "chain_invalid",
            f"The CA certificate '{_name(cert)}' restricts Extended Key Usage and leaves out "
            f"{' and '.join(_EKU_NAMES[o] for o in missing)}, so OpenSSL refuses the chain for "
            f"{purpose.value} use.",
        )
    ]


def _readable_ca_entries(
    ca_certs: tuple[x509.Certificate, ...], ca_name: str, problems: list[Problem]
) -> tuple[x509.Certificate, ...]:
    """The CA-file entries Node loads: OpenSSL stops reading a CA file at the first entry
    it cannot decode, silently, so that entry and all after it are not trusted."""
    bad = next((i for i, c in enumerate(ca_certs) if undecodable_by_openssl(c)), None)
    if bad is None:
        return ca_certs
    why = (
        f"{ca_name}: certificate #{bad + 1} has a name with an invalid UTF8String; OpenSSL, "
        "so Node, stops reading the CA file there"
    )
    if bad == 0:
        problems.append(problem("ca_unreadable", f"{why}, so it trusts nothing from it."))
    else:
        problems.append(
            problem(
                "ca_file_damaged_entry",
                f"{why}: that entry and the {len(ca_certs) - bad - 1} after it are ignored. "
                "Remove or reissue it.",
            )
        )
    return ca_certs[:bad]


def _check_ca_file_damaged(
    ca_certs: Sequence[x509.Certificate], path: Sequence[x509.Certificate], ca_name: str
) -> list[Problem]:
    """Warn about CA-file entries whose extensions cannot be parsed and that the chain does
    not use: OpenSSL parses extensions only when it uses a certificate, so Node loads the
    file and ignores them (a damaged entry on the chain is a chain_invalid)."""
    on_path = set(path)
    out = []
    for index, cert in enumerate(ca_certs):
        if cert in on_path:
            continue
        try:
            _ = cert.extensions
        except Exception:  # malformed or duplicate extension
            out.append(
                problem(
                    "ca_file_damaged_entry",
                    f"{ca_name}: certificate #{index + 1} ('{_name(cert)}') has a malformed or "
                    "duplicate extension; the chain does not use it and OpenSSL ignores it "
                    "there, but it cannot serve as a CA: remove or replace it.",
                )
            )
    return out


def _check_ca_file_entries(
    ca_certs: Sequence[x509.Certificate],
    chain: Sequence[x509.Certificate],
    at: dt.datetime,
    warn_days: float,
) -> list[Problem]:
    """Expiry of CA certificates; ``chain`` is the path judged (leaf first)."""
    on_chain = set(chain)
    seen: set[x509.Certificate] = set()
    out = []
    for cert in [*chain[1:], *ca_certs]:
        days = (cert.not_valid_after_utc - at).total_seconds() / 86400
        if days >= warn_days or cert in seen:
            continue  # the common case, decided without hashing the certificate twice
        seen.add(cert)
        if cert in on_chain:
            if days >= 0:
                out.append(
                    problem(
                        "ca_expires_soon",
                        f"The CA certificate '{_name(cert)}' expires in {days:.1f} days.",
                    )
                )
        elif days < 0:
            out.append(
                problem(
                    "ca_file_expired_entry",
                    f"The CA file holds '{_name(cert)}', expired on "
                    f"{cert.not_valid_after_utc.isoformat()}; the chain does not use it.",
                )
            )
        else:
            out.append(
                problem(
                    "ca_expires_soon",
                    f"The CA certificate '{_name(cert)}' expires in {days:.1f} days.",
                )
            )
    return out


# --- the whole set ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inputs:
    """The three files' bytes (``key`` None: chain checks only) and where they came from."""

    cert: bytes | load.Unreadable
    key: bytes | load.Unreadable | None
    ca: bytes | load.Unreadable
    cert_name: str = "certificate file"
    key_name: str = "key file"
    ca_name: str = "CA file"


def _read(path: Path) -> bytes | load.Unreadable:
    try:
        return load.read_bounded(path)
    except load.Unreadable as exc:
        return exc


def read_set(paths: SetPaths) -> Inputs:
    """The files' bytes; a set without a CA file is validated against the system trust
    store instead (``check.validate_against_store``): here its CA file is missing."""
    return Inputs(
        cert=_read(paths.cert),
        key=_read(paths.key),
        ca=load.Unreadable("no CA file is named") if paths.ca is None else _read(paths.ca),
        cert_name=str(paths.cert),
        key_name=str(paths.key),
        ca_name=str(paths.ca),
    )


def validate(
    inputs: Inputs,
    *,
    at: dt.datetime,
    purpose: Purpose = Purpose.CLUSTER,
    hostnames: Sequence[str] = (),
    expiry_warning_days: float = DEFAULT_EXPIRY_WARNING_DAYS,
    max_chain_depth: int | None = None,
    node_names: Sequence[str] = (),
    url_hosts: Sequence[str] = (),
    replication: bool = False,
) -> Report:
    """Every problem of a set, at instant ``at``; never raises.

    ``node_names``: names Harper looks the certificate up by, verbatim (replication).
    ``url_hosts``: hosts of ``replication.url`` that peers dial (replication); each must
    pass Node's ``checkServerIdentity`` (an IP address needs an IP SAN).
    ``replication``: the set is a Harper node's replication set, so Harper's own CA-file
    rule applies too (``ca_file_issuer_not_first``); implied by ``node_names``.  Without
    it, a cluster-purpose verdict is Node's verdict for these files (a mutual-TLS handshake).
    Whatever the input, the answer is a Report: a failure inside the checks themselves is
    the error ``check_failed`` naming the exception's type (never its text, which could
    quote input), so the set is refused and nothing raises to the caller.
    """
    try:
        with warnings.catch_warnings():
            # cryptography warns about oddities OpenSSL accepts (a 3-letter country such as
            # Harper's own 'USA', negative serials); the report speaks for itself.
            warnings.simplefilter("ignore")
            return _validate(
                inputs,
                at=at,
                purpose=purpose,
                hostnames=hostnames,
                expiry_warning_days=expiry_warning_days,
                max_chain_depth=max_chain_depth,
                node_names=node_names,
                url_hosts=url_hosts,
                replication=replication or bool(node_names),
            )
    except Exception as exc:  # the last resort: any bug or hostile input a check missed
        return Report(
            (
                problem(
                    "check_failed",
                    f"harper-certd could not finish checking this set ({type(exc).__name__}); "
                    "it is refused. Please report this with the files' openssl -text output.",
                ),
            ),
            at=at,
        )


def _guard(parse: Callable[[], _T], sentence: str) -> _T:
    """``parse()`` (a load function), with any failure it did not foresee as Unreadable in
    our own words (never the library's text, which could quote a key)."""
    try:
        return parse()
    except load.Unreadable:
        raise
    except Exception:  # e.g. cryptography's InternalError on a damaged key
        raise load.Unreadable(sentence) from None


def _validate(
    inputs: Inputs,
    *,
    at: dt.datetime,
    purpose: Purpose,
    hostnames: Sequence[str],
    expiry_warning_days: float,
    max_chain_depth: int | None,
    node_names: Sequence[str],
    url_hosts: Sequence[str],
    replication: bool,
) -> Report:
    problems: list[Problem] = []
    cert_file: load.CertFile | None = None
    key: PrivateKeyTypes | None = None
    ca_certs: tuple[x509.Certificate, ...] = ()

    def unreadable(code: str, exc: load.Unreadable) -> None:
        problems.append(problem(code, str(exc)))

    try:
        if isinstance(inputs.cert, load.Unreadable):
            raise inputs.cert
        cert_data = inputs.cert
        cert_file = _guard(
            lambda: load.parse_certificates(cert_data, name=inputs.cert_name),
            f"{inputs.cert_name} cannot be decoded",
        )
    except load.Unreadable as exc:
        unreadable("cert_unreadable", exc)
    try:
        if isinstance(inputs.key, load.Unreadable):
            raise inputs.key
        if inputs.key is not None:
            key_data = inputs.key
            key = _guard(
                lambda: load.parse_private_key(key_data, name=inputs.key_name),
                f"{inputs.key_name}: the private key cannot be decoded",
            )
    except load.Unreadable as exc:
        unreadable("key_unreadable", exc)
    try:
        if isinstance(inputs.ca, load.Unreadable):
            raise inputs.ca
        ca_data = inputs.ca
        ca_file = _guard(
            lambda: load.parse_ca_file(ca_data, name=inputs.ca_name),
            f"{inputs.ca_name} cannot be decoded",
        )
        ca_certs = ca_file.certs
        if ca_file.holds_private_key:
            problems.append(problem("key_in_cert_file", f"{inputs.ca_name} holds a private key."))
    except load.Unreadable as exc:
        unreadable("ca_unreadable", exc)

    if ca_certs:
        ca_certs = _readable_ca_entries(ca_certs, inputs.ca_name, problems)
    if cert_file is not None:
        bad = next((i for i, c in enumerate(cert_file.certs) if undecodable_by_openssl(c)), None)
        if bad is not None:
            problems.append(
                problem(
                    "cert_unreadable",
                    f"{inputs.cert_name}: certificate #{bad + 1} has a name with an invalid "
                    "UTF8String; OpenSSL, so Node, refuses to load it "
                    "(ERR_OSSL_ASN1_INVALID_UTF8STRING). Reissue it.",
                )
            )
            cert_file = None
    if cert_file is None:
        return Report(tuple(problems), ca_certs=ca_certs, at=at)
    leaf, extras = cert_file.certs[0], cert_file.certs[1:]
    if cert_file.holds_private_key:
        problems.append(problem("key_in_cert_file", f"{inputs.cert_name} holds a private key."))
    if key is not None:
        misplaced = check_leaf_position(cert_file.certs, key, inputs.cert_name)
        if misplaced:
            # Node takes the first certificate as the node's and refuses the pair; the other
            # checks would judge the intermediate as if it were the node certificate.
            matching = next(c for c in cert_file.certs if not check_pair(c, key))
            return Report(
                (*misplaced, *problems), certificate=summarize(matching), ca_certs=ca_certs, at=at
            )
        pair = check_pair(leaf, key)
        problems += pair or check_key_consistent(leaf, key)
    problems += check_leaf_is_ca(leaf)
    problems += check_key_strength(leaf, "certificate")
    problems += check_key_type_usable(leaf)
    problems += check_signature(leaf, "certificate")
    problems += check_key_usage(leaf, purpose)
    problems += check_validity(leaf, at, expiry_warning_days)
    problems += check_hostnames(leaf, hostnames)
    problems += check_node_names(leaf, node_names)
    problems += check_url_hosts(leaf, url_hosts)
    problems += check_strict_der(cert_file.certs, inputs.cert_name)
    chain: tuple[x509.Certificate, ...] = ()
    path: tuple[x509.Certificate, ...] = ()
    if ca_certs:
        chain, chain_problems, path = check_chain(
            leaf, extras, ca_certs, purpose, at, max_chain_depth
        )
        problems += chain_problems
        problems += _check_ca_file_entries(ca_certs, path, at, expiry_warning_days)
        problems += _check_ca_file_damaged(ca_certs, path, inputs.ca_name)
        if purpose is Purpose.CLUSTER and replication and chain:
            problems += check_ca_file_issuer_first(chain, ca_certs, inputs.ca_name)
        if chain:
            problems += check_trust_settings(chain, ca_certs, purpose, inputs.ca_name)
    problems += check_eku(leaf, purpose, path)
    problems += check_certificate_message(leaf, extras, path)
    problems.sort(key=lambda p: p.severity is not Severity.ERROR)
    return Report(
        tuple(problems),
        certificate=summarize(leaf),
        chain_certs=chain,
        ca_certs=ca_certs,
        at=at,
    )


def validate_files(
    paths: SetPaths,
    *,
    at: dt.datetime,
    purpose: Purpose = Purpose.CLUSTER,
    hostnames: Sequence[str] = (),
    expiry_warning_days: float = DEFAULT_EXPIRY_WARNING_DAYS,
    node_names: Sequence[str] = (),
    url_hosts: Sequence[str] = (),
    replication: bool = False,
) -> Report:
    report = validate(
        read_set(paths),
        at=at,
        purpose=purpose,
        hostnames=hostnames,
        expiry_warning_days=expiry_warning_days,
        node_names=node_names,
        url_hosts=url_hosts,
        replication=replication,
    )
    if "key_unreadable" in report.codes:
        return report
    extra = check_key_file_mode(paths.key)
    if not extra:
        return report
    return Report(
        (*report.problems, *extra),
        report.certificate,
        report.chain_certs,
        report.ca_certs,
        report.at,
    )
