"""Small pieces of the daemon's memory over time, each asked two things by the loop.

``next_due(now)``: the monotonic instant (seconds, ``time.monotonic`` scale) at which the
tracker wants the loop awake, ``math.inf`` for never; ``tick(now)`` (or a named verb):
do what is due.  ``now`` is always passed in, so each is tested without sleeping.  The
loop sleeps until the minimum of the ``next_due`` answers or a note arrives.

Wall-clock decisions (validity, expiry, renewal windows) are not made here: they take
the ``schedule.Clock``'s datetime.  These trackers only count intervals.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harper_certd.schedule import Backoff, Mark, Watched, due_marks, expiry_marks, next_mark

# Wall minus monotonic moving by more than this is a step of the clock, not NTP slewing
# (at most 500 ppm: 2.5 ms over a check interval).
CLOCK_JUMP_SECONDS = 5.0
CLOCK_CHECK_SECONDS = 5.0
# inotify overflows closer together than this are one burst: one warning.
OVERFLOW_QUIET_SECONDS = 60.0


class ClockWatch:
    """Notices the wall clock being set: ``skew()`` (wall minus monotonic) moving.

    ``tick`` answers the size of a step in seconds (positive: the clock went forward),
    or None.  Checked every ``every`` seconds so that a step is seen within that time
    even while the daemon has nothing else to do.
    """

    def __init__(
        self,
        skew: Callable[[], float],
        now: float,
        *,
        every: float = CLOCK_CHECK_SECONDS,
        tolerance: float = CLOCK_JUMP_SECONDS,
    ) -> None:
        self.skew = skew
        self.every = every
        self.tolerance = tolerance
        self._reference = skew()
        self._next = now + every

    def next_due(self, now: float) -> float:
        return self._next

    def tick(self, now: float) -> float | None:
        if now < self._next:
            return None
        self._next = now + self.every
        skew = self.skew()
        step = skew - self._reference
        self._reference = skew
        return step if abs(step) > self.tolerance else None


class Burst:
    """Reports the first of a burst of like events; a burst ends after ``quiet`` seconds."""

    def __init__(self, quiet: float = OVERFLOW_QUIET_SECONDS) -> None:
        self.quiet = quiet
        self._last: float | None = None
        self.suppressed = 0  # events of the current burst not reported

    def first(self, now: float) -> bool:
        """True when the event at ``now`` starts a new burst (and should be reported)."""
        new = self._last is None or now - self._last > self.quiet
        self._last = now
        if new:
            self.suppressed = 0
        else:
            self.suppressed += 1
        return new


@dataclass
class Retry:
    """Consecutive failures of one duty, and when to try again (exponential backoff)."""

    backoff: Backoff
    failures: int = 0
    due_at: float | None = None  # monotonic; None: nothing to retry

    def next_due(self, now: float) -> float:
        return math.inf if self.due_at is None else self.due_at

    def due(self, now: float) -> bool:
        return self.due_at is not None and now >= self.due_at

    def failed(self, now: float) -> float:
        """Count a failure; the delay (seconds) until the next attempt."""
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        self.due_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.due_at = None

    def taken(self) -> None:
        """The retry is under way: not due again until it fails again."""
        self.due_at = None


@dataclass
class Held:
    """One set held because its notBefore is a little in the future."""

    path: Path
    not_before: dt.datetime
    since: dt.datetime


@dataclass
class HeldSets:
    """Sets waiting to become valid (a CA whose clock runs ahead), by source path.

    The wait is bounded by the caller (``hold_seconds`` from notBefore's distance when
    first judged); here only what is waiting and until when, in wall time.
    """

    sets: dict[Path, Held] = field(default_factory=dict)

    def hold(self, path: Path, not_before: dt.datetime, now: dt.datetime) -> bool:
        """Remember ``path``; True when it is new (to be announced once)."""
        known = self.sets.get(path)
        if known is not None and known.not_before == not_before:
            return False
        self.sets[path] = Held(path, not_before, now)
        return True

    def next_wall(self) -> dt.datetime | None:
        return min((h.not_before for h in self.sets.values()), default=None)

    def due(self, now: dt.datetime) -> list[Path]:
        """Sets whose notBefore has come; forgotten here (they are judged again)."""
        ready = [p for p, h in self.sets.items() if h.not_before <= now]
        for path in ready:
            del self.sets[path]
        return ready

    def forget_missing(self) -> None:
        for path in [p for p in self.sets if not p.exists()]:
            del self.sets[path]


class Expiry:
    """The expiry thresholds of the watched certificates, each reported once.

    Works on wall time (``dt.datetime``): a threshold is a date.  ``tick(now)`` answers the
    marks to report (for each certificate only its most urgent one) and counts every mark
    passed as reported; ``stepped(now)`` after a clock step back makes marks that are in
    the future again due again.
    """

    def __init__(self) -> None:
        self.marks: list[Mark] = []
        self.fired: set[tuple[str, str, float]] = set()

    def plan(self, certs: Sequence[Watched], warn_days: Sequence[float]) -> None:
        self.marks = expiry_marks(certs, warn_days)

    def next_wall(self, now: dt.datetime) -> dt.datetime | None:
        return next_mark(self.marks, self.fired, now)

    def tick(self, now: dt.datetime) -> list[Mark]:
        due = due_marks(self.marks, self.fired, now)
        self.fired |= {m.key for m in self.marks if m.at <= now}
        return due

    def stepped(self, now: dt.datetime) -> None:
        self.fired = {m.key for m in self.marks if m.at <= now and m.key in self.fired}


@dataclass
class RenewWait:
    """A renewal command exited 0: its set must arrive and be installed by ``deadline``."""

    deadline: float  # monotonic
    fingerprint: str  # the live leaf's when the command ran
    output: str


@dataclass
class Renewal:
    """The renewal command's record: failures, backoff, a result awaited, contents seen.

    Intervals are monotonic (a clock step neither skips nor repeats a backoff); whether the
    leaf is in its renewal window is a wall-time question the caller answers.
    """

    backoff: Backoff
    failures: int = 0
    next_try: float | None = None  # monotonic
    waiting: RenewWait | None = None
    # Content digests of lineage sets already judged (and the live set's): never filed twice.
    seen: set[str] = field(default_factory=set)

    def may_start(self, now: float) -> bool:
        return self.waiting is None and (self.next_try is None or now >= self.next_try)

    def next_due(self, now: float, window_in: float | None, grace: float) -> float:
        """When to look again: the arrival deadline (plus ``grace`` once it passed), or the
        window's opening (``window_in`` seconds from now), not before the backoff ends."""
        if self.waiting is not None:
            end = self.waiting.deadline
            return end + grace if now >= end else end
        if window_in is None:
            return math.inf
        due = now + window_in
        return max(due, self.next_try) if self.next_try is not None else due

    def await_result(self, now: float, within: float, fingerprint: str, output: str) -> None:
        self.waiting = RenewWait(now + within, fingerprint, output)

    def succeeded(self, now: float) -> RenewWait | None:
        """The live leaf changed: the awaited result (if any), cleared; not again at once."""
        waiting, self.waiting = self.waiting, None
        self.failures = 0
        self.next_try = now + self.backoff.initial
        return waiting

    def failed(self, now: float) -> float:
        """Count a failure; seconds until the command may run again."""
        self.waiting = None
        self.failures += 1
        delay = self.backoff.delay(self.failures)
        self.next_try = now + delay
        return delay
