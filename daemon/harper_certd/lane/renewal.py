"""A lane's renewal: run the set's renewal command when its leaf enters the window, then
wait for what it produced (through incoming/, or a certbot lineage taken directly).

States (``lane.state.RenewalState``): idle -> running (``certd.renewal_started``) ->
awaiting (exit 0) -> idle (``certd.renewal_succeeded``: the live leaf changed) or backoff
(``certd.renewal_failed``: refused, not swapped in, or nothing new arrived by the
deadline); running -> backoff on a non-zero exit or a timeout.  Intervals are monotonic
(``trackers.Renewal``); whether the leaf is in its window is asked of the lane's clock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from harper_certd import events
from harper_certd.errors import CertdError
from harper_certd.install import live, outcomes, pipeline
from harper_certd.lane.state import RenewalState
from harper_certd.renewfile import write_renewal_failure
from harper_certd.roles import SetBytes
from harper_certd.schedule import Backoff, renewal_at
from harper_certd.source import SourceRefused, read_source
from harper_certd.trackers import Renewal

if TYPE_CHECKING:
    from harper_certd.lane.parts import LaneView


def digest(data: SetBytes) -> str:
    """SHA-256 of a set's three files' bytes, NUL-separated (hex): "this content"."""
    return hashlib.sha256(b"\0".join((data.cert, data.key, data.ca))).hexdigest()


class LaneRenewal:
    """The renewal of ``lane``'s set: its tracker (backoff, awaited result, contents seen)
    and its state."""

    def __init__(self, lane: LaneView) -> None:
        self.lane = lane
        self.tracker = Renewal(Backoff(60.0, 3600.0))
        self.state = RenewalState.IDLE

    def due(self) -> dt.datetime | None:
        """When the live leaf enters its renewal window (None: no command, or no leaf)."""
        config = self.lane.ctx.config.renew
        leaf = self.lane.leaf
        if not config.command or leaf is None:
            return None
        return renewal_at(
            leaf, before_fraction=config.before_fraction, before_days=config.before_days
        )

    def next_due(self, now: float) -> float:
        """The monotonic instant to look again (``math.inf``: never)."""
        due = self.due()
        window_in = None if due is None else self.lane.clock.real_seconds(due)
        return self.tracker.next_due(now, window_in, self.lane.ctx.config.renew.arrival_seconds)

    def tick(self) -> None:
        """Start the command when due; check on the awaited result otherwise."""
        lane = self.lane
        config = lane.ctx.config.renew
        due = self.due()
        leaf = lane.leaf
        if due is None or leaf is None:
            return
        if self.tracker.waiting is not None:
            self.check()
            return
        if lane.clock.now() < due or not self.tracker.may_start(time.monotonic()):
            return
        lane.change_state(
            RenewalState.RUNNING,
            events.RenewalStarted(
                command=list(config.command),
                fingerprint=leaf.sha256,
                not_after=leaf.not_after.isoformat(),
            ),
        )
        try:
            status, output = live.run_renewal(lane.ctx, lane.stopping)
        except BaseException:
            lane.change_state(RenewalState.IDLE)
            raise
        if status != 0:
            reason = "the command timed out" if status is None else f"the command exited {status}"
            self.failed(status, output, reason, [])
            return
        self.tracker.await_result(time.monotonic(), config.arrival_seconds, leaf.sha256, output)
        lane.change_state(RenewalState.AWAITING)
        if config.lineage_dir is not None:
            self.from_lineage(config.lineage_dir)
        else:
            self.check()

    def from_lineage(self, lineage: Path) -> None:
        """Take a certbot lineage's set, unless this very content was judged before.

        The live generation's content counts as judged: certbot's "not yet due" leaves the
        lineage as it was, and an unchanged lineage is never copied into processed/ again.
        """
        lane, ctx = self.lane, self.lane.ctx
        with contextlib.suppress(CertdError, OSError):
            current = ctx.store.current()
            if current is not None:
                self.tracker.seen.add(digest(current.read()))
        try:
            source = read_source(
                lineage,
                trusted_uids=ctx.trusted_uids(),
                ca_fallback=ctx.config.ca_file or ctx.managed.live.ca,
                ca_file=ctx.managed.live.ca is not None,
            )
            content: str | None = digest(source.data)
        except (SourceRefused, OSError):
            content = None  # judged (and refused) by the rotation, which says why
        if content is not None and content in self.tracker.seen:
            self.check()  # nothing new arrived; nothing is filed again
            return
        failures = lane.swap_retry.failures
        outcome = lane.rotate(
            lambda: pipeline.install_newest(
                ctx,
                [lineage],
                hold_seconds=ctx.config.schedule.hold_not_yet_valid_seconds,
                on_judged=lane.intake.on_judged,
            )
        )
        if lane.swap_retry.failures > failures and self.tracker.waiting is not None:
            # Not "seen": the same content is tried again at the next attempt.
            self.failed(0, self.tracker.waiting.output, "its set could not be swapped in", [])
            return
        held = outcome is not None and outcome.status == outcomes.InstallStatus.HELD_FOR_PEERS
        if content is not None and not held:  # a set held for its peers is taken again
            self.tracker.seen.add(content)
        self.check()

    def check(self) -> None:
        """Whether the renewal being waited for has ended: a new live leaf, or nothing."""
        waiting = self.tracker.waiting
        if waiting is None:
            return
        lane = self.lane
        leaf = lane.leaf
        if leaf is not None and leaf.sha256 != waiting.fingerprint:
            # Not again at once, even if the new leaf is still inside the window.
            self.tracker.succeeded(time.monotonic())
            write_renewal_failure(lane.ctx.store.root, None)
            lane.change_state(
                RenewalState.IDLE,
                events.RenewalSucceeded(
                    output=waiting.output[-1000:],
                    fingerprint=leaf.sha256,
                    not_after=leaf.not_after.isoformat(),
                ),
            )
            return
        config = lane.ctx.config.renew
        lineage = config.lineage_dir is not None
        pending = bool(lane.candidates or lane.intake.held.sets or lane.intake.peer_held)
        now = time.monotonic()
        if (not lineage or pending) and now < waiting.deadline:
            return  # the set may still be on its way through incoming/, or being judged
        if pending and now < waiting.deadline + config.arrival_seconds:
            return  # something arrived late and is being judged, or waits to become valid
        self.failed(0, waiting.output, "nothing new arrived", [])

    def refused(self, codes: list[str]) -> None:
        """A set was refused while a renewal's result was awaited: the renewal failed."""
        waiting = self.tracker.waiting
        if waiting is not None:
            self.failed(0, waiting.output, "what the renewal produced was refused", codes)

    def failed(self, status: int | None, output: str, reason: str, codes: list[str]) -> None:
        wait = self.tracker.failed(time.monotonic())
        now = self.lane.clock.now()
        next_attempt = now + dt.timedelta(seconds=wait)
        leaf = self.lane.leaf
        write_renewal_failure(
            self.lane.ctx.store.root,
            {
                "time": now.isoformat(),
                "reason": reason,
                "codes": codes,
                "exit_status": status,
                "failures": self.tracker.failures,
                "next_attempt": next_attempt.isoformat(),
                "fingerprint": None if leaf is None else leaf.sha256,
            },
        )
        self.lane.change_state(
            RenewalState.BACKOFF,
            events.RenewalFailed(
                exit_status=status,
                reason=reason,
                codes=codes,
                output=output[-1000:],
                failures=self.tracker.failures,
                next_attempt=next_attempt.isoformat(),
            ),
        )
