"""``harper-certd run``: the daemon, left alone for months and judged by its log.

One thread decides everything; the signal handlers only put notes on a queue, and
watchdog's thread only marks entries dirty in a bounded inbox (``incoming.Inbox``) that
wakes the loop once per burst.  The loop sleeps until the next thing is due (a set settling in
the incoming folder, an expiry threshold, a renewal, a systemd watchdog ping) or a
note arrives.  An exception in one cycle is an error event, not a dead daemon.

Time: validity, expiry and renewal windows are wall-clock questions asked of
``schedule.Clock`` at the moment they are decided; settle periods, backoffs and retries are
monotonic intervals.  The loop's duties over time are small trackers (``trackers``: clock
steps, expiry marks, renewal, swap retry, held sets, overflow bursts; ``schedule``: the
restart budget), each asked when it is next due; the loop sleeps until the earliest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import queue
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import structlog

from harper_certd import (
    __version__,
    discover,
    dispatch,
    environment,
    hazards,
    health,
    logs,
    metrics,
    sdnotify,
    service,
    statefile,
)
from harper_certd.check import set_facts
from harper_certd.config import Config, RenewSection, load_config, with_overrides
from harper_certd.errors import CertdError, Interrupted, SwapError
from harper_certd.incoming import Candidate, Inbox, Taken, Tracker
from harper_certd.problems import Problem, problem
from harper_certd.roles import SET_FOLDER, SetBytes
from harper_certd.schedule import (
    Backoff,
    Clock,
    RestartBudget,
    Watched,
    renewal_at,
    wall_minus_monotonic,
)
from harper_certd.source import Identity, SourceRefused, identity_of, read_source
from harper_certd.trackers import ClockWatch, Expiry, HeldSets, Renewal, Retry
from harper_certd.trust import system_store
from harper_certd.validate import Report
from harper_certd.watch import Root, Watcher

log = logs.get_logger()
# Watched folders are checked (a few stat calls) this often: a folder swapped under a
# watch (``ln -sfn`` of keys/) is seen again within seconds, not at the hourly rescan.
WATCH_CHECK_SECONDS = 5.0
OVERFLOW_REPORT_SECONDS = 60.0  # one watch_lost warning per burst of overflows
PENDING_MAX_SECONDS = 30.0  # a burst that never ends still gets its newest valid set installed
SUMMARY_SECONDS = 86400.0  # a daily line saying all is well (or not), for months of quiet


@dataclass
class Overrides:
    harper_root: Path | None = None
    state_dir: Path | None = None


def _apply_overrides(config: Config, overrides: Overrides) -> Config:
    harper = with_overrides(config.harper, root=overrides.harper_root)
    return with_overrides(config, harper=harper, state_dir=overrides.state_dir)


@dataclass
class Daemon:
    """The node's daemon, and the lane of its primary set (the replication set, else the
    first); every other set of Harper's configuration is a lane of its own (``lanes``: a
    ``Daemon`` with ``primary`` set) with its own incoming folder (``incoming/<set name>/``),
    store, trackers and renewal, driven by the primary's one loop, signals and watchdog."""

    config_path: Path | None
    overrides: Overrides
    clock: Clock
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    set_name: str | None = None  # a lane's set; None: the primary set
    primary: Daemon | None = None  # a lane's node daemon; None: this is the node daemon
    ctx: service.Context = field(init=False)

    def __post_init__(self) -> None:
        # SimpleQueue, not Queue: its put() is reentrant, and the signal handlers put notes
        # while the main thread may be inside get() on the same queue.  queue.Queue's lock
        # deadlocked SIGTERM there (measured: 2 of 7 stops after a renewal hung for good;
        # 0 of 12 with SimpleQueue).
        self.notes: queue.SimpleQueue[tuple[str, str]] = (
            queue.SimpleQueue() if self.primary is None else self.primary.notes
        )
        self.stopping: threading.Event = (
            threading.Event() if self.primary is None else self.primary.stopping
        )
        self.lanes: dict[str, Daemon] = {}  # the node daemon's other sets, by set name
        self.router: dispatch.Router | None = None  # incoming/ itself, on a multi-set node
        self.node_incoming: Path | None = None  # incoming/ (the primary's own is below it)
        self.tracker: Tracker | None = None
        self.inbox: Inbox | None = None
        self.overflow_reported = -OVERFLOW_REPORT_SECONDS
        self.content_failed: str | None = None  # the live set's last judging error, said once
        # Valid sets of a burst judged in earlier cycles, installed together (one rotation).
        self.pending: list[tuple[Path, service.Judged]] = []
        self.pending_taken: dict[Path, Identity | None] = {}
        self.pending_since = 0.0
        self.expiry = Expiry()
        self.leaf: Watched | None = None
        self.expected_live: tuple[Any, ...] = ()
        self.live_dirty: float | None = None
        self.live_seen: tuple[Any, ...] | None = None
        self.renew = Renewal(Backoff(60.0, 3600.0))
        self.held_announced = False
        self.next_watch_check = 0.0
        self.next_rescan = 0.0
        self.next_summary = 0.0
        self.next_ping = 0.0
        self.watcher: Watcher | None = None
        self.environment: list[environment.Finding] = []
        self.monitor = metrics.Monitor()  # h-ops: served re-check, Prometheus textfile
        self.clock_watch = ClockWatch(wall_minus_monotonic, time.monotonic())
        self.held = HeldSets()
        self.budget_waiting: tuple[list[Path], dt.datetime] | None = None
        self.published: list[dict[str, Any]] | None = None  # None: not yet written
        self.swap_retry = Retry(Backoff(30.0, 1800.0))

    # --- setup ----------------------------------------------------------------------

    def _load(self) -> service.Context:
        config = _apply_overrides(load_config(self.config_path), self.overrides)
        ctx = service.build_context(
            config,
            clock=self.clock.now,
            interrupted=self.stopping,
            set_name=self.set_name,
        )
        if self.primary is None:
            live = ctx.managed.live.cert
            self.node_incoming = ctx.paths.incoming
            if (
                ctx.set_name is not None
                and SET_FOLDER.fullmatch(ctx.set_name) is not None
                and any(s.first.cert_path != live for s in ctx.harper.sets())
            ):  # several sets: each has its folder, incoming/ is the router's
                paths = dataclasses.replace(ctx.paths, incoming=ctx.paths.incoming / ctx.set_name)
                ctx = dataclasses.replace(ctx, paths=paths)
        own = next((s for s in config.sets if s.name == ctx.set_name), None)
        if own is not None or self.primary is not None:
            # A set's own renewal; the top-level ``renew`` is the primary set's only.
            renew = own.renew if own is not None else RenewSection()
            ctx = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, renew=renew))
        if self.primary is not None:  # a lane: its own incoming folder, the node's budget
            assert self.set_name is not None
            paths = dataclasses.replace(ctx.paths, incoming=ctx.paths.incoming / self.set_name)
            self.renew.backoff = Backoff(renew.backoff_initial, renew.backoff_max)
            sched = config.schedule
            self.swap_retry.backoff = Backoff(sched.swap_retry_initial, sched.swap_retry_max)
            return dataclasses.replace(ctx, paths=paths, budget=self.primary.ctx.budget)
        self.environment = environment.require_workable(config, ctx.harper, self.env)  # h-ops
        budget_file = ctx.paths.state / statefile.BUDGET_FILE
        budget = RestartBudget(config.restart.restarts_per_hour, budget_file)
        sched = config.schedule
        self.swap_retry.backoff = Backoff(sched.swap_retry_initial, sched.swap_retry_max)
        self.renew.backoff = Backoff(ctx.config.renew.backoff_initial, ctx.config.renew.backoff_max)
        return dataclasses.replace(ctx, budget=budget)

    @property
    def label(self) -> str | None:
        """This lane's set name (events' ``set``): a lane's own, the primary's from Harper's
        configuration (``Context.set_name``)."""
        return self.set_name if self.primary is not None else self.ctx.set_name

    def bound(self) -> contextlib.AbstractContextManager[Any]:
        """Every event logged inside names this lane's set (``set``) on a node with several."""
        multi = self.router is not None if self.primary is None else True
        if not multi or self.label is None:
            return contextlib.nullcontext()
        return structlog.contextvars.bound_contextvars(set=self.label)

    def _all(self) -> list[Daemon]:
        return [self, *self.lanes.values()]

    def _sync_lanes(self, *, announce: bool = True) -> None:
        """One lane per set of Harper's configuration besides the primary (start, reload)."""
        primary = self.ctx.managed.live.cert
        wanted = [s.name for s in self.ctx.harper.sets() if s.first.cert_path != primary]
        if self.node_incoming is not None and self.ctx.paths.incoming != self.node_incoming:
            # made here, before the sets' folders below it: 0750 as the README says
            self.node_incoming.mkdir(parents=True, exist_ok=True, mode=0o750)
        for name in [n for n in self.lanes if n not in wanted]:
            self.lanes.pop(name)._stop_watching()
        for name in wanted:
            lane = self.lanes.get(name) or Daemon(
                self.config_path, self.overrides, self.clock, self.env, name, self
            )
            with lane.bound():
                if SET_FOLDER.fullmatch(name) is None:
                    reason = "its name is not usable as a folder name under incoming/"
                    log.warning("certd.set_unmanaged", set=name, reason=reason)
                    continue
                try:
                    ctx = lane._load()
                except Exception as exc:  # one set that cannot be managed never stops the rest
                    log.warning("certd.set_unmanaged", set=name, reason=_describe(exc))
                    continue
                fresh = name not in self.lanes
                lane.ctx = ctx
                self.lanes[name] = lane
                if fresh:
                    lane._set_startup()
                else:
                    lane._start_watching()
                    lane._rescan(time.monotonic())
                    lane._refresh_schedule()
                if announce:
                    lane._announce()
        self._sync_router([self.label or "", *wanted])

    def _sync_router(self, names: list[str]) -> None:
        """The router of incoming/ while this node's sets each have a folder of their own."""
        incoming = self.node_incoming
        if incoming is None or self.ctx.paths.incoming == incoming:
            if self.router is not None:
                self.router.stop()
                self.router = None
            return
        if self.router is None or self.router.incoming != incoming:
            if self.router is not None:
                self.router.stop()
            watch = self.ctx.config.watch
            tracker = Tracker(
                incoming, watch.settle_seconds, watch.loose_wait_seconds, watch.drain_per_cycle
            )
            self.router = dispatch.Router(incoming, tracker, lambda: self.notes.put(("fs", "")))
            self._watch_changes(self.router.start(), time.monotonic())
        self.router.tracker.reserved = frozenset(names)
        self.router.tracker.rescan(time.monotonic())

    def _announce(self) -> None:
        report = self._live_report()
        log.info(
            "certd.set_managed",
            role=self.ctx.managed.purpose.value,
            uses=list(self.ctx.managed.uses),
            live=str(self.ctx.managed.live.cert),
            incoming=str(self.ctx.paths.incoming),
            state=str(self.ctx.store.root),
            generation=self.ctx.store.current_id(),
            renewal=bool(self.ctx.config.renew.command),
            valid=None if report is None else report.valid,
        )
        if report is not None and not report.valid:
            log.error(
                "certd.live_invalid",
                codes=list(report.codes),
                problems=[p.message for p in report.problems if p.severity.value == "error"],
            )

    def _configure_logging(self, config: Config) -> None:
        fmt = config.log.format
        logs.configure(json=None if fmt == "auto" else fmt == "json", level=config.log.level)

    def _roots(self) -> list[Root]:
        paths = self.ctx.paths
        live_dirs = {p.parent for p in self.ctx.store.live_paths().values()}
        roots = [
            Root(paths.incoming, recursive=True, create=True),
            Root(paths.incoming.parent, False),
        ]
        roots += [Root(d, recursive=False) for d in sorted(live_dirs)]
        roots.append(Root(self.ctx.store.generations_dir, recursive=True))
        return list(dict.fromkeys(roots))  # in order, without repeats

    @property
    def candidates(self) -> dict[str, Candidate]:
        return {} if self.tracker is None else self.tracker.candidates

    def _start_watching(self) -> None:
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
        roots = self._roots()
        # One wake-up note per clean-to-dirty change, whatever the rate of events.
        self.inbox = Inbox(incoming, {r.path for r in roots}, lambda: self.notes.put(("fs", "")))
        self.watcher = Watcher(roots, self.inbox.put)
        self._watch_changes(self.watcher.start(), time.monotonic())

    def _stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def _watch_changes(self, changes: list[str], now: float) -> None:
        for change in changes:
            if "again" in change:
                log.info("certd.watch_rearmed", change=change)
            else:
                log.warning("certd.watch_lost", change=change)

    def _signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()
            self.notes.put(("signal", "stop"))

        def hup(signum: int, frame: FrameType | None) -> None:
            self.notes.put(("signal", "hup"))

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    # --- the live set -----------------------------------------------------------------

    def _live_identity(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for path in self.ctx.store.live_paths().values():
            try:
                link = os.readlink(path)
            except OSError:
                link = None
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                digest = f"unreadable: {exc.strerror}"
            out.append((str(path), link, digest))
        return tuple(out)

    def _expected_identity(self) -> tuple[Any, ...]:
        """What the live paths should show: links to the current generation, its digests.

        Derived from what we put there, never read back from the paths: a change made by
        a person while we worked must not become "expected".
        """
        store = self.ctx.store
        try:
            current = store.current()
        except CertdError:
            current = None
        digests = current.meta.get("digests") if current is not None else None
        if current is None or not isinstance(digests, dict):
            return self._live_identity()
        return tuple(
            (str(path), store.link_target(role), digests.get(role))
            for role, path in store.live_paths().items()
        )

    def _live_report(self) -> Report | None:
        try:
            report = service.live_report(self.ctx)
            report.as_dict()  # parts are read lazily: anything raising must raise here
        except CertdError:
            return None
        except Exception as exc:  # a set's content never kills the daemon (issue 10 item 2)
            text = logs.describe_error(exc)[:300]
            if text != self.content_failed:
                self.content_failed = text
                log.error("certd.content_failed", live=str(self.ctx.managed.live.cert), error=text)
            return None
        self.content_failed = None
        return report

    def _refresh_schedule(self) -> None:
        report = self._live_report()
        self.expected_live = self._expected_identity()
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

    # --- cycle pieces -------------------------------------------------------------------

    def _note_path(self, raw: str, now: float) -> None:
        """A path from the watcher, for callers outside the loop (tests, tools)."""
        if self.inbox is not None:
            self.inbox.put(raw)
        self._drain_inbox(now)

    def _drain_inbox(self, now: float) -> None:
        """What the watcher saw since the last cycle, coalesced: one pass, bounded work."""
        if self.inbox is None or self.tracker is None:
            return
        taken: Taken = self.inbox.take()
        if taken.watched:
            self.next_watch_check = 0.0  # a watched folder itself changed: re-arm if needed
        if taken.rescan:
            if now - self.overflow_reported >= OVERFLOW_REPORT_SECONDS:
                self.overflow_reported = now
                log.warning(
                    "certd.watch_lost",
                    change="the kernel's inotify queue overflowed; "
                    "events were lost, rescanning everything",
                )
            self._rescan(now)
        else:
            for name in taken.names:
                self._touch_candidate(name, now)
        if taken.incoming_self:
            self.tracker.check_mode()
        if taken.live:
            self.live_dirty = now

    def _touch_candidate(self, name: str, now: float) -> None:
        if self.tracker is not None:
            self.tracker.touch(name, now)

    def _rescan(self, now: float, *, quiet: bool = False) -> None:
        if self.tracker is None:
            return
        if not quiet:
            log.debug("certd.rescan", incoming=str(self.ctx.paths.incoming))
        self.tracker.rescan(now)
        if not quiet:  # a folder event in incoming/ says nothing about the live files
            self.live_dirty = now
            self.next_rescan = time.monotonic() + self.ctx.config.watch.rescan_seconds

    def _process_candidates(self, now: float) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        ready = tracker.ready(now) if tracker.candidates else []
        if not ready:
            self._install_pending()  # the rest of a burst went away meanwhile
            return
        for cand in ready:
            if not cand.announced:
                cand.announced = True
                log.info("certd.set_detected", source=str(cand.path))
        if not self._budget_allows([c.path for c in ready]):
            tracker.held = True  # woken by the budget's own timer, not by the settle rule
            return
        tracker.held = False
        taken = tracker.take(ready)
        folders = []
        for path in list(taken):
            incoming = self.ctx.paths.incoming
            folder = dispatch.gather_loose(incoming, self.clock.now()) if path == incoming else path
            if folder is not None and folder != path:
                del taken[path]
                taken[folder] = identity_of(os.lstat(folder))
            if folder in self.pending_taken:  # judged valid already; installed with its burst
                del taken[folder]
            elif folder is not None and os.path.lexists(folder):
                folders.append(folder)
        if not folders:
            if not tracker.backlog:
                self._install_pending()
            return
        # Judged a paced batch a cycle; one rotation is one restart however many sets
        # arrived: the newest valid one of the whole burst wins, once it is all judged.
        started = time.monotonic()
        try:
            judged = service.judge_sources(
                self.ctx,
                folders,
                hold_seconds=self.ctx.config.schedule.hold_not_yet_valid_seconds,
                on_judged=self._on_judged,
            )
        except (SwapError, Interrupted):
            raise  # the sources stay; they are taken again at the next rescan
        except Exception:
            tracker.settled(taken)
            raise
        tracker.pace(time.monotonic() - started, len(folders))
        valid = {folder for folder, _ in judged}
        # what could not be filed is not judged again until it changes (a held set is
        # taken again when it becomes valid)
        tracker.settled(
            {p: i for p, i in taken.items() if p not in valid and p not in self.held.sets}
        )
        if not self.pending:
            self.pending_since = now
        self.pending += judged
        self.pending_taken.update({p: i for p, i in taken.items() if p in valid})
        if tracker.backlog and now - self.pending_since < PENDING_MAX_SECONDS:
            return  # more of this burst next cycle
        self._install_pending()

    def _place(self, folder: Path) -> None:
        """A folder straight in incoming/ on a node with several sets: moved to the folder
        of the one set it fits (``certd.set_routed``), or refused (``set_unroutable``)."""
        assert self.label is not None
        managed = {self.label, *self.lanes}
        routed = dispatch.decide(
            folder,
            [s for s in self.ctx.harper.sets() if s.name in managed],
            self.label,
            trusted_uids=self.ctx.trusted_uids(),
            ca_fallback=self.ctx.managed.live.ca,
            node_name=self.ctx.harper.node_name,
        )
        if routed.set_name is None:
            service.refuse_unroutable(self.ctx, folder, routed.reason)
            return
        lane = self.lanes.get(routed.set_name, self)
        target = dispatch.move_to(folder, lane.ctx.paths.incoming, self.clock.now())
        log.info(
            "certd.set_routed",
            source=str(folder),
            set=routed.set_name,
            moved_to=str(target),
            reason=routed.reason,
        )

    def _install_pending(self) -> None:
        if not self.pending or self.tracker is None:
            return
        pending, taken = self.pending, self.pending_taken
        self.pending, self.pending_taken = [], {}
        outcome: service.InstallOutcome | None = None
        try:
            outcome = self._rotate(lambda: service.install_judged_newest(self.ctx, pending))
        finally:
            if outcome is None or outcome.status != service.InstallStatus.SWAP_FAILED:
                self.tracker.settled(taken)  # a failed swap's sources are taken again

    # --- time, renewal and the restart budget ---------------------------------------------

    def _live_urgent(self, wall: dt.datetime) -> bool:
        """The live leaf is unreadable, expired, or inside its last warning threshold."""
        if self.leaf is None:
            return True
        last = min(self.ctx.config.expiry.warn_days, default=0.0)
        return wall >= self.leaf.not_after - dt.timedelta(days=last)

    def _budget_allows(self, waiting: list[Path]) -> bool:
        """Whether a rotation may run now; says once (restart_held) when it may not.

        The budget never holds a set while the live one is expired or about to be.
        """
        wall = self.clock.now()
        if self.ctx.budget.allowed(wall) or self._live_urgent(wall):
            self.held_announced = False
            self.budget_waiting = None
            return True
        self.budget_waiting = (waiting, self.ctx.budget.next_allowed(wall))
        if not self.held_announced:
            self.held_announced = True
            log.error(
                "certd.restart_held",
                waiting=[str(p) for p in waiting],
                limit_per_hour=self.ctx.config.restart.restarts_per_hour,
                next_allowed=self.ctx.budget.next_allowed(wall).isoformat(),
            )
        return False

    def _waiting(self) -> list[str]:
        """Sets waiting to be installed: settling or held back in incoming/, or held."""
        paths = [*(c.path for c in self.candidates.values()), *self.held.sets]
        return [str(p) for p in dict.fromkeys(paths)]

    def _publish_waiting(self) -> None:
        """Tell ``harper-certd status`` what waits and why (state/waiting.json)."""
        entries: list[dict[str, Any]] = []
        if self.budget_waiting is not None:
            paths, until = self.budget_waiting
            entries += [
                {"source": str(p), "reason": "restart budget", "until": until.isoformat()}
                for p in paths
                if p.exists()
            ]
        entries += [
            {"source": str(h.path), "reason": "notBefore ahead", "until": h.not_before.isoformat()}
            for h in self.held.sets.values()
        ]
        if entries != self.published:
            self.published = entries
            statefile.write_waiting(self.ctx.store.root, entries)  # the set's own state

    def _on_judged(self, folder: Path, outcome: service.InstallOutcome) -> None:
        wall = self.clock.now()
        if outcome.status == service.InstallStatus.HELD:
            assert outcome.report is not None
            assert outcome.report.certificate is not None
            not_before = outcome.report.certificate.not_before
            if self.held.hold(folder, not_before, wall):
                log.warning(
                    "certd.set_held",
                    source=str(folder),
                    not_before=not_before.isoformat(),
                    now=wall.isoformat(),
                    seconds_ahead=round((not_before - wall).total_seconds(), 1),
                    hold_limit_seconds=self.ctx.config.schedule.hold_not_yet_valid_seconds,
                )
        elif outcome.status == service.InstallStatus.REFUSED and self.renew.waiting is not None:
            self._renewal_failed(
                0,
                self.renew.waiting.output,
                "what the renewal produced was refused",
                [p.code for p in outcome.problems if p.severity.value == "error"],
            )

    def _rotate(
        self, install: Callable[[], service.InstallOutcome | None]
    ) -> service.InstallOutcome | None:
        """One rotation (one restart at most): ``install`` puts the newest valid set live.

        A swap that cannot be written leaves the live set and the sources as they were: one
        ``certd.swap_failed`` with the next attempt, taken again then (``swap_retry``).
        """
        try:
            outcome = install()
        except SwapError as exc:  # the live set could not even be read: the same retry
            outcome = service.InstallOutcome(
                service.InstallStatus.SWAP_FAILED, error=str(exc), cause=str(exc)
            )
        if outcome is not None and outcome.status == service.InstallStatus.SWAP_FAILED:
            delay = self.swap_retry.failed(time.monotonic())
            service.log_swap_failed(
                str(outcome.source or self.ctx.paths.incoming),
                outcome.cause,
                outcome.error,
                failures=self.swap_retry.failures,
                next_attempt=self.clock.now() + dt.timedelta(seconds=delay),
            )
            return outcome
        self.swap_retry.succeeded()
        if outcome is not None and outcome.applied is not None and outcome.applied.restarted:
            self.ctx.budget.spend(self.clock.now())  # Harper was restarted, not hot-reloaded
        self._refresh_schedule()
        self._renewal_check()
        return outcome

    def _check_live(self, now: float) -> None:
        if self.live_dirty is None or now - self.live_dirty < self.ctx.config.watch.settle_seconds:
            return
        self.live_dirty = None
        identity = self._live_identity()
        if identity == self.expected_live:
            self.live_seen = None
            return
        if identity != self.live_seen:
            # Files replaced one by one by a person pass through mixed states: act only on
            # what has stayed the same for a whole settle period.
            self.live_seen = identity
            self.live_dirty = now
            return
        self.live_seen = None
        service.handle_live_change(self.ctx)
        self._refresh_schedule()

    def _expiry(self) -> None:
        now = self.clock.now()
        for mark in self.expiry.tick(now):
            days = (mark.cert.not_after - now).total_seconds() / 86400
            fields = {
                "certificate": mark.cert.role,
                "subject": mark.cert.subject,
                "fingerprint": mark.cert.sha256,
                "not_after": mark.cert.not_after.isoformat(),
                "days_left": round(days, 2),
                "now": now.isoformat(),
                "waiting": self._waiting(),
            }
            if mark.kind == "expired":
                log.critical("certd.expired", **fields)
            else:
                log.warning("certd.expiry_warning", threshold_days=mark.days, **fields)

    def _clock_check(self, mono: float) -> None:
        """A step of the wall clock: say so, and plan again from the new wall time."""
        step = self.clock_watch.tick(mono)
        if step is None:
            return
        wall = self.clock.now()
        log.warning("certd.clock_jumped", seconds=round(step, 1), now=wall.isoformat())
        # Marks now in the future again (the clock went back) are due again; marks passed
        # by a step forward fire at once in _expiry.  Backoffs are monotonic: unchanged.
        for lane in self._all():
            with lane.bound():
                lane.expiry.stepped(wall)
                lane._refresh_schedule()

    def _renewal_due(self) -> dt.datetime | None:
        config = self.ctx.config.renew
        if not config.command or self.leaf is None:
            return None
        return renewal_at(
            self.leaf, before_fraction=config.before_fraction, before_days=config.before_days
        )

    def _renewal(self) -> None:
        config = self.ctx.config.renew
        due = self._renewal_due()
        if due is None or self.leaf is None:
            return
        if self.renew.waiting is not None:
            self._renewal_check()
            return
        if self.clock.now() < due or not self.renew.may_start(time.monotonic()):
            return
        log.info(
            "certd.renewal_started",
            command=list(config.command),
            fingerprint=self.leaf.sha256,
            not_after=self.leaf.not_after.isoformat(),
        )
        status, output = service.run_renewal(self.ctx, self.stopping)
        if status != 0:
            reason = "the command timed out" if status is None else f"the command exited {status}"
            self._renewal_failed(status, output, reason, [])
            return
        self.renew.await_result(time.monotonic(), config.arrival_seconds, self.leaf.sha256, output)
        if config.lineage_dir is not None:
            self._from_lineage(config.lineage_dir)
        else:
            self._renewal_check()

    @staticmethod
    def _digest(data: SetBytes) -> str:
        return hashlib.sha256(b"\0".join((data.cert, data.key, data.ca))).hexdigest()

    def _from_lineage(self, lineage: Path) -> None:
        """Take a certbot lineage's set, unless this very content was judged before.

        The live generation's content counts as judged: certbot's "not yet due" leaves the
        lineage as it was, and an unchanged lineage is never copied into processed/ again.
        """
        with contextlib.suppress(CertdError, OSError):
            current = self.ctx.store.current()
            if current is not None:
                self.renew.seen.add(self._digest(current.read()))
        try:
            source = read_source(
                lineage,
                trusted_uids=self.ctx.trusted_uids(),
                ca_fallback=self.ctx.config.ca_file or self.ctx.managed.live.ca,
                ca_file=self.ctx.managed.live.ca is not None,
            )
            digest: str | None = self._digest(source.data)
        except (SourceRefused, OSError):
            digest = None  # judged (and refused) by the rotation, which says why
        if digest is not None and digest in self.renew.seen:
            self._renewal_check()  # nothing new arrived; nothing is filed again
            return
        failures = self.swap_retry.failures
        self._rotate(
            lambda: service.install_newest(
                self.ctx,
                [lineage],
                hold_seconds=self.ctx.config.schedule.hold_not_yet_valid_seconds,
                on_judged=self._on_judged,
            )
        )
        if self.swap_retry.failures > failures and self.renew.waiting is not None:
            # Not "seen": the same content is tried again at the next attempt.
            self._renewal_failed(
                0, self.renew.waiting.output, "its set could not be swapped in", []
            )
            return
        if digest is not None:
            self.renew.seen.add(digest)
        self._renewal_check()

    def _renewal_check(self) -> None:
        """Whether the renewal being waited for has ended: a new live leaf, or nothing."""
        waiting = self.renew.waiting
        if waiting is None:
            return
        if self.leaf is not None and self.leaf.sha256 != waiting.fingerprint:
            # Not again at once, even if the new leaf is still inside the window.
            self.renew.succeeded(time.monotonic())
            log.info(
                "certd.renewal_succeeded",
                output=waiting.output[-1000:],
                fingerprint=self.leaf.sha256,
                not_after=self.leaf.not_after.isoformat(),
            )
            return
        lineage = self.ctx.config.renew.lineage_dir is not None
        pending = bool(self.candidates or self.held.sets)
        now = time.monotonic()
        if (not lineage or pending) and now < waiting.deadline:
            return  # the set may still be on its way through incoming/, or being judged
        if pending and now < waiting.deadline + self.ctx.config.renew.arrival_seconds:
            return  # something arrived late and is being judged, or waits to become valid
        self._renewal_failed(0, waiting.output, "nothing new arrived", [])

    def _renewal_failed(
        self, status: int | None, output: str, reason: str, codes: list[str]
    ) -> None:
        wait = self.renew.failed(time.monotonic())
        log.error(
            "certd.renewal_failed",
            exit_status=status,
            reason=reason,
            codes=codes,
            output=output[-1000:],
            failures=self.renew.failures,
            next_attempt=(self.clock.now() + dt.timedelta(seconds=wait)).isoformat(),
        )

    def _reload(self) -> None:
        """SIGHUP: the configuration again; READY=1 always follows RELOADING=1."""
        sdnotify.reloading(env=self.env)
        try:
            try:
                ctx = self._load()
            except Exception as exc:  # any failure to load keeps the old config
                log.error(
                    "certd.config_refused", error=_describe(exc), config=str(self.config_path)
                )
                return
            ctx.budget.carry_over(self.ctx.budget)  # restarts spent stay spent
            self.ctx = ctx
            self._configure_logging(ctx.config)
            self._sync_lanes()  # before the primary's tracker: it leaves their folders alone
            with self.bound():
                self._start_watching()
                self._rescan(time.monotonic())
                self._refresh_schedule()
            self._log_hazards(self._hazards(ctx.harper))  # a reload can bring a new hazard
            log.info("certd.config_reloaded", config=str(self.config_path))
        finally:
            sdnotify.ready(env=self.env)

    def _next_timeout(self, now: float) -> float:
        waits = [self.next_summary - now, self.monitor.next_due - now]  # h-ops: monitor
        routed = None if self.router is None else self.router.next_due(now)
        if routed is not None:
            waits.append(routed - now)
        for lane in self._all():
            waits += lane._set_waits(now)
        waits.append(self.clock_watch.next_due(now) - now)
        interval = sdnotify.watchdog_interval(self.env)
        if interval is not None:
            waits.append(self.next_ping - now)
        return max(0.001, min(waits))

    def _set_waits(self, now: float) -> list[float]:
        """Seconds until each of this set's duties is next due."""
        waits = [self.next_rescan - now, self.next_watch_check - now]
        settle = self.ctx.config.watch.settle_seconds
        incoming_due = None if self.tracker is None else self.tracker.next_due(now)
        if incoming_due is not None:
            waits.append(incoming_due - now)
        if self.live_dirty is not None:
            waits.append(self.live_dirty + settle - now)
        wall = self.clock.now()
        mark = self.expiry.next_wall(wall)
        if mark is not None:
            waits.append(self.clock.real_seconds(mark))
        due = self._renewal_due()
        window_in = None if due is None else self.clock.real_seconds(due)
        waits.append(
            self.renew.next_due(now, window_in, self.ctx.config.renew.arrival_seconds) - now
        )
        if self.candidates and not self.ctx.budget.allowed(wall):
            waits.append(self.clock.real_seconds(self.ctx.budget.next_allowed(wall)))
            if self.leaf is not None:  # the budget gives way near expiry
                last = min(self.ctx.config.expiry.warn_days, default=0.0)
                urgent_at = self.leaf.not_after - dt.timedelta(days=last)
                if urgent_at > wall:
                    waits.append(self.clock.real_seconds(urgent_at))
        held = self.held.next_wall()
        if held is not None:
            waits.append(self.clock.real_seconds(held))
        waits.append(self.swap_retry.next_due(now) - now)
        return waits

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.ctx = self._load()
        except Exception as exc:  # a bad start: exit 2 with one event
            logs.configure()
            log.error("certd.config_refused", error=_describe(exc), config=str(self.config_path))
            return 2
        self._configure_logging(self.ctx.config)
        self._signals()
        self._startup()
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                note = self.notes.get(timeout=self._next_timeout(now))
            except queue.Empty:
                note = ("timer", "")
            notes = [note]
            with contextlib.suppress(queue.Empty):
                while True:
                    notes.append(self.notes.get_nowait())
            try:
                self._cycle(notes)
            except Interrupted:
                break
            except Exception as exc:
                log.error(
                    "certd.cycle_failed",
                    error=logs.describe_error(exc),
                    exception=logs.traceback_text(exc),
                )
        return self._shutdown()

    def _set_startup(self) -> None:
        """A set's start: its store recovered, its folders watched, its schedule planned."""
        store = self.ctx.store
        with store.locked():
            recovery = store.recover()
        if recovery is not None:
            log.warning(
                "certd.swap_recovered",
                op=recovery.op,
                outcome=recovery.outcome,
                generation=recovery.generation,
            )
            if recovery.needs_verify:
                with contextlib.suppress(Interrupted):
                    service.verify_current(self.ctx)
        service.on_start(self.ctx)  # watch-only said at start; retention of filed sets
        self._start_watching()
        self._refresh_schedule()
        self._rescan(time.monotonic())
        self._expiry()  # once at start: the most urgent band each certificate is in

    def _startup(self) -> None:
        # First: the primary's tracker leaves the lanes' folders (incoming/<set name>/) alone.
        self._sync_lanes(announce=False)
        with self.bound():
            self._set_startup()
        self._discovered()
        report = self._live_report()
        sets = []
        facts = set_facts(self.ctx.harper, self.clock.now())
        by_where = {w: f for f in facts.values() for w in f["where"]}
        for entry in self.ctx.harper.entries:
            info: dict[str, Any] = {"where": entry.where, "purpose": entry.purpose.value}
            if entry.note:
                info["note"] = entry.note
            if (fact := by_where.get(entry.where)) is not None:
                info.update({k: fact[k] for k in ("set", "role", "ports", "days_left")})
            if entry.paths == self.ctx.managed.live and report and report.certificate:
                info["days_left"] = round(report.certificate.days_left(self.clock.now()), 1)
                info["subject"] = report.certificate.subject
                info["fingerprint"] = report.certificate.sha256
                info["valid"] = report.valid
            sets.append(info)
        log.info(
            "certd.started",
            version=__version__,
            harper_root=str(self.ctx.paths.harper_root),
            node_name=self.ctx.harper.node_name,
            incoming=str(self.node_incoming or self.ctx.paths.incoming),
            state=str(self.ctx.paths.state),
            restart_method=self.ctx.config.restart.method,
            generation=self.ctx.store.current_id(),
            sets=sets,
        )
        if report is not None and not report.valid:
            log.error(
                "certd.live_invalid",
                codes=list(report.codes),
                problems=[p.message for p in report.problems if p.severity.value == "error"],
            )
        for lane in self.lanes.values():
            with lane.bound():
                lane._announce()
        for finding in self.environment:  # h-ops: what may not work under the unit
            log.warning(
                "certd.environment_warning",
                key=finding.key,
                problem=finding.problem,
                fix=finding.fix,
            )
        sdnotify.ready(env=self.env)
        self.next_ping = time.monotonic()

    def _hazards(self, harper: discover.HarperConfig) -> tuple[Problem, ...]:
        """The layout's hazards (hazards.py); a fault here never stops the daemon."""
        store = self.ctx.config.harper.trust_store
        try:
            return hazards.find(harper, lambda: system_store(store))
        except Exception as exc:  # reported, not fatal: discovery must go on
            return (problem("judge_failed", f"judging the layout's hazards raised {exc!r}"),)

    def _discovered(self) -> None:
        from harper_certd.check import find_process

        found = self._hazards(self.ctx.harper)
        harper = self.ctx.harper
        process = find_process(harper)
        log.info(
            "certd.harper_discovered",
            config=str(harper.config_path),
            pid=process.pid,
            version=process.version,
            secure_ports=dict(harper.secure_ports),
            operations_port=harper.operations_port,
            operations_socket=str(harper.operations_socket) if harper.operations_socket else None,
            managed=str(self.ctx.managed.live.cert),
            purpose=self.ctx.managed.purpose.value,
            hostnames=list(self.ctx.managed.hostnames),
            notes=[e.note for e in harper.entries if e.note and e.paths is not None]
            + list(harper.notes),
            sets=list(set_facts(harper, self.clock.now()).values()),
            hazards=[p.code for p in found],
        )
        self._log_hazards(found)
        for entry in harper.entries:
            # fresh Harper 4.7: certificates kept in its database
            if entry.paths is None and entry.cert_key is None:
                log.warning(
                    "certd.certificates_in_database",
                    where=entry.where,
                    uses=list(entry.uses),
                    note=entry.note,
                )

    @staticmethod
    def _log_hazards(found: tuple[Problem, ...]) -> None:
        for p in found:
            log.error(
                "certd.layout_hazard", code=p.code, severity=p.severity.value, message=p.message
            )

    def _summary(self) -> None:
        report = self._live_report()
        cert = None if report is None else report.certificate
        log.info(
            "certd.summary",
            generation=self.ctx.store.current_id(),
            subject=None if cert is None else cert.subject,
            fingerprint=None if cert is None else cert.sha256,
            days_left=None if cert is None else round(cert.days_left(self.clock.now()), 1),
            valid=None if report is None else report.valid,
            waiting=[str(c.path) for c in self.candidates.values()],
        )

    def _cycle(self, notes: list[tuple[str, str]]) -> None:
        now = time.monotonic()
        self._clock_check(now)
        for kind, value in notes:
            if kind == "signal" and value == "hup":
                self._reload()
            elif kind == "fs" and value:
                self._note_path(value, now)
        if self.router is not None and not self.stopping.is_set():
            self._route(now)
        with self.bound():
            self._set_cycle(now)
        for lane in list(self.lanes.values()):
            with lane.bound():
                try:
                    lane._set_cycle(now)
                except Interrupted:
                    raise
                except Exception as exc:  # one set's fault never stops the others
                    log.error(
                        "certd.cycle_failed",
                        error=logs.describe_error(exc),
                        exception=logs.traceback_text(exc),
                    )
        if self.stopping.is_set():
            return
        if now >= self.next_summary:
            if self.next_summary:
                for lane in self._all():
                    with lane.bound():
                        lane._summary()
            self.next_summary = now + SUMMARY_SECONDS
        self.monitor.tick(self.ctx)  # h-ops
        interval = sdnotify.watchdog_interval(self.env)
        if interval is not None and now >= self.next_ping:
            sdnotify.watchdog(env=self.env)
            self.next_ping = now + interval

    def _route(self, now: float) -> None:
        """The router's part of a cycle: its watch checked, settled folders placed."""
        router = self.router
        assert router is not None
        if now >= self.next_watch_check and router.watcher is not None:
            changes = router.watcher.check()
            self._watch_changes(changes, now)
            if changes:
                router.tracker.rescan(now)
        if now >= self.next_rescan:
            router.tracker.rescan(now)
        router.tick(now, self._place, self.clock.now())

    def _set_cycle(self, now: float) -> None:
        """One set's part of a cycle: its incoming folder, live files, expiry, renewal."""
        self._drain_inbox(now)
        if self.stopping.is_set():
            return
        if now >= self.next_watch_check and self.watcher is not None:
            self.next_watch_check = now + WATCH_CHECK_SECONDS
            changes = self.watcher.check()
            self._watch_changes(changes, now)
            if changes:
                self._rescan(now)
        if now >= self.next_rescan:
            self._rescan(now)
        if self.swap_retry.due(now):
            self.swap_retry.taken()
            self._rescan(now)  # the sources are still in incoming/: take them again
        self.held.forget_missing()
        for path in self.held.due(self.clock.now()):
            self._touch_candidate(path.name, now - self.ctx.config.watch.settle_seconds)
        self._process_candidates(now)
        self._publish_waiting()
        self._check_live(now)
        self._expiry()
        self._renewal()

    def _shutdown(self) -> int:
        log.info("certd.stopping")
        sdnotify.stopping(env=self.env)
        for lane in self._all():
            with contextlib.suppress(OSError):
                statefile.write_waiting(lane.ctx.store.root, [])  # nothing waits on a stopped one
            lane._stop_watching()
        if self.router is not None:
            self.router.stop()
        in_flight = any(lane.ctx.store.in_flight() for lane in self._all())
        log.info(
            "certd.stopped",
            swap_in_flight=in_flight,
            note="completed at next start" if in_flight else None,
        )
        return 0


def _warning_shown(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A Python warning (a library's deprecation, say) is an event, never a raw stderr line."""
    log.warning(
        "certd.library_message",
        logger=f"{category.__name__} at {filename}:{lineno}",
        message=str(message)[:500],
    )


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """An exception escaping a library's thread (watchdog's) is an event, never raw text."""
    name = args.thread.name if args.thread is not None else "thread"
    text = args.exc_type.__name__ if args.exc_value is None else logs.traceback_text(args.exc_value)
    log.warning("certd.library_message", logger=name, message=text[-2000:])


def _describe(exc: BaseException) -> str:
    """An exception as one sentence: ours by their message, others by type and message."""
    if isinstance(exc, RecursionError):
        return "the configuration is nested too deeply to read"
    return logs.describe_error(exc)


def main(config_path: Path | None, overrides: Overrides, clock_factory: Callable[[], Clock]) -> int:
    """Run the daemon; every line it writes, even on a crash, is a catalogued JSON event."""
    logs.configure()  # JSON lines under systemd even before the configuration is read
    threading.excepthook = _thread_failed
    warnings.showwarning = _warning_shown
    try:
        return Daemon(config_path, overrides, clock_factory()).run()
    except Exception as exc:  # the last word is an event with the traceback, then exit 1
        log.critical(
            "certd.crashed",
            error=logs.describe_error(exc)[:500],
            traceback=logs.traceback_text(exc)[-4000:],
        )
        return 1
