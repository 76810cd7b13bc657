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
from typing import Any, TextIO

from harper_certd.exits import Exit
from harper_certd.textsafe import escape


def terminal_columns() -> int:
    """The terminal's width in columns, as ``shutil.get_terminal_size().columns`` gives it:
    ``COLUMNS`` when set and positive, else the width of the terminal on standard output,
    else 80.  Written out because argparse's ``HelpFormatter`` imports ``shutil`` (with bz2,
    lzma and fnmatch) for this one number, and every command builds one when it adds its
    arguments: about 4 ms of ``validate``'s start-up (2 cores, ``-X importtime``)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, its width from ``terminal_columns`` (minus 2, as argparse)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = terminal_columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class Parser(argparse.ArgumentParser):
    """argparse with our exit status for a usage error (2) and a terminal-safe message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

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
