"""Differential test of the file reader against Node 20 itself (issue 8, "how to prove it").

A seeded generator applies file-level mutations (line endings, indentation, whitespace,
blank lines, block order, labels, truncation, concatenation, encodings, BOMs, literal
``\\n``, base64 line lengths, extra text, headers, ...) to real sets (EC P-256 in SEC1 and
PKCS#8, RSA in PKCS#1 and PKCS#8, Ed25519; leaf under a root, and leaf + intermediate).
Every case goes through ``tests/node_tls_oracle.js`` (``tls.createSecureContext`` and a
loopback mutual-TLS handshake, one Node process for all cases) and through ``validate``
(purpose cluster).  A disagreement fails the test unless our refusal carries a documented
policy code (``POLICY``).  The counts per mutation kind are printed.

Seed: ``HARPER_CERTD_DIFF_SEED`` (default below); cases per kind: ``HARPER_CERTD_DIFF_N``;
``HARPER_CERTD_DIFF_DUMP=DIR`` keeps the files of each disagreement there.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from harper_certd import devca, judge
from harper_certd.roles import Purpose
from harper_certd.validate import Inputs, validate

NODE = shutil.which("node")
ORACLE = Path(__file__).with_name("node_tls_oracle.js")
SEED = int(os.environ.get("HARPER_CERTD_DIFF_SEED", "20261129"))
PER_KIND = int(os.environ.get("HARPER_CERTD_DIFF_N", "14"))

pytestmark = pytest.mark.skipif(NODE is None, reason="node (Node.js 20) is not on PATH")

# Refusals where Node accepts, on purpose: code -> (words its message carries, reason).
_LENIENT_DER = (
    "harper-certd can read",
    "a certificate whose DER content OpenSSL's lenient parser takes but a strict one does "
    "not (a bad time value, say) and that the handshake does not use (an extra certificate "
    "in the cert file, shadowed by the CA file's copy): Harper would send peers a damaged "
    "certificate, and its dates and extensions cannot be checked.",
)
POLICY: dict[str, tuple[tuple[str, str], ...]] = {
    "ca_unreadable": (
        (
            "silently drops",
            "a damaged CA-file entry after the first: Node stops reading the CA file there and "
            "drops it and every entry after it without a word; Harper logs nothing either. A "
            "set whose CA file loses entries is refused, naming the entry.",
        ),
        _LENIENT_DER,
    ),
    "cert_unreadable": (_LENIENT_DER,),
}

Files = dict[str, bytes]  # role ("cert", "key", "ca") -> bytes


@dataclass(frozen=True, slots=True)
class Base:
    name: str
    files: Files


def _pem_key(key: devca.PrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _bases() -> list[Base]:
    root = devca.make_ca("diff root")
    inter = devca.make_ca("diff intermediate", parent=root)
    trad = serialization.PrivateFormat.TraditionalOpenSSL
    pkcs8 = serialization.PrivateFormat.PKCS8
    out: list[Base] = []
    ec_leaf = devca.make_leaf(root, "nodea")
    out.append(
        Base(
            "ec-sec1",
            {"cert": ec_leaf.cert_pem, "key": _pem_key(ec_leaf.key, trad), "ca": root.cert_pem},
        )
    )
    ec_chain = devca.make_leaf(inter, "nodeb")
    out.append(
        Base(
            "ec-pkcs8-chain",
            {
                "cert": ec_chain.cert_pem + inter.cert_pem,
                "key": _pem_key(ec_chain.key, pkcs8),
                "ca": inter.cert_pem + root.cert_pem,
            },
        )
    )
    rsa_key = devca.make_key("rsa", 2048)
    rsa_leaf = devca.make_leaf(root, "nodec", key=rsa_key)
    out.append(
        Base(
            "rsa-pkcs1",
            {"cert": rsa_leaf.cert_pem, "key": _pem_key(rsa_key, trad), "ca": root.cert_pem},
        )
    )
    out.append(
        Base(
            "rsa-pkcs8",
            {
                "cert": rsa_leaf.cert_pem,
                "key": _pem_key(rsa_key, pkcs8),
                "ca": root.cert_pem + inter.cert_pem,
            },
        )
    )
    ed_leaf = devca.make_leaf(inter, "noded", key=devca.make_key("ed25519"))
    out.append(
        Base(
            "ed25519-chain",
            {
                "cert": ed_leaf.cert_pem + inter.cert_pem,
                "key": _pem_key(ed_leaf.key, pkcs8),
                "ca": root.cert_pem + inter.cert_pem,
            },
        )
    )
    return out


# --- mutations: (rng, bytes of one file) -> bytes ------------------------------------------

_BLOCK = re.compile(rb"-----BEGIN [^\n]*-----\n.*?-----END [^\n]*-----\n", re.DOTALL)


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _blocks(data: bytes) -> list[bytes]:
    return _BLOCK.findall(data)


def _crlf(r: random.Random, d: bytes) -> bytes:
    return d.replace(b"\n", b"\r\n")


def _cr_only(r: random.Random, d: bytes) -> bytes:
    return d.replace(b"\n", b"\r")


def _mixed_endings(r: random.Random, d: bytes) -> bytes:
    return b"".join(
        line + r.choice([b"\n", b"\r\n", b"\r\n", b"\n\r", b"\r"]) for line in _lines(d)[:-1]
    )


def _indent(r: random.Random, d: bytes) -> bytes:
    pad = r.choice([b"  ", b"    ", b"\t"])
    which = r.choice(["all", "data", "begin", "end"])
    out = []
    for line in _lines(d)[:-1]:
        is_begin, is_end = line.startswith(b"-----BEGIN"), line.startswith(b"-----END")
        hit = (
            which == "all"
            or (which == "data" and not is_begin and not is_end)
            or (which == "begin" and is_begin)
            or (which == "end" and is_end)
        )
        out.append((pad + line if hit else line) + b"\n")
    return b"".join(out)


def _trailing_ws(r: random.Random, d: bytes) -> bytes:
    tail = r.choice([b" ", b"\t", b"  \t ", b"\x0b", b"\x7f", b"\xc2\xa0", b"\x01"])
    lines = _lines(d)[:-1]
    idx = r.sample(range(len(lines)), k=max(1, len(lines) // r.choice([1, 3, 10])))
    return b"".join(line + (tail if i in idx else b"") + b"\n" for i, line in enumerate(lines))


def _leading_text(r: random.Random, d: bytes) -> bytes:
    return (
        r.choice(
            [
                b"subject=CN = nodea\n",
                b"\n\n",
                b"Bag Attributes\n    localKeyID: 01 02\n",
                b"# comment\n",
                b"junk-----BEGIN X-----\n",
            ]
        )
        + d
    )


def _trailing_text(r: random.Random, d: bytes) -> bytes:
    return d + r.choice(
        [
            b"\n",
            b"\n\n\n",
            b"garbage\n",
            b"-----BEGIN CERTIFICATE-----\n",
            b"-----END CERTIFICATE-----\n",
            b"\x00",
            b"xx",
        ]
    )


def _between_text(r: random.Random, d: bytes) -> bytes:
    blocks = _blocks(d)
    if len(blocks) < 2:
        return _leading_text(r, d)
    sep = r.choice([b"\n", b"issuer=CN = x\n", b"Key: value\n", b"   \n"])
    return blocks[0] + sep + b"".join(blocks[1:])


def _blank_line(r: random.Random, d: bytes) -> bytes:
    lines = _lines(d)[:-1]
    at = r.randrange(0, len(lines) + 1)
    blank = r.choice([b"", b" ", b"\t", b"\r"])
    return b"".join(x + b"\n" for x in [*lines[:at], blank, *lines[at:]])


def _blank_after_begin(r: random.Random, d: bytes) -> bytes:
    lines = _lines(d)[:-1]
    out = []
    for line in lines:
        out.append(line + b"\n")
        if line.startswith(b"-----BEGIN") and r.random() < 0.7:
            out.append(b"\n")
    return b"".join(out)


def _block_order(r: random.Random, d: bytes) -> bytes:
    blocks = _blocks(d)
    r.shuffle(blocks)
    if len(blocks) < 2:
        blocks = blocks * r.choice([1, 2])
    return b"".join(blocks)


def _label(r: random.Random, d: bytes) -> bytes:
    blocks = _blocks(d)
    i = r.randrange(len(blocks))
    b = blocks[i]
    m = re.match(rb"-----BEGIN ([^\n]*)-----", b)
    assert m is not None
    old = m.group(1)
    new = r.choice(
        [
            b"X509 CERTIFICATE",
            b"TRUSTED CERTIFICATE",
            b"CERTIFICATES",
            b"PRIVATE KEY",
            b"RSA PRIVATE KEY",
            b"EC PRIVATE KEY",
            b"certificate",
            old + b" ",
            b"CERT",
        ]
    )
    end_too = r.random() < 0.8
    b = b.replace(b"-----BEGIN " + old, b"-----BEGIN " + new, 1)
    if end_too:
        b = b.replace(b"-----END " + old, b"-----END " + new, 1)
    blocks[i] = b
    return b"".join(blocks)


def _truncate(r: random.Random, d: bytes) -> bytes:
    return d[: r.randrange(1, len(d))]


def _concat_no_newline(r: random.Random, d: bytes) -> bytes:
    blocks = _blocks(d)
    if len(blocks) < 2:
        blocks = [*blocks, *blocks]
    i = r.randrange(len(blocks) - 1)
    blocks[i] = blocks[i].rstrip(b"\n")
    return b"".join(blocks)


def _no_final_newline(r: random.Random, d: bytes) -> bytes:
    return d.rstrip(b"\n")


def _utf16(r: random.Random, d: bytes) -> bytes:
    return r.choice(
        [
            b"\xff\xfe" + d.decode().encode("utf-16-le"),
            d.decode().encode("utf-16"),
            d.decode().encode("utf-16-be"),
        ]
    )


def _bom(r: random.Random, d: bytes) -> bytes:
    blocks = _blocks(d)
    where = r.choice(["start", "second", "each"])
    if where == "start" or len(blocks) < 2:
        return b"\xef\xbb\xbf" + d
    if where == "second":
        return blocks[0] + b"\xef\xbb\xbf" + b"".join(blocks[1:])
    return b"".join(b"\xef\xbb\xbf" + b for b in blocks)


def _literal_newline(r: random.Random, d: bytes) -> bytes:
    out = d.replace(b"\n", b"\\n")
    return out + (b"\n" if r.random() < 0.5 else b"")


def _folded(r: random.Random, d: bytes) -> bytes:
    return d.replace(b"\n", b" ").rstrip() + (b"\n" if r.random() < 0.5 else b"")


def _rewrap(r: random.Random, d: bytes) -> bytes:
    width = r.choice([76, 63, 65, 4, 40, 64 * 5, 300, 0])
    out = []
    for block in _blocks(d):
        lines = _lines(block)[:-1]
        body = b"".join(lines[1:-1])
        step = width or len(body)
        wrapped = [body[i : i + step] for i in range(0, len(body), step)]
        out.append(b"\n".join([lines[0], *wrapped, lines[-1]]) + b"\n")
    return b"".join(out)


def _long_lines(r: random.Random, d: bytes) -> bytes:
    """Lines around BIO_gets' 254-byte reads: body rewrapped, BEGIN/END lines padded."""
    width = r.choice([253, 254, 255, 256, 508, 509])
    pad = r.choice([0, 0, 226, 227, 228, 240, 300])
    blank = r.random() < 0.3
    out = []
    for block in _blocks(d):
        lines = _lines(block)[:-1]
        body = b"".join(lines[1:-1])
        wrapped = [body[i : i + width] for i in range(0, len(body), width)]
        begin = lines[0] + b" " * pad if r.random() < 0.5 else lines[0]
        end = lines[-1] + b" " * pad if r.random() < 0.5 else lines[-1]
        out.append(b"\n".join([begin, *([b""] if blank else []), *wrapped, end]) + b"\n")
    return b"".join(out)


def _header(r: random.Random, d: bytes) -> bytes:
    blocks = _blocks(d)
    i = r.randrange(len(blocks))
    first, rest = blocks[i].split(b"\n", 1)
    header = r.choice(
        [
            b"Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\n",
            b"Comment: made by hand\n\n",
            b"Comment: no blank line\n",
            b"Proc-Type: 4,CLEAR\n\n",
            b"\n",
        ]
    )
    blocks[i] = first + b"\n" + header + rest
    return b"".join(blocks)


def _nul(r: random.Random, d: bytes) -> bytes:
    lines = _lines(d)[:-1]
    i = r.randrange(len(lines))
    lines[i] = lines[i] + b"\x00" + (b"AAAA" if r.random() < 0.5 else b"")
    return b"".join(x + b"\n" for x in lines)


def _base64_damage(r: random.Random, d: bytes) -> bytes:
    lines = _lines(d)[:-1]
    data_idx = [i for i, x in enumerate(lines) if x and not x.startswith(b"-----")]
    i = r.choice(data_idx)
    line = lines[i]
    pos = r.randrange(len(line))
    ch = r.choice([b"!", b"-", b"=", b"*", b" ", b"\t", b"==", b"A", b"\xe9"])
    replace = r.random() < 0.5
    lines[i] = line[:pos] + ch + line[pos + 1 if replace else pos :]
    return b"".join(x + b"\n" for x in lines)


def _drop_line(r: random.Random, d: bytes) -> bytes:
    lines = _lines(d)[:-1]
    del lines[r.randrange(len(lines))]
    return b"".join(x + b"\n" for x in lines)


def _duplicate_key_or_swap(r: random.Random, d: bytes) -> bytes:
    blocks = _blocks(d)
    return b"".join(blocks) * 2


MUTATIONS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "none": lambda r, d: d,
    "crlf": _crlf,
    "cr_only": _cr_only,
    "mixed_endings": _mixed_endings,
    "indent": _indent,
    "trailing_whitespace": _trailing_ws,
    "leading_text": _leading_text,
    "trailing_text": _trailing_text,
    "text_between_blocks": _between_text,
    "blank_line": _blank_line,
    "blank_after_begin": _blank_after_begin,
    "block_order": _block_order,
    "label": _label,
    "truncation": _truncate,
    "concat_no_newline": _concat_no_newline,
    "no_final_newline": _no_final_newline,
    "utf16": _utf16,
    "bom": _bom,
    "literal_backslash_n": _literal_newline,
    "folded_spaces": _folded,
    "base64_line_length": _rewrap,
    "long_lines": _long_lines,
    "header": _header,
    "nul_byte": _nul,
    "base64_damage": _base64_damage,
    "dropped_line": _drop_line,
    "repeated_blocks": _duplicate_key_or_swap,
}


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    kind: str
    files: Files


# Damage that changes a CA-file certificate's DER content (not the PEM layer) tests the
# validator's chain logic, not the reader: OpenSSL builds chains trusted-first (see
# test_trusted_first_shadows_cert_file_copy) and never checks a trust anchor's own signature
# or signature-algorithm field (seed 22: a root whose outer signatureAlgorithm OID was
# damaged is used by Node; cryptography's verifier refuses it).  That kind goes to the cert
# and key files only.
DER_DAMAGE = {"base64_damage"}


def _cases(bases: list[Base]) -> list[Case]:
    rng = random.Random(SEED)
    out: list[Case] = []
    for kind, mutate in MUTATIONS.items():
        count = 5 if kind == "none" else PER_KIND
        for n in range(count):
            base = bases[(n + len(out)) % len(bases)]
            role = rng.choice(["cert", "key", "ca"])
            if kind in DER_DAMAGE and role == "ca":
                role = rng.choice(["cert", "key"])
            files = dict(base.files)
            files[role] = mutate(rng, files[role])
            out.append(Case(f"{kind}-{n}-{base.name}-{role}", kind, files))
    return out


def _node_verdicts(cases: list[Case]) -> dict[str, dict[str, object]]:
    assert NODE is not None
    payload = [
        {"id": c.id, **{k: base64.b64encode(v).decode() for k, v in c.files.items()}} for c in cases
    ]
    done = subprocess.run(
        [NODE, str(ORACLE)],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=240,
        check=True,
    )
    return {r["id"]: r for r in json.loads(done.stdout)}


def test_reader_agrees_with_node(capsys: pytest.CaptureFixture[str]) -> None:
    """Hundreds of mutated sets: our verdict is Node's, or a documented policy refusal."""
    cases = _cases(_bases())
    node = _node_verdicts(cases)
    now = dt.datetime.now(dt.UTC)
    counts: dict[str, Counter[str]] = {}
    disagreements: list[str] = []
    for case in cases:
        report = validate(
            Inputs(case.files["cert"], case.files["key"], case.files["ca"]),
            judge=judge.MODEL,
            at=now,
            purpose=Purpose.CLUSTER,
        )
        errors = [p for p in report.problems if p.severity.value == "error"]
        ours = not errors
        theirs = bool(node[case.id]["ok"])
        if ours and theirs:
            outcome = "agree-accept"
        elif not ours and not theirs:
            outcome = "agree-refuse"
        elif theirs and all(
            any(words in p.message for words, _ in POLICY.get(p.code, ())) for p in errors
        ):
            outcome = "policy"
        else:
            outcome = "disagree"
            got = "; ".join(f"{p.code}: {p.message}" for p in errors) or "valid"
            dump = os.environ.get("HARPER_CERTD_DIFF_DUMP")
            if dump:  # keep the files of a disagreement, to look at them
                for role, data in case.files.items():
                    folder = Path(dump) / case.id
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{role}.pem").write_bytes(data)
            disagreements.append(
                f"{case.id}: node {'accepts' if theirs else 'refuses'} "
                f"({node[case.id]['stage']} {node[case.id]['code']}), we say {got}"
            )
        counts.setdefault(case.kind, Counter())[outcome] += 1
    with capsys.disabled():
        print(f"\nNode differential, seed {SEED}, {len(cases)} cases")
        print(f"{'kind':24} agree-accept agree-refuse policy disagree")
        for kind, c in counts.items():
            print(
                f"{kind:24} {c['agree-accept']:12} {c['agree-refuse']:12} "
                f"{c['policy']:6} {c['disagree']:8}"
            )
    assert len(cases) >= 300
    # Not vacuous: both verdicts occur, for the untouched sets Node accepts.
    assert counts["none"]["agree-accept"] == 5
    assert sum(c["agree-refuse"] for c in counts.values()) > 50
    assert sum(c["agree-accept"] for c in counts.values()) > 50
    assert not disagreements, "\n".join(disagreements[:40])


def test_trusted_first_shadows_cert_file_copy() -> None:
    """Found by the differential (seed 5): a damaged CA-file copy of the intermediate is the
    one OpenSSL takes (trusted first); Node refuses, and so does the model, naming the copy.
    The same files with an intact copy are accepted by both."""
    root = devca.make_ca("tf root")
    inter = devca.make_ca("tf intermediate", parent=root)
    leaf = devca.make_leaf(inter, "nodea")
    der = bytearray(inter.cert.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature: the certificate parses, its signature fails
    damaged = (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE-----\n"
    )
    files = {
        "cert": leaf.cert_pem + inter.cert_pem,
        "key": leaf.key_pem,
        "ca": root.cert_pem + damaged,
    }
    intact = {**files, "ca": root.cert_pem + inter.cert_pem}
    verdicts = _node_verdicts(
        [Case("trusted-first", "chain", files), Case("intact-copy", "chain", intact)]
    )
    assert verdicts["trusted-first"]["ok"] is False, verdicts["trusted-first"]
    assert verdicts["intact-copy"]["ok"] is True, verdicts["intact-copy"]
    now = dt.datetime.now(dt.UTC)
    report = validate(Inputs(files["cert"], files["key"], files["ca"]), at=now, judge=judge.MODEL)
    assert not report.valid
    refusal = next(p for p in report.problems if p.code == "chain_invalid")
    assert "(#2)" in refusal.message, refusal.message
    assert "tf intermediate" in refusal.message, refusal.message
    kept = validate(Inputs(intact["cert"], intact["key"], intact["ca"]), at=now, judge=judge.MODEL)
    assert kept.valid, [p.code for p in kept.problems]
