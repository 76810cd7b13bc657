"""Field cases (``../shared/field-cases/formats/``, read in place): the right verdict, the exact
code set and a message that names the cause.

Each case was judged by its author with a Node 20 mutual-TLS handshake, which is what the
``server`` purpose checks here (the node's own TLS; ``expected.json``'s ``right_behaviour``).
The ``cluster`` purpose's verdict is Node's.  A Harper node's replication set must also satisfy
Harper's own CA-file rule, measured on two real Harper 4.7.29 nodes
(tests/test_replication_sets.py): judged as one (``replication=True``, implied when the node
name is known), the cases whose CA file holds the root only get ``ca_file_issuer_not_first``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harper_certd import devca, judge
from harper_certd.problems import Severity
from harper_certd.roles import Purpose, SetPaths
from harper_certd.validate import Inputs, Report, read_set, validate

FIELD_CASES = Path(__file__).resolve().parents[2] / "shared" / "field-cases" / "formats"
pytestmark = pytest.mark.skipif(
    not FIELD_CASES.exists(), reason=f"{FIELD_CASES} is not there (shared/ absent)"
)


@dataclass(frozen=True)
class Expected:
    """Error codes per purpose (exact sets), warnings allowed, words the messages must hold."""

    cluster: frozenset[str]
    server: frozenset[str]
    says: tuple[str, ...] = ()
    warnings: frozenset[str] = field(default_factory=frozenset)


def _e(
    cluster: set[str],
    server: set[str] | None = None,
    says: tuple[str, ...] = (),
    warnings_: set[str] | None = None,
) -> Expected:
    return Expected(
        frozenset(cluster),
        frozenset(cluster if server is None else server),
        says,
        frozenset(warnings_ or ()),
    )


CASES: dict[str, Expected] = {
    "01_name_constraints_dns_outside": _e(
        {"chain_invalid"},
        says=(
            "DNS:nodea.cluster.internal",
            "DNS:example.net",
            "turn3 constrained root",
            "permitted",
        ),
    ),
    "05_trusted_certificate_ca": _e(set()),
    "11_ber_boolean_ca_basicconstraints": _e(set()),
    "12_leaf_same_subject_as_ca": _e(
        {"chain_invalid"}, says=("same name as its issuer", "self-signed", "key identifiers")
    ),
    "13_two_cas_same_subject_no_keyid": _e(
        {"chain_invalid"},
        says=("#1 and #2", "signature failure", "new CA first", "key identifiers"),
    ),
    "07_pkcs12_binary_as_certificate": _e({"cert_unreadable"}, says=("PKCS#12", "-nokeys")),
    # One path, both CAs on it, both expired; the fix names the cross-sign (no "not used").
    "12_le2021_only_expired_dst_trusted": _e(
        {"ca_expired"}, says=("self-signed", "cross-sign", "certificate file")
    ),
    "17_concat_no_newline_cert_file": _e({"cert_unreadable"}, says=("line",)),
    "20_le2026_server_auth_only": _e(
        {"eku_missing"},
        server=set(),
        says=("2026-02-11", "private CA", "step-ca", "uses", "INVALID_PURPOSE"),
    ),
    "22_explicit_default_boolean_leaf": _e(set(), warnings_={"cert_not_strict_der"}),
    "24_indented_pem_from_yaml": _e(
        {"cert_unreadable", "key_unreadable", "ca_unreadable"}, says=("indented",)
    ),
    "25_literal_backslash_n": _e(
        {"cert_unreadable", "key_unreadable", "ca_unreadable"}, says=("\\n",)
    ),
    "27_rsassa_pss_signatures_max_salt": _e(set()),
    "34_harper_generated_certs": _e(set()),
    "36_blank_line_in_ec_key": _e({"key_unreadable"}),
    "38_many_unterminated_begin_lines": _e({"cert_unreadable"}),
    "39_fullchain_leaf_last": _e({"leaf_not_first"}, says=("#2", "cat cert.pem chain.pem")),
}


def _judge(folder: Path, purpose: Purpose) -> tuple[Report, dict[str, object]]:
    meta = json.loads((folder / "expected.json").read_text())
    at = dt.datetime.fromisoformat(meta["at"]) + dt.timedelta(minutes=5)
    paths = SetPaths(folder / "certificate.pem", folder / "privateKey.pem", folder / "ca.pem")
    hostnames = [meta["hostname"]] if meta.get("hostname") else []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may reach stderr (case 34: C=USA)
        report = validate(
            read_set(paths), at=at, purpose=purpose, hostnames=hostnames, judge=judge.MODEL
        )
        json.dumps(report.as_dict())
    return report, meta


def _errors(report: Report) -> set[str]:
    return {p.code for p in report.problems if p.severity is Severity.ERROR}


# Sets whose leaf is issued by the CA file's only (first) certificate pass Harper's rule.
_ISSUER_FIRST = {"34_harper_generated_certs", "11_ber_boolean_ca_basicconstraints"}


@pytest.mark.parametrize(
    "name", sorted(n for n in CASES if not CASES[n].cluster and n not in _ISSUER_FIRST)
)
def test_accepted_case_as_a_replication_set_needs_the_issuer_first(name: str) -> None:
    """Node accepts these files; as a Harper node's replication set, the CA file holding only
    the root (the intermediate only after the leaf) is refused with Harper's own rule."""
    folder = FIELD_CASES / name
    meta = json.loads((folder / "expected.json").read_text())
    at = dt.datetime.fromisoformat(meta["at"]) + dt.timedelta(minutes=5)
    paths = SetPaths(folder / "certificate.pem", folder / "privateKey.pem", folder / "ca.pem")
    report = validate(read_set(paths), at=at, replication=True, judge=judge.MODEL)
    assert _errors(report) == {"ca_file_issuer_not_first"}, report.problems
    assert "cat intermediate.pem root.pem > ca.pem" in report.problems[0].message


def test_every_case_has_an_expectation() -> None:
    assert {p.name for p in FIELD_CASES.iterdir() if p.is_dir()} == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_field_case(name: str) -> None:
    expected = CASES[name]
    folder = FIELD_CASES / name
    cluster, meta = _judge(folder, Purpose.CLUSTER)
    server, _ = _judge(folder, Purpose.SERVER)
    assert _errors(cluster) == expected.cluster, cluster.problems
    assert _errors(server) == expected.server, server.problems
    # The case's Node verdict is a mutual-TLS handshake: the cluster purpose's.
    assert (not _errors(cluster)) is bool(meta["node20_mutual_tls_accepts"])
    extra = {p.code for p in cluster.problems if p.severity is Severity.WARNING}
    assert extra <= expected.warnings, cluster.problems
    text = " ".join(p.message for p in cluster.problems)
    for words in expected.says:
        assert words in text, (words, text)
    assert "ParseError" not in text, text
    assert "AlgorithmIdentifier" not in text, text


def test_cross_signed_chain_is_not_both_used_and_unused() -> None:
    """Case 12: an expired CA reported on the chain is not also 'not used by the chain'."""
    report, _ = _judge(FIELD_CASES / "12_le2021_only_expired_dst_trusted", Purpose.CLUSTER)
    assert "ca_file_expired_entry" not in report.codes
    assert len([p for p in report.problems if p.code == "ca_expired"]) == 2


def test_public_ca_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A serverAuth-only leaf whose root is in the system trust store (SSL_CERT_FILE, a
    throw-away bundle) is said to come from a public CA; the same set without it is not."""
    root = devca.make_ca("Throw-away Public Root")
    inter = devca.make_ca("Throw-away Public R1", parent=root)
    leaf = devca.make_leaf(inter, "nodea", dns=["nodea"], eku=[devca.CLUSTER_EKU[0]])
    inputs = Inputs(leaf.cert_pem + inter.cert_pem, leaf.key_pem, inter.cert_pem + root.cert_pem)
    now = dt.datetime.now(dt.UTC)
    empty = tmp_path / "empty.pem"
    empty.write_bytes(devca.make_ca("Unrelated").cert_pem)
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    private = validate(inputs, at=now)
    assert _errors(private) == {"eku_missing"}
    assert "public CA (its root" not in private.problems[0].message
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(devca.make_ca("Other Public").cert_pem + root.cert_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    public = validate(inputs, at=now)
    assert _errors(public) == {"eku_missing"}
    message = public.problems[0].message
    assert "public CA (its root 'CN=Throw-away Public Root'" in message
    assert "private CA" in message
    assert validate(inputs, at=now, purpose=Purpose.SERVER).valid


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, value) elements of a DER/BER run with definite lengths."""
    out = []
    pos = 0
    while pos < len(data):
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def _encode(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + value


def _to_der(tag: int, value: bytes, *, in_extension: bool = False) -> bytes:
    """Re-encode, dropping an Extension's explicit 'critical FALSE' (its DEFAULT)."""
    if not tag & 0x20:
        return _encode(tag, value)
    children = _tlvs(value)
    is_extension = (
        tag == 0x30 and len(children) == 3 and children[0][0] == 0x06 and children[1][0] == 0x01
    )
    parts = [
        _to_der(t, v)
        for index, (t, v) in enumerate(children)
        if not (is_extension and index == 1 and v == b"\x00")
    ]
    return _encode(tag, b"".join(parts))


def test_ber_certificate_is_checked_over_its_original_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Case 22's kind through load.original_der (h-pem's interface, simulated here with the
    same DER normalisation): the signature is verified over the original BER bytes, the set
    is valid with cert_not_strict_der; without the original bytes the signature fails."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from harper_certd import load

    folder = FIELD_CASES / "22_explicit_default_boolean_leaf"
    blocks = (folder / "certificate.pem").read_bytes().split(b"-----END CERTIFICATE-----\n")
    ber = x509.load_pem_x509_certificates(blocks[1] + b"-----END CERTIFICATE-----\n")
    body = blocks[0].replace(b"-----BEGIN CERTIFICATE-----", b"")
    leaf_ber = base64.b64decode(b"".join(body.split()))
    tag, value = _tlvs(leaf_ber)[0]
    der = _to_der(tag, value)
    assert der != leaf_ber
    normalised = x509.load_der_x509_certificate(der)
    pem = normalised.public_bytes(serialization.Encoding.PEM) + ber[0].public_bytes(
        serialization.Encoding.PEM
    )
    inputs = Inputs(pem, (folder / "privateKey.pem").read_bytes(), (folder / "ca.pem").read_bytes())
    at = dt.datetime.fromisoformat("2026-11-29T09:00:00+00:00")
    # Without the original bytes, the signature over the re-encoded TBS does not verify.
    monkeypatch.setattr(load, "original_der", lambda cert: None, raising=False)
    assert not validate(inputs, at=at, purpose=Purpose.SERVER, judge=judge.MODEL).valid
    monkeypatch.setattr(
        load, "original_der", lambda cert: leaf_ber if cert == normalised else None, raising=False
    )
    report = validate(inputs, at=at, purpose=Purpose.SERVER, judge=judge.MODEL)
    assert report.valid, report.problems
    assert report.codes == ("cert_not_strict_der",)
