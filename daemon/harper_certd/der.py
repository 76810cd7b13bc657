"""Just enough DER to read structure: TLV walking, what a binary file is, and BER repair.

Used by the load stage to (1) cut a certificate or key to its own length, as OpenSSL's
``d2i_*`` do (bytes after the outer SEQUENCE are ignored, or, after the first certificate
of Node's ``cert``, read as OpenSSL's ``X509_CERT_AUX`` trust settings), (2) name a binary
file by its structure (PKCS#12, PKCS#7, certificate, private key) without reading content,
and (3) re-encode a certificate that OpenSSL reads but strict DER parsers refuse: a DEFAULT
value spelled out (``critical FALSE``, ``cA FALSE``, version v1), X.690 §11.5.

Every function is bounded by the input's length and never raises on hostile input.
"""

from typing import NamedTuple

SEQUENCE = 0x30
INTEGER = 0x02
BOOLEAN = 0x01
OCTET_STRING = 0x04
OID = 0x06
BIT_STRING = 0x03

# Object identifiers (content octets) used to name containers and keys.
OID_PKCS7_DATA = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1
OID_PKCS7_SIGNED = bytes.fromhex("2a864886f70d010702")  # 1.2.840.113549.1.7.2
OID_RSA = bytes.fromhex("2a864886f70d010101")  # rsaEncryption
OID_EC = bytes.fromhex("2a8648ce3d0201")  # id-ecPublicKey
OID_DSA = bytes.fromhex("2a8648ce380401")  # id-dsa
OID_BASIC_CONSTRAINTS = bytes.fromhex("551d13")  # 2.5.29.19


class Tlv(NamedTuple):
    """One element: tag byte, where its content starts and ends (offsets into the buffer)."""

    tag: int
    start: int  # offset of the tag byte
    content: int  # offset of the first content byte
    end: int  # offset after the last content byte


class DerError(Exception):
    """Structure broken at ``offset`` (0-based byte position in the DER)."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"broken at byte {offset}")
        self.offset = offset


def tlv(buf: bytes, pos: int, limit: int | None = None) -> Tlv:
    """The element at ``pos``; single-byte tags only (all that X.509 and PKCS use here)."""
    end_of_buf = len(buf) if limit is None else limit
    if pos + 2 > end_of_buf:
        raise DerError(pos)
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DerError(pos)
    first = buf[pos + 1]
    if first < 0x80:
        content, length = pos + 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + 2 + count > end_of_buf:
            raise DerError(pos + 1)  # indefinite length, or more than 4 GiB
        length = int.from_bytes(buf[pos + 2 : pos + 2 + count], "big")
        content = pos + 2 + count
    if content + length > end_of_buf:
        raise DerError(pos + 1)
    return Tlv(tag, pos, content, content + length)


def children(buf: bytes, parent: Tlv) -> list[Tlv]:
    """The elements inside a constructed element, in order."""
    out: list[Tlv] = []
    pos = parent.content
    while pos < parent.end:
        child = tlv(buf, pos, parent.end)
        out.append(child)
        pos = child.end
    return out


def first_error(buf: bytes) -> int | None:
    """Offset of the first structural error of a DER value (walks constructed elements)."""
    try:
        stack = [tlv(buf, 0)]
        budget = 100_000  # elements; a certificate has a few hundred
        while stack and budget > 0:
            node = stack.pop()
            budget -= 1
            if node.tag & 0x20:
                stack.extend(reversed(children(buf, node)))
    except DerError as exc:
        return exc.offset
    return None


def encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def _bool_false(buf: bytes, node: Tlv) -> bool:
    return node.tag == BOOLEAN and node.end - node.content == 1 and buf[node.content] == 0


def _bool_loose_true(buf: bytes, node: Tlv) -> bool:
    """A BER TRUE that DER forbids: one content byte other than 0x00 and 0xFF (OpenSSL
    reads any non-zero byte as TRUE; golang/go#53932's device CA has 0x01)."""
    return (
        node.tag == BOOLEAN
        and node.end - node.content == 1
        and buf[node.content] not in (0x00, 0xFF)
    )


_DER_TRUE = bytes((BOOLEAN, 1, 0xFF))


def _fix_extension(buf: bytes, ext: Tlv) -> bytes:
    parts = children(buf, ext)
    if ext.tag != SEQUENCE or len(parts) not in (2, 3) or parts[0].tag != OID:
        raise DerError(ext.start)  # not an Extension: no repair, the parser will say
    out: list[bytes] = []
    for i, part in enumerate(parts):
        raw = buf[part.start : part.end]
        if i == 1 and _bool_false(buf, part):
            continue  # critical BOOLEAN DEFAULT FALSE
        if i == 1 and _bool_loose_true(buf, part):
            raw = _DER_TRUE
        if (
            part.tag == OCTET_STRING
            and parts[0].tag == OID
            and buf[parts[0].content : parts[0].end] == OID_BASIC_CONSTRAINTS
        ):
            inner = buf[part.content : part.end]
            try:
                seq = tlv(inner, 0)
                items = children(inner, seq)
            except DerError:
                items = []
                seq = None
            if seq is not None and items and _bool_false(inner, items[0]):
                rest = b"".join(inner[c.start : c.end] for c in items[1:])
                raw = encode(OCTET_STRING, encode(SEQUENCE, rest))
            elif seq is not None and items and _bool_loose_true(inner, items[0]):
                rest = b"".join(inner[c.start : c.end] for c in items[1:])
                raw = encode(OCTET_STRING, encode(SEQUENCE, _DER_TRUE + rest))
        out.append(raw)
    return encode(SEQUENCE, b"".join(out))


def normalise_certificate(der: bytes) -> bytes | None:
    """The certificate with explicitly encoded DEFAULT values removed and BER TRUEs written
    as DER's 0xFF (extensions' critical flag, basicConstraints' cA); None if none were.

    Only the path to the changed elements is re-encoded (with minimal lengths); the
    signature stays as it is, so it verifies only over the ORIGINAL tbsCertificate.
    """
    try:
        cert = tlv(der, 0)
        top = children(der, cert)
        if cert.tag != SEQUENCE or len(top) != 3 or top[0].tag != SEQUENCE:
            return None
        tbs = top[0]
        fields = children(der, tbs)
        new_fields: list[bytes] = []
        for f in fields:
            raw = der[f.start : f.end]
            if f.tag == 0xA0:  # [0] EXPLICIT Version DEFAULT v1
                inner = children(der, f)
                if (
                    len(inner) == 1
                    and inner[0].tag == INTEGER
                    and der[inner[0].content : inner[0].end] == b"\x00"
                ):
                    continue
            if f.tag == 0xA3:  # [3] EXPLICIT Extensions
                outer = children(der, f)
                if len(outer) != 1 or outer[0].tag != SEQUENCE:
                    return None
                exts = [_fix_extension(der, e) for e in children(der, outer[0])]
                raw = encode(0xA3, encode(SEQUENCE, b"".join(exts)))
            new_fields.append(raw)
        new_tbs = encode(SEQUENCE, b"".join(new_fields))
        rest = b"".join(der[t.start : t.end] for t in top[1:])
        result = encode(SEQUENCE, new_tbs + rest)
    except DerError:
        return None
    return None if result == der[: cert.end] else result


def oid_in(buf: bytes, node: Tlv) -> bytes | None:
    """The OID content octets of the first element of a SEQUENCE, if it is an OID."""
    try:
        items = children(buf, node)
    except DerError:
        return None
    if items and items[0].tag == OID:
        return buf[items[0].content : items[0].end]
    return None


def describe_binary(data: bytes) -> str | None:
    """What a binary file starting with a DER SEQUENCE is, by structure only, else None.

    ``pkcs12``: SEQUENCE { INTEGER 3, SEQUENCE { OID pkcs7-data, ... }, ... } (RFC 7292);
    ``pkcs7``: SEQUENCE { OID signedData, ... } (RFC 2315); ``certificate``:
    SEQUENCE { SEQUENCE, SEQUENCE, BIT STRING }; ``pkcs8``/``pkcs1``/``sec1``/``dsa``: a
    private key structure.
    """
    try:
        outer = tlv(data, 0)
        if outer.tag != SEQUENCE or outer.end < len(data.rstrip(b"\r\n")):
            return None  # a binary file is one element (a text starting with '0' is not)
        items = children(data, outer)
    except DerError:
        return None
    if not items:
        return None
    tags = [i.tag for i in items]
    if (
        len(items) >= 2
        and tags[0] == INTEGER
        and data[items[0].content : items[0].end] == b"\x03"
        and tags[1] == SEQUENCE
        and oid_in(data, items[1]) == OID_PKCS7_DATA
    ):
        return "pkcs12"
    if tags[0] == OID and data[items[0].content : items[0].end] == OID_PKCS7_SIGNED:
        return "pkcs7"
    if tags[:3] == [SEQUENCE, SEQUENCE, BIT_STRING] and len(items) == 3:
        return "certificate"
    return key_structure(data, outer)


def key_structure(buf: bytes, outer: Tlv) -> str | None:
    """``pkcs8``, ``pkcs1`` (RSA), ``sec1`` (EC), ``dsa`` or None, from the element tags.

    The version is read as OpenSSL 3.0 reads it (measured with its 3.0.19, Node 20's: every
    one-byte version of each structure against ``openssl pkey``; ``tests/test_judge.py``
    asks Node): a PKCS#8 and a SEC1 key of any one-byte version load, an RSA key of any but
    1 (multi-prime, which needs more primes); DSA's 0 alone is what we know.
    """
    try:
        items = children(buf, outer)
    except DerError:
        return None
    tags = [i.tag for i in items]
    if len(items) < 2 or tags[0] != INTEGER or items[0].end - items[0].content != 1:
        return None
    version = buf[items[0].content]
    if tags[1] == SEQUENCE and len(items) >= 3 and tags[2] == OCTET_STRING:
        return "pkcs8"
    if tags[1] == OCTET_STRING:
        return "sec1"
    if all(t == INTEGER for t in tags):
        if len(items) == 9 and version != 1:
            return "pkcs1"
        if len(items) == 6 and version == 0:
            return "dsa"
    return None


# The version each structure has for cryptography, which loads no other (OpenSSL 3.0 reads
# any: ``key_structure``); PKCS#8 v2 (1, RFC 5958) when the key carries its public key ([1]).
_LOADABLE_VERSION = {"sec1": 1, "pkcs1": 0, "dsa": 0}


def loadable_key(buf: bytes, outer: Tlv, structure: str) -> bytes:
    """The key's DER (``buf`` up to ``outer``'s end) with the version cryptography loads in
    place of the one OpenSSL ignores; the key itself is unchanged.  ``structure``: as
    ``key_structure`` gave it."""
    items = children(buf, outer)
    if structure == "pkcs8":
        wanted = 1 if any(i.tag == 0xA1 for i in items[3:]) else 0
        if buf[items[0].content] in (0, 1):
            return buf[: outer.end]
    else:
        wanted = _LOADABLE_VERSION[structure]
    at = items[0].content
    return buf[:at] + bytes([wanted]) + buf[at + 1 : outer.end]


def pkcs8_algorithm(buf: bytes, outer: Tlv) -> bytes | None:
    """The algorithm OID of a PrivateKeyInfo."""
    try:
        items = children(buf, outer)
    except DerError:
        return None
    return oid_in(buf, items[1]) if len(items) >= 2 else None


class CertAux(NamedTuple):
    """OpenSSL's X509_CERT_AUX after a TRUSTED CERTIFICATE: trust and reject OIDs (dotted)."""

    trust: tuple[str, ...]
    reject: tuple[str, ...]


def _dotted(content: bytes) -> str:
    if not content:
        return ""
    first = content[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for b in content[1:]:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def parse_aux(buf: bytes) -> CertAux | None:
    """``d2i_X509_CERT_AUX``: SEQUENCE { trust SEQUENCE OF OID OPTIONAL, reject [0] SEQUENCE
    OF OID OPTIONAL, alias UTF8String OPTIONAL, keyid OCTET STRING OPTIONAL, other [1]
    OPTIONAL }.  None when it does not parse (OpenSSL then refuses the certificate)."""
    try:
        outer = tlv(buf, 0)
        if outer.tag != SEQUENCE:
            return None
        items = children(buf, outer)
        order = [SEQUENCE, 0xA0, 0x0C, OCTET_STRING, 0xA1]
        trust: list[str] = []
        reject: list[str] = []
        at = 0
        for item in items:
            while at < len(order) and order[at] != item.tag:
                at += 1
            if at == len(order):
                return None
            if item.tag in (SEQUENCE, 0xA0):
                oids = children(buf, item)
                if any(o.tag != OID for o in oids):
                    return None
                target = trust if item.tag == SEQUENCE else reject
                target.extend(_dotted(buf[o.content : o.end]) for o in oids)
            at += 1
    except DerError:
        return None
    return CertAux(tuple(trust), tuple(reject))


# Extensions OpenSSL 3.0 decodes when it uses a certificate (x509v3_cache_extensions, name
# constraints and policies at verification): a malformed one of these makes it refuse the
# certificate; any other extension is not decoded, so a malformed or repeated one is ignored.
OPENSSL_DECODED = frozenset(
    bytes.fromhex(h)
    for h in (
        "551d13",  # basicConstraints
        "551d0f",  # keyUsage
        "551d25",  # extKeyUsage
        "551d0e",  # subjectKeyIdentifier
        "551d23",  # authorityKeyIdentifier
        "551d11",  # subjectAltName
        "551d12",  # issuerAltName
        "551d1f",  # cRLDistributionPoints
        "551d20",  # certificatePolicies
        "551d24",  # policyConstraints
        "551d21",  # policyMappings
        "551d36",  # inhibitAnyPolicy
        "2b06010505070e",  # proxyCertInfo
        "6086480186f8420101",  # nsCertType
        "2b06010505070107",  # sbgp-ipAddrBlock
        "2b06010505070108",  # sbgp-autonomousSysNum
    )
)
OID_NAME_CONSTRAINTS = bytes.fromhex("551d1e")


def _empty_name_constraints(buf: bytes, value: Tlv) -> bool:
    """A nameConstraints value with no subtree at all (empty or NULL permitted/excluded
    parts): it constrains nothing, and OpenSSL takes it so (x509-limbo webpki::nc::*-both-*)."""
    try:
        seq = tlv(buf, value.content)
        for part in children(buf, seq):
            if part.tag not in (0xA0, 0xA1):
                return False
            inner = children(buf, part)
            if any(c.tag != 0x05 for c in inner):  # only NULLs (or nothing) inside
                return False
    except DerError:
        return False
    return True


def ignorable_extensions_removed(der: bytes) -> bytes | None:
    """The certificate without the extensions OpenSSL would not decode (non-critical, of an
    OID outside ``OPENSSL_DECODED``), without repeats of such OIDs, and without a
    nameConstraints that holds no subtree; None when nothing is removed or the DER is broken.

    For reading a certificate whose extensions cryptography refuses as a whole but OpenSSL
    takes; the signature then verifies only over the ORIGINAL tbsCertificate.
    """
    try:
        cert = tlv(der, 0)
        top = children(der, cert)
        if cert.tag != SEQUENCE or len(top) != 3 or top[0].tag != SEQUENCE:
            return None
        fields = children(der, top[0])
        new_fields: list[bytes] = []
        removed = False
        for f in fields:
            raw = der[f.start : f.end]
            if f.tag == 0xA3:
                outer = children(der, f)
                if len(outer) != 1 or outer[0].tag != SEQUENCE:
                    return None
                kept: list[bytes] = []
                for ext in children(der, outer[0]):
                    parts = children(der, ext)
                    if not parts or parts[0].tag != OID:
                        return None
                    oid = der[parts[0].content : parts[0].end]
                    critical = len(parts) == 3 and der[parts[1].content : parts[1].end] != b"\x00"
                    if oid == OID_NAME_CONSTRAINTS and _empty_name_constraints(der, parts[-1]):
                        removed = True
                        continue
                    if oid not in OPENSSL_DECODED and oid != OID_NAME_CONSTRAINTS and not critical:
                        removed = True
                        continue
                    kept.append(der[ext.start : ext.end])
                raw = encode(0xA3, encode(SEQUENCE, b"".join(kept)))
            new_fields.append(raw)
        if not removed:
            return None
        new_tbs = encode(SEQUENCE, b"".join(new_fields))
        rest = b"".join(der[t.start : t.end] for t in top[1:])
        return encode(SEQUENCE, new_tbs + rest)
    except DerError:
        return None
