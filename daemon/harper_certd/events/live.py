"""Events of the live set over time: changes, validity, expiry, renewal, what is served.

One frozen record per event (``base.Event``); every field is a key of the event's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harper_certd.events.base import Event, event


@event("certd.live_adopted", "info")
@dataclass(frozen=True, slots=True)
class LiveAdopted(Event):
    """Live files that harper-certd did not write were recorded as a generation.

    Attributes:
        generation: the generation recorded.
        live: the live certificate path.
    """

    generation: str
    live: str


@event("certd.live_changed", "warning")
@dataclass(frozen=True, slots=True)
class LiveChanged(Event):
    """The live certificate files were changed by something other than harper-certd.

    Attributes:
        generation: the generation recorded for it (None: watch-only).
        fingerprint: SHA-256 of the live leaf now (hex).
        subject: its subject.
        written_through: the live path written through a link into a generation, if any.
        watch_only: the daemon only watches these paths.
    """

    generation: str | None
    fingerprint: str
    subject: str
    written_through: str | None
    watch_only: bool


@event("certd.live_invalid", "error")
@dataclass(frozen=True, slots=True)
class LiveInvalid(Event):
    """The live set fails validation (see its problem codes).

    Attributes:
        codes: the live set's problem codes (errors).
        problems: their messages.
        action: what the daemon does about it: restore or report (on_invalid_live); None at start,
            when it only says so.
    """

    codes: list[str]
    problems: list[str]
    action: str | None = None


@event("certd.live_restored", "warning")
@dataclass(frozen=True, slots=True)
class LiveRestored(Event):
    """The live set was put back to the last good generation after it went bad or missing.

    Attributes:
        generation: the generation put back.
        fingerprint: SHA-256 of its leaf.
        verified: Harper was seen serving it.
        detail: what the verification found.
    """

    generation: str
    fingerprint: str | None
    verified: bool
    detail: str


@event("certd.watch_only", "warning")
@dataclass(frozen=True, slots=True)
class WatchOnly(Event):
    """The live paths are someone else's links or on a read-only mount: the daemon only watches them
    (validates, warns), never writes.

    Attributes:
        reason: why the daemon only watches.
        live: the live paths.
        does: what it does instead.
    """

    reason: str
    live: list[str]
    does: str


@event("certd.content_failed", "error")
@dataclass(frozen=True, slots=True)
class ContentFailed(Event):
    """Judging the live set's content raised (a fault in harper-certd); the daemon goes on as if the
    live set could not be read.

    Attributes:
        live: the live certificate path.
        error: the error (bounded).
    """

    live: str
    error: str


@event("certd.expiry_warning", "warning")
@dataclass(frozen=True, slots=True)
class ExpiryWarning(Event):
    """A live certificate expires within the warning window.

    Attributes:
        threshold_days: the warning threshold passed (days before notAfter).
        certificate: leaf or ca.
        subject: the certificate's subject.
        fingerprint: its SHA-256 (hex).
        not_after: its notAfter (ISO 8601).
        days_left: days until then (negative: past).
        now: the wall time now (ISO 8601).
        waiting: sets waiting to be installed (settling, held back or held).
    """

    threshold_days: float
    certificate: str
    subject: str
    fingerprint: str
    not_after: str
    days_left: float
    now: str
    waiting: list[str]


@event("certd.expired", "critical")
@dataclass(frozen=True, slots=True)
class Expired(Event):
    """A live certificate has expired; peers will refuse it.

    Attributes:
        certificate: leaf or ca.
        subject: the certificate's subject.
        fingerprint: its SHA-256 (hex).
        not_after: its notAfter (ISO 8601).
        days_left: days until then (negative: past).
        now: the wall time now (ISO 8601).
        waiting: sets waiting to be installed (settling, held back or held).
    """

    certificate: str
    subject: str
    fingerprint: str
    not_after: str
    days_left: float
    now: str
    waiting: list[str]


@event("certd.renewal_started", "info")
@dataclass(frozen=True, slots=True)
class RenewalStarted(Event):
    """A renewal command was started for a set.

    Attributes:
        command: the renewal command (argv).
        fingerprint: SHA-256 of the live leaf.
        not_after: its notAfter (ISO 8601).
    """

    command: list[str]
    fingerprint: str
    not_after: str


@event("certd.renewal_succeeded", "info", operation=("renewal", "succeeded"))
@dataclass(frozen=True, slots=True)
class RenewalSucceeded(Event):
    """A renewal command produced a new set and it is installed (the live leaf changed).

    Attributes:
        output: the command's output (its last 1,000 characters).
        fingerprint: SHA-256 of the new live leaf.
        not_after: its notAfter (ISO 8601).
    """

    output: str
    fingerprint: str
    not_after: str


@event("certd.renewal_failed", "error", operation=("renewal", "failed"))
@dataclass(frozen=True, slots=True)
class RenewalFailed(Event):
    """A renewal command failed, or exited 0 but what it produced was refused or nothing new
    arrived; retried with backoff (next_attempt).

    Attributes:
        exit_status: the command's exit status (None: it timed out; 0: it exited 0 but its set was
            refused, not swapped in or did not arrive).
        reason: why the renewal failed.
        codes: the problem codes of the refused set, if any.
        output: the command's output (its last 1,000 characters).
        failures: consecutive failures.
        next_attempt: when it may run again (ISO 8601).
    """

    exit_status: int | None
    reason: str
    codes: list[str]
    output: str
    failures: int
    next_attempt: str


@event("certd.served_mismatch", "error")
@dataclass(frozen=True, slots=True)
class ServedMismatch(Event):
    """The periodic re-check found Harper serving another certificate than the live one.

    Attributes:
        live: SHA-256 of the live leaf.
        served: each address serving another: dialled, sha256, error.
        seen_for_seconds: how long the mismatch has lasted.
    """

    live: str
    served: list[dict[str, Any]]
    seen_for_seconds: float


@event("certd.served_matches", "info")
@dataclass(frozen=True, slots=True)
class ServedMatches(Event):
    """Harper serves the live certificate again after a mismatch was reported.

    Attributes:
        live: SHA-256 of the live leaf.
        dialled: the addresses dialled.
    """

    live: str
    dialled: list[str]


@event("certd.metrics_failed", "warning")
@dataclass(frozen=True, slots=True)
class MetricsFailed(Event):
    """The Prometheus textfile could not be written; the daemon goes on.

    Attributes:
        textfile: metrics.textfile.
        error: why.
    """

    textfile: str
    error: str
