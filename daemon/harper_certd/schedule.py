"""Schedule stage: when to wake for expiry warnings and renewal, and the clock to use.

A schedule, not a poll: the daemon computes the next instant anything is due and
sleeps until then (or until a file event).  The clock is passed in (``clock.Clock``); the
tests run the real daemon on a clock that starts at a chosen instant and runs faster.
"""

import datetime as dt
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from harper_certd import statefile


class Watched(NamedTuple):
    """A certificate whose expiry is watched: the leaf, or a CA of the CA file."""

    role: str  # "leaf" or "ca"
    subject: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime


class Mark(NamedTuple):
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


class Backoff(NamedTuple):
    initial: float
    maximum: float
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (exponential, jittered)."""
        base = min(self.maximum, self.initial * 2.0 ** max(0, failures - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return float(max(0.0, base * (1.0 + spread)))


class RestartBudget:
    """At most ``limit`` Harper restarts an hour: a storm is held back, not obeyed.

    Only restarts count (``Applied.restarted``): a hot reload costs Harper nothing.  With
    a ``path`` the spent restarts are kept on disk (JSON list of ISO-8601 UTC times,
    written to a temporary file, fsynced and renamed), so a daemon restart does not
    refill the budget.  A time later than ``now`` (the wall clock was set back) counts
    as ``now``: it neither holds for ever nor is forgotten.
    """

    def __init__(self, limit: int, path: Path | None = None) -> None:
        self.limit = limit
        self.path = path
        self._times: list[dt.datetime] = self._read() if path is not None else []

    def _read(self) -> list[dt.datetime]:
        assert self.path is not None
        data = statefile.read_json(self.path)
        try:
            return [dt.datetime.fromisoformat(t) for t in data["restarts"]]
        except (ValueError, KeyError, TypeError):
            return []  # missing or damaged: a full budget, as before the file existed

    def _write(self) -> None:
        if self.path is not None:
            statefile.write_json(self.path, {"restarts": [t.isoformat() for t in self._times]})

    def _prune(self, now: dt.datetime) -> None:
        hour_ago = now - dt.timedelta(hours=1)
        self._times = [min(t, now) for t in self._times if t > hour_ago]

    def carry_over(self, older: "RestartBudget") -> None:
        """Keep restarts spent under an earlier configuration (SIGHUP) as spent."""
        self._times = sorted(set(self._times) | set(older._times))

    @property
    def spent(self) -> tuple[dt.datetime, ...]:
        return tuple(self._times)

    def allowed(self, now: dt.datetime) -> bool:
        self._prune(now)
        return len(self._times) < self.limit

    def spend(self, now: dt.datetime) -> None:
        self._prune(now)
        self._times.append(now)
        self._write()

    def next_allowed(self, now: dt.datetime) -> dt.datetime:
        self._prune(now)
        if len(self._times) < self.limit:
            return now
        return sorted(self._times)[len(self._times) - self.limit] + dt.timedelta(hours=1)
