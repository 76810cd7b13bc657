"""Differential test: harper-certd's validator against ``openssl verify`` on generated sets.

Every set of the matrix is judged twice: by ``openssl verify`` (the OpenSSL under Node.js,
which is what Harper's nodes run) and by ``harper_certd.validate.validate``.  The two must
give the same verdict, unless the validator refuses a set OpenSSL accepts for a documented
policy reason (``POLICY_DIVERGENCES``).  Divergences that are validator bugs, reported and
awaiting a fix in ``daemon/``, are listed in ``KNOWN_ISSUES`` and run as strict xfails, so
that the fix shows up as an XPASS to clean up.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from harper_certd import devca
from harper_certd import judge as judging
from harper_certd.problems import CODES, Severity
from harper_certd.roles import Purpose
from harper_certd.validate import Inputs, Report, validate

OPENSSL = "/usr/bin/openssl"
if not Path(OPENSSL).exists() or shutil.which(OPENSSL) is None:
    pytest.skip(f"{OPENSSL} is not installed", allow_module_level=True)

# One instant for the whole matrix, a little ahead of the clock: certificates made by the
# ``openssl`` command line (SHA-1 cases) start "now" and have no notBefore option in 3.0.
AT = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)).replace(microsecond=0)
DAY = dt.timedelta(days=1)

SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
ANY_EKU = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE
BOTH = (SERVER, CLIENT)

# The validator may refuse what OpenSSL accepts only for these reasons.  Any other error
# code on a set that ``openssl verify`` accepts is an unexplained divergence.
POLICY_DIVERGENCES: dict[str, str] = {
    "weak_key": "RSA < 2048 and EC < 256 bits pass OpenSSL 3.0's default security level 1 "
    "(80 bits); harper-certd's policy refuses them.",
    "weak_signature": "SHA-1/MD5 signatures below the root: refused by policy whatever "
    "OpenSSL's security level says.",
    "leaf_is_ca": "OpenSSL verifies a CA:TRUE certificate as a leaf; harper-certd wants an "
    "end-entity certificate for a node.",
    "eku_missing": "Cluster purpose needs serverAuth and clientAuth listed explicitly; OpenSSL "
    "accepts a leaf without the EKU extension for any purpose.",
    "eku_any": "anyExtendedKeyUsage next to serverAuth/clientAuth satisfies OpenSSL; policy "
    "refuses a node key good for any purpose.",
    "key_usage_invalid": "Key Usage must allow the handshake: digitalSignature, or for RSA "
    "keyEncipherment; OpenSSL's sslserver purpose also takes keyEncipherment on an EC key.",
    "key_mismatch": "openssl verify never sees the private key.",
    "ca_file_issuer_not_first": "Harper, not policy: openssl verify builds the chain from "
    "-untrusted and the whole CA file, but two real Harper 4.7.29 nodes replicate only when "
    "the CA file starts with the leaf's issuer (tests/test_replication_sets.py); this matrix "
    "writes the root first.",
    "hostname_partial_wildcard": "A partial wildcard label ('node*.example.com'): OpenSSL and "
    "Node take it, RFC 6125 6.4.3 and the CA/Browser Forum forbid it (policy).",
    "hostname_mismatch": "Names are matched as Node's checkServerIdentity does, minus partial "
    "wildcards (policy); OpenSSL takes 'node*.example.com' and falls back to the CN when the "
    "only SANs are IP addresses.",
}
for _code in POLICY_DIVERGENCES:
    assert CODES[_code][0] is Severity.ERROR, _code


# --- keys: generated once per module, one per role, so that names collide but keys do not ----


@functools.cache
def _key(kind: str, slot: int) -> devca.PrivateKey:
    """The key of ``kind`` for role ``slot`` (``slot`` only keeps roles apart)."""
    del slot
    name, _, size = kind.partition("-")
    return devca.make_key(name, int(size) if size else 0)


KEY_KINDS = ("ec-256", "ec-384", "ec-521", "ec-192", "rsa-2048", "rsa-1024", "ed25519")
SLOT_ROOT, SLOT_LEAF, SLOT_WRONG_ROOT, SLOT_OTHER_ROOT, SLOT_STRAY_KEY = 0, 1, 2, 3, 4
SLOT_INTERMEDIATE = 10  # + level
SLOT_EXTRA_ROOT = 20  # + index


@dataclass(frozen=True, slots=True)
class Case:
    """One certificate set: a chain of ``depth`` CAs above the leaf, and where each one is."""

    name: str
    purpose: Purpose = Purpose.CLUSTER
    depth: int = 2  # CA certificates above the leaf: root only (1) up to root + 2 intermediates
    # Default "ca" (issuer first): a sound replication set (ca_file_issuer_not_first).
    intermediates: str = "ca"  # cert | ca | missing | split (lowest in cert, rest in CA)
    root: str = "ca"  # ca | missing | wrong | cert (cert file only) | both
    leaf_key: str = "ec-256"
    ca_key: str = "ec-256"  # intermediates' keys
    root_key: str = "ec-256"
    leaf_eku: tuple[x509.ObjectIdentifier, ...] | None = BOTH
    ca_eku: tuple[x509.ObjectIdentifier, ...] | None = None  # on the leaf's issuer
    leaf_time: str = "ok"  # ok | expired | future
    ca_time: str = "ok"  # of the intermediate that issues the leaf
    root_time: str = "ok"
    leaf_is_ca: bool = False
    key_encipherment_only: bool = False  # leaf Key Usage: keyEncipherment, no digitalSignature
    issuer_not_a_ca: bool = False  # the leaf's issuer is an end-entity certificate
    renewed_root: bool = False  # the CA file also holds an expired earlier issue of the root
    path_length: int | None = None  # on the topmost intermediate
    sha1: str = ""  # "" | leaf | intermediate | root: that certificate signed with SHA-1
    wrong_key_file: bool = False
    hostnames: tuple[str, ...] = ()
    dns: tuple[str, ...] = ("nodea",)  # the leaf's DNS SANs
    san: bool = True  # False: the leaf is named by its subject CN only
    extra_roots: int = 0  # unrelated roots in the CA file


def _window(kind: str, default_days: int) -> tuple[dt.datetime, dt.datetime]:
    if kind == "expired":
        return AT - 400 * DAY, AT - DAY
    if kind == "future":
        return AT + DAY, AT + 400 * DAY
    return AT - 2 * DAY, AT + default_days * DAY


# --- SHA-1 certificates: cryptography 50 refuses to sign with SHA-1, the openssl CLI does not --


def _pem_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _openssl(*args: str | Path) -> None:
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True)


def _sha1_signed(
    folder: Path, cn: str, key: devca.PrivateKey, issuer: devca.Issued | None, *, ca: bool
) -> devca.Issued:
    """A certificate for ``key`` signed with SHA-1 by ``issuer`` (self-signed when None)."""
    folder.mkdir(parents=True, exist_ok=True)
    key_file = _pem_file(folder, f"{cn}.key", devca.key_pem(key))
    csr = folder / f"{cn}.csr"
    _openssl("req", "-new", "-key", key_file, "-subj", f"/CN={cn}", "-out", csr)
    if ca:
        ext = (
            "basicConstraints=critical,CA:TRUE\n"
            "keyUsage=critical,digitalSignature,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\n"
        )
    else:
        ext = (
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName=DNS:{cn}\n"
        )
    if issuer is not None:
        ext += "authorityKeyIdentifier=keyid\n"
    ext_file = _pem_file(folder, f"{cn}.ext", b"[v3]\n" + ext.encode())
    out = folder / f"{cn}.pem"
    sign: list[str | Path] = ["-signkey", key_file]
    if issuer is not None:
        issuer_pem = _pem_file(folder, f"{cn}.issuer.pem", issuer.cert_pem)
        issuer_key = _pem_file(folder, f"{cn}.issuer.key", issuer.key_pem)
        sign = ["-CA", issuer_pem, "-CAkey", issuer_key, "-set_serial", "4242"]
    _openssl(
        "x509", "-req", "-in", csr, *sign, "-days", "30", "-sha1",
        "-extfile", ext_file, "-extensions", "v3", "-out", out,
    )  # fmt: skip
    return devca.Issued(x509.load_pem_x509_certificate(out.read_bytes()), key)


# --- building a case's files ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Files:
    leaf: Path  # the leaf alone, for openssl
    untrusted: Path | None  # what follows the leaf in the certificate file, for -untrusted
    cert: Path  # leaf + chain: the certificate file as Harper reads it
    key: Path
    ca: Path


def _build(case: Case, folder: Path) -> Files:
    """Issue the case's certificates and write its files under ``folder``."""
    sha1_dir = folder / "sha1"
    root_key = _key("rsa-2048" if case.sha1 else case.root_key, SLOT_ROOT)
    root_before, root_after = _window(case.root_time, 3650)
    if case.sha1 == "root":
        root = _sha1_signed(sha1_dir, "differential root", root_key, None, ca=True)
    else:
        root = devca.make_ca(
            "differential root", key=root_key, not_before=root_before, not_after=root_after
        )

    chain = [root]  # top-down
    for level in range(1, case.depth):
        lowest = level == case.depth - 1
        before, after = _window(case.ca_time if lowest else "ok", 1825)
        int_key = _key("rsa-2048" if case.sha1 else case.ca_key, SLOT_INTERMEDIATE + level)
        cn = f"differential intermediate {level}"
        if lowest and case.sha1 == "intermediate":
            chain.append(_sha1_signed(sha1_dir, cn, int_key, chain[-1], ca=True))
            continue
        if lowest and case.issuer_not_a_ca:
            chain.append(devca.make_leaf(chain[-1], cn, key=int_key, eku=None, san=False))
            continue
        chain.append(
            devca.make_ca(
                cn,
                parent=chain[-1],
                key=int_key,
                not_before=before,
                not_after=after,
                path_length=case.path_length if level == 1 else None,
                eku=case.ca_eku if lowest else None,
            )
        )

    leaf_key = _key("rsa-2048" if case.sha1 == "leaf" else case.leaf_key, SLOT_LEAF)
    if case.sha1 == "leaf":
        leaf = _sha1_signed(sha1_dir, "nodea", leaf_key, chain[-1], ca=False)
    else:
        before, after = _window(case.leaf_time, 90)
        leaf = devca.make_leaf(
            chain[-1],
            "nodea",
            dns=case.dns,
            ips=("10.0.0.7",) if case.san else (),
            san=case.san,
            eku=case.leaf_eku,
            key=leaf_key,
            not_before=before,
            not_after=after,
            is_ca=case.leaf_is_ca,
            digital_signature=not case.key_encipherment_only,
            key_encipherment=case.key_encipherment_only,
        )

    intermediates = chain[1:]
    in_cert: list[devca.Issued] = []
    in_ca: list[devca.Issued] = []
    if case.intermediates == "cert":
        in_cert = intermediates[::-1]
    elif case.intermediates == "ca":
        # The leaf's issuer first, then up to the root: what Harper's replication needs
        # (ca_file_issuer_not_first); openssl verify takes any order.
        in_ca = intermediates[::-1]
    elif case.intermediates == "split":
        in_cert, in_ca = intermediates[-1:], intermediates[:-1]
    else:
        assert case.intermediates == "missing", case.intermediates

    other_root = devca.make_ca("differential other root", key=_key("ec-256", SLOT_OTHER_ROOT))
    if case.root == "ca":
        in_ca.append(root)
    elif case.root == "both":
        in_ca.append(root)
        in_cert.append(root)
    elif case.root == "wrong":
        impostor = devca.make_ca("differential root", key=_key("ec-256", SLOT_WRONG_ROOT))
        in_ca.insert(0, impostor)
    elif case.root == "cert":
        in_cert.append(root)
        in_ca.insert(0, other_root)
    else:
        assert case.root == "missing", case.root
        if not in_ca:
            in_ca.append(other_root)  # an empty CA file is unreadable, not "root missing"
    if case.renewed_root:
        before, after = _window("expired", 0)
        first_issue = devca.make_ca(
            "differential root", key=root_key, not_before=before, not_after=after
        )
        in_ca.insert(0, first_issue)  # ahead of the current issue
    for index in range(case.extra_roots):
        stranger = devca.make_ca(f"stranger root {index}", key=_key("ec-256", SLOT_EXTRA_ROOT))
        in_ca.insert(0, stranger)

    key = _key("ec-256", SLOT_STRAY_KEY) if case.wrong_key_file else leaf.key
    folder.mkdir(parents=True, exist_ok=True)
    untrusted = None
    if in_cert:
        untrusted = _pem_file(folder, "untrusted.pem", b"".join(c.cert_pem for c in in_cert))
    return Files(
        leaf=_pem_file(folder, "leaf.pem", leaf.cert_pem),
        untrusted=untrusted,
        cert=_pem_file(
            folder, "certificate.pem", leaf.cert_pem + b"".join(c.cert_pem for c in in_cert)
        ),
        key=_pem_file(
            folder,
            "privateKey.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        ca=_pem_file(folder, "ca.pem", b"".join(c.cert_pem for c in in_ca)),
    )


# --- the two judges ---------------------------------------------------------------------------

OPENSSL_PURPOSES: dict[Purpose, tuple[str, ...]] = {
    Purpose.CLUSTER: ("sslserver", "sslclient"),  # a cluster node is both: both must accept
    Purpose.SERVER: ("sslserver",),
    Purpose.CLIENT: ("sslclient",),
}
_ERROR = re.compile(r"error (\d+) at (\d+) depth lookup: ?(.*)")


@dataclass(frozen=True, slots=True)
class OpensslVerdict:
    purpose: str
    ok: bool
    error: str  # "" when ok; "error N at D: reason" or the last line of output


def openssl_verify(files: Files, purpose: str, hostnames: Sequence[str]) -> OpensslVerdict:
    argv = [OPENSSL, "verify", "-CAfile", str(files.ca)]
    if files.untrusted is not None:
        argv += ["-untrusted", str(files.untrusted)]
    argv += ["-purpose", purpose, "-attime", str(int(AT.timestamp()))]
    for name in hostnames:
        is_ip = name.replace(".", "").isdigit() or ":" in name
        argv += ["-verify_ip" if is_ip else "-verify_hostname", name]
    argv.append(str(files.leaf))
    run = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    output = run.stdout + run.stderr
    if run.returncode == 0 and run.stdout.strip().endswith(": OK"):
        return OpensslVerdict(purpose, ok=True, error="")
    errors = [m for m in (_ERROR.search(line) for line in output.splitlines()) if m]
    if errors:
        number, depth, reason = errors[0].groups()
        return OpensslVerdict(purpose, ok=False, error=f"error {number} at {depth}: {reason}")
    lines = [line for line in output.splitlines() if line.strip()]
    return OpensslVerdict(purpose, ok=False, error=lines[-1] if lines else f"rc {run.returncode}")


@dataclass(frozen=True, slots=True)
class Outcome:
    case: Case
    openssl: tuple[OpensslVerdict, ...]
    report: Report

    @property
    def openssl_ok(self) -> bool:
        return all(v.ok for v in self.openssl)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.report.problems if p.severity is Severity.ERROR)

    @property
    def kind(self) -> str:
        """agree | policy | unexplained."""
        if self.openssl_ok == self.report.valid:
            return "agree"
        if self.openssl_ok and all(code in POLICY_DIVERGENCES for code in self.errors):
            return "policy"
        return "unexplained"

    def describe(self) -> str:
        ssl = "; ".join(f"{v.purpose}: {'OK' if v.ok else v.error}" for v in self.openssl)
        ours = "valid" if self.report.valid else ", ".join(self.errors)
        details = " | ".join(p.message for p in self.report.problems if p.code in self.errors)
        return f"{self.case.name}: openssl [{ssl}] vs harper-certd [{ours}] {details}".rstrip()


def judge(case: Case, folder: Path) -> Outcome:
    files = _build(case, folder)
    verdicts = tuple(
        openssl_verify(files, p, case.hostnames) for p in OPENSSL_PURPOSES[case.purpose]
    )
    report = validate(
        Inputs(cert=files.cert.read_bytes(), key=files.key.read_bytes(), ca=files.ca.read_bytes()),
        judge=judging.MODEL,
        at=AT,
        purpose=case.purpose,
        hostnames=case.hostnames,
    )
    return Outcome(case, verdicts, report)


# --- the matrix -------------------------------------------------------------------------------


def _matrix() -> list[Case]:
    cases: list[Case] = []
    # Chain shapes: depth x where the intermediates are x where the root is.
    for depth in (1, 2, 3):
        for where in ("cert", "ca", "missing") if depth > 1 else ("cert",):
            for root in ("ca", "missing", "wrong"):
                name = f"depth{depth}-root_{root}"
                if depth > 1:
                    name = f"depth{depth}-intermediates_in_{where}-root_{root}"
                cases.append(Case(name, depth=depth, intermediates=where, root=root))
    cases += [
        Case("depth3-intermediates_split-root_ca", depth=3, intermediates="split"),
        Case("depth3-intermediates_split-root_missing", depth=3, intermediates="split",
             root="missing"),
        Case("depth2-root_only_in_cert_file", root="cert"),
        Case("depth2-root_in_cert_and_ca_files", root="both"),
        Case("depth1-root_only_in_cert_file", depth=1, root="cert"),
        Case("depth2-ca_file_with_5_stranger_roots", extra_roots=5),
    ]  # fmt: skip
    # Time.
    cases += [
        Case("expired_leaf", leaf_time="expired"),
        Case("not_yet_valid_leaf", leaf_time="future"),
        Case("expired_intermediate", ca_time="expired"),
        Case("not_yet_valid_intermediate", ca_time="future"),
        Case("expired_intermediate-depth3", depth=3, ca_time="expired"),
        Case("expired_root", root_time="expired"),
        Case("expired_root-depth1", depth=1, root_time="expired"),
        Case("expired_leaf-and-missing_root", leaf_time="expired", root="missing"),
    ]
    # Extended Key Usage of the leaf, for each purpose.
    ekus: dict[str, tuple[x509.ObjectIdentifier, ...] | None] = {
        "both": BOTH,
        "server_only": (SERVER,),
        "client_only": (CLIENT,),
        "none": None,
        "any_only": (ANY_EKU,),
        "any_and_both": (ANY_EKU, *BOTH),
    }
    for label, eku in ekus.items():
        for purpose in Purpose:
            cases.append(Case(f"leaf_eku_{label}-{purpose.value}", purpose=purpose, leaf_eku=eku))
    # Extended Key Usage of the intermediate: openssl -purpose checks CAs too.
    for label, eku in {"server_only": (SERVER,), "client_only": (CLIENT,), "both": BOTH}.items():
        for purpose in Purpose:
            cases.append(Case(f"ca_eku_{label}-{purpose.value}", purpose=purpose, ca_eku=eku))
    for purpose in Purpose:
        cases.append(Case(f"ca_eku_any_only-{purpose.value}", purpose=purpose, ca_eku=(ANY_EKU,)))
    cases.append(Case("ca_eku_any_and_both-cluster", ca_eku=(ANY_EKU, *BOTH)))
    # Key types of the leaf, of the intermediate, of the root.
    for kind in KEY_KINDS:
        cases.append(Case(f"leaf_key_{kind}", leaf_key=kind))
    for kind in ("rsa-2048", "rsa-1024", "ec-384", "ec-521", "ed25519"):
        cases.append(Case(f"intermediate_key_{kind}", ca_key=kind))
    for kind in ("rsa-2048", "rsa-1024", "ed25519"):
        cases.append(Case(f"root_key_{kind}", root_key=kind))
    cases.append(
        Case(
            "all_rsa-2048-depth3",
            depth=3,
            leaf_key="rsa-2048",
            ca_key="rsa-2048",
            root_key="rsa-2048",
        )
    )
    # Key Usage keyEncipherment only: RSA key transport (TLS 1.2), no signatures.
    for kind in ("rsa-2048", "ec-256"):
        for purpose in Purpose:
            cases.append(
                Case(
                    f"leaf_key_encipherment_only-{kind}-{purpose.value}",
                    purpose=purpose,
                    leaf_key=kind,
                    key_encipherment_only=True,
                )
            )
    # CA leaf, a leaf as issuer, SHA-1, path length, renewed root, the key file.
    cases += [
        Case("leaf_is_ca", leaf_is_ca=True),
        Case("leaf_is_ca-depth1", depth=1, leaf_is_ca=True),
        Case("issuer_is_an_end_entity", issuer_not_a_ca=True),
        Case("sha1_leaf", sha1="leaf"),
        Case("sha1_intermediate", sha1="intermediate"),
        Case("sha1_root_self_signature", sha1="root"),
        Case("pathlen0_with_sub_intermediate", depth=3, path_length=0),
        Case("pathlen0_with_sub_intermediate-in_ca", depth=3, path_length=0, intermediates="ca"),
        Case("pathlen1_with_sub_intermediate", depth=3, path_length=1),
        Case("pathlen0_signing_the_leaf", depth=2, path_length=0),
        Case("expired_intermediate-in_ca", ca_time="expired", intermediates="ca"),
        Case("ca_file_with_expired_first_issue_of_root", renewed_root=True),
        Case("key_file_of_another_key", wrong_key_file=True),
    ]
    # Host names (openssl -verify_hostname / -verify_ip).
    cases += [
        Case("hostname_in_san", hostnames=("nodea",)),
        Case("hostname_not_in_san", hostnames=("nodeb",)),
        Case("ip_in_san", hostnames=("10.0.0.7",)),
        Case("ip_not_in_san", hostnames=("10.0.0.8",)),
        Case("cn_only-hostname_is_cn", san=False, hostnames=("nodea",)),
        Case("cn_only-hostname_is_not_cn", san=False, hostnames=("nodeb",)),
        Case("ip_san_only-hostname_is_cn", dns=(), hostnames=("nodea",)),
        Case("wildcard-one_label", dns=("*.cluster.example",),
             hostnames=("nodea.cluster.example",)),
        Case("wildcard-two_labels", dns=("*.cluster.example",),
             hostnames=("a.nodea.cluster.example",)),
        Case("wildcard-apex", dns=("*.cluster.example",), hostnames=("cluster.example",)),
        Case("wildcard-over_two_label_name", dns=("*.example",), hostnames=("nodea.example",)),
        Case("wildcard-partial_label", dns=("node*.cluster.example",),
             hostnames=("nodea.cluster.example",)),
        Case("hostname_case_insensitive", dns=("NodeA.Cluster.Example",),
             hostnames=("nodea.cluster.example",)),
    ]  # fmt: skip
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


CASES = _matrix()

# Divergences that are validator bugs (reported; daemon/ is not this test's to change).
_ANY_EKU_CA = (
    "validator accepts a CA whose EKU is only anyExtendedKeyUsage; OpenSSL 3.0 refuses it for "
    "sslserver and sslclient (error 26 at depth 1), and so do Node's TLS handshakes"
)
_ED25519_CA = (
    "chain_invalid: cryptography's web-PKI verifier forbids Ed25519 CA keys ('Forbidden public "
    "key algorithm'); OpenSSL (and Node) accept Ed25519 CAs, and the validator Ed25519 leaves"
)
_KEY_ENCIPHERMENT = (
    "check_key_usage accepts RSA keyEncipherment without digitalSignature for every purpose; "
    "a TLS client signs CertificateVerify, and OpenSSL's sslclient purpose refuses (error 26)"
)
_CA_LEAF = (
    "beside leaf_is_ca, an extra chain_invalid ('EE keyUsage must not assert keyCertSign', "
    "cryptography's EE policy) for a chain OpenSSL accepts"
)
_SHA1 = (
    "cryptography 50's verify_directly_issued_by raises ValueError on SHA-1 signatures; "
    "_signed_by reads it as 'another key', so chain_invalid (a different CA of the same name) "
    "instead of only weak_signature"
)
KNOWN_ISSUES: dict[str, str] = {}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every case judged once per module, by name."""
    base = tmp_path_factory.mktemp("differential")
    return {case.name: judge(case, base / case.name) for case in CASES}


def _params() -> list[object]:
    return [
        pytest.param(
            case,
            id=case.name,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_ISSUES[case.name])]
            if case.name in KNOWN_ISSUES
            else [],
        )
        for case in CASES
    ]


@pytest.mark.parametrize("case", _params())
def test_same_verdict_as_openssl_or_documented_policy(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    """The validator agrees with openssl verify on this set, or refuses it for a policy code."""
    outcome = outcomes[case.name]
    assert outcome.kind != "unexplained", outcome.describe()


def test_harness_openssl_accepts_a_good_set(outcomes: dict[str, Outcome]) -> None:
    """The openssl invocation itself accepts a sound set, so agreement is not vacuous."""
    # A leaf issued by the root, the root in the CA file: sound for every purpose (with an
    # intermediate, this matrix's CA files start with the root: ca_file_issuer_not_first).
    good = outcomes["depth1-root_ca"]
    assert good.openssl_ok, good.describe()
    assert good.report.valid, good.describe()


def test_matrix_summary(outcomes: dict[str, Outcome], capsys: pytest.CaptureFixture[str]) -> None:
    """The whole matrix has no divergence other than documented policy and reported issues."""
    kinds = Counter(o.kind for o in outcomes.values())
    by_code: Counter[str] = Counter()
    for outcome in outcomes.values():
        if outcome.kind == "policy":
            by_code.update(set(outcome.errors))
    known = [o for o in outcomes.values() if o.case.name in KNOWN_ISSUES]
    unexplained = [
        o for o in outcomes.values() if o.kind == "unexplained" and o.case.name not in KNOWN_ISSUES
    ]
    both_refuse = sum(1 for o in outcomes.values() if o.kind == "agree" and not o.openssl_ok)
    lines = [
        f"openssl differential: {len(outcomes)} sets, {kinds['agree']} agree "
        f"({kinds['agree'] - both_refuse} both accept, {both_refuse} both refuse), "
        f"{kinds['policy']} policy divergences, {len(known)} known issues, "
        f"{len(unexplained)} unexplained",
        *(f"  policy {code}: {n}" for code, n in sorted(by_code.items())),
        *(f"  known issue {o.describe()}" for o in known),
        *(f"  UNEXPLAINED {o.describe()}" for o in unexplained),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert len(outcomes) >= 40
    assert set(KNOWN_ISSUES) <= set(outcomes), "a known issue names no case"
    assert kinds["agree"] > 0
    assert not unexplained, "\n".join(o.describe() for o in unexplained)
