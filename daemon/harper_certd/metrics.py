"""The Prometheus textfile, and the daemon's periodic re-check of what Harper serves.

``Monitor.tick(ctx)`` is the one call the daemon loop makes each cycle (the loop wakes at
least every minute).  Every ``metrics.interval`` seconds (60 by default) it dials Harper's
secure ports (``health.probe_served``: 127.0.0.1/::1 with the SNI peers send) and
logs ``certd.served_mismatch`` when what is served stops matching the live set for
``MISMATCH_CONFIRM_SECONDS`` (Harper restarted by its own unit on other files, say: not
only after our own swaps) and
``certd.served_matches`` when it matches again.  When ``metrics.textfile`` is set it
writes node_exporter's textfile collector format with prometheus_client's
``generate_latest`` (a private ``CollectorRegistry``) and ``fsio.write_replace`` (a
temporary file with an unpredictable name, never through a link, renamed over the
target: atomic), mode 0644 so that node_exporter's user can read it, on every
change (a generation, the history, the rejected or incoming folder, a renewal or
rollback event) and at least every interval.

Metrics (all gauges; timestamps in Unix seconds):

- ``harper_certd_certificate_not_after_seconds`` / ``..._not_before_seconds``
  {set, role (leaf|intermediate|ca), subject, issuer, sha256}
- ``harper_certd_served_matches_live`` {set}: 1 or 0; absent while Harper is stopped
- ``harper_certd_harper_up``: 1 when Harper's hdb.pid names a live process
- ``harper_certd_renewal_due_seconds`` / ``harper_certd_renewal_overdue_seconds`` {set}
- ``harper_certd_renewal_overdue`` {set}: 1 once renewal is overdue (the first warning)
- ``harper_certd_last_operation_seconds`` {kind (rotation|rollback|refusal|renewal), outcome}
- ``harper_certd_sets_waiting``; ``harper_certd_set_held`` {path, reason};
  ``harper_certd_set_held_for_peers`` {path, until}
- ``harper_certd_live_problems`` {code}: the live set's problem codes, by code
- ``harper_certd_finding`` {code, level}: status findings; ``harper_certd_health``: 0/1/2
- ``harper_certd_textfile_written_seconds``: when this file was written (stale: dead daemon)
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harper_certd import __version__, events, fsio, health, logs, statefile
from harper_certd.clock import utc_now
from harper_certd.errors import CertdError
from harper_certd.install.verdict import live_report

if TYPE_CHECKING:
    from harper_certd.install.context import Context

TEXTFILE_MODE = 0o644  # node_exporter runs as its own user; no secret is in this file
MISMATCH_CONFIRM_SECONDS = 10.0  # a served != live lasting this long is reported


def _ts(value: dt.datetime) -> float:
    return value.timestamp()


def registry_for(snap: health.Snapshot, extra_ops: Mapping[str, health.Operation]) -> Any:
    """A private CollectorRegistry holding ``snap`` as gauges (see the module docstring)."""
    # start-up cost: prometheus_client is loaded only when a metrics textfile is written
    from prometheus_client import CollectorRegistry, Gauge

    reg = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=reg)

    info = gauge("harper_certd_info", "harper-certd on this node", ("node", "version", "root"))
    info.labels(snap.node_name or "", __version__, snap.harper_root).set(1)
    cert_labels = ("set", "role", "subject", "issuer", "sha256")
    not_after = gauge(
        "harper_certd_certificate_not_after_seconds", "notAfter of each certificate", cert_labels
    )
    not_before = gauge(
        "harper_certd_certificate_not_before_seconds", "notBefore of each certificate", cert_labels
    )
    matches = gauge(
        "harper_certd_served_matches_live",
        "1 if Harper serves the live leaf on every port",
        ("set",),
    )
    due = gauge("harper_certd_renewal_due_seconds", "start of the renewal window", ("set",))
    overdue_at = gauge(
        "harper_certd_renewal_overdue_seconds", "when renewal becomes overdue", ("set",)
    )
    overdue = gauge("harper_certd_renewal_overdue", "1 once renewal is overdue", ("set",))
    for s in snap.sets:
        for c in s.certificates:
            key = (s.name, c.role, c.subject, c.issuer, c.sha256)
            not_after.labels(*key).set(_ts(c.not_after))
            not_before.labels(*key).set(_ts(c.not_before))
        if s.served_matches_live is not None:
            matches.labels(s.name).set(1 if s.served_matches_live else 0)
        if s.next_renewal is not None:
            due.labels(s.name).set(_ts(s.next_renewal))
        if s.renewal_overdue_at is not None:
            overdue_at.labels(s.name).set(_ts(s.renewal_overdue_at))
            overdue.labels(s.name).set(1 if snap.at >= s.renewal_overdue_at else 0)
    up = gauge("harper_certd_harper_up", "1 when Harper's process is alive")
    up.set(0 if any(f.code == "harper_not_running" for f in snap.findings) else 1)
    last = gauge(
        "harper_certd_last_operation_seconds",
        "time of the last operation of each kind",
        ("kind", "outcome"),
    )
    ops = {**snap.last, **extra_ops}
    for kind, op in ops.items():
        last.labels(kind, op.outcome).set(_ts(op.time))
    gauge("harper_certd_sets_waiting", "sets in the incoming folder").set(len(snap.waiting))
    held = gauge("harper_certd_set_held", "a set held in the incoming folder", ("path", "reason"))
    for w in snap.waiting:
        if w.held:
            held.labels(w.path, "waiting longer than the settle period allows").set(1)
    for_peers = gauge(
        "harper_certd_set_held_for_peers",
        "a set held until peers without an answer answer (issue 18): 1, with the hold's end",
        ("path", "until"),
    )
    for w in snap.waiting:
        if w.reason is not None and w.reason.startswith(statefile.PEER_HOLD_REASON):
            for_peers.labels(w.path, w.until or "").set(1)
    problems = gauge("harper_certd_live_problems", "the live set's problems by code", ("code",))
    for code, count in snap.problems_by_code.items():
        problems.labels(code).set(count)
    finding = gauge("harper_certd_finding", "status findings", ("code", "level"))
    for f in snap.findings:
        finding.labels(f.code, f.level.word).set(1)
    gauge("harper_certd_health", "0 ok, 1 warning, 2 critical").set(int(snap.level))
    gauge("harper_certd_textfile_written_seconds", "when this file was written").set(time.time())
    return reg


def write_textfile(path: Path, snap: health.Snapshot, ops: Mapping[str, health.Operation]) -> None:
    """Write ``snap`` to ``path`` atomically (OSError when the folder is not writable).

    The text is prometheus_client's (``generate_latest``); the file is ours
    (``fsio.write_replace``: an unpredictable temporary name opened ``O_EXCL |
    O_NOFOLLOW``, ``fchmod`` to ``TEXTFILE_MODE`` before the rename).  The library's own
    ``write_to_textfile`` opens ``<path>.<pid>.<thread id>`` following links and we then
    chmod-ed by path: in a folder another user can write (a group-writable node_exporter
    folder), a link planted there made the root daemon overwrite and widen the file it
    pointed to (issue 17).
    """
    # start-up cost: as in registry_for
    from prometheus_client import generate_latest

    text = generate_latest(registry_for(snap, ops))
    fsio.write_replace(path.parent, path.name, text, mode=TEXTFILE_MODE, sync=False)


Probe = Callable[["Context"], "tuple[health.ServedView, ...] | None"]


@dataclass
class Monitor:
    """Periodic served re-check and textfile upkeep; ``tick`` is the loop's one call."""

    probe: Probe = health.probe_served
    monotonic: Callable[[], float] = time.monotonic
    now: Callable[[], dt.datetime] = utc_now  # the daemon's clock: when an operation happened
    next_due: float = 0.0
    signature: tuple[Any, ...] | None = None
    mismatch: bool | None = None  # last seen: None unknown, True mismatch reported
    mismatch_since: float | None = None  # monotonic time a mismatch was first seen
    served: tuple[health.ServedView, ...] | None = None
    operations: dict[str, health.Operation] = field(default_factory=dict)
    dirty: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        logs.add_observer(self.observe)

    def observe(self, event: str, fields: Mapping[str, Any]) -> None:
        """A log observer: operations the store does not record, and 'write now'."""
        kind = events.OPERATIONS.get(event)  # the record's ``operation``
        if kind is not None:
            self.operations[kind[0]] = health.Operation(
                kind[0], kind[1], self.now(), str(fields.get("source", ""))
            )
            self.dirty.set()

    def close(self) -> None:
        logs.remove_observer(self.observe)

    def _signature(self, ctx: Context) -> tuple[Any, ...]:
        def mtime(path: Path) -> float | None:
            try:
                return os.stat(path).st_mtime_ns
            except OSError:
                return None

        return (
            ctx.store.current_id(),
            mtime(ctx.store.history.path),
            mtime(ctx.paths.rejected),
            mtime(ctx.paths.incoming),
        )

    def tick(self, ctx: Context) -> None:
        """Re-check what is served when due; rewrite the textfile when due or changed.

        Never raises: monitoring must not take the daemon's cycle (and its watchdog ping)
        down with it; a failure is a ``certd.metrics_failed`` warning, retried next time.
        """
        try:
            self._tick(ctx)
        except Exception as exc:  # any failure here is the monitor's, reported, not fatal
            self.next_due = self.monotonic() + ctx.config.metrics.interval
            logs.emit(
                events.MetricsFailed(
                    textfile=str(ctx.config.metrics.textfile),
                    error=logs.describe_error(exc),
                )
            )

    def _tick(self, ctx: Context) -> None:
        now = self.monotonic()
        due = now >= self.next_due
        path = ctx.config.metrics.textfile
        signature = self._signature(ctx) if path is not None else None
        write = path is not None and (due or self.dirty.is_set() or signature != self.signature)
        if due or write:
            # A write after a change probes again: what was served before a swap says
            # nothing about the set now live.
            self.next_due = now + ctx.config.metrics.interval
            if ctx.config.verify.enabled:
                self.served = self.probe(ctx)
                self._report_served(ctx, now)
        if path is None or not write:
            return
        self.dirty.clear()
        self.signature = signature
        served: tuple[health.ServedView, ...] | bool | None = (
            self.served if ctx.config.verify.enabled else False
        )
        snap = health.snapshot(ctx, served=served)
        try:
            write_textfile(path, snap, self.operations)
        except OSError as exc:
            logs.emit(events.MetricsFailed(textfile=str(path), error=str(exc)))

    def _report_served(self, ctx: Context, now: float) -> None:
        """Log a mismatch once it has lasted MISMATCH_CONFIRM_SECONDS, and its end."""
        if self.served is None:
            self.mismatch_since = None
            return  # Harper stopped: nothing served, nothing to compare
        try:
            live = live_report(ctx).certificate
        except CertdError:  # an unreadable live set is reported by the live-set checks
            return
        if live is None:
            return
        bad = [s for s in self.served if s.sha256 != live.sha256]
        if not bad:
            self.mismatch_since = None
            if self.mismatch is True:
                logs.emit(
                    events.ServedMatches(
                        live=live.sha256,
                        dialled=[s.dialled for s in self.served],
                    )
                )
                self.dirty.set()
            self.mismatch = False
            return
        if self.mismatch is True:
            return  # reported already
        # Harper reloads ~1.6 s after a file change (a hand change the daemon just adopted)
        # and a rebuilding port can serve the other set for 10-60 ms (issue 11): a mismatch
        # is reported when probes MISMATCH_CONFIRM_SECONDS apart still see it.
        if self.mismatch_since is None:
            self.mismatch_since = now
        if now - self.mismatch_since < MISMATCH_CONFIRM_SECONDS:
            self.next_due = min(self.next_due, self.mismatch_since + MISMATCH_CONFIRM_SECONDS)
            return
        self.mismatch = True
        logs.emit(
            events.ServedMismatch(
                live=live.sha256,
                served=[
                    {"dialled": s.dialled, "sha256": s.sha256, "error": s.error or None}
                    for s in bad
                ],
                seen_for_seconds=round(now - self.mismatch_since, 1),
            )
        )
        self.dirty.set()
