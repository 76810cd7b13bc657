"""No byte of a private key in any output, log line or file written (issue 8 item 1, issue 10
item 10).

Every key-file mutation we could think of (blank lines at every position, truncation, bad
base64, wrong labels, headers, CR, indentation, literal ``\\n``, extra blocks, DER, base64 of
PEM, UTF-16, encryption, a PKCS#8 body under a type's label, flipped DER bytes, ...) of RSA,
P-256 (SEC1 and PKCS#8) and Ed25519 keys goes through ``validate`` and ``harper-certd
validate --json`` (in process for all; as a subprocess for a sample), and through ``install``
of the refused set into a Harper-like root (in process with its log lines captured for all;
``harper-certd install --json`` as a subprocess for a sample).  Asserted: no 8-character
substring of the key's base64 body, nor of its DER in hex, that is not also in the public
certificate and CA files appears in any output, log line or file written, other than the
copies of the three input files; ``reason.json`` is 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from harper_certd import devca, logs
from harper_certd.cli import main
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_certd.validate import Inputs, validate
from nodefix import Node, make_node

WINDOW = 8
CLI = [sys.executable, "-m", "harper_certd"]


@dataclass(frozen=True)
class KeyCase:
    name: str
    leaf: devca.Issued
    pem: bytes

    @property
    def body(self) -> bytes:
        return b"".join(line for line in self.pem.splitlines() if not line.startswith(b"-----"))

    @property
    def der(self) -> bytes:
        return base64.b64decode(self.body)


def _keys(ca: devca.Issued) -> list[KeyCase]:
    trad = serialization.PrivateFormat.TraditionalOpenSSL
    pkcs8 = serialization.PrivateFormat.PKCS8
    rsa = devca.make_leaf(ca, "nodea", dns=["nodea"], key=devca.make_key("rsa", 2048))
    ec = devca.make_leaf(ca, "nodea", dns=["nodea"])
    ed = devca.make_leaf(ca, "nodea", dns=["nodea"], key=devca.make_key("ed25519"))
    return [
        KeyCase("rsa-pkcs1", rsa, devca.key_pem(rsa.key, trad)),
        KeyCase("rsa-pkcs8", rsa, devca.key_pem(rsa.key, pkcs8)),
        KeyCase("p256-sec1", ec, devca.key_pem(ec.key, trad)),
        KeyCase("p256-pkcs8", ec, devca.key_pem(ec.key, pkcs8)),
        KeyCase("ed25519-pkcs8", ed, devca.key_pem(ed.key, pkcs8)),
    ]


# --- mutations of a key file: (key) -> [(name, bytes)] -------------------------------------


def _lines(pem: bytes) -> list[bytes]:
    return pem.splitlines()


def _join(lines: list[bytes], end: bytes = b"\n") -> bytes:
    return b"".join(line + end for line in lines)


def _label_of(pem: bytes) -> bytes:
    return _lines(pem)[0][len(b"-----BEGIN ") : -5]


def mutations(k: KeyCase) -> Iterator[tuple[str, bytes]]:
    pem, lines = k.pem, _lines(k.pem)
    label = _label_of(pem)
    for i in range(1, len(lines) + 1):  # a blank line at every position (and a space-only one)
        yield f"blank-line-{i}", _join([*lines[:i], b"", *lines[i:]])
        yield f"space-line-{i}", _join([*lines[:i], b"   ", *lines[i:]])
    for i in range(1, len(lines) - 1):
        yield (
            f"blank-after-data-{i}",
            _join([lines[0], b"", *lines[1 : i + 1], b"", *lines[i + 1 :]]),
        )
    for cut in sorted({len(pem) * n // 8 for n in range(1, 8)} | {len(pem) - 1, 40}):
        yield f"truncated-{cut}", pem[:cut]
    for n, ch in enumerate([b"!", b"*", b"-", b"=", b"\xe9", b"\x00", b"\x7f", b":"]):
        mid = len(lines[1]) // 2
        bad = [*lines]
        bad[1] = lines[1][:mid] + ch + lines[1][mid:]
        yield f"bad-char-{n}", _join(bad)
    yield "wrong-end-label", _join([*lines[:-1], b"-----END CERTIFICATE-----"])
    yield "certificate-label", pem.replace(label, b"CERTIFICATE")
    yield "unknown-label", pem.replace(label, b"SECRET KEY")
    yield "rsa-label", pem.replace(label, b"RSA PRIVATE KEY")
    yield "ec-label", pem.replace(label, b"EC PRIVATE KEY")
    yield "pkcs8-label", pem.replace(label, b"PRIVATE KEY")
    yield "lowercase-label", pem.replace(label, label.lower())
    yield (
        "proc-type-header",
        _join(
            [
                lines[0],
                b"Proc-Type: 4,ENCRYPTED",
                b"DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF",
                b"",
                *lines[1:],
            ]
        ),
    )
    yield "comment-header", _join([lines[0], b"Comment: hello", b"", *lines[1:]])
    yield "colon-no-blank", _join([lines[0], b"Comment: hello", *lines[1:]])
    yield "crlf", pem.replace(b"\n", b"\r\n")
    yield "cr-only", pem.replace(b"\n", b"\r")
    yield "indented", _join([b"  " + line for line in lines])
    yield "indented-data", _join([lines[0], *(b"  " + x for x in lines[1:-1]), lines[-1]])
    yield "literal-backslash-n", pem.replace(b"\n", b"\\n")
    yield "literal-backslash-n-no-final", pem.rstrip(b"\n").replace(b"\n", b"\\n")
    yield "folded-spaces", pem.replace(b"\n", b" ")
    yield "folded-no-final", pem.rstrip(b"\n").replace(b"\n", b" ")
    yield "one-data-line", _join([lines[0], b"".join(lines[1:-1]), lines[-1]])
    yield "one-data-line-after-blank", _join([lines[0], b"", b"".join(lines[1:-1]), lines[-1]])
    yield "joined-end-begin", pem.rstrip(b"\n") + pem
    yield "twice", pem + pem
    yield "after-certificate", k.leaf.cert_pem + pem
    yield "body-only", k.body + b"\n"
    yield "body-lines-only", _join(lines[1:-1])
    yield "der", k.der
    yield "base64-of-pem", base64.b64encode(pem) + b"\n"
    yield "utf16", pem.decode().encode("utf-16")
    yield "utf8-bom", b"\xef\xbb\xbf" + pem
    yield "trailing-garbage-bytes", _join([x + b"\xc2\xa0" for x in lines])
    yield "nul-in-data", _join([lines[0], lines[1] + b"\x00zz", *lines[2:]])
    yield "lines-swapped", _join([lines[0], *lines[1:-1][::-1], lines[-1]])
    der = bytearray(k.der)
    for at in (1, 4, 7, len(der) // 2, len(der) - 3):
        flipped = bytearray(der)
        flipped[at] ^= 0x5A
        body = base64.encodebytes(bytes(flipped)).replace(b"\n", b"")
        wrapped = [body[i : i + 64] for i in range(0, len(body), 64)]
        yield f"der-byte-{at}-flipped", _join([lines[0], *wrapped, lines[-1]])
    password = serialization.BestAvailableEncryption(b"pw-for-the-test")
    yield (
        "encrypted-pkcs8",
        k.leaf.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, password
        ),
    )
    if "ed25519" not in k.name:
        yield (
            "encrypted-traditional",
            k.leaf.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, password
            ),
        )


# --- the check ------------------------------------------------------------------------------


def _windows(text: str) -> set[str]:
    return {text[i : i + WINDOW] for i in range(len(text) - WINDOW + 1)}


class Secret:
    """The 8-character windows of a key's base64 body and DER hex that are not public."""

    def __init__(self, k: KeyCase, public: bytes) -> None:
        public_text = public.decode()
        public_der = b"".join(
            base64.b64decode(b"".join(x for x in block.splitlines() if not x.startswith(b"-----")))
            for block in public.split(b"-----BEGIN")[1:]
            for block in [b"-----BEGIN" + block]
        )
        known = (
            _windows(public_text) | _windows(public_der.hex()) | _windows(public_der.hex().upper())
        )
        body = k.body.decode()
        hexed = k.der.hex()
        self.windows = (_windows(body) | _windows(hexed) | _windows(hexed.upper())) - known
        assert len(self.windows) > 100

    def leaks(self, text: str) -> list[str]:
        return sorted({text[i : i + WINDOW] for i in range(len(text) - WINDOW + 1)} & self.windows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[devca.Issued, list[KeyCase]]:
    ca = devca.make_ca("Key Leak Root")
    return ca, _keys(ca)


def _cases(world: tuple[devca.Issued, list[KeyCase]]) -> list[tuple[KeyCase, str, bytes]]:
    return [(k, name, data) for k in world[1] for name, data in mutations(k)]


def test_validate_never_shows_key_bytes(
    world: tuple[devca.Issued, list[KeyCase]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate() and `harper-certd validate --json` (in process): reports carry no key bytes."""
    ca = world[0]
    at = dt.datetime.now(dt.UTC)
    cases = _cases(world)
    refused = 0
    secrets = {k.name: Secret(k, k.leaf.cert_pem + ca.cert_pem) for k in world[1]}
    for k, name, data in cases:
        secret = secrets[k.name]
        report = validate(Inputs(k.leaf.cert_pem, data, ca.cert_pem), at=at)
        text = json.dumps(report.as_dict()) + "".join(str(p) for p in report.problems)
        assert not secret.leaks(text), (k.name, name, secret.leaks(text))
        refused += not report.valid
        folder = tmp_path / f"{k.name}-{name}"
        _write_set(folder, k.leaf.cert_pem, data, ca.cert_pem)
        status = main(["validate", *_args(folder), "--json"])
        out, err = capsys.readouterr()
        assert status in (0, 1), (k.name, name, err)
        assert not secret.leaks(out + err), (k.name, name, secret.leaks(out + err))
        json.loads(out)
    assert len(cases) > 300
    assert refused > len(cases) * 0.7  # not vacuous: most mutations are refused


def _write_set(folder: Path, cert: bytes, key: bytes, ca: bytes) -> None:
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)  # noqa: S103 - an ordinary source folder
    (folder / "certificate.pem").write_bytes(cert)
    devca.write_private(folder / "privateKey.pem", key)
    (folder / "ca.pem").write_bytes(ca)


def _args(folder: Path) -> list[str]:
    return [
        "--cert",
        str(folder / "certificate.pem"),
        "--key",
        str(folder / "privateKey.pem"),
        "--ca",
        str(folder / "ca.pem"),
    ]


def _sample(cases: list[tuple[KeyCase, str, bytes]]) -> list[tuple[KeyCase, str, bytes]]:
    """One case per mutation kind (numbered variants count once), key types in turn."""
    seen: dict[str, tuple[KeyCase, str, bytes]] = {}
    for n, case in enumerate(cases):
        kind = case[1].rstrip("0123456789-")
        if kind not in seen and n % 5 == len(seen) % 5 and len(seen) < 20:
            seen[kind] = case
    for case in cases:  # the field case's shape, for every key type
        if case[1] == "blank-line-2":
            seen[f"{case[0].name}-blank-line-2"] = case
    return list(seen.values())


def test_validate_subprocess_never_shows_key_bytes(
    world: tuple[devca.Issued, list[KeyCase]], tmp_path: Path
) -> None:
    """`harper-certd validate --json` as a real process, on a sample of every mutation kind."""
    ca = world[0]
    sample = _sample(_cases(world))

    def run(case: tuple[KeyCase, str, bytes]) -> tuple[KeyCase, str, str]:
        k, name, data = case
        folder = tmp_path / f"{k.name}-{name}"
        _write_set(folder, k.leaf.cert_pem, data, ca.cert_pem)
        done = subprocess.run(
            [*CLI, "validate", *_args(folder), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        json.loads(done.stdout)
        return k, name, done.stdout + done.stderr

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, sample))
    for k, name, text in results:
        secret = Secret(k, k.leaf.cert_pem + ca.cert_pem)
        assert not secret.leaks(text), (k.name, name, secret.leaks(text))
    assert len(results) >= 25


def _files_written(folders: list[Path], inputs: tuple[bytes, ...]) -> Iterator[tuple[Path, bytes]]:
    """Every regular file under ``folders``, except copies of the inputs."""
    for top in folders:
        for path in sorted(top.rglob("*")):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if data not in inputs:
                    yield path, data


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    return make_node(tmp_path_factory.mktemp("leak-node"))


def test_install_of_refused_sets_writes_no_key_bytes(
    world: tuple[devca.Issued, list[KeyCase]], node: Node
) -> None:
    """install() of each refused set: log lines, reason.json and every other file written."""
    ctx = build_context(node.config)
    journal = io.StringIO()
    logs.configure(json=True, stream=journal)
    refused = 0
    # The node's own CA signs the sets, so that only the key decides.
    leaves = {
        k.name: devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"], key=k.leaf.key)
        for k in world[1]
    }
    at = dt.datetime.now(dt.UTC)
    try:
        for k, name, data in _cases(world):
            leaf = leaves[k.name]
            if validate(Inputs(leaf.cert_pem, data, node.ca.cert_pem), at=at).valid:
                continue  # a mutation Node reads too (CRLF, a BOM...): nothing is refused
            src = node.tmp / "src" / f"{k.name}-{name}"
            _write_set(src, leaf.cert_pem, data, node.ca.cert_pem)
            secret = Secret(k, leaf.cert_pem + node.ca.cert_pem)
            outcome = install(ctx, src)
            assert outcome.status == "refused", (k.name, name, outcome.status)
            refused += 1
            text = json.dumps(outcome.as_dict()) + journal.getvalue()
            assert not secret.leaks(text), (k.name, name, secret.leaks(text))
            assert outcome.kept_at is not None
            mode = stat.S_IMODE(os.stat(outcome.kept_at / "reason.json").st_mode)
            assert mode == 0o600, oct(mode)
            inputs = (leaf.cert_pem, data, node.ca.cert_pem)
            # What a refusal writes: the kept folder, the state directory (history, journal).
            for path, written in _files_written([outcome.kept_at, node.state], inputs):
                leaked = secret.leaks(written.decode("latin-1"))
                assert not leaked, (k.name, name, str(path), leaked)
            journal.seek(0)
            journal.truncate()
    finally:
        logs.configure(json=True, stream=sys.stdout)
    assert refused > 250


def test_install_subprocess_logs_no_key_bytes(
    world: tuple[devca.Issued, list[KeyCase]], tmp_path: Path
) -> None:
    """`harper-certd install --json` as a real process: stdout, the log lines on stderr."""
    node = make_node(tmp_path)
    config = node.write_config()
    keys = {k.name: k for k in world[1]}
    picked = [
        (keys["p256-sec1"], "blank-line-2"),
        (keys["ed25519-pkcs8"], "blank-line-2"),
        (keys["rsa-pkcs1"], "blank-line-3"),
        (keys["p256-pkcs8"], "folded-no-final"),
        (keys["ed25519-pkcs8"], "literal-backslash-n-no-final"),
        (keys["p256-sec1"], "der-byte-7-flipped"),
    ]
    for k, name in picked:
        data = dict(mutations(k))[name]
        leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"], key=k.leaf.key)
        src = tmp_path / "src" / f"{k.name}-{name}"
        _write_set(src, leaf.cert_pem, data, node.ca.cert_pem)
        done = subprocess.run(
            [*CLI, "install", str(src), "--config", str(config), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, (name, done.stdout, done.stderr)
        secret = Secret(k, leaf.cert_pem + node.ca.cert_pem)
        assert not secret.leaks(done.stdout + done.stderr), (k.name, name)
        kept = Path(json.loads(done.stdout)["kept_at"])
        assert stat.S_IMODE(os.stat(kept / "reason.json").st_mode) == 0o600
        assert not secret.leaks((kept / "reason.json").read_text())


def test_log_scrubber_redacts_unarmoured_key_bodies(
    world: tuple[devca.Issued, list[KeyCase]],
) -> None:
    """A renewal command printing a key body without armour (issue 10 item 10): the
    certd.renewal_failed output keeps its words and loses every base64 line."""
    for k in world[1]:
        secret = Secret(k, k.leaf.cert_pem)
        body_lines = _lines(k.pem)[1:-1]
        output = "renewing nodea\n" + "\n".join(x.decode() for x in body_lines) + "\nerror: 1\n"
        for shown in (output, output[-1000:], output.replace("\n", "\r\n"), k.body.decode()):
            journal = io.StringIO()
            logs.configure(json=True, stream=journal)
            try:
                logs.get_logger().error(
                    "certd.renewal_failed",
                    exit_status=1,
                    reason="the renewal command exited 1",
                    codes=[],
                    output=shown,
                    failures=1,
                    next_attempt="2026-11-29T11:00:00+00:00",
                )
            finally:
                logs.configure(json=True, stream=sys.stdout)
            line = journal.getvalue()
            assert not secret.leaks(line), (k.name, secret.leaks(line))
            event = json.loads(line[line.index("{") :])
            assert "[redacted]" in event["output"]
            if "renewing" in shown:
                assert "renewing nodea" in event["output"]
                assert "error: 1" in event["output"]


def test_log_scrubber_keeps_paths_and_fingerprints() -> None:
    """Not over-eager: paths, hex fingerprints, words and ISO times stay as they are."""
    keep = [
        "/var/lib/harper-certd/generations/000007/certificate.pem",
        "/home/harperdb/hdb/keys/incoming/renewed-2026-11-29T10:00:00",
        "sha256 " + "ab12" * 16,
        "AB:12:" * 20,
        "The certificate 'CN=nodea' expires in 12.0 days.",
        "Congratulations! Your certificate and chain have been saved at:",
    ]
    for text in keep:
        assert logs.redact_base64(text) == text


def test_reader_objects_never_show_their_bytes(world: tuple[devca.Issued, list[KeyCase]]) -> None:
    """A block of a key file, or a read error on one, shows no key bytes in repr or str
    (what a traceback or a debugger prints)."""
    from harper_certd import pem

    for k in world[1]:
        secret = Secret(k, k.leaf.cert_pem)
        block = pem.Reader(k.pem).read()
        assert block.der == k.der
        assert not secret.leaks(repr(block) + str(block))
        folded = k.pem.rstrip(b"\n").replace(b"\n", b" ")  # the label swallows the body
        with pytest.raises(pem.PemError) as info:
            pem.Reader(folded).read()
        if len(folded) < pem.LINE_READ:  # one read: the whole key is taken for a BEGIN line
            assert info.value.label  # the error knows it, for the caller's checks...
        assert not secret.leaks(repr(info.value) + str(info.value))  # ...and never shows it
