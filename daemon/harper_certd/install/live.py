"""The live set changed outside an install: by someone else's hand, or a swap completed
after a crash; and what the daemon does once at start for a set's store.

- ``handle_live_change``: a valid set written over the live files is adopted (a new
  generation) and applied; an invalid one is reported, or the last good generation is
  restored (``on_invalid_live: restore``), guarded by the peers and proven like an install.
- ``prove_recovered``: a swap completed after a crash is applied and proven like an install
  (``certd.set_installed``, or rolled back with the failure outcome).
- ``check_served``: watch-only, what Harper serves, nothing written.
"""

from __future__ import annotations

import contextlib
import threading

from harper_certd import events, logs, retention, sdnotify
from harper_certd.adoption import foreign, take_live
from harper_certd.errors import Interrupted, SwapError
from harper_certd.harper.apply import make_harper
from harper_certd.harper.method import RestartMethod
from harper_certd.harper.process import harper_pid
from harper_certd.install import flip
from harper_certd.install.context import Context, live_names, read_live
from harper_certd.install.judge import last_good
from harper_certd.install.outcomes import InstallStatus
from harper_certd.install.proof import guard, prove
from harper_certd.install.rollback import prove_recovered_locked
from harper_certd.install.verdict import validate_set
from harper_certd.journal import Outcome
from harper_certd.recover import Recovery, recover
from harper_certd.restart import run_command
from harper_certd.roles import SetBytes
from harper_certd.validate import Report


def handle_live_change(ctx: Context) -> None:
    """The live files changed, not by us: adopt a valid set, report (or restore) an invalid one."""
    store = ctx.store
    watch_only = foreign(store)
    with store.locked():
        if watch_only is None:
            recover(store)
        try:
            data: SetBytes | None = read_live(ctx)
        except SwapError:
            data = None
        report = None if data is None else validate_set(ctx, data, live_names(ctx))
        if data is not None and report is not None and report.valid:
            _adopt(ctx, data, report, watch_only)
            return
        errors = (
            [] if report is None else [p for p in report.problems if p.severity.value == "error"]
        )
        logs.emit(
            events.LiveInvalid(
                codes=["live_unreadable"] if report is None else [p.code for p in errors],
                problems=[p.message for p in errors],
                action="report" if watch_only is not None else ctx.config.on_invalid_live,
            )
        )
        if ctx.config.on_invalid_live == "restore" and watch_only is None:
            _restore(ctx)


def _adopt(ctx: Context, data: SetBytes, report: Report, watch_only: str | None) -> None:
    """A valid set written over the live files: kept as a new generation and applied (or,
    watch-only, said and checked as served: someone else's files are never written)."""
    store = ctx.store
    current = store.current()
    if (
        current is not None
        and store.managed()
        and current.meta.get("digests") == store.digests(data)
    ):
        return  # only touched: the content is the live generation's
    assert report.certificate is not None
    cert = report.certificate
    if watch_only is not None:
        logs.emit(
            events.LiveChanged(
                generation=None,
                fingerprint=cert.sha256,
                subject=cert.subject,
                written_through=None,
                watch_only=True,
            )
        )
        check_served(ctx, cert.sha256)
        return
    through = (
        current.id if current is not None and store.managed() and store.intact(current) else None
    )
    meta = {
        "source": "changed by hand",
        "fingerprint": cert.sha256,
        "subject": cert.subject,
        "not_after": cert.not_after.isoformat(),
    }
    try:
        gen = take_live(store, data, meta)
    except (SwapError, OSError) as exc:
        # Harper already reads the new files; only our record of them failed.
        with contextlib.suppress(SwapError, OSError):
            recover(store)
        flip.log_swap_failed("live files (changed by hand)", flip.swap_cause(exc), str(exc))
        return
    logs.emit(
        events.LiveChanged(
            generation=gen.id,
            fingerprint=cert.sha256,
            subject=cert.subject,
            written_through=through,
            watch_only=False,
        )
    )
    applied = ctx.applier(current, gen)
    if not applied.ok:
        logs.emit(events.VerifyFailed(generation=gen.id, detail=applied.detail))


def _restore(ctx: Context) -> None:
    """``on_invalid_live: restore``: the newest intact, valid generation put back, guarded by
    the peers (a set they would refuse is not restored: ``certd.rollback_failed`` names
    them) and proven (served, then the peers)."""
    store = ctx.store
    current = store.current()
    if current is not None and (damage := store.intact(current)) is not None:
        store.update_meta(current, outcome=Outcome.CHANGED_IN_PLACE, damage=damage)
    target = last_good(ctx)
    if target is None:
        logs.emit(events.RollbackFailed(reason="no kept generation is valid to restore"))
        return
    checked = guard(ctx, target.read(), subject=f"generation {target.id}")
    if checked.refusals:
        why = " ".join(p.message for p in checked.refusals)
        logs.emit(events.RollbackFailed(reason=f"generation {target.id} not restored: {why}"))
        return
    try:
        store.restore(target)
    except (SwapError, OSError) as exc:
        flip.log_swap_failed(f"generation {target.id} (restore)", flip.swap_cause(exc), str(exc))
        return
    applied = prove(
        ctx, ctx.applier(None, target), ask_peers=checked.check.checked, before=checked.check
    ).applied
    logs.emit(
        events.LiveRestored(
            generation=target.id,
            fingerprint=target.meta.get("fingerprint"),
            verified=applied.ok,
            detail=applied.detail,
        )
    )


def prove_recovered(ctx: Context, recovery: Recovery) -> InstallStatus | None:
    """A swap completed after a crash (``recovery.needs_verify``), proven like an install
    (``rollback.prove_recovered_locked``); the store's lock is taken here."""
    with ctx.store.locked():
        return prove_recovered_locked(ctx, recovery)


def check_served(ctx: Context, fingerprint: str) -> bool | None:
    """Watch-only: does Harper serve ``fingerprint`` on every secure port (within
    ``verify.timeout``, Harper reloading by itself)?  Nothing is restarted or written.

    None when there is nothing to check (verification off, no port, Harper not running);
    otherwise logs ``certd.served_verified`` or ``certd.verify_failed`` and says which.
    """
    if not ctx.config.verify.enabled or ctx.config.restart.method == RestartMethod.NONE:
        return None
    harper = make_harper(ctx.config, ctx.harper, interrupted=ctx.interrupted)
    if not harper.ports or harper_pid(harper.root) is None:
        return None

    def sleep(seconds: float) -> None:
        if sdnotify.wait(ctx.interrupted, seconds):
            raise Interrupted("stopped while checking what Harper serves")

    result = harper.verify(fingerprint, sleep=sleep)
    if result.ok:
        logs.emit(
            events.ServedVerified(
                fingerprint=fingerprint,
                ports=dict(harper.ports),
                pid=result.pid,
                seconds=round(result.seconds, 2),
                failed_handshakes=result.failed_handshakes,
                method="watch-only",
            )
        )
        return True
    logs.emit(
        events.VerifyFailed(
            generation=None,
            detail=f"watch-only: Harper does not serve the live set: {result.describe()}",
        )
    )
    return False


def on_start(ctx: Context) -> str | None:
    """What the daemon does once at start for the store: say when it only watches (the
    reason, or None), and apply the retention to processed/ and rejected/."""
    why = foreign(ctx.store)
    if why is not None:
        logs.emit(
            events.WatchOnly(
                reason=why,
                live=[str(p) for p in ctx.store.live_paths().values()],
                does="validates, warns about expiry and invalid sets; never writes the live files",
            )
        )
    with contextlib.suppress(OSError):
        retention.prune_kept(ctx.paths, ctx.config.retention, ctx.clock(), ctx.interrupted)
    return why


def run_renewal(ctx: Context, interrupted: threading.Event | None) -> tuple[int | None, str]:
    return run_command(ctx.config.renew.command, ctx.config.renew.timeout, interrupted)
