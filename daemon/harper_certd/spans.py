"""Durations for a person to read (a leaf: imports nothing from the package).

Under a day a duration is hours and minutes ("5 h 03 min", "3 min", "40 s"), never "0.0
days" (issue 17: a leaf three minutes from expiry showed as "0.0 days", a minute past it as
"-0.0 days"); from a day on, days with one decimal ("12.5 days").  Inputs are seconds or
days (float); negative means "ago".  The JSON outputs keep their numbers (``days_left``).
"""

from __future__ import annotations

DAY = 86400.0


def span(seconds: float) -> str:
    """``abs(seconds)`` as days, hours and minutes, or seconds under a minute."""
    s = abs(seconds)
    if s >= DAY:
        return f"{s / DAY:.1f} days"
    whole = int(s)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def left(seconds: float) -> str:
    """Time left before an instant: "3 min left", or "expired 3 min ago" once past."""
    return f"{span(seconds)} left" if seconds >= 0 else f"expired {span(seconds)} ago"


def signed(days: float) -> str:
    """A number of days as a short span, ``-`` before it once past ("-3 min")."""
    text = span(days * DAY)
    return text if days >= 0 else f"-{text}"


def days_left(days: float) -> str:
    """``left`` for a number of days (``days_left`` of the JSON outputs)."""
    return left(days * DAY)
