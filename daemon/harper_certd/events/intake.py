"""Events of the sets arriving in incoming/: detected, routed, refused, held, filed.

One frozen record per event (``base.Event``); every field is a key of the event's line.
"""

from __future__ import annotations

from dataclasses import dataclass

from harper_certd.events.base import Event, event


@event("certd.set_detected", "info")
@dataclass(frozen=True, slots=True)
class SetDetected(Event):
    """A new candidate certificate set appeared and will be checked.

    Attributes:
        source: the candidate folder or file in incoming/.
    """

    source: str


@event("certd.set_refused", "error", operation=("refusal", "refused"))
@dataclass(frozen=True, slots=True)
class SetRefused(Event):
    """A candidate set failed validation and was not installed; the live set is unchanged.

    Attributes:
        source: the refused source.
        codes: its problem codes (errors).
        reason: the first problem's message.
        kept_at: where it was filed in rejected/ (None: it could not be moved).
        now: the instant it was judged at (ISO 8601).
    """

    source: str
    codes: list[str]
    reason: str
    kept_at: str | None
    now: str


@event("certd.set_unchanged", "info")
@dataclass(frozen=True, slots=True)
class SetUnchanged(Event):
    """A candidate set is the same as the live set; it was filed away, nothing swapped.

    Attributes:
        source: the source.
        kept_at: where it was filed in processed/.
    """

    source: str
    kept_at: str | None


@event("certd.set_superseded", "info")
@dataclass(frozen=True, slots=True)
class SetSuperseded(Event):
    """A valid set was not installed because a newer one arrived in the same burst.

    Attributes:
        source: the valid source not installed.
        by: the newer source installed instead.
        kept_at: where it was filed in processed/.
    """

    source: str
    by: str
    kept_at: str | None


@event("certd.set_held", "warning")
@dataclass(frozen=True, slots=True)
class SetHeld(Event):
    """A set's notBefore is a little ahead of the clock; it waits in place and is installed when it
    becomes valid (schedule.hold_not_yet_valid_seconds).

    Attributes:
        source: the set held.
        not_before: its notBefore (ISO 8601).
        now: the time now (ISO 8601).
        seconds_ahead: how far notBefore is ahead.
        hold_limit_seconds: schedule.hold_not_yet_valid_seconds.
    """

    source: str
    not_before: str
    now: str
    seconds_ahead: float
    hold_limit_seconds: float


@event("certd.set_routed", "info")
@dataclass(frozen=True, slots=True)
class SetRouted(Event):
    """A folder placed straight in incoming/ was moved to the incoming folder of the one set it fits
    (incoming/<set name>/), where that set's tracker takes it.

    Attributes:
        source: the folder placed in incoming/.
        set: the set it fits.
        moved_to: where it was moved.
        reason: why that set.
    """

    source: str
    set: str
    moved_to: str
    reason: str


@event("certd.set_staged", "info")
@dataclass(frozen=True, slots=True)
class SetStaged(Event):
    """A set was copied into the incoming folder for the daemon (harper-certd stage).

    Attributes:
        source: what was staged.
        staged: the folder created in incoming/.
        files: the files in it.
    """

    source: str
    staged: str
    files: list[str]


@event("certd.source_left", "warning")
@dataclass(frozen=True, slots=True)
class SourceLeft(Event):
    """A source could not be filed in processed/ or rejected/; it stays in incoming/ and is not
    judged again until it changes (the event says what to do).

    Attributes:
        source: the source.
        to: where it should have gone.
        reason: why it could not.
        note: what happens to it.
    """

    source: str
    to: str
    reason: str
    note: str


@event("certd.incoming_stray", "warning")
@dataclass(frozen=True, slots=True)
class IncomingStray(Event):
    """A file in incoming/ that is not part of a set; left alone, reported once.

    Attributes:
        path: the file.
        note: what happens to it.
    """

    path: str
    note: str


@event("certd.incoming_unsafe", "warning")
@dataclass(frozen=True, slots=True)
class IncomingUnsafe(Event):
    """The incoming folder is writable by group or others (once per change of mode or owner).

    Attributes:
        incoming: the folder.
        mode: its mode (octal).
        owner: its owner.
        note: the risk and the fix.
    """

    incoming: str
    mode: str
    owner: str
    note: str


@event("certd.set_incomplete", "warning")
@dataclass(frozen=True, slots=True)
class SetIncomplete(Event):
    """Loose set files in incoming/ have waited watch.loose_wait_seconds for the rest of the set;
    they are still held.

    Attributes:
        incoming: the folder.
        present: the set's files there.
        missing: the files still missing.
        waited_seconds: seconds since the first arrived.
        note: what happens to them.
    """

    incoming: str
    present: list[str]
    missing: list[str]
    waited_seconds: float
    note: str


@event("certd.restart_held", "error")
@dataclass(frozen=True, slots=True)
class RestartHeld(Event):
    """A Harper restart was held back (rate limit or hold file); a peer not trusting a set is the
    peer guard's (ca_not_trusted_by_peers).

    Attributes:
        waiting: the sources held back.
        limit_per_hour: restart.restarts_per_hour.
        next_allowed: when the budget allows a restart again (ISO 8601).
    """

    waiting: list[str]
    limit_per_hour: int
    next_allowed: str


@event("certd.sources_pruned", "info")
@dataclass(frozen=True, slots=True)
class SourcesPruned(Event):
    """Sets filed in processed/ or rejected/ beyond the retention (count, age) were deleted.

    Attributes:
        folder: processed/ or rejected/.
        removed: the names deleted.
        keep: retention.keep.
        days: retention.days.
    """

    folder: str
    removed: list[str]
    keep: int
    days: float | None


@event("certd.judge_disagreed", "warning")
@dataclass(frozen=True, slots=True)
class JudgeDisagreed(Event):
    """Harper's Node.js and harper-certd's model disagree on a set outside the documented
    policy (docs/judge.md): a fault of the model, to report.

    Attributes:
        kind: node_refused (Node refuses, the model found nothing: the set is refused with
            Node's reason) or model_refused (the model refuses, Node accepts and decides).
        judge: the Node and OpenSSL versions that judged.
        node_reason: Node's OpenSSL reason when it refused.
        codes: the problem codes of the set after Node's verdict.
    """

    kind: str
    judge: str
    node_reason: str | None
    codes: list[str]
