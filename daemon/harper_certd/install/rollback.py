"""Back to an earlier generation: after an install Harper (or a peer) did not take, and by
hand (``harper-certd rollback``).

A rollback by hand is a change of the live set like an install: the target is judged as it
is now (intact, valid), guarded by the peers (refused with the peers named unless
``force``, then ``certd.peers_overridden``), switched to by one flip, applied, and proven
(served, then the peers).  A target the peers refuse after the switch is switched away
from again, as a failed install is.
"""

from __future__ import annotations

import dataclasses

from harper_certd import events, logs
from harper_certd.adoption import foreign
from harper_certd.errors import StateError, SwapError
from harper_certd.generation import Generation
from harper_certd.install.context import Context
from harper_certd.install.judge import last_good
from harper_certd.install.outcomes import InstallStatus, RollbackOutcome, RollbackStatus
from harper_certd.install.proof import Proof, guard, prove
from harper_certd.install.verdict import validate_set
from harper_certd.journal import Outcome
from harper_certd.recover import Recovery, recover
from harper_certd.restart import Applied
from harper_certd.swap import generation_ids


def switch_back(
    ctx: Context, target: Generation, leaving: Generation, by: str = "daemon"
) -> Applied:
    """Make ``target`` live again the way an install does, and make Harper use it; ``by``
    (``daemon`` or ``operator``) is kept in the history line (the metrics tell them apart)."""
    ctx.store.begin_rollback(target)
    ctx.store.commit_flip(target, op="rollback")
    applied = ctx.applier(leaving, target)
    if applied.ok:
        ctx.store.finish(target, Outcome.RESTORED, op="rollback", replaced=leaving.id, by=by)
    else:
        ctx.store.finish(
            target, Outcome.RESTORE_UNVERIFIED, op="rollback", failure=applied.detail, by=by
        )
    return applied


def after_failed_install(
    ctx: Context, target: Generation | None, failed: Generation, reason: str
) -> Applied | None:
    """Put ``target`` (the generation ``failed`` replaced) back, or the newest intact and
    valid one when ``target`` was written through since; None when there is none.  Says
    ``certd.rolled_back`` (error) or ``certd.rollback_failed`` (critical)."""
    store = ctx.store
    if target is None:
        logs.emit(
            events.RollbackFailed(
                failed_generation=failed.id,
                reason="no earlier generation to return to",
                failure=reason,
            )
        )
        store.finish(failed, Outcome.FAILED, op="install")
        return None
    if (damage := store.intact(target)) is not None:
        # Written through a live path's link since: go back to the newest intact, valid one.
        good = last_good(ctx, exclude={failed.id})
        if good is None:
            logs.emit(
                events.RollbackFailed(
                    failed_generation=failed.id,
                    reason=f"{damage}; no other kept generation is intact and valid",
                    failure=reason,
                )
            )
            store.finish(failed, Outcome.FAILED, op="install")
            return None
        target = good
    # Marked first: a crash during the rollback must not find it "pending" and keep it.
    store.update_meta(failed, outcome=Outcome.ROLLED_BACK, failure=reason)
    back = switch_back(ctx, target, failed)
    if back.ok:
        logs.emit(
            events.RolledBack(
                failed_generation=failed.id,
                restored_generation=target.id,
                failure=reason,
                fingerprint=target.meta.get("fingerprint"),
            )
        )
    else:
        logs.emit(
            events.RollbackFailed(
                failed_generation=failed.id,
                restored_generation=target.id,
                failure=reason,
                reason=back.detail,
            )
        )
    return back


# --- rollback by hand ----------------------------------------------------------------------


def rollback(ctx: Context, gen_id: str | None = None, *, force: bool = False) -> RollbackOutcome:
    """Put generation ``gen_id`` (default: the one the live one replaced) back, if it is
    intact and valid now and the peers would accept it (``force``: even if they would not),
    and make Harper use it."""
    outcome = _rollback(ctx, gen_id, force)
    if (trust := ctx.trust_store()) is not None:
        return dataclasses.replace(outcome, trust_store=trust.where)
    return outcome


def _rollback(ctx: Context, gen_id: str | None, force: bool) -> RollbackOutcome:
    if (why := foreign(ctx.store)) is not None:
        return RollbackOutcome(RollbackStatus.REFUSED, gen_id, None, None, f"watch-only: {why}")
    with ctx.store.locked():
        recovery = recover(ctx.store)
        if recovery is not None:  # a swap a crash left: proven before anything else changes
            prove_recovered_locked(ctx, recovery)
        chosen = _target(ctx, gen_id)
        if isinstance(chosen, RollbackOutcome):
            return chosen
        target, current = chosen
        if (refused := _judged(ctx, target, current)) is not None:
            return refused
        checked = guard(ctx, target.read(), subject=f"generation {target.id}", force=force)
        if checked.refusals:
            named = " ".join(p.message for p in checked.refusals)
            return RollbackOutcome(
                RollbackStatus.REFUSED,
                target.id,
                current.id,
                None,
                f"generation {target.id} refused: {named} (--force rolls back anyway)",
                problems=checked.refusals,
            )
        applied = switch_back(ctx, target, current, by="operator")
        proof = prove(ctx, applied, ask_peers=checked.check.checked, before=checked.check)
        return _proven(ctx, target, current, proof)


def _target(ctx: Context, gen_id: str | None) -> tuple[Generation, Generation] | RollbackOutcome:
    """(the generation to put back, the live one), or why there is nothing to do."""
    store = ctx.store
    current = store.current()
    if current is None:
        return RollbackOutcome(
            RollbackStatus.NOTHING,
            None,
            None,
            None,
            "no generation is live yet: nothing to roll back",
        )
    target_id = gen_id or current.meta.get("replaced")
    if not target_id:
        return RollbackOutcome(
            RollbackStatus.NOTHING,
            None,
            current.id,
            None,
            f"generation {current.id} has no earlier generation",
        )
    kept = generation_ids(store.generations_dir)
    if target_id not in kept:
        # pruned (generations_kept), never written, or not a generation's name at all
        raise SwapError(
            f"generation {target_id} is not kept: the store keeps the last "
            f"{ctx.config.generations_kept} generations (generations_kept); kept now: "
            f"{', '.join(kept) or 'none'}. Fix: roll back to one of those, or install that "
            "set again from its files."
        )
    try:
        target = store.generation(target_id)
    except StateError as exc:
        raise SwapError(str(exc)) from None
    if target.id == current.id:
        return RollbackOutcome(
            RollbackStatus.NOTHING,
            current.id,
            current.id,
            None,
            f"generation {current.id} is already live",
        )
    return target, current


def _judged(ctx: Context, target: Generation, current: Generation) -> RollbackOutcome | None:
    """Refused when the target is damaged (changed since it was written) or not valid now."""
    if (damage := ctx.store.intact(target)) is not None:
        return RollbackOutcome(RollbackStatus.REFUSED, target.id, current.id, None, damage)
    names = tuple(str(target.file(r)) for r in ("cert", "key", "ca"))
    report = validate_set(ctx, target.read(), (names[0], names[1], names[2]))
    if report.valid:
        return None
    codes = ", ".join(report.codes)
    return RollbackOutcome(
        RollbackStatus.REFUSED,
        target.id,
        current.id,
        None,
        f"generation {target.id} is not valid now ({codes})",
    )


def _proven(ctx: Context, target: Generation, current: Generation, proof: Proof) -> RollbackOutcome:
    """The outcome of a rollback once Harper and the peers answered: a set the peers refuse
    after the switch is switched away from again (``certd.rolled_back``)."""
    applied = proof.applied
    if applied.ok:
        logs.emit(
            events.OperatorRollback(restored_generation=target.id, from_generation=current.id)
        )
        return RollbackOutcome(
            RollbackStatus.ROLLED_BACK,
            target.id,
            current.id,
            applied,
            f"generation {target.id} is live again ({applied.detail})"
            if applied.detail
            else f"generation {target.id} is live again",
        )
    if proof.refusals:
        back = after_failed_install(ctx, current, target, reason=applied.detail)
        again = "is live again" if back is not None and back.ok else "could not be confirmed"
        return RollbackOutcome(
            RollbackStatus.ROLLBACK_FAILED,
            target.id,
            current.id,
            applied,
            f"generation {target.id} went live but {applied.detail}; generation {current.id} "
            f"{again}",
            problems=proof.refusals,
        )
    logs.emit(events.RollbackFailed(restored_generation=target.id, reason=applied.detail))
    return RollbackOutcome(
        RollbackStatus.ROLLBACK_FAILED,
        target.id,
        current.id,
        applied,
        f"generation {target.id} is in place but Harper did not take it: {applied.detail}",
    )


# --- a swap completed after a crash, proven like an install ---------------------------------


def prove_recovered_locked(ctx: Context, recovery: Recovery) -> InstallStatus | None:
    """A swap completed after a crash (``recovery.needs_verify``), proven like an install:
    Harper made to use the live generation and seen serving it, then the peers asked.

    An install: ``certd.set_installed`` (its ``source`` the generation's) and INSTALLED, or
    the previous generation put back (``certd.rolled_back``/``rollback_failed``) and
    ROLLED_BACK/ROLLBACK_FAILED.  A rollback: ``certd.verify_failed`` when not proven.
    None when nothing is live or nothing needs proving.  The caller holds the store's lock
    (the daemon at start, ``install`` and ``rollback`` after their own ``recover``).
    """
    if not recovery.needs_verify:
        return None
    current = ctx.store.current()
    if current is None:
        return None
    previous = _replaced(ctx, current)
    proof = prove(ctx, ctx.applier(previous, current), ask_peers=True)
    applied = proof.applied
    if recovery.op != "install":
        if not applied.ok:
            logs.emit(events.VerifyFailed(generation=current.id, detail=applied.detail))
        return None
    if applied.ok:
        _say_installed(current, applied, proof)
        return InstallStatus.INSTALLED
    back = after_failed_install(ctx, previous, current, reason=applied.detail)
    ok = back is not None and back.ok
    return InstallStatus.ROLLED_BACK if ok else InstallStatus.ROLLBACK_FAILED


def _replaced(ctx: Context, gen: Generation) -> Generation | None:
    replaced = gen.meta.get("replaced")
    if replaced is None:
        return None
    try:
        return ctx.store.generation(str(replaced))
    except (StateError, OSError, ValueError):
        return None


def _say_installed(gen: Generation, applied: Applied, proof: Proof) -> None:
    """``certd.set_installed`` for a generation recovered after a crash (the same keys as
    an install's; ``source`` is what the generation recorded)."""
    meta = gen.meta
    logs.emit(
        events.SetInstalled(
            generation=gen.id,
            fingerprint=str(meta.get("fingerprint", "")),
            subject=str(meta.get("subject", "")),
            not_after=str(meta.get("not_after", "")),
            method=applied.method,
            verified=applied.verified,
            seconds=round(applied.seconds, 2),
            source=str(meta.get("source", "")),
            peers=None if proof.check is None else proof.check.summary(),
        )
    )
