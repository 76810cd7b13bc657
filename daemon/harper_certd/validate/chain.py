"""Chain building: cryptography's verifier in two profiles, then our own walk for diagnosis."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from harper_certd.problems import Problem, has_errors, problem
from harper_certd.roles import Purpose
from harper_certd.validate.certs import (
    fingerprint,
    issuer_of,
    key_ids_match,
    name_keys,
    name_of,
    self_issued,
    signed_by,
    weak_hash,
    whole_seconds,
)
from harper_certd.validate.leaf import check_key_strength, check_signature
from harper_certd.validate.rfc5280 import (
    check_ca_eku,
    check_ca_validity,
    check_name_constraints_apply,
    name_constraints_unchecked,
    openssl_path_problems,
)

# Bounds the diagnostic path search, whatever the CA file holds.
_MAX_DEPTH = 10


_MAX_SIGNATURE_CHECKS = 64


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
        if self_issued(cert) and fingerprint(cert) in self.anchors:
            return path
        if len(path) > _MAX_DEPTH:
            return None
        for candidate in self.by_subject.get(name_keys(cert)[0], []):
            if candidate in path or self.budget <= 0:
                continue
            self.budget -= 1
            if not signed_by(cert, candidate):
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
        by_subject.setdefault(name_keys(cert)[1], []).append(cert)
    walk = _Walk(by_subject, anchors)
    found = walk.find([leaf])
    if found is not None:
        return found, None
    top = walk.deepest[-1]
    if walk.wrong_key is not None and walk.wrong_key[0] is top:
        child, candidate = walk.wrong_key
        return None, problem(
            "chain_invalid",
            f"'{name_of(candidate)}' has the name of the issuer of '{name_of(child)}' but did not "
            "sign it (another key: an older or a different CA of the same name?).",
        )
    if self_issued(top):
        return None, problem(
            "chain_incomplete",
            f"'{name_of(top)}' is self-signed but not in the CA file; add it to the CA file if "
            "it is the root to trust.",
        )
    if top is not leaf:
        return None, problem(
            "chain_incomplete",
            f"The chain reaches '{name_of(top)}' but not its issuer '{issuer_of(top)}'"
            "; Harper's Node.js needs the whole chain up to the self-signed root in the CA file. "
            "Fix: add it: cat intermediate.pem root.pem > ca.pem.",
        )
    return None, problem(
        "chain_incomplete",
        f"No certificate in the CA file or after the leaf in the certificate file is the issuer "
        f"'{issuer_of(top)}' of '{name_of(top)}'. Fix: add the issuer and the certificates above "
        "it to the CA file, up to the self-signed root (cat intermediate.pem root.pem > ca.pem).",
    )


def _chain_time(leaf: x509.Certificate, at: dt.datetime) -> dt.datetime:
    # The chain is judged at an instant the leaf is valid, so that an expired leaf
    # reports "expired" and, separately, whatever else is wrong with its chain.
    second = dt.timedelta(seconds=1)
    at = whole_seconds(at)
    if at >= leaf.not_valid_after_utc:
        return leaf.not_valid_after_utc - second
    if at < leaf.not_valid_before_utc:
        return leaf.not_valid_before_utc + second
    return at


def build_chain(
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


def failure_text(failure: str | None) -> str:
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
        (anchors if self_issued(cert) else intermediates).append(cert)
    if self_issued(leaf) and leaf in anchors and signed_by(leaf, leaf):
        # A self-signed node certificate trusted as itself: OpenSSL accepts this.
        return (leaf,), [], (leaf,)
    chain: tuple[x509.Certificate, ...] = ()
    failure: str | None = None
    problems: list[Problem] = []
    path: tuple[x509.Certificate, ...] = ()
    if anchors:
        chain, failure = build_chain(
            leaf, intermediates, anchors, at, max_chain_depth, web_pki=True
        )
        path = chain
        if not chain:
            relaxed, _ = build_chain(
                leaf, intermediates, anchors, at, max_chain_depth, web_pki=False
            )
            if relaxed:
                path = relaxed
                rules = openssl_path_problems(relaxed, max_chain_depth)
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
        rules = openssl_path_problems(path, max_chain_depth)
        rules += name_constraints_unchecked(path)
        problems += rules
        if not rules and malformed_ca(path) is None:
            chain = path
    bad = malformed_ca(path)
    if bad is not None:
        return (
            (),
            [
                problem(
                    "chain_invalid",
                    f"The CA certificate '{name_of(bad)}' on the chain has a malformed extension "
                    "(or a duplicate one); OpenSSL refuses to use it.",
                )
            ],
            path,
        )
    for child, issuer in itertools.pairwise(path):
        if not key_ids_match(child, issuer):
            problems.append(
                problem(
                    "chain_invalid",
                    f"The Authority Key Identifier of '{name_of(child)}' does not match the "
                    f"Subject Key Identifier of '{name_of(issuer)}', so OpenSSL does not take it "
                    "as the issuer (AKID_SKID_MISMATCH): a CA of that name with another key?",
                )
            )
    for cert in path[1:]:
        problems += check_key_strength(cert, "CA certificate")
        if not self_issued(cert):
            problems += check_signature(cert, "CA certificate")
        problems += check_ca_validity(cert, at, path)
        problems += check_ca_eku(cert, purpose)
    problems += check_name_constraints_apply(leaf, path)
    if has_errors(problems):
        chain = ()
    # A weak leaf is why the verifier refused; weak_* already say so, for the leaf too.
    leaf_weak = weak_hash(leaf) or bool(check_key_strength(leaf, "certificate"))
    if not chain and not has_errors(problems) and not leaf_weak:
        problems.append(
            problem(
                "chain_invalid",
                f"The chain {' -> '.join(name_of(c) for c in path)} was refused: "
                f"{failure_text(failure)}.",
            )
        )
    return chain, problems, path


def malformed_ca(path: Sequence[x509.Certificate]) -> x509.Certificate | None:
    for cert in path[1:]:
        try:
            _ = cert.extensions
        except Exception:  # hostile input: any parse failure, DuplicateExtension too
            return cert
    return None
