"""The one clock: every wall-clock instant the package reads comes from here.

``utc_now()`` is the system's wall clock (UTC, timezone-aware), the default of every
``now``/``clock`` parameter in the package; ``Clock`` is the daemon's, which the node loop
hands to its lanes and trackers (tests start it at a chosen instant and run it faster:
``HARPER_CERTD_CLOCK``).  Nothing else in the package calls ``datetime.now()``.  Intervals
(settle periods, backoffs, the watchdog) are ``time.monotonic`` seconds, never wall time.

A leaf: imports nothing from harper_certd.
"""

import datetime as dt
import os
import time
from collections.abc import Mapping
from typing import NamedTuple

CLOCK_ENV = "HARPER_CERTD_CLOCK"


def utc_now() -> dt.datetime:
    """The system's wall clock now, in UTC (timezone-aware)."""
    return dt.datetime.now(dt.UTC)


class Clock(NamedTuple):
    """The daemon's wall clock: ``start + speed * elapsed + steps of the system clock``.

    ``elapsed`` is monotonic seconds since ``origin``; ``steps`` is how far the system's
    wall clock (CLOCK_REALTIME) has been set since then, beyond the time that passed
    (an NTP step, a VM resume, ``date -s``).  The real clock (``start`` = the wall time at
    ``origin``, speed 1) is therefore the system's wall clock itself, so every validity,
    expiry and age decision follows it; tests start it elsewhere and run it faster.
    Intervals (settle, backoff, watchdog) use ``time.monotonic`` directly, never this.
    """

    start: dt.datetime
    origin: float
    speed: float
    wall_origin: float  # time.time() at origin

    def now(self) -> dt.datetime:
        elapsed = time.monotonic() - self.origin
        steps = (time.time() - self.wall_origin) - elapsed
        return self.start + dt.timedelta(seconds=elapsed * self.speed + steps)

    def real_seconds(self, until: dt.datetime) -> float:
        """Real seconds to sleep until ``until`` on this clock (0 if it has passed)."""
        return max(0.0, (until - self.now()).total_seconds() / self.speed)


def wall_minus_monotonic() -> float:
    """Seconds between the wall clock and the monotonic one: constant unless the clock is set."""
    return time.time() - time.monotonic()


def real_clock() -> Clock:
    origin, wall = time.monotonic(), time.time()
    return Clock(dt.datetime.fromtimestamp(wall, dt.UTC), origin, 1.0, wall)


def clock_from_env(env: Mapping[str, str] | None = None) -> Clock:
    """``HARPER_CERTD_CLOCK=2027-01-01T00:00:00Z*3600``: start there, run 3600 times faster."""
    env = os.environ if env is None else env
    spec = env.get(CLOCK_ENV)
    if not spec:
        return real_clock()
    when, _, speed = spec.partition("*")
    start = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    return Clock(start, time.monotonic(), float(speed or 1), time.time())
