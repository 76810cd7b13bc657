"""x509-limbo cases through the validator (read from ../shared/limbo, never copied)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest

import limbo_adapter as limbo

pytestmark = pytest.mark.skipif(
    not limbo.LIMBO_FILE.exists(), reason=f"{limbo.LIMBO_FILE} is not there (shared/ absent)"
)

# pyca/cryptography 50's own agreement on the same 195 evaluated cases.
CRYPTOGRAPHY_AGREEMENT = 164

# Where the validator knowingly differs from limbo, and why (Harper's Node.js is the reference).
DOCUMENTED = {
    "cve::cve-2024-0567": "non-self-signed trust anchor: Node 20 has no partial-chain trust",
    "rfc5280::root-and-intermediate-swapped": "non-self-signed trust anchor, as above",
    "webpki::cn::": "Node ignores the CN when SANs exist; CABF CN rules are not Harper's",
    "webpki::eku::ee-critical-eku": "OpenSSL accepts a critical EKU",
    "webpki::eku::ee-without-eku": "server purpose: Node accepts a leaf without EKU",
    "webpki::eku::root-has-eku": "OpenSSL accepts EKU on a root",
    "webpki::san::no-san": "Node falls back to the CN when there is no SAN",
    "webpki::san::san-critical-with-nonempty-subject": "OpenSSL accepts it",
    "rfc5280::san::noncritical-with-empty-subject": "OpenSSL accepts it",
    "rfc5280::san::underscore-dns": "Node accepts underscores in names",
    "rfc5280::nc::permitted-dns-match-noncritical": "OpenSSL applies non-critical NC too",
    "rfc5280::serial::zero": "OpenSSL accepts serial 0",
    "rfc5280::ski::": "OpenSSL accepts CAs without SKI",
    "rfc5280::aki::intermediate-missing-aki": "OpenSSL accepts intermediates without AKI",
    "webpki::aki::": "OpenSSL ignores root AKI details",
    "webpki::forbidden-rsa-": "OpenSSL accepts RSA sizes not divisible by 8",
    "rfc5280::ca-as-leaf": "policy: leaf_is_ca",
    "pathlen::validation-ignores-pathlen-in-leaf": "policy: leaf_is_ca",
    "pathlen::self-issued-certs-pathlen": "cryptography counts self-issued certs in pathlen",
    "pathlen::max-chain-depth-1-self-issued": "cryptography counts self-issued certs in depth",
}

# Cases limbo expects refused that OpenSSL 3.0 (so Node 20, so Harper) accepts: since issue 8
# item 3 the validator follows OpenSSL where cryptography's web-PKI profile is stricter.
# test_openssl_accepts_what_we_accept runs openssl verify on each.
OPENSSL_ACCEPTS = {
    "rfc5280::aki::leaf-missing-aki": "a leaf without AKI (Harper 4.7 issues such leaves "
    "itself: field case 34)",
    "rfc5280::nc::not-allowed-in-ee-noncritical": "name constraints in a leaf",
    "rfc5280::nc::not-allowed-in-ee-critical": "critical name constraints in a leaf",
    "rfc5280::serial::too-long": "serial numbers over 20 octets",
    "rfc5280::root-non-critical-basic-constraints": "a non-critical basicConstraints on a root",
    "webpki::aki::root-with-aki-missing-keyidentifier": "a root AKI without keyIdentifier",
    "webpki::v1-cert": "a v1 leaf",
    "rfc5280::leaf-ku-keycertsign": "keyCertSign on a leaf",
    "rfc5280::root-missing-basic-constraints": "a self-signed root without basicConstraints",
}
# Cases limbo expects accepted that Node 20 (OpenSSL 3.0) refuses, judged by Node itself in
# tests/test_judge_limbo.py: OpenSSL counts a certificate as expired from its notAfter second,
# and it builds one chain only.
NODE_REFUSES = {
    "rfc5280::validity::notafter-exact": "expired at its notAfter second (OpenSSL)",
    "rfc5280::validity::notafter-fractional": "expired at its notAfter second (OpenSSL)",
    # OpenSSL builds one chain (the certificate file's first intermediate of the name) and
    # does not try the other path when it fails (validate.lookup.check_untrusted_choice).
    "rfc5280::nc::nc-forbids-alternate-chain-ica": "no other path tried (unable to get local "
    "issuer certificate)",
    "rfc5280::nc::nc-forbids-same-chain-ica": "no other path tried (excluded subtree violation)",
}
DOCUMENTED.update({k: f"Node refuses: {v}" for k, v in NODE_REFUSES.items()})
# Cases limbo expects refused that Node 20 accepts, judged by Node itself (agreements in
# tests/test_judge_limbo.py): extensions OpenSSL does not decode, constraints it reads as
# written.
NODE_ACCEPTS = {
    "rfc5280::nc::invalid-dnsname-leading-period": "a DNS constraint with a leading period",
    "rfc5280::nc::nc-permits-invalid-dns-san": "a SAN '.example.com' under 'example.com'",
    "webpki::nc::intermediate-permitted-excluded-subtrees-both-null": "NULL NC subtrees",
    "webpki::nc::intermediate-permitted-excluded-subtrees-both-empty-sequences": "empty NC "
    "subtrees",
    "webpki::malformed-aia": "a malformed authorityInfoAccess (OpenSSL does not decode it)",
}
DOCUMENTED.update({k: f"Node accepts {v}" for k, v in NODE_ACCEPTS.items()})
DOCUMENTED.update({k: f"OpenSSL accepts {v}" for k, v in OPENSSL_ACCEPTS.items()})


@pytest.fixture(scope="module")
def outcomes() -> list[limbo.Outcome]:
    return limbo.run_all(limbo.load_cases())


def test_agreement_at_least_cryptography(outcomes: list[limbo.Outcome]) -> None:
    """The validator agrees with limbo on at least as many cases as cryptography 50 itself."""
    print("\n" + limbo.format_report(outcomes))
    evaluated = [o for o in outcomes if o.status != "skip"]
    assert len(evaluated) == 195
    # Agreeing with OpenSSL where limbo follows the web PKI counts as agreeing.
    agree = sum(
        o.status == "pass" or o.id in {*OPENSSL_ACCEPTS, *NODE_REFUSES, *NODE_ACCEPTS}
        for o in evaluated
    )
    assert agree >= CRYPTOGRAPHY_AGREEMENT


def test_every_disagreement_is_documented(outcomes: list[limbo.Outcome]) -> None:
    """Each case where the verdict differs from limbo's has a stated reason in DOCUMENTED."""
    unexplained = [
        o.id
        for o in outcomes
        if o.status == "fail" and not any(o.id.startswith(prefix) for prefix in DOCUMENTED)
    ]
    assert unexplained == []


def test_denial_of_service_cases_get_a_verdict(outcomes: list[limbo.Outcome]) -> None:
    """Pathological chains (100 same-subject intermediates, NC blow-ups) are all decided."""
    dos = [o for o in outcomes if "denial-of-service" in o.features]
    assert dos
    assert all(o.actual is not None for o in dos)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_accepts_what_we_accept(tmp_path: Path) -> None:
    """Each OPENSSL_ACCEPTS case passes openssl verify, and the validator accepts it."""
    cases = {tc["id"]: tc for tc in limbo.load_cases() if tc["id"] in OPENSSL_ACCEPTS}
    assert set(cases) == set(OPENSSL_ACCEPTS)
    for case_id, tc in cases.items():
        folder = tmp_path / case_id.replace(":", "_")
        folder.mkdir()
        (folder / "leaf.pem").write_text(tc["peer_certificate"])
        (folder / "ca.pem").write_text("".join(tc["trusted_certs"]))
        cmd = ["openssl", "verify", "-CAfile", str(folder / "ca.pem")]
        cmd += ["-purpose", "sslserver" if tc["validation_kind"] == "SERVER" else "sslclient"]
        if tc["untrusted_intermediates"]:
            (folder / "untrusted.pem").write_text("".join(tc["untrusted_intermediates"]))
            cmd += ["-untrusted", str(folder / "untrusted.pem")]
        if tc.get("validation_time"):
            when = dt.datetime.fromisoformat(tc["validation_time"].replace("Z", "+00:00"))
            cmd += ["-attime", str(int(when.timestamp()))]
        done = subprocess.run(
            [*cmd, str(folder / "leaf.pem")], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (case_id, done.stdout, done.stderr)
        outcome = limbo.run_case(tc, dt.datetime.now(dt.UTC))
        assert outcome.actual == "SUCCESS", (case_id, outcome.codes)
