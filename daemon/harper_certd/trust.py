"""The system trust store: the roots OpenSSL itself would trust on this machine.

A file set without a CA file (a public certificate: a full chain, no
``certificateAuthority``) must chain to one of these. Where they come from follows
OpenSSL's default (``X509_STORE_set_default_paths``), as ``ssl.get_default_verify_paths()``
reports it: the file ``$SSL_CERT_FILE``, else OpenSSL's built-in file
(``/usr/lib/ssl/cert.pem`` -> ``/etc/ssl/certs/ca-certificates.crt`` on Debian), and
the hashed directory ``$SSL_CERT_DIR``, else OpenSSL's built-in directory. The config
key ``harper.trust_store`` (one PEM bundle) replaces both.

The file is read whole, as OpenSSL loads it, and decoded when a question first needs its
roots: "is this CA a public root?" is asked of its text first (``TrustStore._might_hold``).
The directory is looked up as OpenSSL's
``by_dir`` method looks it up: by a name's hash (``X509_NAME_hash``, ``subject_hash``), the
files ``<hash>.0``, ``<hash>.1`` ... up to the first that does not exist, so a root is in the
directory only under its own subject's hash (a file named for another hash is never read,
by OpenSSL or here).  A "not in the store" answer, the usual one for a private CA, costs one
``open`` instead of reading Debian's ~145 files (about 8 ms of every ``status``).
"""

from __future__ import annotations

import _ssl
import binascii
import functools
import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harper_certd import der, rawio

_HASHED = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")  # c_rehash names: <subject hash>.<n>
_MAX_BUNDLE = 16 << 20  # bytes; Debian's bundle is about 220 KB
_ANSWERS_MAX = 256  # contains()'s answers kept per store: a node's CA files hold a few
_WHITESPACE = b" \t\n\r\f\v"  # what ``\s`` is in _BLOCK, and what a2b_base64 skips there
_INNER_PAD = re.compile(rb"=[A-Za-z0-9+/]")  # padding with base64 after it: not a block's end


class TrustStore:
    """Roots and where they were read from (``where``: the paths, for output).

    ``ders``: the DER of each distinct root block of the file, in its order (``certs``
    parses them when first asked); ``capath``: the hashed directory, looked up by subject
    hash (module docstring), or None (an override bundle, a test's store).  ``pem``: the
    file's bytes, when ``ders`` is to be decoded from them only when first needed
    (``system_store``: a "not in the store" answer, the usual one, needs no decoding; see
    ``_might_hold``).  A plain class, not a dataclass: ``status`` builds one, and a
    dataclass costs 1.4 ms of its start-up."""

    __slots__ = ("_answers", "_ders", "_joined", "_parsed", "_pem", "_text", "capath", "where")

    def __init__(
        self,
        where: str,
        ders: tuple[bytes, ...] | None = None,
        capath: Path | None = None,
        *,
        pem: bytes | None = None,
    ) -> None:
        self.where = where
        self._ders = () if ders is None and pem is None else ders  # None: decoded when asked
        self._pem = pem
        self.capath = capath
        self._joined: bytes | None = None
        self._text: bytes | None = None
        self._parsed: tuple[x509.Certificate, ...] | None = None
        # certificate DER -> contains()'s answer: an install asks about the same CA files
        # twice (the layout before and after), the daemon at every install.  A store lives
        # as long as its file's stamp (``system_store``); update-ca-certificates rewrites both.
        self._answers: dict[bytes, bool] = {}

    @property
    def ders(self) -> tuple[bytes, ...]:
        if self._ders is None:
            assert self._pem is not None
            self._ders = tuple(dict.fromkeys(_block_ders(self._pem)))
        return self._ders

    @property
    def joined(self) -> bytes:
        """Every DER one after the other: one search answers "no such key here"."""
        if self._joined is None:
            self._joined = b"".join(self.ders)
        return self._joined

    def _might_hold(self, spki: bytes) -> bool:
        """False only when no root of the file holds ``spki`` (True: look in ``ders``).

        Before the file is decoded (2 ms for Debian's 220 KB bundle here), its text is asked
        instead: a block's body is the base64 of the root's DER (``_BLOCK``: base64 and
        whitespace only), so bytes of the DER that start at a multiple of three are, once
        the whitespace is taken out, a run of the body's text: the base64 of ``spki`` from
        one of its first three bytes on, whole 3-byte groups, is in the text when ``spki``
        is in a root (a key never ends a certificate: its signature follows).  A ``=`` with
        base64 after it (padding inside a body, which ``a2b_base64`` reads its own way)
        sends every question to the decoded DERs."""
        if self._ders is not None:
            return spki in self.joined
        if self._text is None:
            assert self._pem is not None
            self._text = self._pem.translate(None, _WHITESPACE)
            if _INNER_PAD.search(self._text):
                return spki in self.joined  # decodes: every later question asks the DERs
        for start in range(3):
            whole = (len(spki) - start) // 3 * 3
            if binascii.b2a_base64(spki[start : start + whole], newline=False) in self._text:
                return True
        return False

    def __repr__(self) -> str:
        return f"TrustStore({self.where!r}, {len(self.ders)} roots in the file)"

    @property
    def certs(self) -> tuple[x509.Certificate, ...]:
        """The file's roots that parse, in ``ders``' order (parsed when first asked: a
        question about one root parses only the roots that hold its key)."""
        if self._parsed is None:
            self._parsed = _certificates(self.ders)
        return self._parsed

    def every_cert(self) -> tuple[x509.Certificate, ...]:
        """The file's roots, then every root of the hashed directory not in the file (each
        of its files read: the chain check's last resort, when no root issued a set)."""
        if self.capath is None:
            return self.certs
        seen = set(self.ders)
        return (*self.certs, *_certificates(d for d in _dir_ders(self.capath) if d not in seen))

    @staticmethod
    def _spki(cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def contains(self, cert: x509.Certificate) -> bool:
        """True when ``cert`` (same subject and key, as OpenSSL matches roots) is in the store.

        A root's DER holds its SubjectPublicKeyInfo verbatim, so only the file's roots whose
        DER contains ``cert``'s are parsed and compared (key, then subject): the same answer
        as comparing every root's subject, without parsing ~150 of them (about 2 ms); the
        directory is asked for ``cert``'s subject hash alone."""
        key = cert.public_bytes(serialization.Encoding.DER)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._contains(cert)
            if len(self._answers) >= _ANSWERS_MAX:
                self._answers.clear()
            self._answers[key] = answer
        return answer

    def _contains(self, cert: x509.Certificate) -> bool:
        spki = self._spki(cert)
        found = [*self._by_subject(cert.subject)]
        if self._might_hold(spki):  # in no root: 0.02-0.3 ms for ~150 roots
            found += _certificates(d for d in self.ders if spki in d)
        for root in found:
            if self._spki(root) != spki:
                continue
            try:
                if root.subject == cert.subject:
                    return True
            except ValueError:  # a subject that does not decode matches no name
                continue
        return False

    def issuers_of(self, certs: Iterable[x509.Certificate]) -> tuple[x509.Certificate, ...]:
        """The store's certificates named as issuer by any of ``certs`` (chain candidates):
        the file's, then the directory's under each issuer's hash, each once."""
        wanted = list(dict.fromkeys(c.issuer for c in certs))
        out = {
            c.public_bytes(serialization.Encoding.DER): c for c in self.certs if c.subject in wanted
        }
        for name in wanted:
            for c in self._by_subject(name):
                if c.subject == name:
                    out.setdefault(c.public_bytes(serialization.Encoding.DER), c)
        return tuple(out.values())

    def _by_subject(self, name: x509.Name) -> tuple[x509.Certificate, ...]:
        """The certificates of the directory's files for ``name``'s hash (any subject: the
        caller compares), as OpenSSL's ``by_dir`` reads them."""
        if self.capath is None:
            return ()
        try:
            hashed = subject_hash(name.public_bytes())
        except ValueError:  # a name OpenSSL cannot canonicalise is looked up nowhere
            return ()
        if hashed is None:
            return ()
        ders: list[bytes] = []
        n = 0
        while os.path.exists(self.capath / f"{hashed:08x}.{n}"):  # by_dir stops at the first gap
            ders += _ders(self.capath / f"{hashed:08x}.{n}")
            n += 1
        return _certificates(ders)

    def pem(self, certs: Iterable[x509.Certificate]) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# --- X509_NAME_hash ----------------------------------------------------------------------------

# The string types OpenSSL canonicalises in a name (x509_name_canon's ASN1_MASK_CANON) and
# how ASN1_STRING_to_UTF8 reads each: UTF8String, then one byte a character (Printable,
# T61 read as Latin-1, IA5, Visible), UniversalString (UCS-4), BMPString (UCS-2).  Any other
# type (NumericString, ...) is kept as it is.
_CANON = {
    0x0C: "utf-8",
    0x13: "latin-1",
    0x14: "latin-1",
    0x16: "latin-1",
    0x1A: "latin-1",
    0x1C: "utf-32-be",
    0x1E: "utf-16-be",
}
_SPACES = b" \t\n\v\f\r"  # ossl_isspace
_RUNS = re.compile(rb"[ \t\n\v\f\r]+")
_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def _canon_value(buf: bytes, value: der.Tlv) -> bytes | None:
    """One attribute value as OpenSSL's ``asn1_string_canon`` makes it: a UTF8String, ASCII
    whitespace trimmed and each run of it one space, ASCII letters lower case, every other
    byte as it was; None when its characters do not decode (OpenSSL's hash fails too)."""
    codec = _CANON.get(value.tag)
    raw = buf[value.content : value.end]
    if codec is None:
        return buf[value.start : value.end]
    try:
        text = raw.decode(codec).encode("utf-8")
    except UnicodeError:
        return None
    return der.encode(0x0C, _RUNS.sub(b" ", text.strip(_SPACES)).translate(_LOWER))


def subject_hash(name_der: bytes) -> int | None:
    """OpenSSL's ``X509_NAME_hash`` of a Name (its DER): the first four bytes of the SHA-1 of
    its canonical encoding, little-endian (``x509_name_canon``, crypto/x509/x_name.c): each
    RDN a SET of SEQUENCE {type, canonical value} in DER's SET OF order, the SETs one after
    the other without the outer SEQUENCE.  What ``openssl x509 -subject_hash`` prints and
    ``c_rehash`` names files by (``%08x``).  None when a value does not decode; DerError
    (a ValueError) when the DER is broken."""
    top = der.tlv(name_der, 0)
    if top.tag != der.SEQUENCE or top.end != len(name_der):
        raise der.DerError(0)
    parts = []
    for rdn in der.children(name_der, top):
        entries = []
        for ava in der.children(name_der, rdn):
            oid, value = der.children(name_der, ava)[:2]
            canon = _canon_value(name_der, value)
            if canon is None:
                return None
            entries.append(der.encode(der.SEQUENCE, name_der[oid.start : oid.end] + canon))
        parts.append(der.encode(0x31, b"".join(sorted(entries))))
    return int.from_bytes(hashlib.sha1(b"".join(parts)).digest()[:4], "little")  # noqa: S324


# --- reading ----------------------------------------------------------------------------------

# A certificate block (the labels cryptography's PEM loader takes): its base64 body.
# Base64 and whitespace only between the lines (OpenSSL's PEM reader refuses anything else in
# a certificate's body): a third of the time of a lazy ``.+?`` over a 220 KB bundle.
_BLOCK = re.compile(
    rb"-----BEGIN (?:X509 )?CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END (?:X509 )?CERTIFICATE-----"
)


def _ders(path: Path) -> list[bytes]:
    """The DER of every certificate block of a PEM file (none when it cannot be read, is
    over ``_MAX_BUNDLE`` or is not a regular file); a block whose base64 does not decode is
    skipped, as OpenSSL skips what it cannot read."""
    data = rawio.read_file(path, _MAX_BUNDLE)  # a FIFO or a device there: nothing, at once
    return [] if data is None else _block_ders(data)


def _block_ders(data: bytes) -> list[bytes]:
    """``_ders`` of a file's bytes."""
    out = []
    for match in _BLOCK.finditer(data):
        try:
            out.append(binascii.a2b_base64(match.group(1)))  # whitespace and newlines skipped
        except binascii.Error:
            continue
    return out


def _dir_ders(path: Path) -> list[bytes]:
    try:
        names = sorted(n for n in os.listdir(path) if _HASHED.match(n))
    except OSError:
        return []
    out = []
    for name in names:
        out += _ders(path / name)
    return out


def _certificates(ders: Iterable[bytes]) -> tuple[x509.Certificate, ...]:
    """Each distinct certificate once, in first-seen order; what does not parse is skipped
    (as OpenSSL skips it).  Equal DER is equal SHA-256 fingerprint, so duplicates are dropped
    before they are parsed."""
    out = []
    with warnings.catch_warnings():
        # Old roots with a negative serial number still load (OpenSSL takes them too).
        warnings.simplefilter("ignore")
        for data in dict.fromkeys(ders):
            try:
                out.append(x509.load_der_x509_certificate(data))
            except ValueError:
                continue
    return tuple(out)


def system_store(override: Path | None = None, env: Mapping[str, str] | None = None) -> TrustStore:
    """The roots OpenSSL would trust by default (see the module docstring for the order).

    Unreadable or absent files give an empty store, not an error: the chain check then
    says which store it looked in.
    """
    if override is not None:
        return TrustStore(str(override), tuple(dict.fromkeys(_ders(override))))
    env = os.environ if env is None else env
    # ssl.get_default_verify_paths() without ssl.py (2 ms of start-up): the C function it
    # wraps, (cafile variable, cafile, capath variable, capath) as OpenSSL was built
    cafile_env, default_cafile, capath_env, default_capath = _ssl.get_default_verify_paths()
    cafile = env.get(cafile_env) or default_cafile
    capath = env.get(capath_env) or default_capath
    return _cached(cafile, capath, _stamp(cafile))


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _cached(cafile: str, capath: str, _file: tuple[int, int] | None) -> TrustStore:
    # Keyed on the file's mtime: the daemon rereads the bundle when it changes (the
    # directory is looked up at each question).
    # Decoded only when a question needs it (TrustStore._might_hold): a status asks whether
    # a private CA is a public root, and the answer, no, needs only the file's text.
    data = rawio.read_file(Path(cafile), _MAX_BUNDLE)  # a FIFO or a device: nothing, at once
    return TrustStore(f"{cafile} + {capath}/", None, Path(capath), pem=data)
