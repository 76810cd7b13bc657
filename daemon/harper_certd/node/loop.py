"""The node loop: one thread that decides everything for every certificate set of the node.

The loop owns only what is node-wide: the signals (which only put notes on a queue), the
queue of notes (``NoteKind``), systemd's watchdog and status, the router of ``incoming/``
on a node with several sets (``node.router``), the served-certificate monitor and metrics
textfile (``metrics.Monitor``), the watch on the wall clock (``trackers.ClockWatch``) and the
restart budget (``schedule.RestartBudget``, shared by every lane).  Everything about one
set is its lane's (``lane.Lane``): the loop asks each lane ``next_due(now)``, sleeps until
the earliest duty or a note, and calls ``tick(now)``.  An exception in one cycle is an
error event, not a dead daemon; one lane's fault never stops the others.

Time: validity, expiry and renewal windows are wall-clock questions asked of the
``schedule.Clock`` at the moment they are decided; settle periods, backoffs and retries are
monotonic intervals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from harper_certd import (
    environment,
    events,
    heap,
    logs,
    metrics,
    quiet,
    recover,
    retention,
    sdnotify,
    statefile,
)
from harper_certd.clock import Clock, wall_minus_monotonic
from harper_certd.config import Config, RenewSection, load_config, with_overrides
from harper_certd.errors import Interrupted
from harper_certd.incoming import Tracker
from harper_certd.install import context, judge
from harper_certd.lane.lane import Lane, log_live_invalid, report_watch_changes
from harper_certd.node import startup
from harper_certd.node.harperwatch import HarperWatch
from harper_certd.node.router import Router, decide, move_to
from harper_certd.problems import Problem
from harper_certd.roles import SET_FOLDER
from harper_certd.rotation.executor import Rotation
from harper_certd.schedule import RestartBudget
from harper_certd.trackers import ClockWatch

SUMMARY_SECONDS = 86400.0  # a daily line saying all is well (or not), for months of quiet


class NoteKind(enum.Enum):
    """What woke the loop (the queue's items)."""

    STOP = "stop"  # SIGTERM or SIGINT: finish the cycle and stop
    RELOAD = "reload"  # SIGHUP: read the configuration again
    FILES = "files"  # an inbox went from clean to dirty (watchdog's thread)
    TIMER = "timer"  # nothing arrived before the earliest duty was due


@dataclasses.dataclass
class Overrides:
    """The command line's ``--harper-root`` and ``--state-dir`` over the configuration."""

    harper_root: Path | None = None
    state_dir: Path | None = None


def read_config(config_path: Path | None, overrides: Overrides) -> Config:
    """The configuration file with the command line's overrides (errors: ``ConfigError``)."""
    config = load_config(config_path)
    harper = with_overrides(config.harper, root=overrides.harper_root)
    return with_overrides(config, harper=harper, state_dir=overrides.state_dir)


def own_renewal(ctx: context.Context, config: Config, *, lane: bool) -> context.Context:
    """``ctx`` with its set's own renewal section: the top-level ``renew`` is the primary
    set's only; a set named in ``sets:`` has its own, any other lane none."""
    own = next((s for s in config.sets if s.name == ctx.set_name), None)
    if own is None and not lane:
        return ctx
    renew = own.renew if own is not None else RenewSection()
    return ctx._replace(config=ctx.config._replace(renew=renew))


def describe(exc: BaseException) -> str:
    """An exception as one sentence: ours by their message, others by type and message."""
    if isinstance(exc, RecursionError):
        return "the configuration is nested too deeply to read"
    return logs.describe_error(exc)


class Node:
    """The node's daemon: the loop over its lanes, the primary set's (the replication set,
    else the first; ``primary``) and one per other set of Harper's configuration (``lanes``,
    by set name), each with its own incoming folder (``incoming/<set name>/``)."""

    def __init__(
        self,
        config_path: Path | None,
        overrides: Overrides,
        clock: Clock,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config_path = config_path
        self.overrides = overrides
        self.clock = clock
        self.env = dict(os.environ) if env is None else env
        # SimpleQueue, not Queue: its put() is reentrant, and the signal handlers put notes
        # while the main thread may be inside get() on the same queue.  queue.Queue's lock
        # deadlocked SIGTERM there (measured: 2 of 7 stops after a renewal hung for good;
        # 0 of 12 with SimpleQueue).
        self.notes: queue.SimpleQueue[NoteKind] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.primary = self._lane(None, lambda: self.router is not None)
        self.lanes: dict[str, Lane] = {}  # the other sets, by set name
        self.router: Router | None = None  # incoming/ itself, on a multi-set node
        self.node_incoming: Path | None = None  # incoming/ (the primary's own is below it)
        self.environment: list[environment.Finding] = []
        self.monitor = metrics.Monitor(now=clock.now)  # h-ops: served re-check, Prometheus textfile
        self.clock_watch = ClockWatch(wall_minus_monotonic, time.monotonic())
        self.next_summary = 0.0
        self.trim_due: float | None = None  # monotonic: when the C heap is trimmed (heap.py)
        self.harper_watch = HarperWatch()  # certd.harper_stopped / harper_started
        self.hazards: frozenset[tuple[str, str, str]] = frozenset()  # the last ones logged
        self.rotation = Rotation()  # this node's steps of a cluster CA rotation
        self.unroutable = 0  # folders the router refused (set_unroutable) since the start

    def _lane(self, name: str | None, named: Callable[[], bool]) -> Lane:
        return Lane(name, self.clock, self.env, self.stopping, self._wake, named)

    def _wake(self) -> None:
        """An inbox went from clean to dirty (called on watchdog's thread)."""
        self.notes.put(NoteKind.FILES)

    @property
    def ctx(self) -> context.Context:
        """The primary set's context: Harper's configuration and the node's settings."""
        return self.primary.ctx

    def all(self) -> list[Lane]:
        return [self.primary, *self.lanes.values()]

    # --- configuration --------------------------------------------------------------------

    def _load(self) -> context.Context:
        """The primary set's context, with the node's restart budget (start, reload)."""
        config = read_config(self.config_path, self.overrides)
        ctx = context.build_context(config, clock=self.clock.now, interrupted=self.stopping)
        live = ctx.managed.live.cert
        self.node_incoming = ctx.paths.incoming
        if (
            ctx.set_name is not None
            and SET_FOLDER.fullmatch(ctx.set_name) is not None
            and any(s.first.cert_path != live for s in ctx.harper.sets())
        ):  # several sets: each has its folder, incoming/ is the router's
            paths = ctx.paths._replace(incoming=ctx.paths.incoming / ctx.set_name)
            ctx = ctx._replace(paths=paths)
        ctx = own_renewal(ctx, config, lane=False)
        self.environment = environment.require_workable(config, ctx.harper, self.env)  # h-ops
        budget_file = ctx.paths.state / statefile.BUDGET_FILE
        budget = RestartBudget(config.restart.restarts_per_hour, budget_file)
        return ctx._replace(budget=budget)

    def _load_lane(self, name: str) -> context.Context:
        """Set ``name``'s context: its own incoming folder, the node's restart budget."""
        config = read_config(self.config_path, self.overrides)
        ctx = context.build_context(
            config, clock=self.clock.now, interrupted=self.stopping, set_name=name
        )
        ctx = own_renewal(ctx, config, lane=True)
        paths = ctx.paths._replace(incoming=ctx.paths.incoming / name)
        return ctx._replace(paths=paths, budget=self.ctx.budget)

    def _configure_logging(self) -> None:
        fmt = self.ctx.config.log.format
        logs.configure(
            json=None if fmt == "auto" else fmt == "json", level=self.ctx.config.log.level
        )

    def _sync_lanes(self, *, announce: bool = True) -> None:
        """One lane per set of Harper's configuration besides the primary (start, reload)."""
        primary = self.ctx.managed.live.cert
        wanted = [s.name for s in self.ctx.harper.sets() if s.first.cert_path != primary]
        if self.node_incoming is not None and self.ctx.paths.incoming != self.node_incoming:
            # made here, before the sets' folders below it: 0750 as the README says
            self.node_incoming.mkdir(parents=True, exist_ok=True, mode=0o750)
        for name in [n for n in self.lanes if n not in wanted]:
            self.lanes.pop(name).stop()
        for name in wanted:
            lane = self.lanes.get(name) or self._lane(name, lambda: True)
            with lane.bound():
                if SET_FOLDER.fullmatch(name) is None:
                    reason = "its name is not usable as a folder name under incoming/"
                    logs.emit(events.SetUnmanaged(set=name, reason=reason))
                    continue
                try:
                    ctx = self._load_lane(name)
                except Exception as exc:  # one set that cannot be managed never stops the rest
                    logs.emit(events.SetUnmanaged(set=name, reason=describe(exc)))
                    continue
                fresh = name not in self.lanes
                lane.configure(ctx)
                self.lanes[name] = lane
                if fresh:
                    lane.start()
                else:
                    lane.resume()
                if announce:
                    lane.announce()
        self._sync_router([self.primary.label or "", *wanted])

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
            self.router = Router(incoming, tracker, self._wake)
            report_watch_changes(self.router.start())
        self.router.tracker.reserved = frozenset(names)
        self.router.tracker.rescan(time.monotonic())

    def _signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()
            self.notes.put(NoteKind.STOP)

        def hup(signum: int, frame: FrameType | None) -> None:
            self.notes.put(NoteKind.RELOAD)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _reload(self) -> None:
        """SIGHUP: the configuration again; READY=1 always follows RELOADING=1."""
        sdnotify.reloading(env=self.env)
        try:
            try:
                ctx = self._load()
            except Exception as exc:  # any failure to load keeps the old config
                logs.emit(events.ConfigRefused(error=describe(exc), config=str(self.config_path)))
                return
            ctx.budget.carry_over(self.ctx.budget)  # restarts spent stay spent
            self.primary.configure(ctx)
            self._configure_logging()
            self._sync_lanes()  # before the primary's tracker: it leaves their folders alone
            with self.primary.bound():
                self.primary.resume()
            self._log_hazards(startup.find_hazards(ctx, ctx.harper))  # a reload can bring one
            logs.emit(events.ConfigReloaded(config=str(self.config_path)))
        finally:
            sdnotify.ready(env=self.env)

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Start, loop until SIGTERM/SIGINT, stop: 0, or 2 with one event on a bad start."""
        try:
            self.primary.configure(self._load())
        except Exception as exc:  # a bad start: exit 2 with one event
            logs.configure()
            logs.emit(events.ConfigRefused(error=describe(exc), config=str(self.config_path)))
            return 2
        self._configure_logging()
        self._signals()
        self._startup()
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                note = self.notes.get(timeout=self._next_timeout(now))
            except queue.Empty:
                note = NoteKind.TIMER
            notes = [note]
            with contextlib.suppress(queue.Empty):
                while True:
                    notes.append(self.notes.get_nowait())
            try:
                self._cycle(notes)
            except Interrupted:
                break
            except Exception as exc:
                logs.emit(
                    events.CycleFailed(
                        error=logs.describe_error(exc),
                        exception=logs.traceback_text(exc),
                    )
                )
        return self._shutdown()

    def _startup(self) -> None:
        # First: the primary's tracker leaves the lanes' folders (incoming/<set name>/) alone.
        self._sync_lanes(announce=False)
        with self.primary.bound():
            self.primary.start()
        self.hazards = startup.said(startup.log_discovered(self.ctx, self.clock))
        self.harper_watch.tick(self.ctx.paths.harper_root, time.monotonic())  # as discovered
        report = self.primary.report()
        incoming = self.node_incoming or self.ctx.paths.incoming
        startup.log_started(self.ctx, report, incoming, self.clock)
        statefile.write_daemon(self.ctx.paths.state, self.clock.now().isoformat())
        log_live_invalid(report)
        for lane in self.lanes.values():
            with lane.bound():
                lane.announce()
        startup.log_environment(self.environment)
        sdnotify.ready(env=self.env)
        sdnotify.arm_watchdog(self.env)
        heap.trim()  # what start-up freed (imports, discovery, the live set judged) goes back

    def _next_timeout(self, now: float) -> float:
        """Seconds until the earliest duty of the node or of any lane (at least 1 ms)."""
        waits = [self.next_summary - now, self.monitor.next_due - now]  # h-ops: monitor
        routed = None if self.router is None else self.router.next_due(now)
        if routed is not None:
            waits.append(routed - now)
        waits += [lane.next_due(now) - now for lane in self.all()]
        waits.append(self.clock_watch.next_due(now) - now)
        waits += [quiet.LIBRARY.next_due() - now, self.harper_watch.next_due - now]
        waits.append(self.rotation.next_due - now)
        if self.trim_due is not None:
            waits.append(self.trim_due - now)
        ping = sdnotify.next_keepalive()
        if ping is not None:
            waits.append(ping - now)
        return max(0.001, min(waits))

    def _cycle(self, notes: list[NoteKind]) -> None:
        sdnotify.keepalive()  # due by the clock of this moment, and again after the work
        now = time.monotonic()
        self._clock_check(now)
        for note in notes:
            if note is NoteKind.RELOAD:
                self._reload()
        if NoteKind.FILES in notes and self.trim_due is None:
            self.trim_due = now + heap.TRIM_AFTER_SECONDS
        if self.router is not None and not self.stopping.is_set():
            self._route(now)
        with self.primary.bound():
            self.primary.tick(now)
        for lane in list(self.lanes.values()):
            with lane.bound():
                try:
                    lane.tick(now)
                except Interrupted:
                    raise
                except Exception as exc:  # one set's fault never stops the others
                    logs.emit(
                        events.CycleFailed(
                            error=logs.describe_error(exc),
                            exception=logs.traceback_text(exc),
                        )
                    )
        if self.stopping.is_set():
            return
        with self.primary.bound():  # h-clusterB: the cluster CA rotation (issue 18)
            self.rotation.tick(self.ctx, now)
        if now >= self.next_summary:
            if self.next_summary:
                for lane in self.all():
                    with lane.bound():
                        lane.summary()
            self.next_summary = now + SUMMARY_SECONDS
        self.monitor.tick(self.ctx)  # h-ops
        self.harper_watch.tick(self.ctx.paths.harper_root, now)
        quiet.LIBRARY.flush()  # a storm's count ends its minute even if nothing else comes
        if self.trim_due is not None and now >= self.trim_due:
            heap.trim()  # the native libraries' freed memory back to the system (heap.py)
            self.trim_due = None
        sdnotify.keepalive()

    def _log_hazards(self, found: tuple[Problem, ...]) -> None:
        """Hazards once per change of the layout: those not logged last time (a SIGHUP that
        changes nothing logs nothing; one gone and back is logged again)."""
        startup.log_hazards(tuple(p for p in found if startup.said((p,)) - self.hazards))
        self.hazards = startup.said(found)

    def _clock_check(self, mono: float) -> None:
        """A step of the wall clock: say so, and plan again from the new wall time."""
        step = self.clock_watch.tick(mono)
        if step is None:
            return
        wall = self.clock.now()
        logs.emit(events.ClockJumped(seconds=round(step, 1), now=wall.isoformat()))
        # Marks now in the future again (the clock went back) are due again; marks passed
        # by a step forward fire at once in the lanes' expiry.  Backoffs are monotonic.
        for lane in self.all():
            with lane.bound():
                lane.clock_stepped(wall)

    def _route(self, now: float) -> None:
        """The router's part of a cycle: its watch checked (with the primary set's watch
        check), settled folders placed."""
        router = self.router
        assert router is not None
        if now >= self.primary.next_watch_check and router.watcher is not None:
            changes = router.watcher.check()
            report_watch_changes(changes)
            if changes:
                router.tracker.rescan(now)
        if now >= self.primary.next_rescan:
            router.tracker.rescan(now)
        refused = self.unroutable
        router.tick(now, self._place, self.clock.now())
        if self.unroutable != refused:  # filed in rejected/: its retention, once a tick
            retention.prune_kept(
                self.ctx.paths, self.ctx.config.retention, self.clock.now(), self.stopping
            )

    def _place(self, folder: Path) -> None:
        """A folder straight in incoming/ on a node with several sets: moved to the folder
        of the one set it fits (``certd.set_routed``), or refused (``set_unroutable``)."""
        sdnotify.keepalive()  # one folder of what may be a burst of thousands
        label = self.primary.label
        assert label is not None
        managed = {label, *self.lanes}
        routed = decide(
            folder,
            [s for s in self.ctx.harper.sets() if s.name in managed],
            label,
            trusted_uids=self.ctx.trusted_uids(),
            ca_fallback=self.ctx.managed.live.ca,
            node_name=self.ctx.harper.node_name,
        )
        if routed.set_name is None:
            judge.refuse_unroutable(self.ctx, folder, routed.reason)
            self.unroutable += 1
            return
        lane = self.lanes.get(routed.set_name, self.primary)
        target = move_to(folder, lane.ctx.paths.incoming, self.clock.now())
        logs.emit(
            events.SetRouted(
                source=str(folder),
                set=routed.set_name,
                moved_to=str(target),
                reason=routed.reason,
            )
        )

    def _shutdown(self) -> int:
        logs.emit(events.Stopping())
        sdnotify.disarm_watchdog()
        sdnotify.stopping(env=self.env)
        for lane in self.all():
            with contextlib.suppress(OSError):
                statefile.write_waiting(lane.ctx.store.root, [])  # nothing waits on a stopped one
            lane.stop()
        if self.router is not None:
            self.router.stop()
        quiet.LIBRARY.flush(final=True)  # the counts of the windows still open are not lost
        statefile.clear_daemon(self.ctx.paths.state)
        in_flight = any(recover.in_flight(lane.ctx.store) for lane in self.all())
        logs.emit(
            events.Stopped(
                swap_in_flight=in_flight,
                note="completed at next start" if in_flight else None,
            )
        )
        return 0
