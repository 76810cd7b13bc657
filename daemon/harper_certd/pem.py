"""OpenSSL 3.0's PEM reader, emulated byte for byte: what Node 20 (Harper's runtime) accepts.

The source of truth is ``crypto/pem/pem_lib.c`` (``PEM_read_bio_ex`` with
``PEM_FLAG_EAY_COMPATIBLE``, which is what ``PEM_read_bio`` and every
``PEM_read_bio_X509*`` / ``PEM_read_bio_PrivateKey`` call of Node 20 uses) and
``crypto/evp/encode.c`` (``EVP_DecodeUpdate``/``EVP_DecodeFinal``):

- Lines come from ``BIO_gets(bp, buf, 255)`` on a memory BIO: at most 254 bytes a read,
  ending after a ``\\n``.  A longer physical line is read as several chunks; a chunk that
  is empty after sanitising and follows a 254-byte chunk is skipped (it is the end of a
  long line, not a blank line), except right after the BEGIN line: ``get_name`` read that
  chunk and ``get_header_and_data`` starts with its flag at 0, so it is a blank line there
  (Node refuses a BEGIN line padded to 254 bytes followed by a one-line body).
- ``sanitize_line``: trailing bytes ``<= ' '`` are dropped, compared as C ``char``, which is
  signed on x86-64, so bytes 0x80-0xFF count too; then ``\\n`` is appended.  Leading
  whitespace stays.  A UTF-8 BOM is removed from the first line ``get_name`` reads.
- ``get_name``: the first line that starts with ``-----BEGIN `` and ends with ``-----``;
  end of input first is ``PEM_R_NO_START_LINE``.
- ``get_header_and_data``: lines go to the "header" until a blank line, then to the data;
  a line holding ``:`` before any blank line makes the block a header block.  The END line
  must be ``-----END <label>-----`` exactly.  After a blank line the data lines must be 64
  characters, a shorter one only as the last.  A block with no blank line and no ``:`` has
  its lines as data.
- ``BIO_puts`` writes each line up to its first NUL byte.
- Base64: whitespace is skipped, ``-`` ends the input (the rest is ignored), ``=`` only as
  one or two final characters, the count of base64 characters a multiple of 4, any other
  byte ``PEM_R_BAD_BASE64_DECODE``.

Everything here is linear in the input: regular-expression jumps over the lines that are
skipped, and a Python loop only over data lines after a blank line (at most 1/65 of the
input).  Errors carry our own words and positions only, never input bytes: callers build
messages about key files from them.
"""

import binascii
import enum
import re
from dataclasses import dataclass, field
from typing import NamedTuple

LINE_READ = 254  # BIO_gets(bp, linebuf, LINESIZE=255) reads at most 254 bytes
DATA_LINE = 64  # base64 characters of a full data line after a header

BEGIN = b"-----BEGIN "
END = b"-----END "
TAIL = b"-----"
_BOM = b"\xef\xbb\xbf"

# Bytes sanitize_line strips from a line's end: <= 0x20 as a signed char (0x80-0xFF too).
STRIP = bytes(range(0x21)) + bytes(range(0x80, 0x100))
_S = rb"[\x00-\x09\x0b-\x20\x80-\xff]"  # STRIP without the newline, as a regex class
# Searched from the newline that ends the line before (a literal first byte is a fast scan):
_BLANK_AFTER = re.compile(rb"\n" + _S + rb"*\n")  # a line that is blank once sanitised
_BEGIN_AFTER = re.compile(rb"\n-----BEGIN ([^\n]*)-----" + _S + rb"*\n")
# A block OpenSSL reads without any of the rules above mattering: a plain label, 1-64 base64
# characters a line, no header, the matching END line.  Runs of them are skipped in bulk.
_SIMPLE = re.compile(
    rb"\n*+-----BEGIN ([A-Z0-9 ]{0,200}+)-----\n((?:[A-Za-z0-9+/=]{1,64}+\n)++)-----END \1-----\n"
)
_NOT_B64_LINE = re.compile(rb"[^A-Za-z0-9+/=\n]")
_NUL_REST = re.compile(rb"\x00[^\n]*")  # BIO_puts writes a line up to its first NUL
_BAD = bytes(b for b in STRIP if b not in b" \t\r\n")  # stripped at a line's end, else bad
_BAD_INSIDE = re.compile(rb"[" + re.escape(_BAD) + rb"][^\n" + re.escape(_BAD) + rb"]")
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_B64_WS = b" \t\r\n"
_SAFE = _B64 + _B64_WS


class Reason(enum.Enum):
    """Why ``PEM_read_bio_ex`` (or the check of its header) failed; OpenSSL's reason codes."""

    NO_START_LINE = "no start line"  # no BEGIN line before the end of the input
    BAD_END_LINE = "bad end line"  # END line wrong, missing, or a line where none may be
    LINE_TOO_LONG = "data line too long"  # OpenSSL fails silently here (no reason code)
    NO_DATA = "no data"  # nothing between BEGIN and END; silent in OpenSSL too
    HEADER_ONLY = "no data after the header"  # a blank line after all the data; silent too
    BAD_BASE64_DECODE = "bad base64 decode"
    NOT_PROC_TYPE = "not proc type"  # a non-empty header that is not "Proc-Type: "
    ENCRYPTED = "encrypted"  # Proc-Type: 4,ENCRYPTED (Node gives no passphrase)


class BadEndCause(enum.Enum):
    """What the line that ended a block badly was (for the message)."""

    EOF = "eof"  # the input ended inside the block
    WRONG_END = "wrong_end"  # an END line with another label or trailing text
    BLANK_AFTER_DATA = "blank_after_data"  # a second blank line
    AFTER_SHORT_LINE = "after_short_line"  # a data line after a short one


@dataclass(frozen=True, slots=True)
class PemError(Exception):
    """A failed read. ``line``: 1-based physical line of the cause; ``begin_line``: the block's."""

    reason: Reason
    line: int
    begin_line: int = 0
    cause: BadEndCause | None = None
    label: bytes = field(default=b"", repr=False)  # may hold any text of a damaged line

    def __str__(self) -> str:
        return f"{self.reason.value} at line {self.line}"


class Block(NamedTuple):
    """One block as ``PEM_read_bio_ex`` returns it: label (C string), header text, DER bytes."""

    label: bytes
    header: bytes
    der: bytes
    begin_line: int  # 1-based physical line of the BEGIN line
    end_line: int
    blank_line: int = 0  # the blank line that ended a header, 0 when there was none

    def __repr__(self) -> str:
        # Never the bytes: a block of a key file holds the key.
        return f"Block(<{len(self.label)}-byte label>, lines {self.begin_line}-{self.end_line})"


def _normalise(data: bytes) -> tuple[bytes, list[int] | None, frozenset[int]]:
    """The chunks BIO_gets returns, one per line of the result.

    Returns the text; when long lines were split, the physical line of each chunk; and the
    offsets of "soft" blank lines: chunks that sanitise to nothing right after a 254-byte
    chunk.  ``get_header_and_data`` skips them (``prev_partial_line_read``), except the one
    right after the BEGIN line, which ``get_name`` read (its partial-read flag starts at 0).
    """
    if not data:
        return b"", None, frozenset()
    text = data if data.endswith(b"\n") else data + b"\n"
    lines = text.split(b"\n")
    lines.pop()  # after the final newline
    if max(map(len, lines)) < LINE_READ:
        return text, None, frozenset()
    out: list[bytes] = []
    phys: list[int] = []
    soft: set[int] = set()
    offset = 0
    last = len(lines)  # lines before the last one all had their newline
    for number, line in enumerate(lines, 1):
        raw = line + (b"\n" if number < last or data.endswith(b"\n") else b"")
        for start in range(0, len(raw), LINE_READ):
            piece = raw[start : start + LINE_READ].rstrip(b"\n")
            if start and not piece.rstrip(STRIP):
                soft.add(offset)
                piece = b""
            out.append(piece)
            phys.append(number)
            offset += len(piece) + 1
    return b"\n".join(out) + b"\n", phys, frozenset(soft)


def data_text(region: bytes) -> bytes:
    """Text that decodes as what BIO_puts wrote for these lines (each sanitised, cut at its
    first NUL), in C-speed passes: decoding stops at '-' and skips blanks, so only control
    and high bytes matter, and those are fine exactly when they end their line."""
    if not region.translate(None, _SAFE):
        return region
    if b"\x00" in region:
        region = _NUL_REST.sub(b"", region)
    cut = region.find(b"-")
    if cut >= 0:
        region = region[:cut]  # B64_EOF: nothing after it is read
    region = region.translate(None, b" \t\r")
    if _BAD_INSIDE.search(region):
        return region  # a control or high byte inside a line: the decoder refuses it
    return region.translate(None, _BAD)


def evp_decode(text: bytes) -> bytes | None:
    """``EVP_DecodeUpdate`` + ``EVP_DecodeFinal`` on ``text``; None where OpenSSL fails."""
    cut = text.find(b"-")
    if cut >= 0:
        text = text[:cut]  # B64_EOF: the decoder stops reading here
    if text.translate(None, _SAFE):
        return None
    s = text.translate(None, _B64_WS)
    pad = s.find(b"=")
    if pad >= 0 and (len(s) - pad > 2 or s[pad:].strip(b"=")):
        return None
    if len(s) % 4:
        return None
    return binascii.a2b_base64(s)


class Reader:
    """Successive ``PEM_read_bio_ex`` calls on one memory BIO holding ``data``."""

    def __init__(self, data: bytes) -> None:
        self._text, self._phys, self._soft = _normalise(data)
        self._pos = 0
        self._count_pos = 0  # line_at: newlines before _count_pos
        self._count = 0

    @property
    def at_eof(self) -> bool:
        return self._pos >= len(self._text)

    def line_at(self, pos: int) -> int:
        """The 1-based physical line of offset ``pos`` of the normalised text.

        Counted on from the last position asked (reads move forward), so that the line
        numbers of a file of many blocks cost linear time in all.
        """
        pos = min(pos, len(self._text))
        if pos < self._count_pos:
            self._count_pos, self._count = 0, 0
        self._count += self._text.count(b"\n", self._count_pos, pos)
        self._count_pos = pos
        index = self._count
        if self._phys is None:
            return index + 1
        return self._phys[index] if index < len(self._phys) else self._phys[-1] + 1

    def _get_name(self) -> tuple[bytes, int]:
        text = self._text
        pos = self._pos
        if pos >= len(text):
            raise PemError(Reason.NO_START_LINE, self.line_at(pos))
        nl = text.index(b"\n", pos)
        first = text[pos:nl]
        if len(first) + 1 > 3 and first.startswith(_BOM):
            first = first[3:]
        first = first.rstrip(STRIP)
        if first.startswith(BEGIN) and len(first) >= 16 and first.endswith(TAIL):
            self._pos = nl + 1
            return first[11:-5], pos
        m = _BEGIN_AFTER.search(text, nl)
        if m is None:
            self._pos = len(text)
            raise PemError(Reason.NO_START_LINE, self.line_at(len(text)))
        self._pos = m.end()
        return m.group(1), m.start() + 1

    def _fail(
        self,
        reason: Reason,
        pos: int,
        begin_line: int,
        label: bytes,
        cause: BadEndCause | None = None,
    ) -> PemError:
        error = PemError(reason, self.line_at(pos), begin_line, cause, label)
        self._pos = len(self._text)  # a failed read leaves the BIO somewhere; we stop
        return error

    def _bad_char_line(self, start: int, decoded_text: bytes) -> int:
        """The line (counted from ``start``) holding the first byte base64 does not allow in
        ``decoded_text`` (which keeps the lines' newlines); 0 if none (a padding error)."""
        m = _NOT_B64_LINE.search(decoded_text)
        if m is None:
            return 0
        index = self._text.count(b"\n", 0, start) + decoded_text.count(b"\n", 0, m.start())
        if self._phys is None:
            return index + 1
        return self._phys[min(index, len(self._phys) - 1)]

    def _find_stop(self, start: int) -> int:
        """Where the first blank line or line starting with ``-----END `` at or after
        ``start`` (the line after BEGIN) begins; -1 when there is none."""
        text = self._text
        end_at = text.find(b"\n" + END, start - 1)
        limit = len(text) if end_at < 0 else end_at + 1
        at = start - 1
        while True:
            blank = _BLANK_AFTER.search(text, at, limit)
            if blank is None:
                return -1 if end_at < 0 else end_at + 1
            line = blank.start() + 1
            if line == start or line not in self._soft:
                return line
            at = line  # the rest of a long line, not a blank line

    def read_simple(self, wanted: frozenset[bytes], skipped: set[bytes]) -> Block | None:
        """Read past consecutive plain blocks whose label is not ``wanted``, as ``read`` would
        (they are valid by construction once their base64 passes), in one scan each; return
        the next block when it is plain and wanted, else None (``read`` takes over)."""
        text = self._text
        match = _SIMPLE.match
        add = skipped.add
        pos = self._pos
        while True:
            m = match(text, pos)
            if m is None:
                break
            label, body = m.groups()
            s = body.replace(b"\n", b"")
            pad = s.find(b"=")
            if len(s) % 4 or (pad >= 0 and (len(s) - pad > 2 or s[pad:].strip(b"="))):
                break  # read() names the error
            if label in wanted:
                self._pos = m.end()
                begin = m.start(1) - len(BEGIN)
                end = m.end() - len(label) - len(END) - len(TAIL) - 1
                return Block(
                    label, b"", binascii.a2b_base64(s), self.line_at(begin), self.line_at(end)
                )
            add(label)
            pos = m.end()
        self._pos = pos
        return None

    def read(self) -> Block:
        """The next block; raises ``PemError`` (``NO_START_LINE`` at the end of the input)."""
        raw_name, begin_pos = self._get_name()
        name = raw_name.split(b"\x00", 1)[0]
        begin_line = self.line_at(begin_pos)
        text = self._text
        end_line_bytes = END + name + TAIL

        start = self._pos
        stop = self._find_stop(start)
        if stop < 0:
            raise self._fail(Reason.BAD_END_LINE, len(text), begin_line, name, BadEndCause.EOF)
        m_start = stop
        region = text[start:m_start]
        colon = b":" in region
        nl = text.index(b"\n", m_start)
        if text.startswith(END, m_start):
            if text[m_start:nl].rstrip(STRIP) != end_line_bytes:
                raise self._fail(
                    Reason.BAD_END_LINE, m_start, begin_line, name, BadEndCause.WRONG_END
                )
            self._pos = nl + 1
            if colon or not region:  # IN_HEADER at the END line: the data BIO stays empty
                raise self._fail(Reason.NO_DATA, m_start, begin_line, name)
            decoded_text = data_text(region)
            der = evp_decode(decoded_text)
            if der is None:
                bad_line = self._bad_char_line(start, decoded_text)
                self._pos = len(text)
                raise PemError(
                    Reason.BAD_BASE64_DECODE, bad_line or begin_line, begin_line, label=name
                )
            return Block(name, b"", der, begin_line, self.line_at(m_start))
        # A blank line: what came before is the header; now 64-character data lines.
        # Only its start matters (header_error): the first line, as BIO_puts wrote it.
        header = region[: region.find(b"\n")].split(b"\x00", 1)[0].rstrip(STRIP)
        blank_line = self.line_at(m_start)
        blank_pos = m_start
        pos = data_start = nl + 1
        parts: list[bytes] = []
        short = False
        while True:
            if pos >= len(text):
                raise self._fail(Reason.BAD_END_LINE, pos, begin_line, name, BadEndCause.EOF)
            nl = text.index(b"\n", pos)
            if pos in self._soft:
                pos = nl + 1
                continue
            line = text[pos:nl].rstrip(STRIP)
            if not line:
                raise self._fail(
                    Reason.BAD_END_LINE, pos, begin_line, name, BadEndCause.BLANK_AFTER_DATA
                )
            if line.startswith(END):
                if line != end_line_bytes:
                    raise self._fail(
                        Reason.BAD_END_LINE, pos, begin_line, name, BadEndCause.WRONG_END
                    )
                break
            if short:
                raise self._fail(
                    Reason.BAD_END_LINE, pos, begin_line, name, BadEndCause.AFTER_SHORT_LINE
                )
            parts.append(line.split(b"\x00", 1)[0])
            if len(line) > DATA_LINE:
                raise self._fail(Reason.LINE_TOO_LONG, pos, begin_line, name)
            short = len(line) < DATA_LINE
            pos = nl + 1
        end_pos = pos
        self._pos = nl + 1
        if not parts:  # everything was before the blank line: a "header"
            raise self._fail(Reason.HEADER_ONLY, blank_pos, begin_line, name)
        der = evp_decode(b"\n".join(parts))
        if der is None:
            bad_line = self._bad_char_line(data_start, data_text(b"\n".join(parts)))
            self._pos = len(text)
            raise PemError(Reason.BAD_BASE64_DECODE, bad_line or begin_line, begin_line, label=name)
        return Block(name, header, der, begin_line, self.line_at(end_pos), blank_line)


def header_error(block: Block) -> Reason | None:
    """``PEM_get_EVP_CIPHER_INFO`` on the block's header: None when the header is empty."""
    if not block.header:
        return None
    if not block.header.startswith(b"Proc-Type: "):
        return Reason.NOT_PROC_TYPE
    return Reason.ENCRYPTED  # any valid or invalid Proc-Type fails without a passphrase


# --- how Node 20 calls the reader -------------------------------------------------------

X509_AUX_LABELS = frozenset({b"TRUSTED CERTIFICATE", b"CERTIFICATE", b"X509 CERTIFICATE"})
X509_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE"})
# check_pem(nm, "ANY PRIVATE KEY"): PKCS#8 labels, or "<T> PRIVATE KEY" with a legacy decoder.
KEY_LABELS = frozenset(
    {
        b"PRIVATE KEY",
        b"ENCRYPTED PRIVATE KEY",
        b"RSA PRIVATE KEY",
        b"EC PRIVATE KEY",
        b"DSA PRIVATE KEY",
    }
)


def read_matching(reader: Reader, labels: frozenset[bytes], skipped: set[bytes]) -> Block:
    """``PEM_bytes_read_bio``: blocks are read (and must be valid) until one has a label in
    ``labels``; then its header is checked.  ``skipped`` gets the labels passed over.
    Raises ``PemError``."""
    while True:
        block = reader.read_simple(labels, skipped) or reader.read()
        if block.label in labels:
            reason = header_error(block)
            if reason is not None:
                line = block.blank_line or block.begin_line
                raise PemError(reason, line, block.begin_line, label=block.label)
            return block
        skipped.add(block.label)
