"""Text from files made safe for a terminal (a leaf: imports nothing from the package).

A certificate's names, a problem's message quoting them, a path, a ``reason.json``: any of
them can hold a newline (a forged line at column 0), ESC sequences (CSI: clear the screen,
colours; OSC: retitle the terminal), C1 controls (U+0080..U+009F, which some terminals take as
ESC [ / ESC ]) or bidi overrides (U+202E shows text backwards, "Trojan Source",
CVE-2021-42574).  ``escape`` shows every such character as a visible escape: ``\\n``, ``\\t``,
``\\r``, ``\\xNN`` for the other C0/C1 controls and DEL, ``\\uNNNN`` (``\\UNNNNNNNN`` above the
BMP) for bidi controls, zero-width and other characters Python's ``str.isprintable`` refuses
(format, surrogate, private use, unassigned, line/paragraph separators).  A backslash is
kept as it is: the output is for a person, not to be parsed back (the JSON outputs are
for that).  Printable text, including non-ASCII letters, is unchanged.
"""

from __future__ import annotations

import re

# Bidi embeddings/overrides (U+202A..U+202E), isolates (U+2066..U+2069), marks (U+200E/F,
# U+061C): str.isprintable() already refuses them (category Cf); named for the reader.
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Everything outside printable ASCII is looked at one by one; the common case (plain ASCII)
# is one regex search.
_SUSPECT = re.compile(r"[^\x20-\x7e]")


def _one(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"\\x{code:02x}"
    if char in BIDI or not char.isprintable():
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def escape(text: str) -> str:
    """``text`` (one line of output) with every control, bidi and non-printable character
    escaped; a newline in it is shown as ``\\n``, never written."""
    if _SUSPECT.search(text) is None:
        return text
    return "".join(_one(c) if not (" " <= c <= "~") else c for c in text)


def lines(text: str) -> str:
    """Several lines (``\\n``-separated on purpose, like a diff): each escaped, the
    separators kept."""
    return "\n".join(escape(line) for line in text.split("\n"))


def is_safe(text: str) -> bool:
    """No character of ``text`` would be escaped (newlines aside): what tests assert."""
    return all(c == "\n" or _one(c) == c for c in text)
