"""What the command line writes: terminal-safe text lines, JSON, the argument parser's
errors, and a quiet end when the reader goes away (``status | head -1``).

Every text line goes through ``say`` (``textsafe.escape``: a certificate's name cannot forge a
line, clear the screen or retitle the terminal, issue 17).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from typing import TextIO

from harper_certd.exits import Exit
from harper_certd.textsafe import escape


class Parser(argparse.ArgumentParser):
    """argparse with our exit status for a usage error (2) and a terminal-safe message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        say(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(Exit.USAGE)


def instant(text: str) -> dt.datetime:
    """An ISO 8601 instant from the command line (``Z`` accepted, naive taken as UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def say(text: str | list[str], file: TextIO | None = None) -> None:
    """Write one line of text (a ``str``, any newline in it escaped) or several (a list, one
    line each), every control, bidi and non-printable character escaped (``textsafe``):
    every text line the command line writes goes through here."""
    out = [escape(text)] if isinstance(text, str) else [escape(line) for line in text]
    print("\n".join(out), file=file or sys.stdout)


def print_json(data: object) -> None:
    import json  # start-up cost: only the commands that print JSON pay it

    print(json.dumps(data, indent=2, sort_keys=False))


def quiet_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (BrokenPipeError), so that
    Python's flush at exit raises no second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def emit(write: Callable[[], object]) -> None:
    """Write a report; a reader that went away is no error: the exit status still says the
    node's health."""
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stdout()
