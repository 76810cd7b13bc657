"""Facts of one certificate as OpenSSL reads them: encoded names, signatures, key ids."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
)
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, SignatureAlgorithmOID

from harper_certd import der, dsakeys, load, names
from harper_certd.roles import Purpose
from harper_certd.validate import ca_memo

EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "TLS Web Server Authentication",
    ExtendedKeyUsageOID.CLIENT_AUTH: "TLS Web Client Authentication",
}


def required_ekus(purpose: Purpose) -> tuple[x509.ObjectIdentifier, ...]:
    return {
        Purpose.CLUSTER: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
        Purpose.SERVER: (ExtendedKeyUsageOID.SERVER_AUTH,),
        Purpose.CLIENT: (ExtendedKeyUsageOID.CLIENT_AUTH,),
    }[purpose]


@ca_memo.per_certificate
def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def key_description(key: CertificatePublicKeyTypes | PrivateKeyTypes) -> tuple[str, int]:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "Ed448", 456
    if isinstance(key, dsakeys.DSAPublicKey | dsakeys.DSAPrivateKey):
        return "DSA", key.key_size
    return type(key).__name__, 0


_E = TypeVar("_E", bound=x509.ExtensionType)


def extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    """The extension's value; None when absent or when the extensions cannot be parsed
    (a malformed or duplicate extension is reported where the certificate is used)."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except Exception:  # ExtensionNotFound, ValueError, DuplicateExtension
        return None


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    except Exception:  # a malformed CA-file entry, reported where it matters
        return False


def der_header(data: bytes, pos: int) -> tuple[int, int]:
    """(start of the value, end of the element) of the DER element at ``pos``; ValueError
    when the structure is broken there."""
    try:
        element = der.tlv(data, pos)
    except der.DerError:
        raise ValueError(f"DER broken at byte {pos}") from None
    return element.content, element.end


@ca_memo.per_certificate
def raw_names(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(issuer, subject) as encoded in the TBS bytes; never raises.

    Building cryptography's Name objects costs ~13 us a certificate (a CA file of hundreds
    of roots turns that into ms) and raises on undecodable strings; the encoded bytes do
    neither.  The names are compared as encoded, as the issuer/subject match of a chain
    written by one CA always is.
    """
    tbs = cert.tbs_certificate_bytes
    try:
        pos, _ = der_header(tbs, 0)  # into TBSCertificate
        if tbs[pos] == 0xA0:  # [0] version
            pos = der_header(tbs, pos)[1]
        pos = der_header(tbs, pos)[1]  # serialNumber
        pos = der_header(tbs, pos)[1]  # signature AlgorithmIdentifier
        issuer_end = der_header(tbs, pos)[1]
        issuer = tbs[pos:issuer_end]
        validity_end = der_header(tbs, issuer_end)[1]
        subject = tbs[validity_end : der_header(tbs, validity_end)[1]]
    except (IndexError, ValueError):
        return b"", b"?"
    return issuer, subject


_EC_PUBLIC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey, DER


@ca_memo.per_certificate
def explicit_ec_parameters(cert: x509.Certificate) -> bool:
    """Whether the key is EC with explicit curve parameters, which OpenSSL 3 refuses in
    verification (X509_V_ERR_EC_KEY_EXPLICIT_PARAMS, checked with openssl verify 3.0)."""
    tbs = cert.tbs_certificate_bytes
    try:
        pos, _ = der_header(tbs, 0)
        if tbs[pos] == 0xA0:  # [0] version
            pos = der_header(tbs, pos)[1]
        for _ in range(5):  # serialNumber, signature, issuer, validity, subject
            pos = der_header(tbs, pos)[1]
        spki_start, _ = der_header(tbs, pos)
        alg_start, alg_end = der_header(tbs, spki_start)
        oid_end = der_header(tbs, alg_start)[1]
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
        start, end = der_header(data, pos)
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


@ca_memo.per_certificate
def name_keys(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """(issuer, subject) as OpenSSL compares them (``_canonical_name``)."""
    issuer, subject = raw_names(cert)
    return _canonical_name(issuer), _canonical_name(subject)


def self_issued(cert: x509.Certificate) -> bool:
    issuer, subject = name_keys(cert)
    return issuer == subject


def _signed_bytes(cert: x509.Certificate) -> bytes:
    """The tbsCertificate bytes the signature covers: the original encoding when load.py
    normalised a BER certificate (OpenSSL verifies over the bytes as received)."""
    original = load.original_der(cert)
    if original is None:
        return cert.tbs_certificate_bytes
    try:
        start, _ = der_header(original, 0)
        _, end = der_header(original, start)
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
    elif isinstance(key, dsakeys.DSAPublicKey) and algorithm is not None:
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
        inner, _ = der_header(der, 0)
        tbs_start, tbs_end = der_header(der, inner)
        outer = der[tbs_end : der_header(der, tbs_end)[1]]
        pos = tbs_start
        if der[pos] == 0xA0:  # [0] version
            pos = der_header(der, pos)[1]
        pos = der_header(der, pos)[1]  # serialNumber
        return der[pos : der_header(der, pos)[1]] == outer
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
                start, stop = der_header(encoded, pos)
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


@ca_memo.per_certificate
def undecodable_by_openssl(cert: x509.Certificate) -> bool:
    """Whether OpenSSL (so Node) refuses to load ``cert`` though cryptography loads it."""
    issuer, subject = raw_names(cert)
    return _invalid_utf8(issuer) or _invalid_utf8(subject)


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if not _algorithms_agree(child):
        return False
    if name_keys(child)[0] != name_keys(issuer)[1]:
        return False
    if _directly_issued(child, issuer):
        return True
    try:
        _verify_signature(child, issuer)
    except (ValueError, UnsupportedAlgorithm):
        if weak_hash(child):
            # A SHA-1/MD5 signature cryptography will not verify: the path is real and
            # weak_signature says what is wrong with it.  Nothing else passes unverified
            # (an issuer key cryptography cannot load, such as explicit EC parameters,
            # which OpenSSL refuses too: EC_KEY_EXPLICIT_PARAMS).
            return key_ids_match(child, issuer)
        return False
    except Exception:  # InvalidSignature, TypeError: not signed by this key
        return False
    return True


def weak_hash(cert: x509.Certificate) -> bool:
    try:
        return isinstance(cert.signature_hash_algorithm, hashes.SHA1 | hashes.MD5)
    except UnsupportedAlgorithm:
        return False


def key_ids_match(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        aki = child.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return True  # names match and nothing says otherwise
    except Exception:  # malformed: the path check reports it
        return True
    return aki.key_identifier is None or aki.key_identifier == ski.digest


def name_of(cert: x509.Certificate) -> str:
    return names.safe_name(lambda: cert.subject, empty="(empty subject)")


def issuer_of(cert: x509.Certificate) -> str:
    return names.safe_name(lambda: cert.issuer, empty="(empty issuer)")


def whole_seconds(at: dt.datetime) -> dt.datetime:
    # Validity is stated in whole seconds; notAfter is inclusive to its last fraction.
    return at.replace(microsecond=0)
