"""``harper-certd run``: the daemon, left alone for months and judged by its log.

The node loop (``node.loop.Node``) drives one lane per certificate set (``lane.Lane``).
This module is the entry point only: every line the process writes, even on a crash, a
library's warning or an exception on a library's thread, is a catalogued JSON event.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from harper_certd import events, logs, quiet
from harper_certd.clock import Clock
from harper_certd.node.loop import Node, Overrides

__all__ = ["Overrides", "main"]


def _warning_shown(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A Python warning (a library's deprecation, say) is an event, never a raw stderr line."""
    quiet.library(f"{category.__name__} at {filename}:{lineno}", str(message)[:500])


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """An exception escaping a library's thread (watchdog's) is an event, never raw text."""
    name = args.thread.name if args.thread is not None else "thread"
    text = args.exc_type.__name__ if args.exc_value is None else logs.traceback_text(args.exc_value)
    quiet.library(name, text[-2000:])


def main(config_path: Path | None, overrides: Overrides, clock_factory: Callable[[], Clock]) -> int:
    """Run the daemon; every line it writes, even on a crash, is a catalogued JSON event."""
    logs.configure()  # JSON lines under systemd even before the configuration is read
    threading.excepthook = _thread_failed
    warnings.showwarning = _warning_shown
    try:
        return Node(config_path, overrides, clock_factory()).run()
    except Exception as exc:  # the last word is an event with the traceback, then exit 1
        logs.emit(
            events.Crashed(
                error=logs.describe_error(exc)[:500],
                traceback=logs.traceback_text(exc)[-4000:],
            )
        )
        return 1
