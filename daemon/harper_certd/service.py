"""The service: wires discover, source, validate, swap and restart into operations.

``install``, ``rollback`` and ``status`` here are what the CLI commands and the
daemon both call; each returns a frozen outcome, and the CLI maps it to an exit
status.  Every operation first completes or undoes an interrupted swap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from harper_certd import discover, fsio, load
from harper_certd.config import Config, Paths, resolve_paths
from harper_certd.errors import ConfigError, SwapError
from harper_certd.problems import Problem, problem
from harper_certd.restart import Applied, Applier, command_applier, none_applier, run_command
from harper_certd.schedule import RestartBudget
from harper_certd.source import Source, SourceRefused, read_source
from harper_certd.swap import Generation, Recovery, SetBytes, Store, require_no_foreign_files
from harper_certd.validate import (
    Inputs,
    Purpose,
    Report,
    SetPaths,
    fingerprint,
    summarize,
    validate,
)

log = structlog.get_logger("harper_certd")
ADOPTION_SETTLE = 1.0
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Managed:
    """The certificate set this daemon manages, and what it must be fit for."""

    live: SetPaths
    purpose: Purpose
    hostnames: tuple[str, ...]
    uses: tuple[str, ...]
    verbatim_names: tuple[str, ...] = ()


def managed_set(harper: discover.HarperConfig) -> Managed:
    entries = harper.file_entries()
    if not entries:
        notes = " ".join(e.note for e in harper.entries if e.note)
        raise ConfigError(
            f"{harper.config_path} names no certificate files to manage. {notes}".strip()
        )
    primary = next((e for e in entries if e.purpose is Purpose.CLUSTER), entries[0])
    same = [e for e in entries if e.paths == primary.paths]
    purpose = (
        Purpose.CLUSTER if any(e.purpose is Purpose.CLUSTER for e in same) else primary.purpose
    )
    hostnames = tuple(dict.fromkeys(h for e in same if not e.insecure for h in e.hostnames))
    uses = tuple(dict.fromkeys(u for e in same for u in e.uses))
    verbatim = tuple(dict.fromkeys(n for e in same for n in e.verbatim_names))
    assert primary.paths is not None
    return Managed(primary.paths, purpose, hostnames, uses, verbatim)


@dataclass(frozen=True, slots=True)
class Context:
    config: Config
    paths: Paths
    harper: discover.HarperConfig
    managed: Managed
    store: Store
    applier: Applier
    clock: Clock = utc_now
    budget: RestartBudget = field(default_factory=lambda: RestartBudget(3))
    interrupted: threading.Event | None = None

    def trusted_uids(self) -> set[int]:
        uids = {0, os.geteuid()}
        for path in (self.managed.live.key, self.paths.harper_root):
            try:
                uids.add(os.stat(path).st_uid)
            except OSError:
                continue
        return uids


def make_applier(
    config: Config,
    harper: discover.HarperConfig,
    store: Store,
    interrupted: threading.Event | None = None,
) -> Applier:
    method = config.restart.method
    if method == "none":
        return none_applier
    if method == "command" and not config.verify.enabled:
        return command_applier(config.restart.command, config.restart.timeout, interrupted)
    from harper_certd.harper import harper_applier

    return harper_applier(config, harper, store, interrupted)


def build_context(
    config: Config,
    *,
    clock: Clock = utc_now,
    applier: Applier | None = None,
    interrupted: threading.Event | None = None,
) -> Context:
    paths = resolve_paths(config)
    harper = discover.load_config(paths.harper_root)
    managed = managed_set(harper)
    store = Store(paths.state, managed.live)
    store.ensure()
    return Context(
        config,
        paths,
        harper,
        managed,
        store,
        applier or make_applier(config, harper, store, interrupted),
        clock,
        RestartBudget(config.restart.restarts_per_hour),
        interrupted,
    )


# --- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    status: str  # installed, unchanged, refused, rolled_back, rollback_failed
    problems: tuple[Problem, ...] = ()
    generation: str | None = None
    previous: str | None = None
    applied: Applied | None = None
    rollback: Applied | None = None
    recovery: Recovery | None = None
    kept_at: Path | None = None  # where the source went (processed/ or rejected/)
    report: Report | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "generation": self.generation,
            "previous": self.previous,
            "problems": [p.as_dict() for p in self.problems],
            "applied": None if self.applied is None else self.applied.detail,
            "kept_at": None if self.kept_at is None else str(self.kept_at),
        }


# --- the source's fate: never deleted unexamined -------------------------------------------


def _stamp(clock: Clock) -> str:
    return clock().strftime("%Y%m%dT%H%M%S%fZ")


def _keep(ctx: Context, folder: Path, where: Path, lineage: bool) -> Path:
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = where / f"{_stamp(ctx.clock)}-{folder.name}"
    if lineage:
        # A certbot lineage stays where certbot keeps it; we keep a copy of what we saw.
        shutil.copytree(folder, dest, symlinks=False)
    else:
        try:
            os.rename(folder, dest)
        except OSError:
            shutil.move(str(folder), dest)
    fsio.fsync_dir(where)
    return dest


def _reject(
    ctx: Context,
    folder: Path,
    problems: tuple[Problem, ...],
    stage: str,
    lineage: bool,
    report: Report | None = None,
) -> Path | None:
    if not folder.exists():
        return None
    dest = _keep(ctx, folder, ctx.paths.rejected, lineage)
    reason = {
        "source": str(folder),
        "time": ctx.clock().isoformat(),
        "stage": stage,
        "problems": [p.as_dict() for p in problems],
        "certificate": None if report is None else report.as_dict()["certificate"],
    }
    fsio.write_new(dest / "reason.json", json.dumps(reason, indent=2).encode(), mode=0o600)
    return dest


# --- install ---------------------------------------------------------------------------


def _read_live(ctx: Context) -> SetBytes:
    live = ctx.managed.live
    try:
        return SetBytes(
            load.read_bounded(live.cert), load.read_bounded(live.key), load.read_bounded(live.ca)
        )
    except load.Unreadable as exc:
        raise SwapError(f"the live set cannot be read: {exc}") from None


def _validate(ctx: Context, data: SetBytes, names: tuple[str, str, str]) -> Report:
    return validate(
        Inputs(data.cert, data.key, data.ca, *names),
        at=ctx.clock(),
        purpose=ctx.managed.purpose,
        hostnames=ctx.managed.hostnames,
        expiry_warning_days=ctx.config.expiry_warning_days,
        node_names=ctx.managed.verbatim_names,
    )


def _older_than_live(ctx: Context, new: Report) -> Problem | None:
    # Only the live leaf's names and expiry matter here: no need to validate the live set.
    try:
        data = load.read_bounded(ctx.managed.live.cert)
        live = summarize(load.parse_certificates(data, name="live certificate").certs[0])
    except load.Unreadable:
        return None
    if new.certificate is None:
        return None
    same_names = set(live.dns_names) == set(new.certificate.dns_names) and set(
        live.ip_addresses
    ) == set(new.certificate.ip_addresses)
    if same_names and new.certificate.not_after < live.not_after:
        return problem(
            "older_than_live",
            f"The new certificate expires {new.certificate.not_after.isoformat()}, before the "
            f"live one ({live.not_after.isoformat()}) for the same names; "
            "use --force-older to install it anyway.",
        )
    return None


def _same_as_live(ctx: Context, data: SetBytes) -> bool:
    current = ctx.store.current()
    if current is None:
        return False
    try:
        return current.read() == data
    except OSError:
        return False


def install(ctx: Context, folder: Path, *, force_older: bool = False) -> InstallOutcome:
    """Validate the set in ``folder``, swap it in, make Harper use it, roll back if not."""
    with fsio.locked(ctx.store.lock_path):
        recovery = ctx.store.recover()
        return _install_locked(ctx, folder, force_older, recovery)


Judged = tuple[Source, Report, tuple[Problem, ...]]


def _judge(
    ctx: Context, folder: Path, force_older: bool, recovery: Recovery | None
) -> Judged | InstallOutcome:
    """The source, read and validated; or the refusal (the source then kept in rejected/)."""
    try:
        source: Source = read_source(
            folder,
            trusted_uids=ctx.trusted_uids(),
            ca_fallback=ctx.config.ca_file or ctx.managed.live.ca,
        )
    except SourceRefused as exc:
        refused = (problem(exc.code, str(exc)),)
        lineage = folder.resolve().parent.name == "live"
        kept = (
            _reject(ctx, folder, refused, "source", lineage)
            if exc.code != "source_unreadable" or folder.is_dir()
            else None
        )
        log.error(
            "certd.set_refused",
            source=str(folder),
            codes=[exc.code],
            reason=str(exc),
            kept_at=str(kept) if kept else None,
        )
        return InstallOutcome("refused", refused, recovery=recovery, kept_at=kept)
    names = tuple(str(folder / n) for n in ("certificate", "private key", "CA file"))
    report = _validate(ctx, source.data, (names[0], names[1], names[2]))
    problems = report.problems
    if report.valid and not force_older and (older := _older_than_live(ctx, report)):
        problems = (*problems, older)
    errors = tuple(p for p in problems if p.severity.value == "error")
    if errors:
        kept = _reject(ctx, folder, problems, "validate", source.is_certbot_lineage, report)
        log.error(
            "certd.set_refused",
            source=str(folder),
            codes=[p.code for p in errors],
            reason=errors[0].message,
            kept_at=str(kept) if kept else None,
        )
        return InstallOutcome("refused", problems, recovery=recovery, kept_at=kept, report=report)
    return source, report, problems


def install_newest(ctx: Context, folders: list[Path]) -> InstallOutcome | None:
    """A burst of sets is one rotation: each is judged, the newest valid one is installed.

    Newest: issued last (notBefore, then notAfter), then written last.

    Older valid sets are kept in processed/ as superseded; refused ones in rejected/.
    """
    with fsio.locked(ctx.store.lock_path):
        recovery = ctx.store.recover()
        judged: list[tuple[Path, Judged]] = []
        for folder in folders:
            verdict = _judge(ctx, folder, False, recovery)
            if not isinstance(verdict, InstallOutcome):
                judged.append((folder, verdict))
        if not judged:
            return None

        def newest(item: tuple[Path, Judged]) -> tuple[dt.datetime, dt.datetime, int]:
            folder, (_, report, _) = item
            assert report.certificate is not None
            try:
                written = folder.stat().st_mtime_ns
            except OSError:
                written = 0
            return report.certificate.not_before, report.certificate.not_after, written

        judged.sort(key=newest)
        chosen, verdict = judged[-1]
        for folder, (source, _, _) in judged[:-1]:
            kept = _keep(ctx, folder, ctx.paths.processed, source.is_certbot_lineage)
            log.info("certd.set_superseded", source=str(folder), by=str(chosen), kept_at=str(kept))
        return _install_judged(ctx, chosen, verdict, recovery)


def _install_locked(
    ctx: Context, folder: Path, force_older: bool, recovery: Recovery | None
) -> InstallOutcome:
    verdict = _judge(ctx, folder, force_older, recovery)
    if isinstance(verdict, InstallOutcome):
        return verdict
    return _install_judged(ctx, folder, verdict, recovery)


def _install_judged(
    ctx: Context, folder: Path, verdict: Judged, recovery: Recovery | None
) -> InstallOutcome:
    store = ctx.store
    require_no_foreign_files(store)
    source, report, problems = verdict
    if _same_as_live(ctx, source.data):
        kept = _keep(ctx, folder, ctx.paths.processed, source.is_certbot_lineage)
        log.info("certd.set_unchanged", source=str(folder), kept_at=str(kept))
        return InstallOutcome(
            "unchanged",
            problems,
            store.current_id(),
            recovery=recovery,
            kept_at=kept,
            report=report,
        )

    assert report.certificate is not None
    meta = {
        "fingerprint": report.certificate.sha256,
        "subject": report.certificate.subject,
        "not_after": report.certificate.not_after.isoformat(),
        "ca_fingerprints": [fingerprint(c) for c in report.ca_certs],
        "warnings": [p.code for p in problems],
    }
    try:
        adopted = store.adopt(lambda: _read_live(ctx), {"source": "live files"})
        if adopted is not None:
            log.info("certd.live_adopted", generation=adopted.id, live=str(ctx.managed.live.cert))
            if ctx.config.restart.method in ("auto", "hot-reload"):
                # Harper's watchers move from the replaced files to the links' targets a
                # few ms after adoption; a flip before that goes unseen (measured: 6 of 6
                # misses without this pause, 0 of 3 with it). Once per node, ever.
                time.sleep(ADOPTION_SETTLE)
        previous = store.current()
        gen = store.stage(source.data, meta, str(folder))
        store.commit_flip(gen)
    except SwapError as exc:
        # Whatever was written is undone; the live set never changed. The source stays
        # where it is (it was not found wanting) for the next attempt.
        with contextlib.suppress(SwapError, OSError):
            store.recover()
        with contextlib.suppress(OSError):
            store.record("install", "failed", source=str(folder), error=str(exc))
        log.error("certd.swap_failed", source=str(folder), error=str(exc))
        raise
    applied = ctx.applier(previous, gen)
    if applied.ok:
        store.finish(gen, "installed", method=applied.method)
        # Said before the source is moved: the set is live whatever happens to the folder.
        log.info(
            "certd.set_installed",
            generation=gen.id,
            fingerprint=meta["fingerprint"],
            subject=meta["subject"],
            not_after=meta["not_after"],
            method=applied.method,
            seconds=round(applied.seconds, 2),
            source=str(folder),
        )
        kept = _keep(ctx, folder, ctx.paths.processed, source.is_certbot_lineage)
        pruned = store.prune(ctx.config.generations_kept)
        for gen_id in pruned:
            log.info("certd.generation_pruned", generation=gen_id)
        return InstallOutcome(
            "installed",
            problems,
            gen.id,
            previous.id if previous else None,
            applied,
            recovery=recovery,
            kept_at=kept,
            report=report,
        )
    # Harper could not use the new set: put the previous one back, and say so loudly.
    back = _roll_back_to(ctx, previous, gen, reason=applied.detail)
    after = (problem("applied_failed", f"After the swap: {applied.detail}"),)
    rejected_at = _reject(
        ctx, folder, (*problems, *after), "after_swap", source.is_certbot_lineage, report
    )
    status = "rolled_back" if back is not None and back.ok else "rollback_failed"
    return InstallOutcome(
        status,
        (*problems, *after),
        gen.id,
        previous.id if previous else None,
        applied,
        back,
        recovery,
        rejected_at,
        report,
    )


def _switch_back(ctx: Context, target: Generation, leaving: Generation) -> Applied:
    """Make ``target`` live again the way an install does, and make Harper use it."""
    ctx.store.begin_rollback(target)
    ctx.store.commit_flip(target, op="rollback")
    applied = ctx.applier(leaving, target)
    if applied.ok:
        ctx.store.finish(target, "restored", op="rollback", replaced=leaving.id)
    else:
        ctx.store.finish(target, "restore_unverified", op="rollback", failure=applied.detail)
    return applied


def _roll_back_to(
    ctx: Context, target: Generation | None, failed: Generation, reason: str
) -> Applied | None:
    store = ctx.store
    if target is None:
        log.critical(
            "certd.rollback_failed",
            generation=failed.id,
            reason="no earlier generation to return to",
            failure=reason,
        )
        store.finish(failed, "failed", op="install")
        return None
    # Marked first: a crash during the rollback must not find it "pending" and keep it.
    store.update_meta(failed, outcome="rolled_back", failure=reason)
    back = _switch_back(ctx, target, failed)
    if back.ok:
        log.error(
            "certd.rolled_back",
            failed_generation=failed.id,
            restored_generation=target.id,
            failure=reason,
            fingerprint=target.meta.get("fingerprint"),
        )
    else:
        log.critical(
            "certd.rollback_failed",
            failed_generation=failed.id,
            restored_generation=target.id,
            failure=reason,
            rollback_failure=back.detail,
        )
    return back


# --- rollback by hand ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    status: str  # rolled_back, rollback_failed, nothing
    generation: str | None
    previous: str | None
    applied: Applied | None
    message: str


def rollback(ctx: Context, gen_id: str | None = None) -> RollbackOutcome:
    with fsio.locked(ctx.store.lock_path):
        ctx.store.recover()
        store = ctx.store
        current = store.current()
        if current is None:
            return RollbackOutcome(
                "nothing", None, None, None, "no generation is live yet: nothing to roll back"
            )
        target_id = gen_id or current.meta.get("replaced")
        if not target_id:
            return RollbackOutcome(
                "nothing",
                None,
                current.id,
                None,
                f"generation {current.id} has no earlier generation",
            )
        try:
            target = store.generation(target_id)
        except Exception as exc:
            raise SwapError(f"generation {target_id} is not kept: {exc}") from None
        if target.id == current.id:
            return RollbackOutcome(
                "nothing", current.id, current.id, None, f"generation {current.id} is already live"
            )
        report = _validate(
            ctx,
            target.read(),
            tuple(
                str(target.file(r))
                for r in ("cert", "key", "ca")  # type: ignore[arg-type]
            ),
        )
        if not report.valid:
            codes = ", ".join(report.codes)
            return RollbackOutcome(
                "refused",
                target.id,
                current.id,
                None,
                f"generation {target.id} is not valid now ({codes})",
            )
        applied = _switch_back(ctx, target, current)
        if applied.ok:
            log.warning(
                "certd.operator_rollback",
                restored_generation=target.id,
                from_generation=current.id,
            )
            return RollbackOutcome(
                "rolled_back",
                target.id,
                current.id,
                applied,
                f"generation {target.id} is live again",
            )
        log.critical(
            "certd.rollback_failed", restored_generation=target.id, rollback_failure=applied.detail
        )
        return RollbackOutcome(
            "rollback_failed",
            target.id,
            current.id,
            applied,
            f"generation {target.id} is in place but Harper did not take it: {applied.detail}",
        )


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    live: Report | None
    current: str | None
    generations: tuple[Generation, ...]
    history: tuple[dict[str, Any], ...]
    recovery: Recovery | None
    live_paths: dict[str, str] = field(default_factory=dict)

    def as_dict(self, at: dt.datetime) -> dict[str, Any]:
        live = None
        if self.live is not None and self.live.certificate is not None:
            cert = self.live.certificate
            live = {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "sha256": cert.sha256,
                "not_after": cert.not_after.isoformat(),
                "days_left": round(cert.days_left(at), 2),
                "valid": self.live.valid,
                "problems": [p.as_dict() for p in self.live.problems],
            }
        return {
            "live": live,
            "live_paths": self.live_paths,
            "current_generation": self.current,
            "generations": [
                {
                    "id": g.id,
                    "current": g.id == self.current,
                    **{
                        k: g.meta.get(k)
                        for k in (
                            "created",
                            "outcome",
                            "fingerprint",
                            "subject",
                            "not_after",
                            "source",
                        )
                    },
                }
                for g in self.generations
            ],
            "history": list(self.history),
            "recovered": None if self.recovery is None else self.recovery.outcome,
        }


def status(ctx: Context) -> Status:
    with fsio.locked(ctx.store.lock_path):
        recovery = ctx.store.recover()
    try:
        live: Report | None = _validate(
            ctx,
            _read_live(ctx),
            tuple(
                str(p)
                for p in (
                    ctx.managed.live.cert,  # type: ignore[arg-type]
                    ctx.managed.live.key,
                    ctx.managed.live.ca,
                )
            ),
        )
    except SwapError:
        live = None
    return Status(
        live,
        ctx.store.current_id(),
        tuple(ctx.store.generations()),
        tuple(ctx.store.history(10)),
        recovery,
        {r: str(p) for r, p in ctx.store.live_paths().items()},
    )


# --- the daemon's other duties ---------------------------------------------------------------


def live_report(ctx: Context) -> Report:
    """The live set, validated for its use; SwapError when it cannot be read."""
    live = ctx.managed.live
    return _validate(ctx, _read_live(ctx), (str(live.cert), str(live.key), str(live.ca)))


def _digests(data: SetBytes) -> dict[str, str]:
    return {r: hashlib.sha256(data.role(r)).hexdigest() for r in ("cert", "key", "ca")}


def _last_good(ctx: Context) -> Generation | None:
    for gen in reversed(ctx.store.generations()):
        try:
            data = gen.read()
        except OSError:
            continue
        if gen.meta.get("digests") not in (None, _digests(data)):
            continue  # changed in place since it was written
        if _validate(ctx, data, ("generation certificate", "key", "CA file")).valid:
            return gen
    return None


def handle_live_change(ctx: Context) -> None:
    """The live files changed, not by us: adopt a valid set, report (or restore) an invalid one."""
    store = ctx.store
    with fsio.locked(store.lock_path):
        store.recover()
        try:
            data: SetBytes | None = _read_live(ctx)
        except SwapError:
            data = None
        report = (
            None
            if data is None
            else _validate(
                ctx,
                data,
                tuple(str(p) for p in store.live_paths().values()),  # type: ignore[arg-type]
            )
        )
        current = store.current()
        if data is not None and report is not None and report.valid:
            if (
                current is not None
                and store.managed()
                and current.meta.get("digests") == _digests(data)
            ):
                return  # only touched: the content is the live generation's
            assert report.certificate is not None
            gen = store.take_live(
                data,
                {
                    "source": "changed by hand",
                    "fingerprint": report.certificate.sha256,
                    "subject": report.certificate.subject,
                    "not_after": report.certificate.not_after.isoformat(),
                },
            )
            log.warning(
                "certd.live_changed",
                generation=gen.id,
                fingerprint=report.certificate.sha256,
                subject=report.certificate.subject,
            )
            applied = ctx.applier(current, gen)
            if not applied.ok:
                log.error("certd.verify_failed", generation=gen.id, detail=applied.detail)
            return
        codes = (
            ["live_unreadable"]
            if report is None
            else [p.code for p in report.problems if p.severity.value == "error"]
        )
        log.error(
            "certd.live_invalid",
            codes=codes,
            problems=[]
            if report is None
            else [p.message for p in report.problems if p.severity.value == "error"],
            action=ctx.config.on_invalid_live,
        )
        if ctx.config.on_invalid_live != "restore":
            return
        target = _last_good(ctx)
        if target is None:
            log.critical("certd.rollback_failed", reason="no kept generation is valid to restore")
            return
        store.restore(target)
        applied = ctx.applier(None, target)
        log.warning(
            "certd.live_restored",
            generation=target.id,
            fingerprint=target.meta.get("fingerprint"),
            verified=applied.ok,
            detail=applied.detail,
        )


def verify_current(ctx: Context) -> Applied | None:
    """After a recovered swap: make Harper use the live generation and check it."""
    current = ctx.store.current()
    if current is None:
        return None
    applied = ctx.applier(None, current)
    if not applied.ok:
        log.error("certd.verify_failed", generation=current.id, detail=applied.detail)
    return applied


def run_renewal(ctx: Context, interrupted: threading.Event | None) -> tuple[int | None, str]:
    return run_command(ctx.config.renew.command, ctx.config.renew.timeout, interrupted)
