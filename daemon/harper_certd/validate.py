"""Validate stage: is a certificate set fit for a Harper node, and if not, why.

The reference is what Harper's TLS stack (Node.js on OpenSSL) accepts between
two nodes, plus Harper's documented requirements, plus a short security policy
(weak keys and signatures, CA leaves).  Chain building and signature checks are
pyca/cryptography's verifier; the rules that differ from its web-PKI defaults
(CN-only certificates, per-purpose EKU, self-signed roots only as anchors) are
checked here, so that every refusal has its own code.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import os
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from harper_certd import load, names
from harper_certd.problems import Problem, Severity, has_errors, problem

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
DEFAULT_EXPIRY_WARNING_DAYS = 30
# Bounds the diagnostic path search, whatever the CA file holds.
_MAX_DEPTH = 10
_MAX_SIGNATURE_CHECKS = 64


class Purpose(enum.StrEnum):
    CLUSTER = "cluster"  # replication/clustering: TLS server and TLS client
    SERVER = "server"  # HTTPS and Operations API only
    CLIENT = "client"


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


@dataclass(frozen=True, slots=True)
class SetPaths:
    cert: Path
    key: Path
    ca: Path


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


def summarize(cert: x509.Certificate) -> CertSummary:
    ids = names.identities(cert)
    try:
        key_type, key_size = _key_description(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        key_type, key_size = "unsupported", 0
    return CertSummary(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
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


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    except Exception:  # a malformed CA-file entry, reported where it matters
        return False


def _der_header(data: bytes, pos: int) -> tuple[int, int]:
    """(start of the value, end of the element) of the DER element at ``pos``."""
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return start, start + length


@functools.lru_cache(maxsize=4096)
def _self_issued(cert: x509.Certificate) -> bool:
    # Compares the encoded names from the TBS bytes: building cryptography's Name objects
    # costs ~13 us a certificate, which a CA file of hundreds of roots turns into ms.
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
        return cert.subject == cert.issuer
    return issuer == subject


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, UnsupportedAlgorithm) as exc:
        if child.issuer != issuer.subject:
            return False
        if _weak_hash(child) or "Unsupported signature algorithm" in str(exc):
            # cryptography no longer verifies SHA-1/MD5 signatures; the path is real and
            # weak_signature says what is wrong with it.
            return _key_ids_match(child, issuer)
        return False
    except (TypeError, InvalidSignature):
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
    return cert.subject.rfc4514_string() or "(empty subject)"


# --- individual checks: each returns problems, never raises -----------------------


def check_key_strength(cert: x509.Certificate, role: str) -> list[Problem]:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return [
            problem("weak_key", f"The {role} '{_name(cert)}' has a key Harper cannot use: {exc}")
        ]
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


def check_eku(leaf: x509.Certificate, purpose: Purpose) -> list[Problem]:
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
    return [
        problem(
            "eku_missing",
            f"Extended Key Usage lists {listed} but not {wanted}, which {purpose.value} use needs.",
        )
    ]


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
        if spki(leaf.public_key()) == spki(key.public_key()):  # type: ignore[arg-type]
            return []
    except (ValueError, UnsupportedAlgorithm):
        pass
    cert_kind = _key_description(leaf.public_key())
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
        for candidate in self.by_subject.get(cert.issuer.public_bytes(), []):
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
        by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
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
            f"The chain reaches '{_name(top)}' but not its issuer '{top.issuer.rfc4514_string()}'"
            "; Harper's Node.js needs the whole chain up to the self-signed root in the CA file.",
        )
    return None, problem(
        "chain_incomplete",
        f"No certificate in the CA file or after the leaf in the certificate file is the issuer "
        f"'{top.issuer.rfc4514_string()}' of '{_name(top)}'.",
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


def check_chain(
    leaf: x509.Certificate,
    extras: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    purpose: Purpose,
    at: dt.datetime,
    max_chain_depth: int | None = None,
) -> tuple[tuple[x509.Certificate, ...], list[Problem]]:
    """The validated chain (leaf first) and the chain's problems."""
    anchors: list[x509.Certificate] = []
    intermediates = list(extras)
    for cert in ca_certs:
        (anchors if _self_issued(cert) else intermediates).append(cert)
    if _self_issued(leaf) and leaf in anchors and _signed_by(leaf, leaf):
        # A self-signed node certificate trusted as itself: OpenSSL accepts this.
        return (leaf,), []
    chain: tuple[x509.Certificate, ...] = ()
    failure: str | None = None
    if anchors:
        builder = (
            PolicyBuilder()
            .store(Store(anchors))
            .time(_chain_time(leaf, at))
            .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        )
        if max_chain_depth is not None:
            builder = builder.max_chain_depth(max_chain_depth)
        try:
            chain = tuple(builder.build_client_verifier().verify(leaf, intermediates).chain)
        except VerificationError as exc:
            failure = str(exc)
        except ValueError as exc:  # a malformed extension in a lazily parsed CA certificate
            failure = f"a CA certificate could not be parsed: {exc}"
    problems: list[Problem] = []
    path: Sequence[x509.Certificate] | None = chain
    if not chain:
        anchor_fps = {fingerprint(c) for c in anchors}
        path, missing = _diagnose_path(leaf, [*extras, *ca_certs], anchor_fps)
        if missing is not None:
            return (), [missing]
        assert path is not None
        if failure and _only_eddsa_forbidden(failure, path):
            # The web-PKI verifier forbids Ed25519/Ed448 CAs; OpenSSL, so Harper, takes them.
            # The path's signatures were verified by the walk; check the CA rules here.
            rules = _basic_path_problems(path)
            if not rules:
                chain = tuple(path)
            problems += rules
    assert path is not None
    for cert in path[1:]:
        try:
            _ = cert.extensions
        except Exception as exc:  # hostile input: any parse failure
            return (), [
                problem(
                    "chain_invalid",
                    f"The CA certificate '{_name(cert)}' has a malformed extension: {exc}",
                )
            ]
    for cert in path[1:]:
        problems += check_key_strength(cert, "CA certificate")
        if not _self_issued(cert):
            problems += check_signature(cert, "CA certificate")
        problems += _check_ca_validity(cert, at)
        problems += _check_ca_eku(cert, purpose)
    problems += _check_name_constraints_apply(leaf, path)
    # A weak leaf is why the verifier refused; weak_* already say so, for the leaf too.
    leaf_weak = _weak_hash(leaf) or bool(check_key_strength(leaf, "certificate"))
    if not chain and not has_errors(problems) and not leaf_weak:
        problems.append(
            problem(
                "chain_invalid",
                f"The chain {' -> '.join(_name(c) for c in path)} was refused: {failure}.",
            )
        )
    return tuple(chain), problems


def _eddsa(cert: x509.Certificate) -> bool:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def _only_eddsa_forbidden(failure: str, path: Sequence[x509.Certificate]) -> bool:
    forbidden = "Forbidden public key algorithm" in failure or (
        "Forbidden signature algorithm" in failure
    )
    return forbidden and any(_eddsa(c) for c in path[1:])


def _basic_path_problems(path: Sequence[x509.Certificate]) -> list[Problem]:
    """RFC 5280's CA rules on a path whose signatures are already verified."""
    out = []
    for depth, cert in enumerate(path[1:], start=1):
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
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
        try:
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            continue
        if not usage.key_cert_sign:
            out.append(
                problem("chain_invalid", f"'{_name(cert)}' has Key Usage without keyCertSign.")
            )
    return out


def _check_ca_validity(cert: x509.Certificate, at: dt.datetime) -> list[Problem]:
    at = _seconds(at)
    if at > cert.not_valid_after_utc:
        return [
            problem(
                "ca_expired",
                f"The CA certificate '{_name(cert)}' on the chain expired on "
                f"{cert.not_valid_after_utc.isoformat()}.",
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


def _check_ca_file_entries(
    ca_certs: Sequence[x509.Certificate],
    chain: Sequence[x509.Certificate],
    at: dt.datetime,
    warn_days: float,
) -> list[Problem]:
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
    return Inputs(
        cert=_read(paths.cert),
        key=_read(paths.key),
        ca=_read(paths.ca),
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
) -> Report:
    """Every problem of a set, at instant ``at``.

    ``node_names``: names Harper looks the certificate up by, verbatim (replication).
    """
    problems: list[Problem] = []
    cert_file: load.CertFile | None = None
    key: PrivateKeyTypes | None = None
    ca_certs: tuple[x509.Certificate, ...] = ()

    def unreadable(code: str, exc: load.Unreadable) -> None:
        problems.append(problem(code, str(exc)))

    try:
        if isinstance(inputs.cert, load.Unreadable):
            raise inputs.cert
        cert_file = load.parse_certificates(inputs.cert, name=inputs.cert_name)
    except load.Unreadable as exc:
        unreadable("cert_unreadable", exc)
    try:
        if isinstance(inputs.key, load.Unreadable):
            raise inputs.key
        if inputs.key is not None:
            key = load.parse_private_key(inputs.key, name=inputs.key_name)
    except load.Unreadable as exc:
        unreadable("key_unreadable", exc)
    try:
        if isinstance(inputs.ca, load.Unreadable):
            raise inputs.ca
        ca_file = load.parse_ca_file(inputs.ca, name=inputs.ca_name)
        ca_certs = ca_file.certs
        if ca_file.holds_private_key:
            problems.append(problem("key_in_cert_file", f"{inputs.ca_name} holds a private key."))
    except load.Unreadable as exc:
        unreadable("ca_unreadable", exc)

    if cert_file is None:
        return Report(tuple(problems), ca_certs=ca_certs, at=at)
    leaf, extras = cert_file.certs[0], cert_file.certs[1:]
    if cert_file.holds_private_key:
        problems.append(problem("key_in_cert_file", f"{inputs.cert_name} holds a private key."))
    if key is not None:
        problems += check_pair(leaf, key)
    problems += check_leaf_is_ca(leaf)
    problems += check_key_strength(leaf, "certificate")
    problems += check_signature(leaf, "certificate")
    problems += check_eku(leaf, purpose)
    problems += check_key_usage(leaf, purpose)
    problems += check_validity(leaf, at, expiry_warning_days)
    problems += check_hostnames(leaf, hostnames)
    problems += check_node_names(leaf, node_names)
    chain: tuple[x509.Certificate, ...] = ()
    if ca_certs:
        chain, chain_problems = check_chain(leaf, extras, ca_certs, purpose, at, max_chain_depth)
        problems += chain_problems
        problems += _check_ca_file_entries(ca_certs, chain, at, expiry_warning_days)
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
) -> Report:
    report = validate(
        read_set(paths),
        at=at,
        purpose=purpose,
        hostnames=hostnames,
        expiry_warning_days=expiry_warning_days,
        node_names=node_names,
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
