"""The validator against real certificates: every code from a real case, and good sets pass."""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import fuzz_cases
import rootsfix
from harper_certd import devca, judge
from harper_certd.problems import CODES, VALIDATION_CODES, Severity
from harper_certd.roles import Purpose, SetPaths
from harper_certd.validate import Inputs, Report, validate, validate_files

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


@dataclass(frozen=True, slots=True)
class Pki:
    root: devca.Issued
    inter: devca.Issued
    leaf: devca.Issued  # issued by inter, both EKUs, DNS:nodea IP:127.0.0.2

    def inputs(
        self,
        leaf: devca.Issued | None = None,
        *,
        chain: tuple[devca.Issued, ...] | None = None,
        cas: tuple[devca.Issued, ...] | None = None,
        key: bytes | None = None,
    ) -> Inputs:
        leaf = leaf or self.leaf
        chain = (self.inter,) if chain is None else chain
        # The CA file starts with the leaf's issuer: Harper's replication peers need that
        # (ca_file_issuer_not_first; tests/test_replication_sets.py).
        cas = (*chain, self.root) if cas is None else cas
        return Inputs(
            cert=leaf.cert_pem + b"".join(c.cert_pem for c in chain),
            key=leaf.key_pem if key is None else key,
            ca=b"".join(c.cert_pem for c in cas),
        )


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = devca.make_ca("Test Root")
    inter = devca.make_ca("Test Intermediate", parent=root)
    leaf = devca.make_leaf(inter, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    return Pki(root, inter, leaf)


def run(inputs: Inputs, **kwargs: object) -> Report:
    """The model's verdict (these tests pin the model's codes; Node's is test_judge's)."""
    kwargs.setdefault("judge", judge.MODEL)
    return validate(inputs, at=NOW, **kwargs)  # type: ignore[arg-type]


def errors(report: Report) -> set[str]:
    return {p.code for p in report.problems if p.severity is Severity.ERROR}


def warnings_of(report: Report) -> set[str]:
    return {p.code for p in report.problems if p.severity is Severity.WARNING}


# --- good sets ---------------------------------------------------------------------


def test_typical_cluster_set_is_valid(pki: Pki) -> None:
    """Leaf + intermediate in the certificate file, root + intermediate in the CA file."""
    report = run(pki.inputs(), hostnames=["nodea", "127.0.0.2"])
    assert report.valid, report.problems
    assert report.problems == ()
    assert [c.subject for c in report.chain] == [
        "CN=nodea",
        "CN=Test Intermediate",
        "CN=Test Root",
    ]
    assert report.certificate is not None
    assert report.certificate.sha256 == devca.fingerprint_of(pki.leaf.cert)


@pytest.mark.parametrize(
    ("chain", "cas", "cluster_ok"),
    [
        ((), ("inter", "root"), True),
        ((), ("root", "inter"), False),
        (("inter",), ("root", "inter"), False),
        (("inter",), ("inter", "root"), True),
        (("inter",), ("root",), False),
    ],
)
def test_intermediates_from_either_file_in_any_order(
    pki: Pki, chain: tuple[str, ...], cas: tuple[str, ...], cluster_ok: bool
) -> None:
    """HTTPS sets: intermediates after the leaf or in the CA file, in any order.  Replication
    sets: the CA file must start with the leaf's issuer (measured on two real Harper nodes:
    tests/test_replication_sets.py)."""
    named = {"inter": pki.inter, "root": pki.root}
    inputs = pki.inputs(chain=tuple(named[n] for n in chain), cas=tuple(named[n] for n in cas))
    server = run(inputs, purpose=Purpose.SERVER)
    assert server.valid, server.problems
    assert run(inputs).valid, "Node's verdict for the files: any order"
    cluster = run(inputs, replication=True)
    assert cluster.valid is cluster_ok, cluster.problems
    if not cluster_ok:
        assert errors(cluster) == {"ca_file_issuer_not_first"}


@pytest.mark.parametrize(
    ("kind", "size", "fmt"),
    [
        ("rsa", 2048, serialization.PrivateFormat.TraditionalOpenSSL),  # PKCS#1
        ("rsa", 3072, serialization.PrivateFormat.PKCS8),
        ("ec", 256, serialization.PrivateFormat.TraditionalOpenSSL),  # SEC1
        ("ec", 384, serialization.PrivateFormat.PKCS8),
        ("ed25519", 0, serialization.PrivateFormat.PKCS8),
    ],
)
def test_every_key_type_and_pem_format(
    pki: Pki, kind: str, size: int, fmt: serialization.PrivateFormat
) -> None:
    """RSA, ECDSA and Ed25519 keys in PKCS#1, SEC1 and PKCS#8 PEM are all accepted."""
    key = devca.make_key(kind, size)
    leaf = devca.make_leaf(pki.inter, key=key)
    report = run(pki.inputs(leaf, key=devca.key_pem(key, fmt)))
    assert report.valid, report.problems


def test_self_signed_node_certificate_trusted_as_itself(pki: Pki) -> None:
    """A self-signed end-entity certificate listed in the CA file is accepted, as OpenSSL does."""
    leaf = devca.make_self_signed_leaf("nodea")
    report = run(Inputs(leaf.cert_pem, leaf.key_pem, leaf.cert_pem), hostnames=["nodea"])
    assert report.valid, report.problems
    assert [c.subject for c in report.chain] == ["CN=nodea"]


def test_ca_file_with_150_roots(pki: Pki) -> None:
    """Many unrelated roots in the CA file do not change the verdict."""
    others = tuple(devca.make_ca(f"Other Root {i}") for i in range(150))
    report = run(pki.inputs(cas=(pki.inter, *others[:75], pki.root, *others[75:])))
    assert report.valid, report.problems
    assert len(report.ca_file) == 152


def test_single_purpose_leaves(pki: Pki) -> None:
    """Server-only and client-only EKUs pass their own purpose; no EKU passes server purpose."""
    server_only = devca.make_leaf(pki.inter, eku=[SERVER])
    client_only = devca.make_leaf(pki.inter, eku=[CLIENT])
    no_eku = devca.make_leaf(pki.inter, eku=None)
    assert run(pki.inputs(server_only), purpose=Purpose.SERVER).valid
    assert run(pki.inputs(client_only), purpose=Purpose.CLIENT).valid
    assert run(pki.inputs(no_eku), purpose=Purpose.SERVER).valid


def test_hostname_rules_follow_node(pki: Pki) -> None:
    """IPs match IP SANs, names DNS SANs, wildcards a whole label, CN only without SAN."""
    wild = devca.make_leaf(pki.inter, "nodes", dns=["*.cluster.example"])
    cn_only = devca.make_leaf(pki.inter, "nodeb", san=False)
    ip_only = devca.make_leaf(pki.inter, "nodec", dns=[], ips=["127.0.0.3"])
    assert run(pki.inputs(wild), hostnames=["a.cluster.example"]).valid
    assert not run(pki.inputs(wild), hostnames=["a.b.cluster.example"]).valid
    assert run(pki.inputs(cn_only), hostnames=["NodeB."]).valid
    assert run(pki.inputs(ip_only), hostnames=["127.0.0.3"]).valid
    # With an IP SAN present, the CN is not consulted (Node ignores it too).
    assert "hostname_mismatch" in errors(run(pki.inputs(ip_only), hostnames=["nodec"]))
    assert "hostname_mismatch" in errors(run(pki.inputs(), hostnames=["127.0.0.9"]))


# --- one real case per code ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    code: str
    make: Callable[[Pki, Path], Report]


def _files(tmp: Path, cert: bytes, key: bytes, ca: bytes, key_mode: int = 0o600) -> SetPaths:
    paths = SetPaths(tmp / "certificate.pem", tmp / "privateKey.pem", tmp / "ca.pem")
    paths.cert.write_bytes(cert)
    devca.write_private(paths.key, key, key_mode)
    (tmp / "ca.pem").write_bytes(ca)
    return paths


def _from_files(pki: Pki, tmp: Path, **overrides: bytes | int) -> Report:
    base = pki.inputs()
    assert isinstance(base.cert, bytes)
    assert isinstance(base.key, bytes)
    assert isinstance(base.ca, bytes)
    cert = overrides.get("cert", base.cert)
    key = overrides.get("key", base.key)
    ca = overrides.get("ca", base.ca)
    mode = overrides.get("key_mode", 0o600)
    assert isinstance(cert, bytes)
    assert isinstance(key, bytes)
    assert isinstance(ca, bytes)
    assert isinstance(mode, int)
    return validate_files(_files(tmp, cert, key, ca, mode), at=NOW)


def _der(pki: Pki) -> bytes:
    return pki.leaf.cert.public_bytes(serialization.Encoding.DER)


def _encrypted_key(pki: Pki) -> bytes:
    return pki.leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def _expired_intermediate(pki: Pki) -> Report:
    old = devca.make_ca(
        "Old Intermediate", parent=pki.root, not_before=NOW - 400 * DAY, not_after=NOW - DAY
    )
    leaf = devca.make_leaf(old, not_before=NOW - 10 * DAY, not_after=NOW + 60 * DAY)
    return run(pki.inputs(leaf, chain=(old,)))


def _impostor_root(pki: Pki) -> Report:
    # Same name as the real root, another key: the name chain exists, the signature does not.
    impostor = devca.make_ca("Test Root")
    return run(pki.inputs(cas=(impostor,)))


def _sha1_leaf(pki: Pki, tmp: Path) -> devca.Issued:
    # cryptography no longer signs with SHA-1; the openssl command still does.
    key = devca.make_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nodea")]))
        .sign(key, hashes.SHA256())
    )
    (tmp / "csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (tmp / "ca.pem").write_bytes(pki.inter.cert_pem)
    devca.write_private(tmp / "ca.key", pki.inter.key_pem)
    (tmp / "ext.cnf").write_text(
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:nodea\n"
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-sha1",
            "-days",
            "30",
            "-in",
            str(tmp / "csr.pem"),
            "-CA",
            str(tmp / "ca.pem"),
            "-CAkey",
            str(tmp / "ca.key"),
            "-CAcreateserial",
            "-extfile",
            str(tmp / "ext.cnf"),
            "-out",
            str(tmp / "leaf.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return devca.Issued(x509.load_pem_x509_certificate((tmp / "leaf.pem").read_bytes()), key)


def _server_only_trust(p: Pki, tmp: Path) -> Report:
    """The root as a TRUSTED CERTIFICATE trusted for serverAuth only (real openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not on PATH")
    (tmp / "root.pem").write_bytes(p.root.cert_pem)
    trusted = subprocess.run(
        ["openssl", "x509", "-in", str(tmp / "root.pem"), "-trustout", "-addtrust", "serverAuth"],
        capture_output=True,
        check=True,
    ).stdout
    return run(Inputs(p.inputs().cert, p.leaf.key_pem, p.inter.cert_pem + trusted))


@functools.cache
def _excluding_root() -> devca.Issued:
    """A root whose name constraints exclude bar.example.com (CVE-2025-61727's kind)."""
    key = devca.make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "excluding root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 100 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.NameConstraints(None, [x509.DNSName("bar.example.com")]), critical=True)
        .sign(key, hashes.SHA256())
    )
    return devca.Issued(cert, key)


CASES = [
    Case("cert_unreadable", lambda p, t: _from_files(p, t, cert=_der(p))),
    Case("cert_unreadable", lambda p, t: _from_files(p, t, cert=b"hello\n")),
    Case("cert_unreadable", lambda p, t: _from_files(p, t, cert=p.leaf.cert_pem[:300])),
    Case("cert_unreadable", lambda p, t: _from_files(p, t, cert=p.leaf.key_pem)),
    Case("cert_unreadable", lambda p, t: _from_files(p, t, cert=b"A" * ((1 << 20) + 1))),
    Case("key_unreadable", lambda p, t: _from_files(p, t, key=_encrypted_key(p))),
    Case("key_unreadable", lambda p, t: _from_files(p, t, key=p.leaf.cert_pem)),
    Case("key_unreadable", lambda p, t: _from_files(p, t, key=b"")),
    Case("ca_unreadable", lambda p, t: _from_files(p, t, ca=p.root.cert_pem[:-40])),
    Case("ca_unreadable", lambda p, t: _from_files(p, t, ca=b"\x30\x82\x01\x00")),
    Case("key_mismatch", lambda p, t: run(p.inputs(key=devca.make_leaf(p.inter).key_pem))),
    Case("eku_missing", lambda p, t: run(p.inputs(devca.make_leaf(p.inter, eku=[SERVER])))),
    Case("eku_missing", lambda p, t: run(p.inputs(devca.make_leaf(p.inter, eku=None)))),
    Case(
        "eku_any",
        lambda p, t: run(
            p.inputs(
                devca.make_leaf(
                    p.inter, eku=[SERVER, CLIENT, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]
                )
            )
        ),
    ),
    Case(
        "key_usage_invalid",
        lambda p, t: run(
            p.inputs(devca.make_leaf(p.inter, digital_signature=False, key_encipherment=True))
        ),
    ),
    Case("chain_incomplete", lambda p, t: run(p.inputs(chain=()))),
    Case("chain_incomplete", lambda p, t: run(p.inputs(chain=(), cas=(p.inter,)))),
    Case("chain_invalid", lambda p, t: _impostor_root(p)),
    Case(
        "chain_invalid",
        lambda p, t: run(
            p.inputs(
                devca.make_leaf(ca2 := devca.make_ca("I2", parent=p.root, eku=[SERVER])),
                chain=(ca2,),
            )
        ),
    ),
    Case("ca_expired", lambda p, t: _expired_intermediate(p)),
    Case(
        "ca_not_yet_valid",
        lambda p, t: run(
            p.inputs(
                devca.make_leaf(
                    ca3 := devca.make_ca("Future", parent=p.root, not_before=NOW + DAY)
                ),
                chain=(ca3,),
            )
        ),
    ),
    Case(
        "not_yet_valid",
        lambda p, t: run(p.inputs(devca.make_leaf(p.inter, not_before=NOW + DAY))),
    ),
    Case(
        "expired",
        lambda p, t: run(
            p.inputs(devca.make_leaf(p.inter, not_before=NOW - 9 * DAY, not_after=NOW - DAY))
        ),
    ),
    Case("hostname_mismatch", lambda p, t: run(p.inputs(), hostnames=["nodeb"])),
    Case(
        "name_constraint_wildcard",
        lambda p, t: run(
            Inputs(
                (leaf := devca.make_leaf(_excluding_root(), "w", dns=["*.example.com"])).cert_pem,
                leaf.key_pem,
                _excluding_root().cert_pem,
            )
        ),
    ),
    Case(
        "hostname_partial_wildcard",
        lambda p, t: run(
            p.inputs(devca.make_leaf(p.inter, "nodea", dns=["no*.example.com"])),
            hostnames=["nodea.example.com"],
        ),
    ),
    Case(
        # Valid for the name by Node's rules (a wildcard), but not Harper's exact lookup.
        "node_name_not_verbatim",
        lambda p, t: run(
            p.inputs(devca.make_leaf(p.inter, "nodes", dns=["*.cluster.test"])),
            hostnames=["nodea.cluster.test"],
            node_names=["nodea.cluster.test"],
        ),
    ),
    Case(
        "node_name_not_verbatim",
        lambda p, t: run(
            p.inputs(devca.make_leaf(p.inter, "n", dns=["NODEA.cluster.test"])),
            node_names=["nodea.cluster.test"],
        ),
    ),
    Case("leaf_is_ca", lambda p, t: run(p.inputs(devca.make_leaf(p.inter, is_ca=True)))),
    Case(
        "weak_key",
        lambda p, t: run(p.inputs(devca.make_leaf(p.inter, key=devca.make_key("rsa", 1024)))),
    ),
    Case("weak_signature", lambda p, t: run(p.inputs(_sha1_leaf(p, t)))),
    Case(
        "expires_soon",
        lambda p, t: run(p.inputs(devca.make_leaf(p.inter, not_after=NOW + 5 * DAY))),
    ),
    Case(
        "ca_expires_soon",
        lambda p, t: run(
            p.inputs(
                devca.make_leaf(
                    ca4 := devca.make_ca("Short", parent=p.root, not_after=NOW + 10 * DAY),
                    not_after=NOW + 9 * DAY,
                ),
                chain=(ca4,),
            )
        ),
    ),
    Case(
        "ca_file_expired_entry",
        lambda p, t: run(
            p.inputs(
                cas=(
                    p.inter,
                    p.root,
                    devca.make_ca("Gone", not_before=NOW - 9 * DAY, not_after=NOW - DAY),
                )
            )
        ),
    ),
    Case("key_permissions", lambda p, t: _from_files(p, t, key_mode=0o644)),
    Case(
        "key_in_cert_file",
        lambda p, t: _from_files(p, t, cert=p.leaf.cert_pem + p.inter.cert_pem + p.leaf.key_pem),
    ),
    Case(
        "url_host_mismatch",
        lambda p, t: run(
            p.inputs(devca.make_leaf(p.inter, "nodea", dns=["nodea"])), url_hosts=["127.0.0.9"]
        ),
    ),
    Case(
        "leaf_not_first",
        lambda p, t: run(
            Inputs(
                p.inter.cert_pem + p.leaf.cert_pem,
                p.leaf.key_pem,
                p.root.cert_pem + p.inter.cert_pem,
            )
        ),
    ),
    Case("ca_file_issuer_not_first", lambda p, t: run(p.inputs(cas=(p.root,)), replication=True)),
    Case("ca_trust_rejected", _server_only_trust),
    # The issue's own fix (intermediate appended after the root) fails on real nodes too.
    Case(
        "ca_file_issuer_not_first",
        lambda p, t: run(p.inputs(cas=(p.root, p.inter)), node_names=["nodea"]),
    ),
    Case(
        "key_inconsistent",
        lambda p, t: run(
            p.inputs(
                rsa_leaf := devca.make_leaf(p.inter, key=devca.make_key("rsa", 2048)),
                key=fuzz_cases.damaged_rsa_key(rsa_leaf.key, "p+d"),  # type: ignore[arg-type]
            )
        ),
    ),
    Case(
        "key_type_unusable",
        lambda p, t: run(
            p.inputs(devca.make_leaf(p.inter, key=ec.generate_private_key(ec.SECP256K1())))
        ),
    ),
    Case(
        "chain_too_large",
        lambda p, t: run(
            Inputs(
                fuzz_cases.pem(fuzz_cases.many_san_leaf(_fuzz_base(p), 6000)) + p.inter.cert_pem,
                p.leaf.key_pem,
                p.inter.cert_pem + p.root.cert_pem,
            )
        ),
    ),
    Case(
        "ca_file_damaged_entry",
        # Named like the intermediate's issuer: an entry OpenSSL's lookup could pick.
        lambda p, t: run(p.inputs(cas=(p.inter, p.root, _malformed_root(p.root.cert.subject)))),
    ),
    # Only a bug produces check_failed; a caller passing a naive datetime is one.
    Case("check_failed", lambda p, t: validate(p.inputs(), at=dt.datetime(2026, 1, 1))),
    Case("cert_not_strict_der", lambda p, t: _field_case_22()),
    Case(
        "ca_names_too_large",
        # 850 roots with 64-character names: 79 bytes each in the CertificateRequest.
        lambda p, t: run(
            p.inputs()._replace(
                ca=p.inter.cert_pem
                + p.root.cert_pem
                + b"".join(rootsfix.root(f"{i:04d}" + "x" * 60) for i in range(850)),
            )
        ),
    ),
]


def _fuzz_base(p: Pki) -> fuzz_cases.Base:
    return fuzz_cases.Base("validate", p.root, p.inter, p.leaf)


def _field_case_22() -> Report:
    folder = Path(__file__).resolve().parents[2] / "shared/field-cases/formats"
    folder = folder / "22_explicit_default_boolean_leaf"
    if not folder.exists():
        pytest.skip(f"{folder} is not there (shared/ absent)")
    when = dt.datetime.fromisoformat("2026-11-29T09:00:00+00:00")
    cert, key, ca = (
        folder.joinpath(n).read_bytes() for n in ("certificate.pem", "privateKey.pem", "ca.pem")
    )
    return validate(Inputs(cert, key, ca), at=when)


@pytest.mark.parametrize(
    "case",
    CASES,
    ids=[f"{c.code}-{i}" for i, c in enumerate(CASES)],
)
def test_code_is_produced(case: Case, pki: Pki, tmp_path: Path) -> None:
    """Each case yields its code, with the catalogue's severity and a sentence."""
    report = case.make(pki, tmp_path)
    matching = [p for p in report.problems if p.code == case.code]
    assert matching, f"expected {case.code}, got {report.problems}"
    assert all(p.severity is CODES[case.code][0] for p in matching)
    assert all(len(p.message) > 20 for p in matching)
    assert report.valid is (CODES[case.code][0] is Severity.WARNING)


def test_every_catalogue_code_has_a_real_case() -> None:
    """No documented code is left without a test case that produces it (the two codes of
    Node's verdict over the model's come from real sets in tests/test_judge.py)."""
    from_node = {"node_refused", "model_disagrees"}
    assert {c.code for c in CASES} == VALIDATION_CODES - from_node


def test_expired_leaf_still_reports_its_chain(pki: Pki) -> None:
    """An expired leaf with a missing intermediate reports both problems, not only the first."""
    leaf = devca.make_leaf(pki.inter, not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    assert errors(run(pki.inputs(leaf, chain=()))) == {"expired", "chain_incomplete"}


def test_unreadable_messages_say_what_to_do(pki: Pki, tmp_path: Path) -> None:
    """DER input names the conversion; an encrypted key says Harper needs it unencrypted."""
    der = _from_files(pki, tmp_path, cert=_der(pki))
    assert any("openssl x509 -inform der" in p.message for p in der.problems)
    enc = _from_files(pki, tmp_path, key=_encrypted_key(pki))
    assert any("unencrypted" in p.message for p in enc.problems)


def test_missing_files_are_unreadable_not_crashes(tmp_path: Path) -> None:
    """Absent files give the three *_unreadable codes."""
    report = validate_files(SetPaths(tmp_path / "c", tmp_path / "k", tmp_path / "a"), at=NOW)
    assert errors(report) == {"cert_unreadable", "key_unreadable", "ca_unreadable"}


def test_symlink_in_group_writable_directory_is_refused(pki: Pki, tmp_path: Path) -> None:
    """A symlink inside a directory others can write is not followed."""
    real = _files(tmp_path, pki.leaf.cert_pem, pki.leaf.key_pem, pki.root.cert_pem)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # noqa: S103 - the unsafe directory is the case under test
    link = shared / "certificate.pem"
    link.symlink_to(real.cert)
    report = validate_files(SetPaths(link, real.key, real.ca), at=NOW)
    assert "cert_unreadable" in errors(report)
    assert any("symlink" in p.message for p in report.problems)


def test_fifo_is_refused_without_blocking(pki: Pki, tmp_path: Path) -> None:
    """A FIFO named as the key is refused at once instead of blocking the reader."""
    real = _files(tmp_path, pki.leaf.cert_pem, pki.leaf.key_pem, pki.root.cert_pem)
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    report = validate_files(SetPaths(real.cert, fifo, real.ca), at=NOW)
    assert "key_unreadable" in errors(report)


def _malformed_root(name: x509.Name | None = None) -> devca.Issued:
    key = devca.make_key()
    name = name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "malformed root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 100 * DAY)
        # A basicConstraints whose value is not DER: parsing the extensions fails.
        .add_extension(
            x509.UnrecognizedExtension(x509.oid.ExtensionOID.BASIC_CONSTRAINTS, b"\x01\x02"),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return devca.Issued(cert, key)


def test_malformed_root_in_ca_file_matters_only_when_used(pki: Pki) -> None:
    """A CA-file root with a malformed extension is ignored unless the chain needs it."""
    bad = _malformed_root()
    assert run(pki.inputs(cas=(pki.inter, bad, pki.root))).valid
    leaf = devca.make_leaf(bad)
    report = run(pki.inputs(leaf, chain=(), cas=(bad,)))
    assert errors(report) == {"chain_invalid"}
    assert "malformed extension" in report.problems[0].message


def test_replication_url_host_reaches_the_check(pki: Pki, tmp_path: Path) -> None:
    """The host of replication.url (not the node name) is checked as Node checks a dialled
    host: from Harper's configuration (discover -> check) and from `validate --url-host`."""
    from harper_certd import cli, discover
    from harper_certd.check import check_entry

    paths = devca.write_set(
        tmp_path / "keys", devca.make_leaf(pki.inter, "node1.example.test"), [pki.inter, pki.root]
    )
    tree = {
        "replication": {"hostname": "node1.example.test", "url": "wss://127.0.0.31:9933"},
        "tls": {
            "certificate": str(paths.cert),
            "privateKey": str(paths.key),
            "certificateAuthority": str(paths.ca),
        },
    }
    config = discover.parse(tree, tmp_path, tmp_path / "harperdb-config.yaml")
    (entry,) = config.file_entries()
    assert entry.url_hosts == ("127.0.0.31",)
    report = check_entry(entry, NOW, 30).report
    assert report is not None
    assert errors(report) == {"url_host_mismatch"}
    assert "IP:127.0.0.31" in report.problems[0].message
    argv = ["validate", "--cert", str(paths.cert), "--key", str(paths.key), "--ca", str(paths.ca)]
    argv.append("--json")
    assert cli.main(argv) == 0
    assert cli.main([*argv, "--url-host", "127.0.0.31"]) == 1
    assert cli.main([*argv, "--url-host", "node1.example.test"]) == 0


def test_pinned_library_texts_still_match() -> None:
    """cryptography's refusal texts that failure_text shortens are still what it says (an
    upgrade that changes them fails here, not silently in reports)."""
    from harper_certd.validate import chain as v

    root = devca.make_ca("Ed Root", key=devca.make_key("ed25519", 0))
    leaf = devca.make_leaf(root, "nodea")
    chain, failure = v.build_chain(leaf.cert, [], [root.cert], NOW, None, web_pki=True)
    assert chain == ()
    assert failure is not None
    assert "Forbidden public key algorithm" in failure or "Forbidden signature algorithm" in failure
    assert "web-PKI profile forbids" in v.failure_text(failure)
    # The same chain is OpenSSL's to accept: the own walk does.
    assert run(Inputs(leaf.cert_pem, leaf.key_pem, root.cert_pem)).valid


def _self_signed_root(subject: str, issuer: str) -> devca.Issued:
    key = devca.make_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 100 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return devca.Issued(cert, key)


def test_names_compare_as_openssl_compares_them() -> None:
    """A root whose issuer differs from its subject only in case and spacing is self-issued
    for OpenSSL (canonical name comparison), so it anchors the chain (found by the fuzz:
    Node accepted such a root, the validator did not)."""
    root = _self_signed_root("Case  Root", "case root")
    leaf = devca.make_leaf(root, "nodea")
    assert run(Inputs(leaf.cert_pem, leaf.key_pem, root.cert_pem)).valid


def test_authority_key_identifier_must_match() -> None:
    """An intermediate whose AKI names another key than its issuer's SKI: OpenSSL does not
    take that issuer (AKID_SKID_MISMATCH), although the signature verifies."""
    root = devca.make_ca("AKI Root")
    other = devca.make_key()
    inter_key = devca.make_key()
    inter = devca.Issued(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AKI Inter")]))
        .issuer_name(root.cert.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 100 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(other.public_key()),
            critical=False,
        )
        .sign(root.key, hashes.SHA256()),
        inter_key,
    )
    leaf = devca.make_leaf(inter, "nodea")
    report = run(
        Inputs(leaf.cert_pem + inter.cert_pem, leaf.key_pem, inter.cert_pem + root.cert_pem)
    )
    assert errors(report) == {"chain_invalid"}
    assert "Authority Key Identifier" in report.problems[0].message
