"""Schedule stage: when to wake for expiry warnings and renewal, and the clock to use.

A schedule, not a poll: the daemon computes the next instant anything is due and
sleeps until then (or until a file event).  The clock is passed in; the tests run
the real daemon on a clock that starts at a chosen instant and runs faster.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

CLOCK_ENV = "HARPER_CERTD_CLOCK"


@dataclass(frozen=True, slots=True)
class Clock:
    """Wall time as ``start + speed * (monotonic - origin)``; the real clock is speed 1."""

    start: dt.datetime
    origin: float
    speed: float = 1.0

    def now(self) -> dt.datetime:
        return self.start + dt.timedelta(seconds=(time.monotonic() - self.origin) * self.speed)

    def real_seconds(self, until: dt.datetime) -> float:
        """Real seconds to sleep until ``until`` on this clock (0 if it has passed)."""
        return max(0.0, (until - self.now()).total_seconds() / self.speed)


def real_clock() -> Clock:
    return Clock(dt.datetime.now(dt.UTC), time.monotonic())


def clock_from_env(env: Mapping[str, str] | None = None) -> Clock:
    """``HARPER_CERTD_CLOCK=2027-01-01T00:00:00Z*3600``: start there, run 3600 times faster."""
    env = os.environ if env is None else env
    spec = env.get(CLOCK_ENV)
    if not spec:
        return real_clock()
    when, _, speed = spec.partition("*")
    start = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    return Clock(start, time.monotonic(), float(speed or 1))


@dataclass(frozen=True, slots=True)
class Watched:
    """A certificate whose expiry is watched: the leaf, or a CA of the CA file."""

    role: str  # "leaf" or "ca"
    subject: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime


@dataclass(frozen=True, slots=True)
class Mark:
    """An instant at which an event is due: a warning threshold or the expiry itself."""

    at: dt.datetime
    kind: str  # "warning" or "expired"
    days: float  # the threshold, 0 for "expired"
    cert: Watched

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.cert.sha256, self.kind, self.days)


def expiry_marks(certs: Iterable[Watched], warn_days: Sequence[float]) -> list[Mark]:
    marks = []
    for cert in certs:
        for days in warn_days:
            marks.append(Mark(cert.not_after - dt.timedelta(days=days), "warning", days, cert))
        marks.append(Mark(cert.not_after, "expired", 0.0, cert))
    return sorted(marks, key=lambda m: m.at)


def due_marks(
    marks: Iterable[Mark], fired: set[tuple[str, str, float]], now: dt.datetime
) -> list[Mark]:
    """Marks that are due and not yet reported; for one certificate only the most urgent."""
    due: dict[str, Mark] = {}
    for mark in marks:
        if mark.at <= now and mark.key not in fired:
            best = due.get(mark.cert.sha256)
            if best is None or mark.at > best.at:
                due[mark.cert.sha256] = mark
    return sorted(due.values(), key=lambda m: m.at)


def next_mark(
    marks: Iterable[Mark], fired: set[tuple[str, str, float]], now: dt.datetime
) -> dt.datetime | None:
    future = [m.at for m in marks if m.at > now and m.key not in fired]
    return min(future, default=None)


def renewal_at(leaf: Watched, *, before_fraction: float, before_days: float | None) -> dt.datetime:
    """When the leaf enters its renewal window (a share of its lifetime, or fixed days)."""
    if before_days is not None:
        return leaf.not_after - dt.timedelta(days=before_days)
    lifetime = leaf.not_after - leaf.not_before
    return leaf.not_after - lifetime * before_fraction


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float
    maximum: float
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (exponential, jittered)."""
        base = min(self.maximum, self.initial * 2.0 ** max(0, failures - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return float(max(0.0, base * (1.0 + spread)))


class RestartBudget:
    """At most ``limit`` rotations an hour: a storm is held back, not obeyed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: list[dt.datetime] = []

    def _prune(self, now: dt.datetime) -> None:
        hour_ago = now - dt.timedelta(hours=1)
        self._times = [t for t in self._times if t > hour_ago]

    def allowed(self, now: dt.datetime) -> bool:
        self._prune(now)
        return len(self._times) < self.limit

    def spend(self, now: dt.datetime) -> None:
        self._times.append(now)

    def next_allowed(self, now: dt.datetime) -> dt.datetime:
        self._prune(now)
        if len(self._times) < self.limit:
            return now
        return min(self._times) + dt.timedelta(hours=1)
