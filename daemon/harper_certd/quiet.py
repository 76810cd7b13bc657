"""Quiet under storms: a library's repeated messages coalesced, one line a minute.

A storm of file operations in ``incoming/`` made watchdog warn thousands of times (issue 17:
20 s of churn and 100 SIGHUPs gave 1,730 ``RuntimeWarning: Callback with id … already exists
for watch`` lines).  ``Coalescer.library`` logs the first message of a kind at once
(``certd.library_message``), then counts those of the same kind for ``window`` seconds
(60) and ends the window with one ``certd.library_repeated`` line carrying the count and the
last text.  "The same kind": the logger and the text with every number (decimal or hex)
taken out, so "Callback with id 140…" and "Callback with id 139…" are one kind.

Thread-safe: messages come from watchdog's threads and Python's warning machinery on any
thread; events are written outside the lock (writing one may warn again).  At most
``MAX_KINDS`` kinds are tracked at once; beyond that, further kinds share one.  Time is
monotonic seconds.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from harper_certd import events, logs

WINDOW_SECONDS = 60.0
MAX_KINDS = 64
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


@dataclass
class _Kind:
    started: float  # monotonic seconds: when its first message was logged
    count: int  # messages since, not logged
    logger: str
    last: str  # the last message's text


def kind_of(logger: str, message: str) -> tuple[str, str]:
    """(logger, text) with numbers replaced by ``#``: what makes two messages the same."""
    return _NUMBERS.sub("#", logger), _NUMBERS.sub("#", message[:200])


class Coalescer:
    """Library messages in, at most two lines per kind and window out (see the module)."""

    def __init__(
        self,
        window: float = WINDOW_SECONDS,
        emit: Callable[[events.Event], None] = logs.emit,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.emit = emit
        self.monotonic = monotonic
        self.kinds: dict[tuple[str, str], _Kind] = {}
        self.lock = threading.Lock()

    def library(self, logger: str, message: str) -> None:
        """A library's message (``message`` bounded by the caller): logged, or counted."""
        now = self.monotonic()
        with self.lock:
            out = self._ended(now)
            key = kind_of(logger, message)
            if key not in self.kinds and len(self.kinds) >= MAX_KINDS:
                key = ("*", "*")  # too many kinds at once: the rest share one
            kind = self.kinds.get(key)
            first = kind is None
            if kind is None:
                self.kinds[key] = _Kind(now, 0, logger, message)
            else:
                kind.count += 1
                kind.last = message
        # Records are built and written outside the lock: building or writing one may warn
        # again, on this very thread.
        if first:
            self.emit(events.LibraryMessage(logger=logger, message=message))
        self._write(out)

    def flush(self, *, final: bool = False) -> None:
        """End the windows that are over (the node loop calls this every cycle); ``final``:
        every window (the daemon stops)."""
        now = self.monotonic() + (self.window if final else 0.0)
        with self.lock:
            out = self._ended(now)
        self._write(out)

    def next_due(self) -> float:
        """The monotonic instant the earliest window ends (``inf``: none open)."""
        with self.lock:
            return min((k.started + self.window for k in self.kinds.values()), default=float("inf"))

    def _ended(self, now: float) -> list[_Kind]:
        """The kinds whose window is over, taken out (called with the lock held)."""
        out: list[_Kind] = []
        for key, kind in list(self.kinds.items()):
            if now - kind.started >= self.window:
                del self.kinds[key]
                out.append(kind)
        return out

    def _write(self, ended: list[_Kind]) -> None:
        for kind in ended:
            if kind.count:
                self.emit(
                    events.LibraryRepeated(
                        logger=kind.logger,
                        message=kind.last,
                        count=kind.count,
                        window_seconds=self.window,
                    )
                )


LIBRARY = Coalescer()  # the process's one: watch.py's log handler and run.py's hooks


def library(logger: str, message: str) -> None:
    """``LIBRARY.library``: a library's message, coalesced."""
    LIBRARY.library(logger, message)
