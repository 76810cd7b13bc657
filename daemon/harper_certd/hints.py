"""Hints that name a command give one that still works (a leaf).

A refusal's message is written when the set is judged, naming its source folder
(``older_than_live``: "to install it anyway: harper-certd install --force-older SRC"); by
the time a person reads it, SRC has been moved into ``rejected/`` (issue 17: the hint
named a folder that was gone).  ``moved`` rewrites such a message for where the folder is
now.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def moved(message: str, source: Path | str, now_at: Path | None) -> str:
    """``message`` with the folder ``source`` named where it is now (``now_at``), when
    ``source`` no longer exists; unchanged while it does, or when the message does not
    name it.

    Only ``source`` standing as a path is replaced (not inside a longer path), and only an
    absolute one: a relative name can be a word of the sentence (a folder named ``expired``
    in "The certificate expired on ...", a newcomer's, 2026-12-07), so a message naming a
    relative ``source`` is left as it is (the commands name their SOURCE absolutely)."""
    old = str(source)
    if not os.path.isabs(old) or old not in message or os.path.lexists(old):
        return message
    if now_at is None or not os.path.lexists(now_at):
        return f"{message} ({old} has been moved since)"
    standing = re.compile(rf"(?<![\w./-]){re.escape(old)}(?![\w-]|\.\w)")
    return standing.sub(lambda _: str(now_at), message)
