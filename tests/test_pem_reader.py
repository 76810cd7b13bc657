"""The file reader: OpenSSL 3.0's PEM rules (pem.py), Node 20's use of them (load.py), the
messages that name the cause, DER repair, the field cases of these kinds, and time.

The rules are checked one by one here; tests/test_node_differential.py checks the whole
against Node itself, and the chunking cases below (254-byte reads) against Node too.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from harper_certd import der, devca, judge, load, pem
from harper_certd.validate import Inputs, validate

FIELD = Path(__file__).resolve().parents[2] / "shared" / "field-cases" / "formats"
MiB = 1 << 20


@pytest.fixture(scope="module")
def pki() -> tuple[devca.Issued, devca.Issued]:
    root = devca.make_ca("reader root")
    return root, devca.make_leaf(root, "nodea")


def _pem(label: bytes, der_bytes: bytes, width: int = 64) -> bytes:
    body = base64.b64encode(der_bytes)
    lines = [body[i : i + width] for i in range(0, len(body), width)]
    return (
        b"-----BEGIN "
        + label
        + b"-----\n"
        + b"\n".join(lines)
        + b"\n-----END "
        + label
        + b"-----\n"
    )


def _read(data: bytes) -> pem.Block | pem.Reason:
    try:
        return pem.Reader(data).read()
    except pem.PemError as err:
        return err.reason


# --- the PEM rules, one by one -------------------------------------------------------------

R = pem.Reason
BODY = base64.b64encode(bytes(range(96)))  # 128 characters: two full lines


def _lines(*lines: bytes) -> bytes:
    return b"".join(line + b"\n" for line in lines)


RULES: list[tuple[str, bytes, R | None]] = [
    ("plain", _lines(b"-----BEGIN X-----", BODY[:64], BODY[64:], b"-----END X-----"), None),
    (
        "junk before and after",
        b"hello\n" + _lines(b"-----BEGIN X-----", BODY, b"-----END X-----") + b"bye",
        None,
    ),
    ("crlf", _lines(b"-----BEGIN X-----\r", BODY + b"\r", b"-----END X-----\r"), None),
    (
        "trailing blanks and controls",
        _lines(b"-----BEGIN X----- \t\x01", BODY + b"\x0b", b"-----END X-----\x1f"),
        None,
    ),
    # sanitize_line compares a signed char: bytes 0x80-0xFF at a line's end are dropped too.
    (
        "trailing high bytes",
        _lines(b"-----BEGIN X-----\xc2\xa0", BODY + b"\xff", b"-----END X-----\xe9"),
        None,
    ),
    (
        "trailing DEL is kept",
        _lines(b"-----BEGIN X-----", BODY + b"\x7f", b"-----END X-----"),
        R.BAD_BASE64_DECODE,
    ),
    ("indented BEGIN", _lines(b" -----BEGIN X-----", BODY, b"-----END X-----"), R.NO_START_LINE),
    ("indented data", _lines(b"-----BEGIN X-----", b"  " + BODY, b"-----END X-----"), None),
    ("indented END", _lines(b"-----BEGIN X-----", BODY, b" -----END X-----"), R.BAD_END_LINE),
    ("BOM first", b"\xef\xbb\xbf" + _lines(b"-----BEGIN X-----", BODY, b"-----END X-----"), None),
    (
        "BOM after junk line",
        b"x\n\xef\xbb\xbf" + _lines(b"-----BEGIN X-----", BODY, b"-----END X-----"),
        R.NO_START_LINE,
    ),
    ("END label differs", _lines(b"-----BEGIN X-----", BODY, b"-----END Y-----"), R.BAD_END_LINE),
    (
        "END with text after",
        _lines(b"-----BEGIN X-----", BODY, b"-----END X----- x"),
        R.BAD_END_LINE,
    ),
    (
        "END joined to BEGIN",
        _lines(b"-----BEGIN X-----", BODY, b"-----END X----------BEGIN X-----"),
        R.BAD_END_LINE,
    ),
    ("no END", _lines(b"-----BEGIN X-----", BODY), R.BAD_END_LINE),
    ("no data", _lines(b"-----BEGIN X-----", b"-----END X-----"), R.NO_DATA),
    (
        "colon line, no blank",
        _lines(b"-----BEGIN X-----", b"A: b", BODY, b"-----END X-----"),
        R.NO_DATA,
    ),
    (
        "blank after BEGIN",
        _lines(b"-----BEGIN X-----", b"", BODY[:64], BODY[64:], b"-----END X-----"),
        None,
    ),
    (
        "blank, long line after",
        _lines(b"-----BEGIN X-----", b"", BODY, b"-----END X-----"),
        R.LINE_TOO_LONG,
    ),
    (
        "blank, short then more",
        _lines(b"-----BEGIN X-----", b"", BODY[:60], BODY[60:], b"-----END X-----"),
        R.BAD_END_LINE,
    ),
    (
        "two blank lines",
        _lines(b"-----BEGIN X-----", b"", BODY[:64], b"", BODY[64:], b"-----END X-----"),
        R.BAD_END_LINE,
    ),
    ("'-' ends the base64", _lines(b"-----BEGIN X-----", BODY + b"-!!!", b"-----END X-----"), None),
    (
        "'=' inside",
        _lines(b"-----BEGIN X-----", BODY[:8] + b"=" + BODY[8:], b"-----END X-----"),
        R.BAD_BASE64_DECODE,
    ),
    (
        "three '='",
        _lines(b"-----BEGIN X-----", BODY[:-4] + b"A===", b"-----END X-----"),
        R.BAD_BASE64_DECODE,
    ),
    (
        "length not 4n",
        _lines(b"-----BEGIN X-----", BODY[:-1], b"-----END X-----"),
        R.BAD_BASE64_DECODE,
    ),
    (
        "spaces inside base64",
        _lines(b"-----BEGIN X-----", BODY[:10] + b" \t " + BODY[10:], b"-----END X-----"),
        None,
    ),
    ("NUL cuts the line", _lines(b"-----BEGIN X-----", BODY + b"\x00!!", b"-----END X-----"), None),
    (
        "CR only",
        b"-----BEGIN X-----\r" + BODY + b"\r-----END X-----\r",
        R.BAD_END_LINE,
    ),  # one short line: read as a BEGIN line, then EOF
]


@pytest.mark.parametrize(("name", "data", "want"), RULES, ids=[r[0] for r in RULES])
def test_pem_rules(name: str, data: bytes, want: R | None) -> None:
    """Each rule of pem_lib.c / encode.c, on a minimal input."""
    got = _read(data)
    if want is None:
        assert isinstance(got, pem.Block), got
        assert got.label == b"X"
        assert got.der == bytes(range(96))
    else:
        assert got == want


def test_header_of_the_block_asked_for_is_checked(pki: tuple[devca.Issued, devca.Issued]) -> None:
    """A header is "not proc type" unless it starts with Proc-Type:, and encrypted with it;
    skipped blocks' headers are not looked at (PEM_bytes_read_bio)."""
    body = base64.b64encode(pki[1].cert.public_bytes(serialization.Encoding.DER))
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    block = _lines(
        b"-----BEGIN CERTIFICATE-----", b"Comment: x", b"", *lines, b"-----END CERTIFICATE-----"
    )
    skipped: set[bytes] = set()
    with pytest.raises(pem.PemError) as info:
        pem.read_matching(pem.Reader(block), pem.X509_AUX_LABELS, skipped)
    assert info.value.reason is R.NOT_PROC_TYPE
    assert info.value.line == 3  # the blank line
    encrypted = block.replace(b"Comment: x", b"Proc-Type: 4,ENCRYPTED")
    with pytest.raises(pem.PemError) as info:
        pem.read_matching(pem.Reader(encrypted), pem.X509_AUX_LABELS, skipped)
    assert info.value.reason is R.ENCRYPTED
    other = block.replace(b"CERTIFICATE", b"OTHER") + pki[1].cert_pem
    got = pem.read_matching(pem.Reader(other), pem.X509_AUX_LABELS, skipped)
    assert got.label == b"CERTIFICATE"
    assert skipped == {b"OTHER"}


def test_long_lines_are_read_in_254_byte_chunks() -> None:
    """BIO_gets reads 254 bytes at most: a BEGIN line at offset 254 of a long line is a line;
    a chunk of only blanks after a 254-byte chunk is not a blank line."""
    block = _lines(b"-----BEGIN X-----", BODY, b"-----END X-----")
    at_254 = b"x" * 254 + block
    got = _read(at_254)
    assert isinstance(got, pem.Block)
    assert got.begin_line == 1
    at_253 = b"x" * 253 + block
    assert _read(at_253) == R.NO_START_LINE
    # After a blank line data lines are length-checked; a 254-byte chunk then "\n" is one
    # line (too long), not a line and a blank line (which would be "bad end line").
    long_after_blank = _lines(b"-----BEGIN X-----", b"", b"A" * 254, b"-----END X-----")
    assert _read(long_after_blank) == R.LINE_TOO_LONG
    # A one-line body of any length with no header: chunks are data lines, all fine.
    one_line = _lines(b"-----BEGIN X-----", base64.b64encode(bytes(3000)), b"-----END X-----")
    got = _read(one_line)
    assert isinstance(got, pem.Block)
    assert got.der == bytes(3000)


def test_evp_decode_matches_openssl_rules() -> None:
    assert pem.evp_decode(b"QUJD") == b"ABC"
    assert pem.evp_decode(b"QUI=") == b"AB"
    assert pem.evp_decode(b"QQ==\n") == b"A"
    assert pem.evp_decode(b"QUJD-anything at all !") == b"ABC"
    assert pem.evp_decode(b"QUJ-") is None  # EOF inside a group
    assert pem.evp_decode(b"QQ==QUJD") is None
    assert pem.evp_decode(b"Q===") is None
    assert pem.evp_decode(b"QUJD!") is None
    assert pem.evp_decode(b"QU JD\t\r\n") == b"ABC"


# --- Node's use: cert, key, ca -----------------------------------------------------------


def test_cert_file_skips_other_blocks_and_takes_trusted_first(
    pki: tuple[devca.Issued, devca.Issued],
) -> None:
    root, leaf = pki
    key = leaf.key_pem
    trusted = leaf.cert_pem.replace(b"CERTIFICATE", b"TRUSTED CERTIFICATE")
    got = load.parse_certificates(
        key + trusted + root.cert_pem.replace(b"CERTIFICATE", b"X509 CERTIFICATE"), name="c"
    )
    assert [c.subject for c in got.certs] == [leaf.cert.subject, root.cert.subject]
    assert got.holds_private_key
    # TRUSTED CERTIFICATE is read only first (X509_AUX); later ones are skipped, as Node does.
    got = load.parse_certificates(
        leaf.cert_pem + root.cert_pem.replace(b"CERTIFICATE", b"TRUSTED CERTIFICATE"), name="c"
    )
    assert [c.subject for c in got.certs] == [leaf.cert.subject]
    with pytest.raises(
        load.Unreadable,
        match=r"no certificate, only: 'PRIVATE KEY' \(the key and certificate files swapped\?\)",
    ):
        load.parse_certificates(key, name="c")


def test_trusted_certificate_trust_settings_are_read(
    pki: tuple[devca.Issued, devca.Issued],
) -> None:
    """OpenSSL's -trustout form: the certificate, then X509_CERT_AUX trust/reject OIDs."""
    root = pki[0]
    cert_der = root.cert.public_bytes(serialization.Encoding.DER)
    server, client = bytes.fromhex("06082b06010505070301"), bytes.fromhex("06082b06010505070302")
    aux = (
        bytes([0x30, 2 + len(server) + len(client), 0x30, len(server) + len(client)])
        + server
        + client
    )
    got = load.parse_ca_file(_pem(b"TRUSTED CERTIFICATE", cert_der + aux), name="ca")
    assert got.certs == (root.cert,)
    settings = load.aux_trust(got.certs[0])
    assert settings is not None
    assert settings.trust == ("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2")
    with pytest.raises(load.Unreadable, match="not OpenSSL trust settings"):
        load.parse_ca_file(_pem(b"TRUSTED CERTIFICATE", cert_der + b"\x04\x01x"), name="ca")


def test_key_labels_and_structures(pki: tuple[devca.Issued, devca.Issued]) -> None:
    """PKCS#8 under a type's label is read (OpenSSL 3); a type's own structure under
    'PRIVATE KEY' is not; the first private-key block counts."""
    rsa_key = devca.make_key("rsa", 2048)
    pkcs8 = devca.key_pem(rsa_key)
    trad = devca.key_pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    as_rsa = pkcs8.replace(b"PRIVATE KEY", b"RSA PRIVATE KEY")
    assert load.parse_private_key(as_rsa, name="k").private_numbers() == rsa_key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(load.Unreadable, match="PKCS#1 RSA structure, which OpenSSL does not read"):
        load.parse_private_key(trad.replace(b"RSA PRIVATE KEY", b"PRIVATE KEY"), name="k")
    ec_pkcs8 = devca.key_pem(pki[1].key)
    with pytest.raises(load.Unreadable, match="another type than its label says"):
        load.parse_private_key(ec_pkcs8.replace(b"PRIVATE KEY", b"RSA PRIVATE KEY"), name="k")
    both = pki[1].cert_pem + trad + ec_pkcs8
    assert isinstance(load.parse_private_key(both, name="k"), type(rsa_key))
    encrypted = pki[1].key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(load.Unreadable, match="encrypted"):
        load.parse_private_key(encrypted, name="k")
    with pytest.raises(load.Unreadable, match="OpenSSH format"):
        load.parse_private_key(
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            name="k",
        )


def test_ca_file_entries_after_a_damaged_one_are_refused_by_name(
    pki: tuple[devca.Issued, devca.Issued],
) -> None:
    """Node drops a damaged CA entry and all after it silently; we refuse, naming it."""
    root, leaf = pki
    other = devca.make_ca("other root")
    broken = root.cert_pem.replace(b"-----END CERTIFICATE-----", b"-----END CERTIFICATE----- x")
    with pytest.raises(load.Unreadable) as info:
        load.parse_ca_file(root.cert_pem + broken + other.cert_pem, name="ca.pem")
    text = str(info.value)
    assert "entry #2" in text
    assert "silently drops entry #2 and every entry after it (the 1 before it are used)" in text
    with pytest.raises(load.Unreadable, match="should be the END line"):
        load.parse_ca_file(broken + root.cert_pem, name="ca.pem")
    # Text and other blocks around entries are fine, as for Node.
    got = load.parse_ca_file(
        b"# roots\n" + leaf.key_pem + root.cert_pem + b"trailing words\n", name="ca"
    )
    assert got.certs == (root.cert,)
    assert got.holds_private_key


def _with_explicit_default(issuer: devca.Issued) -> tuple[x509.Certificate, bytes]:
    """A leaf whose first extension spells out 'critical FALSE', signed over those bytes."""
    leaf = devca.make_leaf(issuer, "explicit")
    raw = leaf.cert.public_bytes(serialization.Encoding.DER)
    cert = der.tlv(raw, 0)
    tbs, alg, _sig = der.children(raw, cert)
    fields = der.children(raw, tbs)
    ext_wrap = fields[-1]
    seq = der.children(raw, ext_wrap)[0]
    exts = der.children(raw, seq)
    first = exts[0]
    parts = der.children(raw, first)
    if len(parts) == 3:  # critical already: use a non-critical one
        first = next(e for e in exts if len(der.children(raw, e)) == 2)
        parts = der.children(raw, first)
    oid, value = parts
    new_ext = der.encode(
        0x30, raw[oid.start : oid.end] + b"\x01\x01\x00" + raw[value.start : value.end]
    )
    new_exts = b"".join(new_ext if e == first else raw[e.start : e.end] for e in exts)
    new_tbs = der.encode(
        0x30,
        b"".join(raw[f.start : f.end] for f in fields[:-1])
        + der.encode(0xA3, der.encode(0x30, new_exts)),
    )
    key = issuer.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    original = der.encode(
        0x30, new_tbs + raw[alg.start : alg.end] + der.encode(0x03, b"\x00" + signature)
    )
    return leaf.cert, original


def test_explicit_default_boolean_is_read_and_the_original_kept(
    pki: tuple[devca.Issued, devca.Issued],
) -> None:
    """OpenSSL reads 'critical FALSE' spelled out (BER); we normalise to parse it and keep
    the original bytes, over which the signature verifies."""
    root = pki[0]
    _plain, original = _with_explicit_default(root)
    with pytest.raises(ValueError, match=r"parsing asn1 value"):
        x509.load_der_x509_certificate(original)  # strict DER refuses it: the case is real
    got = load.parse_certificates(_pem(b"CERTIFICATE", original), name="c").certs[0]
    assert load.original_der(got) == original
    assert got.public_bytes(serialization.Encoding.DER) != original
    tbs = der.children(original, der.tlv(original, 0))[0]
    pub = root.cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(got.signature, original[tbs.start : tbs.end], ec.ECDSA(hashes.SHA256()))
    assert load.original_der(root.cert) is None
    # Damage that is not a DEFAULT value stays unreadable, naming the certificate and byte.
    broken = bytearray(original)
    broken[4] = 0x31
    with pytest.raises(load.Unreadable, match=r"certificate #1 \(line 1\) is not a certificate"):
        load.parse_certificates(_pem(b"CERTIFICATE", bytes(broken)), name="c")


# --- messages that name the cause (item 5) ------------------------------------------------


READERS: dict[str, Callable[..., object]] = {
    "cert": load.parse_certificates,
    "key": load.parse_private_key,
    "ca": load.parse_ca_file,
}


def _message(role: str, data: bytes) -> str:
    fn = READERS[role]
    with pytest.raises(load.Unreadable) as info:
        fn(data, name="F")
    return str(info.value)


def test_messages_name_the_format(pki: tuple[devca.Issued, devca.Issued]) -> None:
    root, leaf = pki
    key = leaf.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    p12 = pkcs12.serialize_key_and_certificates(
        b"n", key, leaf.cert, [root.cert], serialization.BestAvailableEncryption(b"pw")
    )
    msg = _message("cert", p12)
    assert "PKCS#12" in msg
    assert "openssl pkcs12 -in F -clcerts -nokeys -out certificate.pem" in msg
    assert "-cacerts -nokeys -out ca.pem" in msg
    assert "-nocerts -nodes -out privateKey.pem" in msg
    assert "x509 -inform der" not in msg
    p7 = pkcs7.serialize_certificates([leaf.cert, root.cert], serialization.Encoding.DER)
    assert "openssl pkcs7 -inform der -print_certs -in F" in _message("ca", p7)
    assert "openssl x509 -inform der" in _message(
        "cert", leaf.cert.public_bytes(serialization.Encoding.DER)
    )
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    msg = _message("key", key_der)
    assert "openssl pkey -inform der" in msg
    assert base64.b64encode(key_der)[:8].decode() not in msg
    assert "UTF-16" in _message("cert", leaf.cert_pem.decode().encode("utf-16"))
    assert "base64 -d" in _message("ca", base64.b64encode(root.cert_pem))
    assert "the two characters \\n" in _message("key", leaf.key_pem.replace(b"\n", b"\\n"))
    assert "CR-only" in _message("cert", leaf.cert_pem.replace(b"\n", b"\r"))
    assert "indented" in _message(
        "ca", b"".join(b"  " + x + b"\n" for x in root.cert_pem.splitlines())
    )
    assert "replaced by spaces" in _message("cert", leaf.cert_pem.replace(b"\n", b" "))
    assert "replaced by spaces" in _message("key", leaf.key_pem.replace(b"\n", b" ").strip())
    joined = root.cert_pem.rstrip(b"\n") + root.cert_pem
    assert "line 12 joins an END and a BEGIN line" in _message("ca", joined) or (
        "joins an END and a BEGIN line" in _message("ca", joined)
    )
    truncated = leaf.cert_pem[: len(leaf.cert_pem) // 2]
    assert "has no END line (the file is truncated?)" in _message("cert", truncated)


def test_blank_line_in_key_names_the_line_and_quotes_nothing(
    pki: tuple[devca.Issued, devca.Issued],
) -> None:
    """The field case's shape, for SEC1, PKCS#1 and PKCS#8 keys (issue 8 item 1)."""
    keys = [
        devca.key_pem(pki[1].key, serialization.PrivateFormat.TraditionalOpenSSL),
        devca.key_pem(devca.make_key("rsa", 2048), serialization.PrivateFormat.TraditionalOpenSSL),
        devca.key_pem(devca.make_key("ed25519")),
    ]
    for pem_bytes in keys:
        lines = pem_bytes.splitlines()
        mutated = b"\n".join([lines[0], lines[1], b"", *lines[2:]]) + b"\n"
        msg = _message("key", mutated)
        assert "line 3 is blank inside the" in msg
        assert "Proc-Type" in msg or "finds no data after it" in msg
        for line in lines[1:-1]:
            for i in range(0, max(1, len(line) - 8)):
                assert line[i : i + 8].decode() not in msg


# --- field cases of these kinds (read in place, skipped when absent) ----------------------


def _field(case: str) -> tuple[dict[str, object], dict[str, str]]:
    folder = FIELD / case
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    expected = json.loads((folder / "expected.json").read_text())
    at = dt.datetime.fromisoformat(expected["at"]) + dt.timedelta(minutes=5)
    files = {
        r: (folder / f).read_bytes()
        for r, f in (("cert", "certificate.pem"), ("key", "privateKey.pem"), ("ca", "ca.pem"))
    }
    report = validate(Inputs(files["cert"], files["key"], files["ca"]), at=at, judge=judge.MODEL)
    return expected, {p.code: p.message for p in report.problems if p.severity.value == "error"}


FIELD_CASES = [
    (
        "17_concat_no_newline_cert_file",
        {
            "cert_unreadable": "joins an END and a BEGIN line (a file concatenated without a "
            "final newline); put a line break between them"
        },
    ),
    (
        "24_indented_pem_from_yaml",
        {"cert_unreadable": "indented", "key_unreadable": "indented", "ca_unreadable": "indented"},
    ),
    (
        "25_literal_backslash_n",
        {
            "cert_unreadable": "the two characters \\n",
            "key_unreadable": "printf",
            "ca_unreadable": "JSON",
        },
    ),
    ("36_blank_line_in_ec_key", {"key_unreadable": "line 3 is blank"}),
    ("38_many_unterminated_begin_lines", {"cert_unreadable": "has no END line"}),
    ("07_pkcs12_binary_as_certificate", {"cert_unreadable": "openssl pkcs12"}),
]


@pytest.mark.parametrize(("case", "want"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_field_cases_of_reading_kinds(case: str, want: dict[str, str]) -> None:
    """Verdict (exact set of error codes) and a message naming the cause."""
    expected, errors = _field(case)
    assert expected["node20_mutual_tls_accepts"] is False
    assert set(errors) == set(want), errors
    for code, words in want.items():
        assert words in errors[code], errors[code]
    assert "Invalid" not in " ".join(errors.values())  # no library text
    assert "x509 -inform der" not in " ".join(errors.values())


def test_field_case_blank_line_key_quotes_no_key_material() -> None:
    _expected, errors = _field("36_blank_line_in_ec_key")
    key = (FIELD / "36_blank_line_in_ec_key" / "privateKey.pem").read_bytes()
    body = b"".join(x for x in key.splitlines() if x and not x.startswith(b"-----")).decode()
    text = json.dumps(errors)
    assert not [body[i : i + 8] for i in range(len(body) - 8) if body[i : i + 8] in text]


def test_field_case_trusted_certificate_ca_is_read() -> None:
    """Case 05 (reading part): the CA file's TRUSTED CERTIFICATE block is a CA for us too."""
    expected, errors = _field("05_trusted_certificate_ca")
    assert expected["node20_mutual_tls_accepts"] is True
    assert not errors, errors
    ca = load.parse_ca_file(
        (FIELD / "05_trusted_certificate_ca" / "ca.pem").read_bytes(), name="ca"
    )
    settings = load.aux_trust(ca.certs[0])
    assert settings is not None
    assert "1.3.6.1.5.5.7.3.2" in settings.trust


def test_field_case_explicit_default_is_read() -> None:
    """Case 22 (reading part): the leaf parses; its original encoding is kept."""
    _field("22_explicit_default_boolean_leaf")
    data = (FIELD / "22_explicit_default_boolean_leaf" / "certificate.pem").read_bytes()
    leaf = load.parse_certificates(data, name="c").certs[0]
    original = load.original_der(leaf)
    assert original is not None
    assert original != leaf.public_bytes(serialization.Encoding.DER)


# --- time: linear, and under 0.1 s for the worst shapes up to the 1 MiB limit --------------


def _fit(unit: bytes, prefix: bytes = b"") -> bytes:
    return prefix + unit * ((MiB - len(prefix)) // len(unit))


def _bad_tail(unit: bytes) -> bytes:
    """1 MiB of ``unit`` lines in a CERTIFICATE block whose last data line holds a '!'."""
    tail = b"A!AA\n-----END CERTIFICATE-----\n"
    return _fit(unit, b"-----BEGIN CERTIFICATE-----\n")[: -10 * len(unit)] + tail


def _shapes(cert_pem: bytes) -> dict[str, bytes]:
    return {
        "many BEGIN lines without END (case 38 x7)": _fit(b"-----BEGIN X-----\n"),
        "one huge line": _fit(b"A"),
        "one huge base64 line after BEGIN": _fit(b"A", b"-----BEGIN CERTIFICATE-----\n"),
        "many tiny blocks": _fit(b"-----BEGIN A-----\nAAAA\n-----END A-----\n"),
        "many 254-byte chunks": _fit(b"-----BEGIN " + b"A" * 300 + b"-----\n"),
        "254-byte chunks then blanks": _fit(b"A" * 254 + b"   \n"),
        "deep header": _fit(b"Comment: x\n", b"-----BEGIN CERTIFICATE-----\n"),
        "many blank lines": _fit(b"\n"),
        "many 1-character lines": _fit(b"A\n", b"-----BEGIN CERTIFICATE-----\n"),
        "many 64-character lines after a blank": _fit(
            b"A" * 64 + b"\n", b"-----BEGIN CERTIFICATE-----\n\n"
        ),
        "NUL bytes": _fit(b"A\x00\n", b"-----BEGIN CERTIFICATE-----\n"),
        "runs of stripped bytes": _fit(
            b"A" + b"\x01" * 200 + b"B\n", b"-----BEGIN CERTIFICATE-----\n"
        ),
        "many END lines": _fit(b"-----END X-----\n"),
        "many colon lines": _fit(b"A:\n", b"-----BEGIN CERTIFICATE-----\n"),
        "bad character on the last line": _bad_tail(b"AAAA\n"),
        "NUL then text on every line": _bad_tail(b"AAAA\x00x\n"),
        "control byte ending every line": _bad_tail(b"AAAA\x01\n"),
        "many valid certificates": _fit(cert_pem),
    }


def test_worst_shapes_take_under_a_tenth_of_a_second(capsys: pytest.CaptureFixture[str]) -> None:
    """Every shape through the cert, key and CA readers: CPU time, best of 5, reported."""
    small = devca.make_self_signed_leaf("w", key=devca.make_key("ed25519")).cert_pem
    rows: list[tuple[float, str, str]] = []
    readers = READERS
    for shape, data in _shapes(small).items():
        assert len(data) <= load.MAX_FILE_BYTES
        for role, reader in readers.items():
            best = float("inf")
            for _ in range(5):
                start = time.process_time()
                with contextlib.suppress(load.Unreadable):
                    reader(data, name="F")
                best = min(best, time.process_time() - start)
            rows.append((best, shape, role))
    rows.sort(reverse=True)
    with capsys.disabled():
        print("\nslowest reads of 1 MiB inputs (CPU seconds, best of 5):")
        for best, shape, role in rows[:8]:
            print(f"  {best:.4f}  {role:4}  {shape}")
    worst, shape, role = rows[0]
    assert worst < 0.1, f"{shape} as {role}: {worst:.3f} s"


def test_reading_time_is_linear() -> None:
    """Doubling the input doubles the time (not quadruples it): the old regex was O(n^2)."""
    unit = b"-----BEGIN X-----\n"

    def cost(n: int) -> float:
        data = unit * n
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            with pytest.raises(load.Unreadable):
                load.parse_certificates(data, name="F")
            best = min(best, time.process_time() - start)
        return best

    small, large = cost(12_000), cost(48_000)
    assert large < small * 4 * 2.5, (small, large)  # 4x the input; quadratic would be 16x


def test_node_reads_chunk_boundaries_as_we_do(pki: tuple[devca.Issued, devca.Issued]) -> None:
    """Lines around 254 bytes (BIO_gets' read size), checked against Node itself."""
    if shutil.which("node") is None:
        pytest.skip("node (Node.js 20) is not on PATH")
    from test_node_differential import Case, _node_verdicts

    root, leaf = pki
    body = base64.b64encode(leaf.cert.public_bytes(serialization.Encoding.DER))
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    variants = {
        "one line": _lines(begin, body, end),
        "one line after blank": _lines(begin, b"", body, end),
        "254 then rest": _lines(begin, body[:254], body[254:], end),
        "254 + spaces": _lines(begin, body[:254] + b"   ", body[254:], end),
        "253 + spaces": _lines(begin, body[:253] + b" ", body[253:], end),
        "blank after 254": _lines(
            begin, b"", body[:64], body[64:128] + b" " * 200, body[128:192], end
        ),
        "BEGIN at 254": b"#" * 254 + leaf.cert_pem,
        "BEGIN at 253": b"#" * 253 + leaf.cert_pem,
        "BEGIN at 508": b"#" * 508 + leaf.cert_pem,
        "END at 254": _lines(begin, body) + b"=" * 0 + b" " * 254 + end + b"\n",
        "BEGIN padded to 254": _lines(begin + b" " * (254 - len(begin)), body, end),
        "BEGIN padded to 300": _lines(begin + b" " * 300, body, end),
        "trailing high bytes": _lines(begin + b"\xc2\xa0", body + b"\xff", end + b"\xe9"),
        "NUL after END": _lines(begin, body, end + b"\x00x"),
        "dash in data": _lines(begin, body + b"-!!", end),
    }
    cases = [
        Case(name, "chunks", {"cert": data, "key": leaf.key_pem, "ca": root.cert_pem})
        for name, data in variants.items()
    ]
    node = _node_verdicts(cases)
    now = dt.datetime.now(dt.UTC)
    got = {
        c.id: validate(
            Inputs(c.files["cert"], c.files["key"], c.files["ca"]), at=now, judge=judge.MODEL
        ).valid
        for c in cases
    }
    assert {k: bool(v["ok"]) for k, v in node.items()} == got
    assert set(got.values()) == {True, False}


def test_node_reads_key_labels_as_we_do(pki: tuple[devca.Issued, devca.Issued]) -> None:
    """Which body OpenSSL 3 reads under which private-key label, checked against Node."""
    if shutil.which("node") is None:
        pytest.skip("node (Node.js 20) is not on PATH")
    from test_node_differential import Case, _node_verdicts

    root, ec_leaf = pki
    rsa_key = devca.make_key("rsa", 2048)
    rsa_leaf = devca.make_leaf(root, "rsa", key=rsa_key)
    p8, trad = serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL
    variants = {
        "RSA PKCS#8 as RSA PRIVATE KEY": (
            rsa_leaf,
            devca.key_pem(rsa_key, p8).replace(b"PRIVATE KEY", b"RSA PRIVATE KEY"),
            True,
        ),
        "EC PKCS#8 as RSA PRIVATE KEY": (
            ec_leaf,
            devca.key_pem(ec_leaf.key, p8).replace(b"PRIVATE KEY", b"RSA PRIVATE KEY"),
            False,
        ),
        "EC PKCS#8 as EC PRIVATE KEY": (
            ec_leaf,
            devca.key_pem(ec_leaf.key, p8).replace(b"PRIVATE KEY", b"EC PRIVATE KEY"),
            True,
        ),
        "PKCS#1 as PRIVATE KEY": (
            rsa_leaf,
            devca.key_pem(rsa_key, trad).replace(b"RSA PRIVATE KEY", b"PRIVATE KEY"),
            False,
        ),
        "SEC1 as PRIVATE KEY": (
            ec_leaf,
            devca.key_pem(ec_leaf.key, trad).replace(b"EC PRIVATE KEY", b"PRIVATE KEY"),
            False,
        ),
    }
    cases = [
        Case(name, "labels", {"cert": leaf.cert_pem, "key": key, "ca": root.cert_pem})
        for name, (leaf, key, _want) in variants.items()
    ]
    node = _node_verdicts(cases)
    now = dt.datetime.now(dt.UTC)
    for case in cases:
        ours = validate(
            Inputs(case.files["cert"], case.files["key"], case.files["ca"]),
            at=now,
            judge=judge.MODEL,
        ).valid
        assert bool(node[case.id]["ok"]) is ours is variants[case.id][2], case.id


def test_bad_base64_is_named_by_line(pki: tuple[devca.Issued, devca.Issued]) -> None:
    """A bad character: its line; a padding or length error: the block, and why."""
    lines = pki[1].cert_pem.split(b"\n")
    bad = [*lines]
    bad[3] = bad[3][:10] + b"!" + bad[3][11:]
    assert "F: line 4 of the 'CERTIFICATE' block that starts on line 1 holds a character" in (
        _message("cert", b"\n".join(bad))
    )
    after_blank = [lines[0], b"", *lines[1:]]
    after_blank[5] = after_blank[5][:10] + b"*" + after_blank[5][11:]
    assert "line 6 of the" in _message("ca", b"\n".join(after_blank))
    padding = [*lines]
    padding[-3] = padding[-3][:-4] + b"A=AA"
    msg = _message("cert", b"\n".join(padding))
    assert "is not valid base64: '=' before the end, or characters missing" in msg
    assert "holds a character" not in msg


def test_literal_backslash_n_conversion_works_and_keeps_the_key_private(tmp_path: Path) -> None:
    """The conversion a key holding literal ``\\n`` is given, run by a shell: a key that
    loads, 0600 from its first byte (``umask 077``: never world-readable while written)."""
    key_pem = devca.make_leaf(devca.make_ca("nl root"), "nodea").key_pem
    path = tmp_path / "privateKey.pem"
    path.write_bytes(key_pem.replace(b"\n", b"\\n"))
    report = validate(
        Inputs(cert=b"", key=path.read_bytes(), ca=b"", key_name=str(path)),
        at=dt.datetime.now(dt.UTC),
    )
    message = next(p.message for p in report.problems if p.code == "key_unreadable")
    command = re.search(r"convert it: (.*)$", message)
    assert command is not None, message
    subprocess.run(["sh", "-c", command.group(1)], check=True, timeout=30)
    assert path.read_bytes().strip() == key_pem.strip()
    assert os.stat(path).st_mode & 0o777 == 0o600
    serialization.load_pem_private_key(path.read_bytes(), None)
