"""Load stage: read certificate, key and CA files as hostile input, as Node 20 reads them.

Every failure is an ``Unreadable`` carrying one sentence for a person; the
validate stage turns it into a problem with the ``*_unreadable`` code of the
file's role.  Nothing here trusts sizes, encodings or symlinks.

What is accepted is what Node 20's ``tls.createSecureContext`` accepts (OpenSSL 3.0's PEM
reader, emulated in ``pem``):

- ``cert``: ``PEM_read_bio_X509_AUX`` for the first certificate (CERTIFICATE, X509
  CERTIFICATE or TRUSTED CERTIFICATE), then ``PEM_read_bio_X509`` until the end of the file
  (CERTIFICATE and X509 CERTIFICATE; blocks with other labels are read and skipped). Any
  error but "no start line" at the end fails the whole file.
- ``key``: ``PEM_read_bio_PrivateKey``: the first block with a private-key label; a PKCS#8
  body is accepted under a type's label (``RSA PRIVATE KEY``) as OpenSSL 3's decoders do.
- ``ca``: ``PEM_read_bio_X509_AUX`` in a loop that stops silently at the first failure (Node's
  ``AddCACert``), so entries after a damaged one are dropped; Harper parses the first entry
  with ``X509Certificate`` and loads nothing when that fails.  Both are refused here.

Messages about key files are built from our own words and positions (line numbers, labels
from a fixed list, byte counts): never from a library's error text or from file content.
"""

import binascii
import errno
import os
import re
import stat
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from harper_certd import der, dsakeys, pem, rawio

# Harper's own certificates (the CA and node certificate 4.x makes itself) carry C=USA: three
# letters where X.520 allows two.  OpenSSL and Node load such a name; cryptography warns at
# every read of the subject, which reached `check`, `status`, `install` and the daemon's log
# (certd.library_message) on every node that kept Harper's certificate.  No verdict depends on
# an attribute's length.  Here, not in the package's __init__: every reader of certificates
# imports this module, and the console script starts Node before ``re`` is imported.
warnings.filterwarnings("ignore", message=r"Attribute's length must be", category=UserWarning)

MAX_FILE_BYTES = 1 << 20
# A CA file may hold a whole trust store (1,000 RSA roots: 1.1 MB, loaded by Node and openssl
# alike): 16 MiB, with the reading bounded in time too (CA_PARSE_SECONDS).
MAX_CA_FILE_BYTES = 16 << 20
CA_PARSE_SECONDS = 5.0
EAGER_CERTS = 16  # certificates of a cert file whose extensions are parsed at once
_V = TypeVar("_V")


class Unreadable(Exception):
    """A file that cannot be used; ``str()`` is the sentence for a person."""


class CertFile(NamedTuple):
    certs: tuple[x509.Certificate, ...]
    holds_private_key: bool


def _world_or_group_writable(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def check_symlinks(path: Path) -> None:
    """Refuse a path whose symlinks sit in directories that others can write.

    Such a link could be swapped under us to point at any file the daemon can
    read (a key of another service, say) between validation and use.
    """
    # Strings, not Paths: every read of a set's file walks its path (a Path per component
    # cost each read about 20 us).  Components as pathlib splits them ("" and "." dropped).
    text = os.fspath(path)
    current = "/" if text.startswith("/") else ""
    for part in text.split("/"):
        if part in ("", "."):
            continue
        parent = current
        current = os.path.join(parent, part) if parent else part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            pst = os.stat(parent or ".")
            if _world_or_group_writable(pst.st_mode) and not (
                pst.st_mode & stat.S_ISVTX and st.st_uid in (0, os.geteuid())
            ):
                raise Unreadable(
                    f"{path}: {current} is a symlink in {parent or '.'}, a directory that "
                    "group or others can write; refusing to follow it"
                )
            target = os.readlink(current)
            current = (
                target if target.startswith("/") or not parent else os.path.join(parent, target)
            )


def read_bounded(path: Path, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """Read a regular file of at most ``limit`` bytes, refusing anything else before parsing."""
    check_symlinks(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable(f"{path} does not exist") from None
    except PermissionError:
        raise Unreadable(f"{path} cannot be read: permission denied") from None
    except OSError as exc:
        raise Unreadable(
            f"{path} cannot be opened: {os.strerror(exc.errno or errno.EIO)}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(f"{path} is not a regular file")
        if st.st_size > limit:
            raise Unreadable(
                f"{path} is {st.st_size} bytes, over the {limit} byte limit for a PEM file"
            )
        data = rawio.read_fd(fd, limit, st.st_size)
    finally:
        os.close(fd)
    if data is None:
        raise Unreadable(f"{path} grew over the {limit} byte limit while being read")
    return data


# --- what a file is, when it is not PEM that OpenSSL reads (structure only, never content)

# Labels we may quote: anything else is described, since a damaged line in a key file can
# put key text where a label is read.
KNOWN_LABELS = frozenset(
    {
        *pem.X509_AUX_LABELS,
        *pem.KEY_LABELS,
        b"OPENSSH PRIVATE KEY",
        b"PUBLIC KEY",
        b"RSA PUBLIC KEY",
        b"CERTIFICATE REQUEST",
        b"NEW CERTIFICATE REQUEST",
        b"X509 CRL",
        b"PKCS7",
        b"PKCS #7 SIGNED DATA",
        b"EC PARAMETERS",
        b"DH PARAMETERS",
    }
)
_KEYISH = re.compile(rb"PRIVATE KEY\Z")
_INDENTED_BEGIN = re.compile(rb"^[ \t]+-----BEGIN ", re.MULTILINE)
_FOLDED = re.compile(rb"-----BEGIN [A-Z0-9 #]{1,40}----- +[A-Za-z0-9+/]")
_JOINED = re.compile(rb"-----END [A-Z0-9 #]{0,40}-----+BEGIN ")
_B64_BODY = re.compile(rb"\A[A-Za-z0-9+/=\s]+\Z")
# The start of the sentence for a PKCS#12 file (troubleshoot.py knows it by these words).
PKCS12_WORDS = "PKCS#12 (.pfx/.p12) bundle"
_PKCS12_FIX = (
    f"it is a {PKCS12_WORDS} of certificate, chain and private key, not PEM; "
    "split it: openssl pkcs12 -in {f} -clcerts -nokeys -out certificate.pem; "
    "openssl pkcs12 -in {f} -cacerts -nokeys -out ca.pem; "
    "openssl pkcs12 -in {f} -nocerts -nodes -out privateKey.pem"
)


def _label(label: bytes) -> str:
    if label in KNOWN_LABELS:
        return f"'{label.decode()}'"
    return f"an unknown label ({_characters(label)})"


def _block(label: bytes) -> str:
    if label in KNOWN_LABELS:
        return f"the '{label.decode()}' block"
    return f"the block with an unknown label ({_characters(label)})"


def _characters(label: bytes) -> str:
    return "1 character" if len(label) == 1 else f"{len(label)} characters"


def _line(data: bytes, number: int) -> bytes:
    """Physical line ``number`` (1-based) of ``data``, without its newline."""
    parts = data.split(b"\n", number)
    return parts[number - 1] if len(parts) >= number else b""


def _in_place(name: str) -> str:
    """The end of a conversion command that writes ``name`` anew (not ``name.pem``)."""
    return f"{name}.new && mv {name}.new {name}"


def _format_hint(data: bytes, name: str) -> str | None:
    """The cause, when the whole file is in a format other than PEM (never quotes content)."""
    head = data[:4096]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (
        b"\x00" in head and head.count(b"\x00") * 4 >= len(head)
    ):
        return (
            f"{name} is UTF-16 text (a byte-order mark or NUL bytes between the characters); "
            f"OpenSSL reads ASCII PEM: iconv -f UTF-16 -t ASCII {name} > {_in_place(name)}"
        )
    if data[:1] == b"\x30":
        kind = der.describe_binary(data)
        if kind == "pkcs12":
            return f"{name}: " + _PKCS12_FIX.format(f=name)
        if kind == "pkcs7":
            return (
                f"{name} is a binary (DER) PKCS#7 bundle of certificates, not PEM; "
                "convert it: openssl pkcs7 -inform der -print_certs "
                f"-in {name} -out {_in_place(name)}"
            )
        if kind == "certificate":
            return (
                f"{name} is a binary (DER) certificate, not PEM; convert it: "
                f"openssl x509 -inform der -in {name} -out {_in_place(name)}"
            )
        if kind is not None:
            return (
                f"{name} is a binary (DER) private key, not PEM; convert it: "
                f"openssl pkey -inform der -in {name} -out {_in_place(name)} (then chmod 600)"
            )
        if data.translate(None, bytes(range(0x20, 0x7F)) + b"\t\r\n"):
            return f"{name} is binary, not PEM text"
    stripped = data.strip()
    if b"-----BEGIN" not in data and stripped and _B64_BODY.match(stripped):
        try:
            decoded = binascii.a2b_base64(b"".join(stripped.split()))
        except binascii.Error:
            decoded = b""
        if b"-----BEGIN " in decoded[:200]:
            return (
                f"{name} holds base64 of a PEM file (Kubernetes secret data?), not PEM; "
                f"decode it: base64 -d {name} > {_in_place(name)}"
            )
        if decoded[:1] == b"\x30":
            return (
                f"{name} holds bare base64 without the '-----BEGIN' and '-----END' lines; "
                "put the lines of the right label around it"
            )
    if b"\\n" in data and re.search(rb"-----BEGIN [A-Z0-9 ]{1,40}-----\\n", data):
        return (
            f"{name} holds the two characters \\n instead of line breaks (copied from JSON or "
            "an environment variable); convert it: "
            f"(umask 077; printf '%b' \"$(cat {name})\" > {name}.new) && mv {name}.new {name}"
        )
    if b"\r" in data and b"\n" not in data:
        return (
            f"{name} has CR-only line endings (old Mac style), which OpenSSL does not read "
            f"as lines; convert them: tr '\\r' '\\n' < {name} > {_in_place(name)}"
        )
    return None


def _no_start_hint(data: bytes, name: str) -> str | None:
    m = _INDENTED_BEGIN.search(data)
    if m is not None:
        line = data.count(b"\n", 0, m.start()) + 1
        return (
            f"{name}: the PEM lines are indented (line {line}: copied from YAML?); "
            "OpenSSL only reads '-----BEGIN' at the start of a line; remove the leading spaces"
        )
    if _FOLDED.search(data):
        return (
            f"{name}: the line breaks were replaced by spaces ('-----BEGIN ...-----' is followed "
            "by the base64 text on the same line); put each line back on its own line"
        )
    return None


def _describe(err: pem.PemError, data: bytes, name: str, what: str) -> str:
    """One sentence naming the cause of a read error, with line numbers."""
    hint = _format_hint(data, name)
    if hint is not None:
        return hint
    r = pem.Reason
    if err.reason is r.NO_START_LINE:
        return _no_start_hint(data, name) or f"{name} holds no {what}: it has no '-----BEGIN' line"
    block = f"{_block(err.label)} that starts on line {err.begin_line}"
    if err.reason is r.BAD_END_LINE:
        if err.cause is pem.BadEndCause.EOF:
            if _FOLDED.search(_line(data, err.begin_line)):
                return (
                    f"{name}: line {err.begin_line} holds the whole block: the line breaks were "
                    "replaced by spaces; put each line back on its own line"
                )
            return f"{name}: {block} has no END line (the file is truncated?)"
        if _JOINED.search(_line(data, err.line)):
            return (
                f"{name}: line {err.line} joins an END and a BEGIN line (a file concatenated "
                "without a final newline); put a line break between them"
            )
        if err.cause is pem.BadEndCause.WRONG_END:
            label = err.label.decode() if err.label in KNOWN_LABELS else "<label>"
            return (
                f"{name}: line {err.line} should be the END line of {block}, "
                f"'-----END {label}-----', with nothing after it"
            )
        if err.cause is pem.BadEndCause.BLANK_AFTER_DATA:
            return (
                f"{name}: line {err.line} is a second blank line inside {block}; "
                "remove the blank lines between BEGIN and END"
            )
        return (
            f"{name}: line {err.line} follows a shorter data line inside {block}: after a "
            "blank line OpenSSL wants 64-character lines, a shorter one only as the last; "
            "remove the blank line or rewrap the block (openssl x509 / openssl pkey)"
        )
    if err.reason is r.LINE_TOO_LONG:
        return (
            f"{name}: line {err.line} is longer than 64 characters inside {block}, after a "
            "blank line (which makes OpenSSL check line lengths); remove the blank line"
        )
    if err.reason is r.HEADER_ONLY:
        return (
            f"{name}: line {err.line} is blank inside {block}: OpenSSL reads the lines before "
            "it as a header and finds no data after it; remove the blank line"
        )
    if err.reason is r.NO_DATA:
        return (
            f"{name}: {block} holds no base64 data (or a line with ':' and no blank line "
            "after it, which OpenSSL reads as a header)"
        )
    if err.reason is r.BAD_BASE64_DECODE:
        if err.line > err.begin_line:
            return (
                f"{name}: line {err.line} of {block} holds a character that is not base64 "
                "(A-Z a-z 0-9 + / and '=' at the end); remove it or copy the file again"
            )
        return (
            f"{name}: {block} is not valid base64: '=' before the end, or characters "
            "missing (the count is not a multiple of 4: a line lost or cut?)"
        )
    if err.reason is r.NOT_PROC_TYPE:
        return (
            f"{name}: line {err.line} is blank inside {block}: OpenSSL then reads the lines "
            "before it as a header, which must start with 'Proc-Type:' ('not proc type'); "
            "remove the blank line"
        )
    return (
        f"{name}: {block} is encrypted (Proc-Type: 4,ENCRYPTED); Harper needs an "
        f"unencrypted key: openssl pkey -in {name} -out {name}.plain (then chmod 600)"
    )


# --- certificates ------------------------------------------------------------------------

_MAX_REMEMBERED = 256
_ORIGINALS: OrderedDict[bytes, bytes] = OrderedDict()
_LIGHTENED: OrderedDict[bytes, bool] = OrderedDict()
_AUX: OrderedDict[bytes, der.CertAux] = OrderedDict()


def _remember(table: OrderedDict[bytes, _V], key: bytes, value: _V) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > _MAX_REMEMBERED:
        table.popitem(last=False)


def original_der(cert: x509.Certificate) -> bytes | None:
    """The certificate's bytes as they were in the file, when they had to be normalised.

    Some certificates spell out a DEFAULT value (``critical FALSE``: BER, not the strict
    DER that cryptography parses); OpenSSL and Node read them and verify the signature over
    the original ``tbsCertificate``.  Such a certificate is parsed from a re-encoding; this
    returns the original encoding (None for every certificate read as it was).
    """
    return _ORIGINALS.get(cert.public_bytes(serialization.Encoding.DER))


def aux_trust(cert: x509.Certificate) -> der.CertAux | None:
    """OpenSSL's trust settings of a certificate read from a TRUSTED CERTIFICATE block."""
    return _AUX.get(cert.public_bytes(serialization.Encoding.DER))


def _certificate(blob: bytes, *, aux: bool, eager: bool, where: str) -> x509.Certificate:
    """``d2i_X509`` (or ``d2i_X509_AUX``) of a block's DER; ``where`` names it in messages."""
    try:
        outer = der.tlv(blob, 0)
    except der.DerError as exc:
        raise Unreadable(
            f"{where} is not a DER certificate (its structure is broken at byte {exc.offset})"
        ) from None
    cert_der = blob[: outer.end]
    cert = _load_cert(cert_der)
    if cert is not None:
        fixed_ber = _ber_true_fixed(cert, cert_der)
        if fixed_ber is not None:  # a BER TRUE in an extension, read as OpenSSL reads it
            cert = fixed_ber
            _remember(_ORIGINALS, cert.public_bytes(serialization.Encoding.DER), cert_der)
    if cert is None:
        fixed = der.normalise_certificate(cert_der)
        cert = _load_cert(fixed) if fixed is not None else None
        if cert is None:
            offset = der.first_error(cert_der)
            at = f" at byte {offset}" if offset is not None else ""
            raise Unreadable(
                f"{where} is not a certificate harper-certd can read (its DER is damaged{at}, "
                "or a field holds a value that is not allowed)"
            )
        _remember(_ORIGINALS, cert.public_bytes(serialization.Encoding.DER), cert_der)
    if aux and len(blob) > outer.end:
        settings = der.parse_aux(blob[outer.end :])
        if settings is None:
            raise Unreadable(
                f"{where}: the {len(blob) - outer.end} bytes after the certificate are not "
                "OpenSSL trust settings (X509_CERT_AUX)"
            )
        _remember(_AUX, cert.public_bytes(serialization.Encoding.DER), settings)
    else:  # read plain this time: trust settings read before from another file do not apply
        _AUX.pop(cert.public_bytes(serialization.Encoding.DER), None)
    if eager:
        cert = _check_extensions(cert, where)
    return cert


# A BOOLEAN whose content byte is neither 0x00 nor 0xFF: BER, not DER.  A byte scan (false
# hits cost one extension parse), so that a CA file of 1,000 roots is not parsed eagerly.
_LOOSE_BOOLEAN = re.compile(rb"\x01\x01[^\x00\xff]")


def _ber_true_fixed(cert: x509.Certificate, cert_der: bytes) -> x509.Certificate | None:
    """``cert`` with its BER TRUEs written as DER, when that is what keeps its extensions
    from parsing; None otherwise."""
    if not _LOOSE_BOOLEAN.search(cert_der) or _extensions_parse(cert):
        return None
    fixed = der.normalise_certificate(cert_der)
    better = _load_cert(fixed) if fixed is not None else None
    return better if better is not None and _extensions_parse(better) else None


def _extensions_parse(cert: x509.Certificate) -> bool:
    try:
        _ = cert.extensions
    except Exception:  # malformed, duplicate: reported where the certificate is used
        return False
    return True


def _load_cert(blob: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(blob)
    except Exception:  # hostile input: any parse failure
        return None


def _check_extensions(cert: x509.Certificate, where: str) -> x509.Certificate:
    """Extensions parse lazily; a malformed or duplicated one is found here.

    When cryptography refuses them only for extensions OpenSSL does not decode (a malformed
    authorityInfoAccess, a repeated private extension, an empty nameConstraints: OpenSSL,
    so Node, takes such certificates), the certificate without them is returned, its
    original bytes remembered for the signature (``original_der``).
    """
    problem = None
    try:
        _ = cert.extensions
    except x509.DuplicateExtension as exc:
        problem = f"{where} has the extension {exc.oid.dotted_string} twice"
    except Exception:  # any other parse failure of an extension
        problem = f"{where} has an extension whose content cannot be parsed"
    if problem is None:
        return cert
    original = original_der(cert) or cert.public_bytes(serialization.Encoding.DER)
    lighter = der.ignorable_extensions_removed(original)
    usable = _load_cert(lighter) if lighter is not None else None
    if usable is None or not _extensions_parse(usable):
        raise Unreadable(problem)
    _remember(_ORIGINALS, usable.public_bytes(serialization.Encoding.DER), original)
    _remember(_LIGHTENED, usable.public_bytes(serialization.Encoding.DER), True)
    return usable


def lightened(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is read without extensions OpenSSL ignores (``_check_extensions``)."""
    return cert.public_bytes(serialization.Encoding.DER) in _LIGHTENED


def _check_public_keys(certs: list[x509.Certificate], where: Callable[[int], str]) -> None:
    """OpenSSL decodes the key of every certificate of ``cert`` when it is set (the security
    level check of ``SSL_CTX_use_certificate`` and ``SSL_CTX_add0_chain_cert``) and refuses
    the file when one fails: a damaged key value, an unknown curve or algorithm."""
    for index, cert in enumerate(certs):
        damaged = False
        try:
            cert.public_key()
        except Exception:  # ValueError, UnsupportedAlgorithm: OpenSSL cannot decode it either
            damaged = True
        if damaged:
            raise Unreadable(
                f"{where(index)} holds a public key that cannot be decoded (a damaged key "
                "value, or a curve or algorithm OpenSSL does not know)"
            )


def _key_blocks(skipped: set[bytes]) -> bool:
    return any(_KEYISH.search(label) for label in skipped)


def _pem_failure(err: pem.PemError, data: bytes, name: str, what: str) -> Unreadable:
    return Unreadable(_describe(err, data, name, what))


# Ordinary files, in one call: only plain CERTIFICATE blocks (1-64 base64 characters a line,
# '=' only at the end) and blank lines.  OpenSSL reads such a file block by block with no
# rule of the state machine coming into play, so cryptography's PEM loader returns the same
# certificates; anything it refuses (bad padding, trailing DER bytes, BER) goes the slow way.
_PLAIN_FILE = re.compile(
    rb"(?:\n*+-----BEGIN CERTIFICATE-----\n(?:[A-Za-z0-9+/]{1,64}+\n)*+"
    rb"(?:[A-Za-z0-9+/]{0,63}+={1,2}+\n)?+-----END CERTIFICATE-----\n)++\n*+"
)


_PLAIN_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=- \n"


def _plain_certificates(data: bytes) -> list[x509.Certificate] | None:
    if data.translate(None, _PLAIN_BYTES) or _PLAIN_FILE.fullmatch(data) is None:
        return None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except Exception:  # any doubt: the state machine decides and names the cause
        return None
    if len(certs) != data.count(b"-----BEGIN CERTIFICATE-----"):
        return None
    for cert in certs:
        # A BER TRUE: the state machine normalises it (``_certificate``).  The scan reads the
        # TBS bytes (the fastest copy cryptography gives); extensions are parsed on a hit only.
        if _LOOSE_BOOLEAN.search(cert.tbs_certificate_bytes) and (
            _ber_true_fixed(cert, cert.public_bytes(serialization.Encoding.DER)) is not None
        ):
            return None
    for cert in certs if _AUX else ():  # read plain: no trust settings from another file
        _AUX.pop(cert.public_bytes(serialization.Encoding.DER), None)
    return certs


def parse_certificates(data: bytes, *, name: str, eager: bool = True) -> CertFile:
    """The certificates of a ``cert`` file, in file order, read as Node 20 reads them.

    ``eager``: parse every extension now, so that a malformed one is this file's fault.
    Raises ``Unreadable`` naming the line and the cause.
    """
    if not data.strip():
        raise Unreadable(f"{name} is empty; Fix: write the certificate into it (PEM, leaf first)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as below
        plain = _plain_certificates(data)
        if plain is not None:
            for index, cert in enumerate(plain[:EAGER_CERTS] if eager else ()):
                plain[index] = _check_extensions(cert, f"{name}: certificate #{index + 1}")
            _check_public_keys(plain, lambda i: f"{name}: certificate #{i + 1}")
            return CertFile(tuple(plain), holds_private_key=False)
    reader = pem.Reader(data)
    skipped: set[bytes] = set()
    certs: list[x509.Certificate] = []
    failure: pem.PemError | None = None
    try:
        first = pem.read_matching(reader, pem.X509_AUX_LABELS, skipped)
    except pem.PemError as err:
        failure = err
    if failure is not None:
        if failure.reason is pem.Reason.NO_START_LINE and skipped:
            labels = ", ".join(sorted(_label(label) for label in skipped))
            hint = " (the key and certificate files swapped?)" if _key_blocks(skipped) else ""
            raise Unreadable(f"{name} holds no certificate, only: {labels}{hint}")
        raise _pem_failure(failure, data, name, "certificate")
    blocks = [first]
    while True:
        try:
            blocks.append(pem.read_matching(reader, pem.X509_LABELS, skipped))
        except pem.PemError as err:
            failure = err
            break
    if failure.reason is not pem.Reason.NO_START_LINE:
        raise _pem_failure(failure, data, name, "certificate")
    with warnings.catch_warnings():
        # Negative serials and similar oddities warn; OpenSSL accepts them too.
        warnings.simplefilter("ignore")
        for index, block in enumerate(blocks):
            where = f"{name}: certificate #{index + 1} (line {block.begin_line})"
            # Extensions parse lazily; a chain longer than EAGER_CERTS (real ones have 2-5)
            # has the rest checked when the validator's chain uses them: a 1 MiB file of
            # small certificates would otherwise take ~0.1 s in cryptography alone.
            eager_here = eager and index < EAGER_CERTS
            certs.append(_certificate(block.der, aux=index == 0, eager=eager_here, where=where))
    _check_public_keys(
        certs, lambda i: f"{name}: certificate #{i + 1} (line {blocks[i].begin_line})"
    )
    return CertFile(tuple(certs), holds_private_key=_key_blocks(skipped))


def parse_ca_file(data: bytes, *, name: str) -> CertFile:
    """The certificates of a ``ca`` file, read as Node 20 and Harper read them.

    Node reads entries until the first that fails and drops it and every entry after it,
    silently; Harper parses the first entry and loads nothing when that fails.  Both are
    refused here, naming the entry.  Extensions are parsed lazily (a CA file may hold
    hundreds of roots; the validator checks the ones its chain uses).
    """
    if not data.strip():
        raise Unreadable(
            f"{name} is empty; Fix: put the CA certificates into it (PEM: the leaf's issuer first, "
            "up to the self-signed root)"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in parse_certificates
        plain = _plain_certificates(data)
    if plain is not None:
        return CertFile(tuple(plain), holds_private_key=False)
    reader = pem.Reader(data)
    skipped: set[bytes] = set()
    certs: list[x509.Certificate] = []
    deadline = time.monotonic() + CA_PARSE_SECONDS
    while True:
        entry = len(certs) + 1
        if time.monotonic() > deadline:
            raise Unreadable(
                f"{name}: reading it took more than {CA_PARSE_SECONDS:.0f} s ({len(certs)} "
                "entries read); harper-certd refuses a CA file it cannot judge in time"
            )
        try:
            block = pem.read_matching(reader, pem.X509_AUX_LABELS, skipped)
        except pem.PemError as err:
            if err.reason is pem.Reason.NO_START_LINE and certs:
                break
            if err.reason is pem.Reason.NO_START_LINE and skipped:
                labels = ", ".join(sorted(_label(label) for label in skipped))
                raise Unreadable(f"{name} holds no certificate, only: {labels}") from None
            if not certs:
                raise _pem_failure(err, data, name, "certificate") from None
            cause = _describe(err, data, name, "certificate")
            raise Unreadable(_dropped(name, entry, cause)) from None
        where = f"{name}: entry #{entry} (line {block.begin_line})"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # as in parse_certificates
                certs.append(_certificate(block.der, aux=True, eager=False, where=where))
        except Unreadable as exc:
            if not certs:
                raise
            raise Unreadable(_dropped(name, entry, str(exc))) from None
    return CertFile(tuple(certs), holds_private_key=_key_blocks(skipped))


def _dropped(name: str, entry: int, cause: str) -> str:
    return (
        f"{cause}; Node reads {name} only up to this entry: it silently drops entry #{entry} "
        f"and every entry after it (the {entry - 1} before it are used), so fix or remove it"
    )


# --- private keys ------------------------------------------------------------------------

_LABEL_KEY_TYPES: dict[bytes, tuple[str, bytes, type]] = {
    b"RSA PRIVATE KEY": ("pkcs1", der.OID_RSA, rsa.RSAPrivateKey),
    b"EC PRIVATE KEY": ("sec1", der.OID_EC, ec.EllipticCurvePrivateKey),
    b"DSA PRIVATE KEY": ("dsa", der.OID_DSA, dsakeys.DSAPrivateKey),
}
_STRUCTURES = {
    "pkcs8": "PKCS#8",
    "pkcs1": "PKCS#1 RSA",
    "sec1": "SEC1 EC",
    "dsa": "DSA",
}


def parse_private_key(data: bytes, *, name: str) -> PrivateKeyTypes:
    """The private key Node 20 reads from a ``key`` file: the first private-key block.

    Accepts an unencrypted PKCS#8 body under ``PRIVATE KEY``, and under ``RSA``/``EC``/``DSA
    PRIVATE KEY`` the type's own structure or a PKCS#8 body of that type (OpenSSL 3).
    Messages never carry key bytes nor a library's error text.
    """
    if not data.strip():
        raise Unreadable(f"{name} is empty; Fix: write the certificate's private key into it (PEM)")
    reader = pem.Reader(data)
    skipped: set[bytes] = set()
    failure: pem.PemError | None = None
    try:
        block = pem.read_matching(reader, pem.KEY_LABELS, skipped)
    except pem.PemError as err:
        failure = err
    if failure is not None:
        if failure.reason is pem.Reason.NO_START_LINE and skipped:
            if b"OPENSSH PRIVATE KEY" in skipped:
                raise Unreadable(
                    f"{name} is in OpenSSH format; Harper needs PEM: ssh-keygen -p -m PEM -f {name}"
                )
            labels = ", ".join(sorted(_label(label) for label in skipped))
            hint = (
                " (the key and certificate files swapped?)"
                if bool(skipped & pem.X509_AUX_LABELS)
                else ""
            )
            raise Unreadable(f"{name} holds no private key, only: {labels}{hint}")
        raise Unreadable(_describe(failure, data, name, "private key"))
    if block.label == b"ENCRYPTED PRIVATE KEY":
        raise Unreadable(
            f"{name} is encrypted; Harper needs an unencrypted key: "
            f"openssl pkey -in {name} -out {name}.plain (then chmod 600)"
        )
    return _key_from_der(block, name)


def _key_from_der(block: pem.Block, name: str) -> PrivateKeyTypes:
    where = f"{name}: {_block(block.label)} on lines {block.begin_line}-{block.end_line}"
    blob = block.der
    try:
        outer = der.tlv(blob, 0)
    except der.DerError:
        outer = None
    structure = der.key_structure(blob, outer) if outer is not None else None
    if outer is None or structure is None:
        raise Unreadable(f"{where} does not hold a private key structure ({len(blob)} bytes)")
    allowed = "pkcs8"
    expected: type | None = None
    if block.label in _LABEL_KEY_TYPES:
        own, oid, expected = _LABEL_KEY_TYPES[block.label]
        if structure == "pkcs8" and der.pkcs8_algorithm(blob, outer) != oid:
            raise Unreadable(f"{where} holds a PKCS#8 key of another type than its label says")
        allowed = "pkcs8" if structure == "pkcs8" else own
    if structure != allowed:
        raise Unreadable(
            f"{where} holds a {_STRUCTURES[structure]} structure, which OpenSSL does not read "
            "under this label; rewrite it: openssl pkey -in F -out F.pem"
        )
    key: PrivateKeyTypes | None
    try:
        # The RSA consistency check costs ~30 ms a key; what matters here, that the key is
        # the certificate's, is checked by comparing public keys (as openssl's modulus test).
        key = serialization.load_der_private_key(
            der.loadable_key(blob, outer, structure),
            password=None,
            unsafe_skip_rsa_key_validation=True,
        )
    except Exception:  # never the library's text: it can quote key bytes
        key = None
    if key is None:
        raise Unreadable(
            f"{where} is a damaged or unsupported {_STRUCTURES[structure]} key ({outer.end} bytes)"
        )
    if expected is not None and not isinstance(key, expected):
        raise Unreadable(f"{where} holds a key of another type than its label says")
    return key
