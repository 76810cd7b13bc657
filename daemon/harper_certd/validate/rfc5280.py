"""The RFC 5280 path rules OpenSSL applies, on a path whose signatures are verified."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509

from harper_certd.problems import Problem, problem
from harper_certd.roles import Purpose
from harper_certd.validate.certs import (
    EKU_NAMES,
    explicit_ec_parameters,
    extension,
    name_of,
    required_ekus,
    self_issued,
    whole_seconds,
)
from harper_certd.validate.constraints import check_name_constraints

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


def openssl_path_problems(
    path: Sequence[x509.Certificate], max_chain_depth: int | None
) -> list[Problem]:
    """The RFC 5280 rules OpenSSL applies, on a path whose signatures are verified."""
    out = _basic_path_problems(path)
    for cert in path:
        if explicit_ec_parameters(cert):
            out.append(
                problem(
                    "chain_invalid",
                    f"'{name_of(cert)}' has an EC key with explicit curve parameters, which "
                    "OpenSSL refuses (EC_KEY_EXPLICIT_PARAMS); reissue it with a named curve.",
                )
            )
        oid = _unhandled_critical(cert)
        if oid is not None:
            out.append(
                problem(
                    "chain_invalid",
                    f"'{name_of(cert)}' has a critical extension {oid} that OpenSSL does not "
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


def name_constraints_unchecked(path: Sequence[x509.Certificate]) -> list[Problem]:
    """Name constraints on a path the own walk judged: DNS and IP subtrees evaluated as
    OpenSSL does (``constraints``); a path with a constraint of another form is refused
    rather than accepted unchecked."""
    if all(extension(cert, x509.NameConstraints) is None for cert in path[1:]):
        return []
    found = check_name_constraints(path)
    if found is not None:  # every constraint is of a form evaluated: its verdict
        return found
    cert = next(c for c in path[1:] if extension(c, x509.NameConstraints) is not None)
    return [
        problem(
            "chain_invalid",
            f"The CA certificate '{name_of(cert)}' has name constraints of a form harper-certd's "
            "own walk does not evaluate (directoryName, email or URI) on a chain "
            "cryptography's verifier does not judge; it does not accept the chain unchecked.",
        )
    ]


def _basic_path_problems(path: Sequence[x509.Certificate]) -> list[Problem]:
    """RFC 5280's CA rules on a path whose signatures are already verified."""
    out = []
    for depth, cert in enumerate(path[1:], start=1):
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except Exception:  # ExtensionNotFound (malformed: reported by the caller)
            bc = None
        usage = extension(cert, x509.KeyUsage)
        anchor = cert is path[-1] and self_issued(cert)
        if bc is None and anchor and (usage is None or usage.key_cert_sign):
            # OpenSSL 3.0 takes a self-signed trust anchor without basicConstraints
            # (x509-limbo rfc5280::root-missing-basic-constraints, judged by Node 20).
            continue
        if bc is None or not bc.ca:
            out.append(
                problem(
                    "chain_invalid",
                    f"'{name_of(cert)}' signs certificates but is not "
                    "a CA (basicConstraints CA:TRUE is missing).",
                )
            )
            continue
        # CAs under this one, the leaf and self-issued intermediates not counted (RFC 5280
        # 6.1.4 (l), as OpenSSL does: x509-limbo pathlen::self-issued-certs-pathlen).
        below = sum(1 for c in path[1:depth] if not self_issued(c))
        if bc.path_length is not None and below > bc.path_length:
            out.append(
                problem(
                    "chain_invalid",
                    f"'{name_of(cert)}' allows {bc.path_length} "
                    f"CA(s) below it (pathLenConstraint), the chain has {below}.",
                )
            )
        usage = extension(cert, x509.KeyUsage)
        if usage is None:
            continue
        if not usage.key_cert_sign:
            out.append(
                problem("chain_invalid", f"'{name_of(cert)}' has Key Usage without keyCertSign.")
            )
    return out


def _cross_sign_hint(cert: x509.Certificate, path: Sequence[x509.Certificate]) -> str:
    """How to leave an expired CA behind when the path reaches it through a cross-sign."""
    if not self_issued(cert):
        # An expired CA certificate that is not a root: a cross-signed root, most often.
        return (
            f" If '{name_of(cert)}' also exists as a self-signed root (a cross-signed root), "
            "trust that root instead: add the self-signed one to the CA file and drop this "
            "one from the certificate file."
        )
    index = next((i for i, c in enumerate(path) if c is cert), 0)
    below = path[index - 1] if index > 1 else None
    if below is not None and not self_issued(below):
        return (
            f" The chain reaches it through '{name_of(below)}', a CA certificate it signed "
            f"(a cross-sign): trust the self-signed '{name_of(below)}' instead (add it to the CA "
            f"file) and drop the cross-signed '{name_of(below)}' from the certificate file."
        )
    return " Replace it in the CA file with the CA's current root."


def check_ca_validity(
    cert: x509.Certificate, at: dt.datetime, path: Sequence[x509.Certificate] = ()
) -> list[Problem]:
    at = whole_seconds(at)
    if at >= cert.not_valid_after_utc:  # expired from the notAfter second
        return [
            problem(
                "ca_expired",
                f"The CA certificate '{name_of(cert)}' on the chain expired on "
                f"{cert.not_valid_after_utc.isoformat()}.{_cross_sign_hint(cert, path)}",
            )
        ]
    if at < cert.not_valid_before_utc:
        return [
            problem(
                "ca_not_yet_valid",
                f"The CA certificate '{name_of(cert)}' on the chain is valid only from "
                f"{cert.not_valid_before_utc.isoformat()}.",
            )
        ]
    return []


def check_name_constraints_apply(
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
                f"The CA certificate '{name_of(cert)}' has name constraints but the certificate "
                "has no Subject Alternative Name for them to apply to; add a SAN.",
            )
        ]
    return []


def check_ca_eku(cert: x509.Certificate, purpose: Purpose) -> list[Problem]:
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
            f"The CA certificate '{name_of(cert)}' restricts Extended Key Usage and leaves out "
            f"{' and '.join(EKU_NAMES[o] for o in missing)}, so OpenSSL refuses the chain for "
            f"{purpose.value} use.",
        )
    ]
