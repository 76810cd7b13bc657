"""Seeded hostile certificate sets for the validator's fuzz test and ``bench/fuzz_validate.py``.

Each case is a set (certificate, key, CA file bytes) made from real sets by one mutation:
byte flips and truncation of the PEM text, PEM damage (lines, labels, endings), byte flips
inside the DER (re-encoded as PEM so they reach the parser), DER edits re-signed with the
issuer's key so that they pass the signature and reach the checks (undecodable names,
duplicate or malformed extensions, unknown SubjectPublicKeyInfo algorithms), CA-file entries
with such damage, damaged RSA private parts, key types TLS cannot use, and floods (many CA
entries, many SANs).  Nothing here is mocked: every certificate is real DER signed by a real
key; the mutations are what an attacker or a broken tool writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harper_certd import devca

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
CLUSTER_EKU = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


@dataclass(frozen=True, slots=True)
class FuzzSet:
    kind: str  # the mutation that made it
    cert: bytes
    key: bytes
    ca: bytes


@dataclass(frozen=True, slots=True)
class Base:
    """A real set: root -> intermediate -> leaf, the intermediate in both files."""

    name: str
    root: devca.Issued
    inter: devca.Issued
    leaf: devca.Issued

    def files(self) -> FuzzSet:
        return FuzzSet(
            self.name,
            self.leaf.cert_pem + self.inter.cert_pem,
            self.leaf.key_pem,
            self.inter.cert_pem + self.root.cert_pem,  # the issuer first, as Harper needs
        )


def _pki(name: str, kind: str, size: int) -> Base:
    start = NOW - dt.timedelta(days=10)
    root = devca.make_ca(
        f"Fuzz Root {name}",
        key=devca.make_key(kind, size),
        not_before=start,
        not_after=NOW + dt.timedelta(days=3000),
    )
    inter = devca.make_ca(
        f"Fuzz Intermediate {name}",
        parent=root,
        key=devca.make_key(kind, size),
        not_before=start,
        not_after=NOW + dt.timedelta(days=2000),
    )
    leaf = devca.make_leaf(
        inter,
        "nodea",
        dns=["nodea"],
        ips=["127.0.0.2"],
        key=devca.make_key(kind, size),
        not_before=start,
        not_after=NOW + dt.timedelta(days=80),
    )
    return Base(name, root, inter, leaf)


def make_bases() -> list[Base]:
    return [_pki("ec", "ec", 256), _pki("rsa", "rsa", 2048), _pki("ed25519", "ed25519", 0)]


# --- DER helpers -----------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(value)) + value


def _header(data: bytes, pos: int) -> tuple[int, int]:
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return start, start + length


def split_certificate(der: bytes) -> tuple[bytes, bytes]:
    """(tbsCertificate TLV, signatureAlgorithm TLV) of a certificate's DER."""
    inner, _ = _header(der, 0)
    _, tbs_end = _header(der, inner)
    _, alg_end = _header(der, tbs_end)
    return der[inner:tbs_end], der[tbs_end:alg_end]


def resign(tbs: bytes, algorithm: bytes, issuer: devca.Issued) -> bytes:
    """A certificate of ``tbs`` signed by ``issuer``'s key (the algorithm left as it was)."""
    key = issuer.key
    if isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(tbs)
    else:
        raise TypeError(type(key).__name__)
    return _tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature))


def pem(der: bytes, label: str = "CERTIFICATE") -> bytes:
    body = base64.b64encode(der)
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        f"-----BEGIN {label}-----\n".encode()
        + b"\n".join(lines)
        + f"\n-----END {label}-----\n".encode()
    )


def der_of(issued: devca.Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.DER)


def edited(
    cert_der: bytes, issuer: devca.Issued, old: bytes, new: bytes, *, last: bool = False
) -> bytes:
    """``cert_der`` with the first (``last``: the last) ``old`` replaced by ``new`` (same
    length) in its TBS, re-signed."""
    assert len(old) == len(new)
    tbs, algorithm = split_certificate(cert_der)
    at = tbs.rfind(old) if last else tbs.find(old)
    assert at >= 0, old
    return resign(tbs[:at] + new + tbs[at + len(old) :], algorithm, issuer)


# --- certificates carrying what the fuzz needs --------------------------------------------


def _builder(
    issuer: devca.Issued, subject: x509.Name, public_key: object
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=5))
        .not_valid_after(NOW + dt.timedelta(days=60))
    )


def _sign(builder: x509.CertificateBuilder, issuer: devca.Issued) -> bytes:
    key = issuer.key
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.DER)


def _leaf_builder(base: Base, cn: str, public_key: object) -> x509.CertificateBuilder:
    return (
        _builder(base.inter, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), public_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(CLUSTER_EKU), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("nodea"), x509.IPAddress(ipaddress.ip_address("127.0.0.2"))]
            ),
            critical=False,
        )
    )


def undecodable_name_leaf(base: Base, kind: str) -> bytes:
    """A leaf whose subject CN is UTF8String 0xFF bytes or an odd-length BMPString."""
    der = _sign(_leaf_builder(base, "zqzqz", base.leaf.key.public_key()), base.inter)
    utf8 = b"\x0c\x05zqzqz"
    if kind == "utf8":
        return edited(der, base.inter, utf8, b"\x0c\x05\xff\xfe\xff\xfe\xff")
    return edited(der, base.inter, utf8, b"\x1e\x05zqzqz")  # BMPString of 5 bytes


def duplicate_extension_cert(base: Base, *, ca: bool) -> bytes:
    """A certificate with two extensions of the same OID (DER surgery, re-signed)."""
    one = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
    two = x509.ObjectIdentifier("1.3.6.1.4.1.55555.2")
    builder = (
        _builder(
            base.root,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fuzz Dup CA" if ca else "nodea")]),
            base.leaf.key.public_key(),
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(one, b"\x05\x00"), critical=False)
        .add_extension(x509.UnrecognizedExtension(two, b"\x05\x00"), critical=False)
    )
    der = _sign(builder, base.root)
    return edited(der, base.root, _oid_der(two), _oid_der(one))


def _oid_der(oid: x509.ObjectIdentifier) -> bytes:
    parts = [int(p) for p in oid.dotted_string.split(".")]
    body = bytearray([parts[0] * 40 + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        rest = part >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def malformed_extension_cert(base: Base, *, ca: bool) -> bytes:
    """A certificate whose basicConstraints value is not a valid encoding."""
    builder = _builder(
        base.root,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fuzz Bad CA" if ca else "nodea")]),
        base.leaf.key.public_key(),
    ).add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.19"), b"\x30\x03\x01\x01"),
        critical=True,
    )
    return _sign(builder, base.root)


def unknown_spki_leaf(base: Base, *, spki: bool = True) -> bytes:
    """The leaf with its key's algorithm OID changed to an unknown one (re-signed); with
    ``spki`` False, the same edit on the TBS signature field (EdDSA keys' OID is both)."""
    der = der_of(base.leaf)
    key = base.leaf.key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        old = _oid_der(x509.ObjectIdentifier("1.2.840.10045.2.1"))
        new = _oid_der(x509.ObjectIdentifier("1.2.840.10045.2.9"))
    elif isinstance(key, rsa.RSAPrivateKey):
        old = _oid_der(x509.ObjectIdentifier("1.2.840.113549.1.1.1"))
        new = _oid_der(x509.ObjectIdentifier("1.2.840.113549.1.1.9"))
    else:
        old = _oid_der(x509.ObjectIdentifier("1.3.101.112"))
        new = _oid_der(x509.ObjectIdentifier("1.3.101.119"))
    return edited(der, base.inter, old, new, last=spki)


def unusable_key_leaf(base: Base, kind: str) -> tuple[bytes, bytes]:
    """(certificate DER, key PEM): X25519 or secp256k1/brainpool keys in a real leaf."""
    key: object
    if kind == "x25519":
        key = x25519.X25519PrivateKey.generate()
    elif kind == "secp256k1":
        key = ec.generate_private_key(ec.SECP256K1())
    else:
        key = ec.generate_private_key(ec.BrainpoolP256R1())
    der = _sign(_leaf_builder(base, "nodea", key.public_key()), base.inter)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return der, key_pem


def _der_int(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return _tlv(0x02, raw)


def damaged_rsa_key(key: rsa.RSAPrivateKey, part: str) -> bytes:
    """The key with private parts changed (``part``: names joined by '+') and the public half
    intact, as PKCS#1 PEM (encoded by hand: cryptography refuses to build such a key)."""
    n = key.private_numbers()
    values = {"p": n.p, "q": n.q, "d": n.d, "dmp1": n.dmp1, "dmq1": n.dmq1, "iqmp": n.iqmp}
    for name in part.split("+"):
        values[name] = values[name] ^ 0b10
    fields = [
        0,
        n.public_numbers.n,
        n.public_numbers.e,
        values["d"],
        values["p"],
        values["q"],
        values["dmp1"],
        values["dmq1"],
        values["iqmp"],
    ]
    return pem(_tlv(0x30, b"".join(_der_int(f) for f in fields)), "RSA PRIVATE KEY")


def many_san_leaf(base: Base, count: int) -> bytes:
    names: list[x509.GeneralName] = [x509.DNSName("nodea")]
    names += [x509.DNSName(f"n{i}.fuzz.example") for i in range(count)]
    builder = (
        _builder(
            base.inter,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nodea")]),
            base.leaf.key.public_key(),
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(CLUSTER_EKU), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
    )
    return _sign(builder, base.inter)


# --- mutations -----------------------------------------------------------------------------

Mutation = Callable[[random.Random, Base], FuzzSet]


def _flip(rng: random.Random, data: bytes, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _role(rng: random.Random) -> str:
    return rng.choice(("cert", "key", "ca"))


def _replace(s: FuzzSet, kind: str, role: str, data: bytes) -> FuzzSet:
    return FuzzSet(
        kind,
        data if role == "cert" else s.cert,
        data if role == "key" else s.key,
        data if role == "ca" else s.ca,
    )


def m_pem_flip(rng: random.Random, base: Base) -> FuzzSet:
    s, role = base.files(), _role(rng)
    data = {"cert": s.cert, "key": s.key, "ca": s.ca}[role]
    return _replace(s, f"pem_flip_{role}", role, _flip(rng, data, rng.randint(1, 4)))


def m_truncate(rng: random.Random, base: Base) -> FuzzSet:
    s, role = base.files(), _role(rng)
    data = {"cert": s.cert, "key": s.key, "ca": s.ca}[role]
    return _replace(s, f"truncate_{role}", role, data[: rng.randrange(len(data))])


def m_der_flip(rng: random.Random, base: Base) -> FuzzSet:
    s = base.files()
    which = rng.choice(("leaf", "inter", "root"))
    issued = {"leaf": base.leaf, "inter": base.inter, "root": base.root}[which]
    damaged = pem(_flip(rng, der_of(issued), rng.randint(1, 3)))
    if which == "leaf":
        return _replace(s, "der_flip_leaf", "cert", damaged + base.inter.cert_pem)
    if which == "inter":
        return _replace(s, "der_flip_ca_entry", "ca", damaged + base.root.cert_pem)
    return _replace(s, "der_flip_root", "ca", base.inter.cert_pem + damaged)


_PEM_DAMAGE: list[tuple[str, Callable[[random.Random, bytes], bytes]]] = [
    ("crlf", lambda r, d: d.replace(b"\n", b"\r\n")),
    ("cr_only", lambda r, d: d.replace(b"\n", b"\r")),
    ("no_newlines", lambda r, d: d.replace(b"\n", b"")),
    ("indent", lambda r, d: b"\n".join(b"  " + line for line in d.split(b"\n"))),
    ("backslash_n", lambda r, d: d.replace(b"\n", b"\\n")),
    ("no_end", lambda r, d: d.rsplit(b"-----END", 1)[0]),
    ("joined", lambda r, d: d.replace(b"-----\n-----BEGIN", b"----------BEGIN")),
    ("blank_line", lambda r, d: d.replace(b"\n", b"\n\n", 2)),
    ("bom", lambda r, d: b"\xef\xbb\xbf" + d),
    ("utf16", lambda r, d: d.decode("latin-1").encode("utf-16")),
    ("label", lambda r, d: d.replace(b"BEGIN ", b"BEGIN X509 ", 1)),
    ("garbage_around", lambda r, d: b"subject=junk\n" + d + b"trailing junk\n"),
    ("base64_of_pem", lambda r, d: base64.b64encode(d) + b"\n"),
    ("many_begins", lambda r, d: b"-----BEGIN X-----\n" * r.randint(50, 400)),
    ("empty", lambda r, d: b""),
    ("nul", lambda r, d: d[: len(d) // 2] + b"\x00" + d[len(d) // 2 :]),
]


def m_pem_damage(rng: random.Random, base: Base) -> FuzzSet:
    s, role = base.files(), _role(rng)
    name, damage = rng.choice(_PEM_DAMAGE)
    data = {"cert": s.cert, "key": s.key, "ca": s.ca}[role]
    return _replace(s, f"pem_{name}_{role}", role, damage(rng, data))


def m_undecodable_name(rng: random.Random, base: Base) -> FuzzSet:
    kind = rng.choice(("utf8", "bmp"))
    leaf = pem(undecodable_name_leaf(base, kind))
    return _replace(base.files(), f"undecodable_name_{kind}", "cert", leaf + base.inter.cert_pem)


def m_ca_entry_damage(rng: random.Random, base: Base) -> FuzzSet:
    """A damaged entry in the CA file: unused (before or after the real ones) or the root."""
    kind = rng.choice(("duplicate", "malformed"))
    maker = duplicate_extension_cert if kind == "duplicate" else malformed_extension_cert
    entry = pem(maker(base, ca=True))
    s = base.files()
    if rng.random() < 0.5:
        return _replace(s, f"ca_entry_{kind}_unused", "ca", s.ca + entry)
    # The same damage on a leaf of the certificate file.
    leaf = pem(maker(base, ca=False))
    return _replace(s, f"leaf_{kind}_extension", "cert", leaf)


def m_unknown_spki(rng: random.Random, base: Base) -> FuzzSet:
    if isinstance(base.leaf.key, ed25519.Ed25519PrivateKey) and rng.random() < 0.5:
        leaf = pem(unknown_spki_leaf(base, spki=False))
        return _replace(base.files(), "unknown_sigalg_tbs", "cert", leaf + base.inter.cert_pem)
    leaf = pem(unknown_spki_leaf(base))
    return _replace(base.files(), "unknown_spki_leaf", "cert", leaf + base.inter.cert_pem)


def m_unusable_key(rng: random.Random, base: Base) -> FuzzSet:
    kind = rng.choice(("x25519", "secp256k1", "brainpool"))
    der, key_pem = unusable_key_leaf(base, kind)
    s = base.files()
    return FuzzSet(f"unusable_key_{kind}", pem(der) + base.inter.cert_pem, key_pem, s.ca)


def m_damaged_rsa(rng: random.Random, base: Base) -> FuzzSet:
    key = base.leaf.key
    s = base.files()
    if not isinstance(key, rsa.RSAPrivateKey):
        return _replace(s, "key_flip", "key", _flip(rng, s.key, 1))
    # One part: OpenSSL's RSA signing survives it (a faulty CRT result is redone with d).
    # A CRT part and d: every signature is wrong.
    part = rng.choice(("p", "q", "d", "dmp1", "dmq1", "iqmp", "p+d", "dmp1+d", "iqmp+d"))
    return _replace(s, f"damaged_rsa_{part}", "key", damaged_rsa_key(key, part))


def m_flood(rng: random.Random, base: Base) -> FuzzSet:
    s = base.files()
    kind = rng.choice(("ca_copies", "cert_copies", "sans"))
    if kind == "ca_copies":
        return _replace(
            s, "flood_ca_copies", "ca", base.inter.cert_pem * rng.randint(50, 400) + s.ca
        )
    if kind == "cert_copies":
        return _replace(s, "flood_cert_copies", "cert", s.cert + base.inter.cert_pem * 200)
    leaf = pem(many_san_leaf(base, rng.choice((10, 1000, 5000))))
    return _replace(s, "flood_sans", "cert", leaf + base.inter.cert_pem)


def m_reorder(rng: random.Random, base: Base) -> FuzzSet:
    s = base.files()
    kind = rng.choice(("leaf_last", "swap_files", "ca_only_root", "key_of_other"))
    if kind == "leaf_last":
        return _replace(s, "leaf_last", "cert", base.inter.cert_pem + base.leaf.cert_pem)
    if kind == "swap_files":
        return FuzzSet("swap_cert_key", s.key, s.cert, s.ca)
    if kind == "ca_only_root":
        return _replace(s, "ca_only_root", "ca", base.root.cert_pem)
    return _replace(s, "key_of_other", "key", base.inter.key_pem)


MUTATIONS: list[Mutation] = [
    m_pem_flip,
    m_truncate,
    m_der_flip,
    m_der_flip,
    m_pem_damage,
    m_pem_damage,
    m_undecodable_name,
    m_ca_entry_damage,
    m_unknown_spki,
    m_unusable_key,
    m_damaged_rsa,
    m_flood,
    m_reorder,
]


def cases(seed: int, count: int, bases: list[Base]) -> Iterator[FuzzSet]:
    """``count`` sets, the same for the same seed; the unmutated bases first."""
    rng = random.Random(seed)
    for base in bases:
        yield base.files()
    for _ in range(count - len(bases)):
        yield rng.choice(MUTATIONS)(rng, rng.choice(bases))
