"""The system trust store as OpenSSL would load it (``trust.system_store``), on real files,
and ``subject_hash`` against OpenSSL's own (``openssl x509 -subject_hash``)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from harper_certd import devca, trust


def _hashed_name(cert: x509.Certificate, n: int = 0) -> str:
    return f"{trust.subject_hash(cert.subject.public_bytes()):08x}.{n}"


def test_system_store_reads_bundle_whole_and_hashed_dir_by_subject_hash(tmp_path: Path) -> None:
    """A bundle and a c_rehash directory: the bundle's certificates once each, in order (a
    block whose base64 is broken or whose DER is no certificate skipped, both PEM labels
    taken); the directory found under its subject's hash, ``.0``, ``.1`` up to the first
    gap, as OpenSSL's by_dir finds it: a root filed under another hash, after a gap, or
    without a hashed name is not in the store; the override replacing both."""
    a, b, c, d, e, f = (devca.make_ca(f"trust root {n}") for n in "abcdef")
    x509_label = c.cert_pem.replace(b"CERTIFICATE-----", b"X509 CERTIFICATE-----")
    broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
    not_a_cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(a.cert_pem + broken + b.cert_pem + not_a_cert + a.cert_pem)
    hashed = tmp_path / "certs"
    hashed.mkdir()
    (hashed / _hashed_name(b.cert)).write_bytes(b.cert_pem)  # the bundle's, again
    (hashed / _hashed_name(c.cert)).write_bytes(x509_label)
    (hashed / _hashed_name(e.cert, 1)).write_bytes(e.cert_pem)  # .0 missing: never read
    (hashed / _hashed_name(a.cert)).write_bytes(f.cert_pem)  # f under a's hash
    (hashed / "ffffffff.0").write_bytes(b"not pem at all")
    (hashed / "d.pem").write_bytes(d.cert_pem)  # no c_rehash name: OpenSSL never looks
    defaults = ssl.get_default_verify_paths()
    env = {defaults.openssl_cafile_env: str(bundle), defaults.openssl_capath_env: str(hashed)}
    store = trust.system_store(env=env)
    assert [cert.subject for cert in store.certs] == [a.cert.subject, b.cert.subject]
    assert all(store.contains(x.cert) for x in (a, b, c))
    assert not store.contains(d.cert)
    assert not store.contains(e.cert)
    assert not store.contains(f.cert)  # filed under another subject's hash
    # same subject, another key: not the root OpenSSL would trust (matched on both)
    assert not store.contains(devca.make_ca("trust root c").cert)
    assert not store.contains(devca.make_ca("trust root a").cert)
    assert store.issuers_of([devca.make_leaf(b, "nodea").cert]) == (b.cert,)
    assert store.issuers_of([devca.make_leaf(c, "nodea").cert]) == (c.cert,)
    assert store.issuers_of([devca.make_leaf(e, "nodea").cert]) == ()
    # the chain check's last resort: every root, each once (f too: it is a file there)
    assert {x.subject for x in store.every_cert()} == {x.cert.subject for x in (a, b, c, e, f)}
    override = trust.system_store(hashed / _hashed_name(c.cert), env=env)
    assert override.certs == (c.cert,)
    assert override.contains(c.cert)
    assert not override.contains(a.cert)


def _cert_named(name: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


_A = x509.NameAttribute
_NAMES = {
    "case and spaces": x509.Name(
        [
            _A(NameOID.COUNTRY_NAME, "DE"),
            _A(NameOID.ORGANIZATION_NAME, "  Harper   Test\tOrg  "),
            _A(NameOID.COMMON_NAME, "Root CA ONE"),
        ]
    ),
    "utf8 non-ascii": x509.Name([_A(NameOID.COMMON_NAME, "Wurzel Ä Zertifikat É")]),
    "bmp string": x509.Name([_A(NameOID.COMMON_NAME, "BMP Root Ä", _type=_ASN1Type.BMPString)]),
    "universal string": x509.Name(
        [_A(NameOID.COMMON_NAME, "Universal Root", _type=_ASN1Type.UniversalString)]
    ),
    "t61 latin-1": x509.Name([_A(NameOID.COMMON_NAME, "T61 Root é", _type=_ASN1Type.T61String)]),
    "ia5 and printable": x509.Name(
        [
            _A(NameOID.EMAIL_ADDRESS, "CA@Example.COM"),
            _A(NameOID.COMMON_NAME, "Printable Root", _type=_ASN1Type.PrintableString),
        ]
    ),
    "multi-valued rdn": x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    _A(NameOID.ORGANIZATIONAL_UNIT_NAME, "Zeta Unit"),
                    _A(NameOID.COMMON_NAME, "Alpha Root"),
                    _A(NameOID.ORGANIZATION_NAME, "mid org"),
                ]
            ),
            x509.RelativeDistinguishedName([_A(NameOID.COUNTRY_NAME, "US")]),
        ]
    ),
    "numeric string kept": x509.Name(
        [
            _A(NameOID.SERIAL_NUMBER, "00 12  34"),
            _A(NameOID.COMMON_NAME, "Numbered"),
        ]
    ),
    "empty": x509.Name([]),
}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
@pytest.mark.parametrize("label", list(_NAMES))
def test_subject_hash_is_openssls(label: str, tmp_path: Path) -> None:
    """OpenSSL's canonical form: case, whitespace runs, the string types it converts to UTF-8
    (BMP, Universal, T61 as Latin-1), multi-valued RDNs sorted as DER sorts a SET OF, and a
    type it keeps as it is."""
    cert = _cert_named(_NAMES[label])
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        ["openssl", "x509", "-noout", "-subject_hash", "-in", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"{trust.subject_hash(cert.subject.public_bytes()):08x}" == done.stdout.strip()


def test_subject_hash_names_every_file_of_this_machines_store() -> None:
    """Every certificate of this machine's hashed directory (Debian's ~145 roots, named by
    ``openssl rehash``) is filed under the hash ``subject_hash`` gives its subject."""
    capath = ssl.get_default_verify_paths().openssl_capath
    listed = os.listdir(capath) if os.path.isdir(capath) else []
    named = [n for n in listed if trust._HASHED.match(n)]
    if not named:
        pytest.skip(f"no hashed certificate directory at {capath}")
    for name in named:
        for cert in trust._certificates(trust._ders(Path(capath) / name)):
            assert f"{trust.subject_hash(cert.subject.public_bytes()):08x}" == name.split(".")[0]


def _pem_wrapped(der: bytes, width: int | None, newline: bytes = b"\n") -> bytes:
    import base64

    body = base64.b64encode(der)
    lines = [body] if width is None else [body[i : i + width] for i in range(0, len(body), width)]
    return (
        b"-----BEGIN CERTIFICATE-----"
        + newline
        + newline.join(lines)
        + newline
        + b"-----END CERTIFICATE-----"
        + newline
    )


def test_a_bundle_read_from_its_text_answers_as_decoded(tmp_path: Path) -> None:
    """``TrustStore(pem=...)`` answers "is this root in the file?" from the file's text until
    a question needs the DERs (``_might_hold``): the same answer as the store decoded first,
    for every root of this machine's bundle and for roots that are not in it; for bodies
    wrapped at 64 or 76 columns, on one line, with CRLF; for a root's DER inside a block
    the store does not read (TRUSTED CERTIFICATE); a body with padding inside it (and a
    comment with ``=`` before base64) sends the questions to the decoded DERs."""
    import random

    rng = random.Random(7)
    cas = [
        devca.make_ca(f"text root {n}", key=devca.make_key("rsa", 2048) if n % 2 else None)
        for n in range(6)
    ]
    ders = [ca.cert.public_bytes(serialization.Encoding.DER) for ca in cas]
    outsiders = [devca.make_ca(f"outsider {n}").cert for n in range(3)]
    trusted = cas[5].cert_pem.replace(b"CERTIFICATE-----", b"TRUSTED CERTIFICATE-----")
    inner_pad = _pem_wrapped(ders[4][:31], 64).replace(b"-----END", b"AAAA\n-----END")
    bundles = {
        "64": b"".join(_pem_wrapped(d, 64) for d in ders[:5]),
        "76 crlf": b"".join(_pem_wrapped(d, 76, b"\r\n") for d in ders[:5]),
        "one line": b"## a comment\n" + b"".join(_pem_wrapped(d, None) for d in ders[:5]),
        # "=" then base64 outside a block (a comment): asked of the decoded DERs, as padding
        "comment": b"# serial = 0x1f\n" + b"".join(_pem_wrapped(d, 64) for d in ders[:3]),
        "trusted label": b"".join(_pem_wrapped(d, 64) for d in ders[:4]) + trusted,
        "inner padding": _pem_wrapped(ders[0], 64) + inner_pad + _pem_wrapped(ders[1], 64),
    }
    system = trust.system_store()
    if system.capath is not None and system._pem is not None:  # this machine's bundle
        bundles["system"] = system._pem
    for label, pem in bundles.items():
        eager = trust.TrustStore(label, tuple(dict.fromkeys(trust._block_ders(pem))))
        present = list(trust._certificates(eager.ders))
        asked = [*present, *(c.cert for c in cas), *outsiders]
        rng.shuffle(asked)
        lazy = trust.TrustStore(label, None, pem=pem)
        answers = [lazy.contains(c) for c in asked]
        assert answers == [eager.contains(c) for c in asked], label
        assert sum(answers) >= len(present) > 0 or label == "inner padding", label
        fresh = trust.TrustStore(label, None, pem=pem)  # a "no" from the text alone
        assert not fresh.contains(outsiders[0])
        assert (fresh._ders is None) == (label not in ("inner padding", "comment")), label
