"""A lane: one certificate set of the node, from its incoming folder to its live files.

A lane owns its set's context (``context.Context``: configuration, paths, store, applier),
its incoming folder's tracker, inbox and watch, the sets of a burst judged valid and
waiting to be installed together, its live files' watch, its expiry marks, the sets held
until their notBefore, its swap retry and its renewal (``lane.renewal``).  The node loop
(``node.loop``) asks it ``next_due(now)`` and calls ``tick(now)`` when anything is due.

Its states (``lane.state``) change only through ``change_state``, which logs the one event
of the edge taken.  Every event logged while the lane works names its set (``set``) on a
node with several sets (``bound``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from harper_certd import events, health, logs, sdnotify
from harper_certd.clock import Clock
from harper_certd.errors import Interrupted, SwapError
from harper_certd.incoming import Candidate, Inbox, Taken, Tracker
from harper_certd.install import context, live, outcomes
from harper_certd.lane.intake import Intake
from harper_certd.lane.live import LiveFiles, LiveReport, expected_identity
from harper_certd.lane.renewal import LaneRenewal
from harper_certd.lane.state import InvalidTransition, LaneState, RenewalState, edge_event
from harper_certd.recover import recover
from harper_certd.schedule import Backoff, Watched
from harper_certd.trackers import Expiry, Retry
from harper_certd.validate import Report
from harper_certd.watch import Root, Watcher

# Watched folders are checked (a few stat calls) this often: a folder swapped under a
# watch (``ln -sfn`` of keys/) is seen again within seconds, not at the hourly rescan.
WATCH_CHECK_SECONDS = 5.0
OVERFLOW_REPORT_SECONDS = 60.0  # one watch_lost warning per burst of overflows


def report_watch_changes(changes: list[str]) -> None:
    """``certd.watch_rearmed`` or ``certd.watch_lost`` for each change a watcher saw."""
    for change in changes:
        if "again" in change:
            logs.emit(events.WatchRearmed(change=change))
        else:
            logs.emit(events.WatchLost(change=change))


class Lane:
    """One certificate set: see the module docstring.  ``name``: the set's name for a lane
    besides the primary one (None: the primary, named by Harper's configuration);
    ``named``: whether events name the set (a node with several); ``wake``: puts a note on
    the node's queue (the inbox's one wake-up per burst)."""

    def __init__(
        self,
        name: str | None,
        clock: Clock,
        env: dict[str, str],
        stopping: threading.Event,
        wake: Callable[[], None],
        named: Callable[[], bool],
    ) -> None:
        self.name = name
        self.clock = clock
        self.env = env
        self.stopping = stopping
        self.wake = wake
        self.named = named
        self.ctx: context.Context
        self.state = LaneState.STARTING
        self.tracker: Tracker | None = None
        self.inbox: Inbox | None = None
        self.watcher: Watcher | None = None
        self.overflow_reported = -OVERFLOW_REPORT_SECONDS
        self.live_report = LiveReport()
        self.live = LiveFiles()
        self.expiry = Expiry()
        self.leaf: Watched | None = None
        self.intake = Intake(self)
        self.swap_retry = Retry(Backoff(30.0, 1800.0))
        self.renewal = LaneRenewal(self)
        self.next_watch_check = 0.0
        self.next_rescan = 0.0

    # --- identity and configuration -------------------------------------------------------

    @property
    def label(self) -> str | None:
        """This lane's set name (events' ``set``): its own, or the primary's from Harper's
        configuration (``Context.set_name``)."""
        return self.name if self.name is not None else self.ctx.set_name

    def bound(self) -> contextlib.AbstractContextManager[Any]:
        """Every event logged inside names this lane's set (``set``) on a node with several."""
        if not self.named() or self.label is None:
            return contextlib.nullcontext()
        return structlog.contextvars.bound_contextvars(set=self.label)

    def configure(self, ctx: context.Context) -> None:
        """Take ``ctx`` (start, reload): its renewal and swap-retry backoffs with it."""
        self.ctx = ctx
        renew = ctx.config.renew
        self.renewal.tracker.backoff = Backoff(renew.backoff_initial, renew.backoff_max)
        sched = ctx.config.schedule
        self.swap_retry.backoff = Backoff(sched.swap_retry_initial, sched.swap_retry_max)

    @property
    def candidates(self) -> dict[str, Candidate]:
        return {} if self.tracker is None else self.tracker.candidates

    # --- states ---------------------------------------------------------------------------

    def change_state(
        self, new: LaneState | RenewalState, record: events.Event | None = None
    ) -> None:
        """Move along the edge to ``new`` and log that edge's one event, ``record``.

        The only place either machine's state changes (``lane.state``: ``LaneState`` and
        ``RenewalState``).  An edge not in the table, or a record that is not the edge's
        event (or none where it has one), raises ``InvalidTransition`` and changes nothing.
        """
        old: LaneState | RenewalState = (
            self.state if isinstance(new, LaneState) else self.renewal.state
        )
        event = edge_event(old, new)
        if (None if record is None else record.name) != event:
            got = None if record is None else record.name
            raise InvalidTransition(f"{old.name} -> {new.name} logs {event}, not {got}")
        if isinstance(new, LaneState):
            self.state = new
        else:
            self.renewal.state = new
        if record is not None:
            logs.emit(record)

    # --- start, watch, stop -----------------------------------------------------------------

    def start(self) -> None:
        """A set's start: its store recovered, its folders watched, its schedule planned."""
        store = self.ctx.store
        with store.locked():
            recovery = recover(store)
        if recovery is not None:
            logs.emit(
                events.SwapRecovered(
                    op=recovery.op,
                    outcome=recovery.outcome,
                    generation=recovery.generation,
                )
            )
            if recovery.needs_verify:
                with contextlib.suppress(Interrupted):
                    live.prove_recovered(self.ctx, recovery)
        live.on_start(self.ctx)  # watch-only said at start; retention of filed sets
        self.start_watching()
        self.change_state(LaneState.WATCHING)
        self.refresh_schedule()
        self.rescan(time.monotonic())
        self.expiry_tick()  # once at start: the most urgent band each certificate is in

    def resume(self) -> None:
        """After a reload: watched again with the new configuration, rescanned, replanned
        (a set whose start failed before its folders were watched is watching now)."""
        self.start_watching()
        if self.state is LaneState.STARTING:
            self.change_state(LaneState.WATCHING)
        self.rescan(time.monotonic())
        self.refresh_schedule()

    def roots(self) -> list[Root]:
        paths = self.ctx.paths
        live_dirs = {p.parent for p in self.ctx.store.live_paths().values()}
        roots = [
            Root(paths.incoming, recursive=True, create=True),
            Root(paths.incoming.parent, False),
        ]
        roots += [Root(d, recursive=False) for d in sorted(live_dirs)]
        roots.append(Root(self.ctx.store.generations_dir, recursive=True))
        return list(dict.fromkeys(roots))  # in order, without repeats

    def start_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        incoming = self.ctx.paths.incoming
        incoming.mkdir(parents=True, exist_ok=True, mode=0o750)
        watch = self.ctx.config.watch
        old = self.tracker
        self.tracker = Tracker(
            incoming,
            watch.settle_seconds,
            watch.loose_wait_seconds,
            watch.drain_per_cycle,
        )
        if old is not None and old.incoming == incoming:  # a reload keeps what is known
            self.tracker.remembered, self.tracker.strays = old.remembered, old.strays
            self.tracker.unsafe_seen = old.unsafe_seen
        roots = self.roots()
        # One wake-up note per clean-to-dirty change, whatever the rate of events.
        self.inbox = Inbox(incoming, {r.path for r in roots}, self.wake)
        self.watcher = Watcher(roots, self.inbox.put)
        report_watch_changes(self.watcher.start())

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def stop(self) -> None:
        """The daemon stops or the set is gone: nothing waits on it, nothing watched."""
        if self.state is not LaneState.STOPPED:
            self.change_state(LaneState.STOPPED)
        self.stop_watching()

    # --- the live set -----------------------------------------------------------------------

    def report(self) -> Report | None:
        return self.live_report.read(self.ctx)

    def refresh_schedule(self) -> None:
        report = self.report()
        self.live.expected = expected_identity(self.ctx.store)
        if report is None or report.certificate is None:
            self.expiry.plan([], ())
            self.leaf = None
            return
        cert = report.certificate
        self.leaf = Watched("leaf", cert.subject, cert.sha256, cert.not_before, cert.not_after)
        cas = [
            Watched("ca", c.subject, c.sha256, c.not_before, c.not_after) for c in report.ca_file
        ]
        self.expiry.plan([self.leaf, *cas], self.ctx.config.expiry.warn_days)
        self.expiry.marks = health.warning_marks(self.expiry.marks, self.leaf, self.ctx.config)
        days = cert.days_left(self.clock.now())
        current = self.ctx.store.current_id()
        sdnotify.status(
            f"live {cert.subject}: {days:.0f} days left"
            + (f", generation {current}" if current else ""),
            env=self.env,
        )

    def check_live(self, now: float) -> None:
        if self.live.changed(self.ctx.store, now, self.ctx.config.watch.settle_seconds):
            live.handle_live_change(self.ctx)
            self.refresh_schedule()

    def announce(self) -> None:
        """``certd.set_managed`` (and ``certd.live_invalid``) for a set besides the primary."""
        report = self.report()
        logs.emit(
            events.SetManaged(
                role=self.ctx.managed.purpose.value,
                uses=list(self.ctx.managed.uses),
                live=str(self.ctx.managed.live.cert),
                incoming=str(self.ctx.paths.incoming),
                state=str(self.ctx.store.root),
                generation=self.ctx.store.current_id(),
                renewal=bool(self.ctx.config.renew.command),
                valid=None if report is None else report.valid,
            )
        )
        log_live_invalid(report)

    def summary(self) -> None:
        report = self.report()
        cert = None if report is None else report.certificate
        logs.emit(
            events.Summary(
                generation=self.ctx.store.current_id(),
                subject=None if cert is None else cert.subject,
                fingerprint=None if cert is None else cert.sha256,
                days_left=None if cert is None else round(cert.days_left(self.clock.now()), 1),
                valid=None if report is None else report.valid,
                waiting=[str(c.path) for c in self.candidates.values()],
            )
        )

    # --- one cycle ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One set's part of a cycle: its incoming folder, live files, expiry, renewal."""
        self.drain_inbox(now)
        if self.stopping.is_set():
            return
        if now >= self.next_watch_check and self.watcher is not None:
            self.next_watch_check = now + WATCH_CHECK_SECONDS
            changes = self.watcher.check()
            report_watch_changes(changes)
            if changes:
                self.rescan(now)
        if now >= self.next_rescan:
            self.rescan(now)
        if self.swap_retry.due(now):
            self.swap_retry.taken()
            self.rescan(now)  # the sources are still in incoming/: take them again
        self.intake.held.forget_missing()
        for path in self.intake.held.due(self.clock.now()):
            self.touch(path.name, now - self.ctx.config.watch.settle_seconds)
        for path in self.intake.peer_hold_due(now):  # held for its peers: asked again
            self.touch(path.name, now - self.ctx.config.watch.settle_seconds)
        self.intake.process(now)
        self.intake.publish()
        self.check_live(now)
        self.expiry_tick()
        self.renewal.tick()

    def next_due(self, now: float) -> float:
        """The monotonic instant the earliest of this set's duties is due."""
        waits = [self.next_rescan - now, self.next_watch_check - now]
        incoming_due = None if self.tracker is None else self.tracker.next_due(now)
        if incoming_due is not None:
            waits.append(incoming_due - now)
        live_due = self.live.due(self.ctx.config.watch.settle_seconds)
        if live_due is not None:
            waits.append(live_due - now)
        wall = self.clock.now()
        mark = self.expiry.next_wall(wall)
        if mark is not None:
            waits.append(self.clock.real_seconds(mark))
        waits.append(self.renewal.next_due(now) - now)
        if self.candidates and not self.ctx.budget.allowed(wall):
            waits.append(self.clock.real_seconds(self.ctx.budget.next_allowed(wall)))
            if self.leaf is not None:  # the budget gives way near expiry
                last = min(self.ctx.config.expiry.warn_days, default=0.0)
                urgent_at = self.leaf.not_after - dt.timedelta(days=last)
                if urgent_at > wall:
                    waits.append(self.clock.real_seconds(urgent_at))
        held = self.intake.held.next_wall()
        if held is not None:
            waits.append(self.clock.real_seconds(held))
        peer_try = self.intake.peer_hold_next()
        if peer_try is not None:
            waits.append(peer_try - now)
        waits.append(self.swap_retry.next_due(now) - now)
        return now + min(waits)

    def drain_inbox(self, now: float) -> None:
        """What the watcher saw since the last cycle, coalesced: one pass, bounded work."""
        if self.inbox is None or self.tracker is None:
            return
        taken: Taken = self.inbox.take()
        if taken.watched:
            self.next_watch_check = 0.0  # a watched folder itself changed: re-arm if needed
        if taken.rescan:
            self.next_watch_check = 0.0  # an overflow can kill watchdog's thread: re-arm
            if now - self.overflow_reported >= OVERFLOW_REPORT_SECONDS:
                self.overflow_reported = now
                logs.emit(
                    events.WatchLost(
                        change="the kernel's inotify queue overflowed; "
                        "events were lost, rescanning everything",
                    )
                )
            self.rescan(now)
        else:
            for name in taken.names:
                self.touch(name, now)
        if taken.incoming_self:
            self.tracker.check_mode()
        if taken.live:
            self.live.dirty = now

    def touch(self, name: str, now: float) -> None:
        if self.tracker is not None:
            self.tracker.touch(name, now)

    def rescan(self, now: float) -> None:
        if self.tracker is None:
            return
        logs.emit(events.Rescan(incoming=str(self.ctx.paths.incoming)))
        self.tracker.rescan(now)
        # a folder event in incoming/ says nothing about the live files; a rescan looks
        self.live.dirty = now
        self.next_rescan = time.monotonic() + self.ctx.config.watch.rescan_seconds

    # --- rotation -------------------------------------------------------------------------

    def rotate(
        self, install: Callable[[], outcomes.InstallOutcome | None]
    ) -> outcomes.InstallOutcome | None:
        """One rotation (one restart at most): ``install`` puts the newest valid set live.

        A swap that cannot be written leaves the live set and the sources as they were: one
        ``certd.swap_failed`` with the next attempt, taken again then (``swap_retry``).
        """
        try:
            outcome = install()
        except SwapError as exc:  # the live set could not even be read: the same retry
            outcome = outcomes.InstallOutcome(
                outcomes.InstallStatus.SWAP_FAILED, error=str(exc), cause=str(exc)
            )
        if outcome is not None and outcome.status == outcomes.InstallStatus.SWAP_FAILED:
            delay = self.swap_retry.failed(time.monotonic())
            next_attempt = self.clock.now() + dt.timedelta(seconds=delay)
            failed = events.SwapFailed(
                source=str(outcome.source or self.ctx.paths.incoming),
                cause=outcome.cause,
                error=outcome.error,
                failures=self.swap_retry.failures,
                next_attempt=next_attempt.isoformat(),
            )
            self.change_state(LaneState.RETRYING, failed)
            return outcome
        self.swap_retry.succeeded()
        if self.state is LaneState.RETRYING:
            self.change_state(LaneState.WATCHING)
        if outcome is not None and outcome.applied is not None and outcome.applied.restarted:
            self.ctx.budget.spend(self.clock.now())  # Harper was restarted, not hot-reloaded
        self.refresh_schedule()
        self.renewal.check()
        return outcome

    def expiry_tick(self) -> None:
        now = self.clock.now()
        for mark in self.expiry.tick(now):
            days = (mark.cert.not_after - now).total_seconds() / 86400
            cert = mark.cert
            common = (cert.role, cert.subject, cert.sha256, cert.not_after.isoformat())
            # 4 decimals (about 9 s): minutes show, and never "-0.0" (``or 0.0``)
            left, at, waiting = round(days, 4) or 0.0, now.isoformat(), self.intake.waiting()
            if mark.kind == "expired":
                logs.emit(events.Expired(*common, left, at, waiting))
            else:
                logs.emit(events.ExpiryWarning(mark.days, *common, left, at, waiting))

    def clock_stepped(self, wall: dt.datetime) -> None:
        """The wall clock was set: marks in the future again are due again; plan again."""
        self.expiry.stepped(wall)
        self.refresh_schedule()


def log_live_invalid(report: Report | None) -> None:
    """``certd.live_invalid`` when the live set's report is not valid."""
    if report is not None and not report.valid:
        logs.emit(
            events.LiveInvalid(
                codes=list(report.codes),
                problems=[p.message for p in report.problems if p.severity.value == "error"],
            )
        )
