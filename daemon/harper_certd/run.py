"""``harper-certd run``: the daemon, left alone for months and judged by its log.

One thread decides everything; the signal handlers only put notes on a queue, and
watchdog's thread only marks entries dirty in a bounded inbox (``incoming.Inbox``) that
wakes the loop once per burst.  The loop sleeps until the next thing is due (a set settling in
the incoming folder, an expiry threshold, a renewal, a systemd watchdog ping) or a
note arrives.  An exception in one cycle is an error event, not a dead daemon.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import queue
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from harper_certd import (
    __version__,
    environment,
    health,
    logs,
    metrics,
    sdnotify,
    service,
)
from harper_certd.config import Config, load_config, with_overrides
from harper_certd.errors import CertdError, ConfigError, Interrupted, SwapError
from harper_certd.incoming import LOOSE_NAMES, Candidate, Inbox, Kind, Taken, Tracker, classify
from harper_certd.schedule import (
    Backoff,
    Clock,
    Mark,
    Watched,
    due_marks,
    expiry_marks,
    next_mark,
    renewal_at,
)
from harper_certd.source import Identity, identity_of
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
class RenewState:
    failures: int = 0
    next_try: dt.datetime | None = None


@dataclass
class Overrides:
    harper_root: Path | None = None
    state_dir: Path | None = None


def _apply_overrides(config: Config, overrides: Overrides) -> Config:
    harper = with_overrides(config.harper, root=overrides.harper_root)
    return with_overrides(config, harper=harper, state_dir=overrides.state_dir)


@dataclass
class Daemon:
    config_path: Path | None
    overrides: Overrides
    clock: Clock
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    ctx: service.Context = field(init=False)

    def __post_init__(self) -> None:
        self.notes: queue.Queue[tuple[str, str]] = queue.Queue()
        self.stopping = threading.Event()
        self.tracker: Tracker | None = None
        self.inbox: Inbox | None = None
        self.overflow_reported = -OVERFLOW_REPORT_SECONDS
        self.content_failed: str | None = None  # the live set's last judging error, said once
        # Valid sets of a burst judged in earlier cycles, installed together (one rotation).
        self.pending: list[tuple[Path, service.Judged]] = []
        self.pending_taken: dict[Path, Identity | None] = {}
        self.pending_since = 0.0
        self.fired: set[tuple[str, str, float]] = set()
        self.marks: list[Mark] = []
        self.leaf: Watched | None = None
        self.expected_live: tuple[Any, ...] = ()
        self.live_dirty: float | None = None
        self.live_seen: tuple[Any, ...] | None = None
        self.renew = RenewState()
        self.held_announced = False
        self.next_watch_check = 0.0
        self.next_rescan = 0.0
        self.next_summary = 0.0
        self.next_ping = 0.0
        self.watcher: Watcher | None = None
        self.environment: list[environment.Finding] = []
        self.monitor = metrics.Monitor()  # h-ops: served re-check, Prometheus textfile

    # --- setup ----------------------------------------------------------------------

    def _load(self) -> service.Context:
        config = _apply_overrides(load_config(self.config_path), self.overrides)
        ctx = service.build_context(
            config,
            clock=self.clock.now,
            interrupted=self.stopping,
        )
        self.environment = environment.require_workable(config, ctx.harper, self.env)  # h-ops
        return ctx

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
            incoming, watch.settle_seconds, watch.loose_wait_seconds, watch.drain_per_cycle
        )
        if old is not None and old.incoming == incoming:  # a reload keeps what is known
            self.tracker.remembered, self.tracker.strays = old.remembered, old.strays
            self.tracker.unsafe_seen = old.unsafe_seen
        roots = self._roots()
        # One wake-up note per clean-to-dirty change, whatever the rate of events.
        self.inbox = Inbox(incoming, {r.path for r in roots}, lambda: self.notes.put(("fs", "")))
        self.watcher = Watcher(roots, self.inbox.put)
        self._watch_changes(self.watcher.start(), time.monotonic())

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
            text = f"{type(exc).__name__}: {exc}"[:300]
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
            self.marks, self.leaf = [], None
            return
        cert = report.certificate
        self.leaf = Watched("leaf", cert.subject, cert.sha256, cert.not_before, cert.not_after)
        cas = [
            Watched("ca", c.subject, c.sha256, c.not_before, c.not_after) for c in report.ca_file
        ]
        self.marks = expiry_marks([self.leaf, *cas], self.ctx.config.expiry.warn_days)
        self.marks = health.warning_marks(self.marks, self.leaf, self.ctx.config)  # h-ops
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

    def _gather_loose(self) -> Path | None:
        """Loose set files in the incoming folder, moved together into a folder of their own."""
        incoming = self.ctx.paths.incoming
        names = []
        for name in sorted(LOOSE_NAMES):
            with contextlib.suppress(OSError):
                if classify(name, os.lstat(incoming / name)) is Kind.LOOSE:
                    names.append(name)
        if not names:
            return None
        folder = incoming / f".loose-{self.clock.now():%Y%m%dT%H%M%S%f}"
        folder.mkdir(mode=0o700)
        for name in names:
            os.rename(incoming / name, folder / name)
        renamed = incoming / folder.name.removeprefix(".")
        os.rename(folder, renamed)
        return renamed

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
        wall = self.clock.now()
        if not self.ctx.budget.allowed(wall):
            tracker.held = True  # woken by the budget's own timer, not by the settle rule
            if not self.held_announced:
                self.held_announced = True
                log.error(
                    "certd.restart_held",
                    waiting=[str(c.path) for c in ready],
                    limit_per_hour=self.ctx.config.restart.restarts_per_hour,
                    next_allowed=self.ctx.budget.next_allowed(wall).isoformat(),
                )
            return
        self.held_announced = False
        tracker.held = False
        taken = tracker.take(ready)
        folders = []
        for path in list(taken):
            folder = self._gather_loose() if path == self.ctx.paths.incoming else path
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
            judged = service.judge_sources(self.ctx, folders)
        except (SwapError, Interrupted):
            raise  # the sources stay; they are taken again at the next rescan
        except Exception:
            tracker.settled(taken)
            raise
        tracker.pace(time.monotonic() - started, len(folders))
        valid = {folder for folder, _ in judged}
        # what could not be filed is not judged again until it changes
        tracker.settled({p: i for p, i in taken.items() if p not in valid})
        if not self.pending:
            self.pending_since = now
        self.pending += judged
        self.pending_taken.update({p: i for p, i in taken.items() if p in valid})
        if tracker.backlog and now - self.pending_since < PENDING_MAX_SECONDS:
            return  # more of this burst next cycle
        self._install_pending()

    def _install_pending(self) -> None:
        if not self.pending or self.tracker is None:
            return
        pending, taken = self.pending, self.pending_taken
        self.pending, self.pending_taken = [], {}
        try:
            outcome = service.install_judged_newest(self.ctx, pending)
        finally:
            self.tracker.settled(taken)
        if (
            outcome is not None
            and outcome.applied is not None
            and (outcome.applied.method != "none")
        ):
            self.ctx.budget.spend(self.clock.now())  # Harper was made to reload or restart
        self._refresh_schedule()

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
        for mark in due_marks(self.marks, self.fired, now):
            days = (mark.cert.not_after - now).total_seconds() / 86400
            fields = {
                "certificate": mark.cert.role,
                "subject": mark.cert.subject,
                "fingerprint": mark.cert.sha256,
                "not_after": mark.cert.not_after.isoformat(),
                "days_left": round(days, 2),
            }
            if mark.kind == "expired":
                log.critical("certd.expired", **fields)
            else:
                log.warning("certd.expiry_warning", threshold_days=mark.days, **fields)
        for mark in self.marks:
            if mark.at <= now:
                self.fired.add(mark.key)

    def _renewal(self) -> None:
        config = self.ctx.config.renew
        if not config.command or self.leaf is None:
            return
        now = self.clock.now()
        due = renewal_at(
            self.leaf, before_fraction=config.before_fraction, before_days=config.before_days
        )
        if now < due or (self.renew.next_try is not None and now < self.renew.next_try):
            return
        log.info(
            "certd.renewal_started",
            command=list(config.command),
            fingerprint=self.leaf.sha256,
            not_after=self.leaf.not_after.isoformat(),
        )
        status, output = service.run_renewal(self.ctx, self.stopping)
        backoff = Backoff(config.backoff_initial, config.backoff_max)
        if status == 0:
            self.renew.failures = 0
            log.info("certd.renewal_succeeded", output=output[-1000:])
            if config.lineage_dir is not None:
                service.install_newest(self.ctx, [config.lineage_dir])
                self._refresh_schedule()
            # The renewed set may take a while to arrive; do not run again at once.
            self.renew.next_try = now + dt.timedelta(seconds=config.backoff_initial)
            return
        self.renew.failures += 1
        wait = backoff.delay(self.renew.failures)
        self.renew.next_try = now + dt.timedelta(seconds=wait)
        log.error(
            "certd.renewal_failed",
            exit_status=status,
            output=output[-1000:],
            failures=self.renew.failures,
            next_attempt=self.renew.next_try.isoformat(),
        )

    def _reload(self) -> None:
        sdnotify.reloading(env=self.env)
        try:
            ctx = self._load()
        except (ConfigError, CertdError) as exc:
            log.error("certd.config_refused", error=str(exc), config=str(self.config_path))
            sdnotify.ready(env=self.env)
            return
        budget = self.ctx.budget
        self.ctx = ctx
        self.ctx.budget.__dict__.update(budget.__dict__)  # restarts spent stay spent
        self._configure_logging(ctx.config)
        self._start_watching()
        self._rescan(time.monotonic())
        self._refresh_schedule()
        log.info("certd.config_reloaded", config=str(self.config_path))
        sdnotify.ready(env=self.env)

    def _next_timeout(self, now: float) -> float:
        waits = [self.next_rescan - now, self.next_watch_check - now, self.next_summary - now]
        waits.append(self.monitor.next_due - now)  # h-ops
        settle = self.ctx.config.watch.settle_seconds
        incoming_due = None if self.tracker is None else self.tracker.next_due(now)
        if incoming_due is not None:
            waits.append(incoming_due - now)
        if self.live_dirty is not None:
            waits.append(self.live_dirty + settle - now)
        wall = self.clock.now()
        mark = next_mark(self.marks, self.fired, wall)
        if mark is not None:
            waits.append(self.clock.real_seconds(mark))
        if self.ctx.config.renew.command and self.leaf is not None:
            due = renewal_at(
                self.leaf,
                before_fraction=self.ctx.config.renew.before_fraction,
                before_days=self.ctx.config.renew.before_days,
            )
            if self.renew.next_try is not None:
                due = max(due, self.renew.next_try)
            waits.append(self.clock.real_seconds(due))
        if self.candidates and not self.ctx.budget.allowed(wall):
            waits.append(self.clock.real_seconds(self.ctx.budget.next_allowed(wall)))
        interval = sdnotify.watchdog_interval(self.env)
        if interval is not None:
            waits.append(self.next_ping - now)
        return max(0.001, min(waits))

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.ctx = self._load()
        except CertdError as exc:
            logs.configure()
            log.error("certd.config_refused", error=str(exc), config=str(self.config_path))
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
                log.exception("certd.cycle_failed", error=f"{type(exc).__name__}: {exc}")
        return self._shutdown()

    def _startup(self) -> None:
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
        self._discovered()
        report = self._live_report()
        sets = []
        for entry in self.ctx.harper.entries:
            info: dict[str, Any] = {"where": entry.where, "purpose": entry.purpose.value}
            if entry.note:
                info["note"] = entry.note
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
            incoming=str(self.ctx.paths.incoming),
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
        for finding in self.environment:  # h-ops: what may not work under the unit
            log.warning(
                "certd.environment_warning",
                key=finding.key,
                problem=finding.problem,
                fix=finding.fix,
            )
        sdnotify.ready(env=self.env)
        self.next_ping = time.monotonic()

    def _discovered(self) -> None:
        from harper_certd.check import find_process

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
            notes=[e.note for e in harper.entries if e.note] + list(harper.notes),
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
        for kind, value in notes:
            if kind == "signal" and value == "hup":
                self._reload()
            elif kind == "fs" and value:
                self._note_path(value, now)
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
        if now >= self.next_summary:
            if self.next_summary:
                self._summary()
            self.next_summary = now + SUMMARY_SECONDS
        self._process_candidates(now)
        self._check_live(now)
        self._expiry()
        self._renewal()
        self.monitor.tick(self.ctx)  # h-ops
        interval = sdnotify.watchdog_interval(self.env)
        if interval is not None and now >= self.next_ping:
            sdnotify.watchdog(env=self.env)
            self.next_ping = now + interval

    def _shutdown(self) -> int:
        log.info("certd.stopping")
        sdnotify.stopping(env=self.env)
        if self.watcher is not None:
            self.watcher.stop()
        in_flight = self.ctx.store.in_flight()
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
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    log.warning("certd.library_message", logger=name, message=text[-2000:])


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
            error=f"{type(exc).__name__}: {exc}"[:500],
            traceback=traceback.format_exc()[-4000:],
        )
        return 1
