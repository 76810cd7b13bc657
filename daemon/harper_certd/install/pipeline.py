"""The install pipeline: judged -> guarded (peers) -> staged -> flipped -> applied (Harper)
-> proved (served, then peers) -> filed.

Each step is a function of the :class:`Change` under way that returns the next step or an
outcome (``InstallOutcome``); :func:`run` drives them.  ``guard`` (the peers asked before
any change) and ``prove`` (the peers asked after Harper serves the set) are the same for
every change of a live set (``proof.py``): an install here, a rollback (``rollback.py``),
a swap recovered after a crash and a restored set (``live.py``).

The entry points take the store's lock and complete an interrupted swap first:
``install`` (the command line), ``install_newest`` (a burst in the daemon),
``judge_sources`` and ``install_judged_newest`` (a burst judged over several cycles).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harper_certd import events, hazards, logs, peerhold, retention
from harper_certd.adoption import foreign
from harper_certd.errors import StateError, SwapError
from harper_certd.generation import Generation, cert_meta, leaf_meta
from harper_certd.install import filing, flip
from harper_certd.install.context import Context, read_live
from harper_certd.install.judge import Judged, judge, judge_each, same_as_live
from harper_certd.install.outcomes import InstallOutcome, InstallStatus
from harper_certd.install.proof import Guard, Proof, guard, only_unreachable, prove
from harper_certd.install.rollback import after_failed_install, prove_recovered_locked
from harper_certd.journal import Outcome
from harper_certd.problems import Problem, problem
from harper_certd.recover import Recovery, recover
from harper_certd.source import Source
from harper_certd.swap import require_no_foreign_files
from harper_certd.validate import Report, fingerprint

# --- the change under way and its steps ------------------------------------------------------


@dataclass(slots=True)
class Change:
    """One judged set on its way to live; each step reads it and adds what it learnt."""

    ctx: Context
    folder: Path
    source: Source
    report: Report
    problems: tuple[Problem, ...]
    recovery: Recovery | None
    force_peers: bool = False
    hold_peers: bool = True  # False: held for its peers before, no retries within the call
    guard: Guard | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    previous_before: Generation | None = None  # live before the flip (its name, say)
    gen: Generation | None = None  # the new generation, once flipped
    previous: Generation | None = None  # the generation it replaced
    proof: Proof | None = None
    said: set[str] = field(default_factory=set)  # prune failures already said

    def outcome(self, status: InstallStatus, **fields: Any) -> InstallOutcome:
        return InstallOutcome(
            status, self.problems, recovery=self.recovery, report=self.report, **fields
        )


class Step(Protocol):
    def __call__(self, change: Change, /) -> Step | InstallOutcome: ...


def run(change: Change, step: Step | None = None) -> InstallOutcome:
    """Drive ``change`` from ``step`` (default: just judged) to its outcome."""
    at: Step | InstallOutcome = judged if step is None else step
    while not isinstance(at, InstallOutcome):
        at = at(change)
    return at


def judged(c: Change) -> Step | InstallOutcome:
    """Valid: refused only when the live files are not ours (watch-only); nothing to do
    when the same set is live already (the source filed, "unchanged")."""
    ctx, store = c.ctx, c.ctx.store
    require_no_foreign_files(store)
    if (why := foreign(store)) is not None:
        # Watch-only: these files belong to someone else (or cannot be written). The source
        # stays where it is; nothing is written anywhere.
        refused = problem("live_not_managed", f"Not installed: {why}; harper-certd only watches.")
        logs.emit(
            events.SetRefused(
                source=str(c.folder),
                codes=["live_not_managed"],
                reason=refused.message,
                kept_at=None,
                now=ctx.clock().isoformat(),
            )
        )
        c.problems = (*c.problems, refused)
        return c.outcome(InstallStatus.REFUSED)
    if same_as_live(ctx, c.source.data):
        kept, filing_error = filing.file_installed(ctx, c.folder, c.source, store.current_id())
        logs.emit(events.SetUnchanged(source=str(c.folder), kept_at=str(kept) if kept else None))
        return c.outcome(
            InstallStatus.UNCHANGED, generation=store.current_id(), kept_at=kept, error=filing_error
        )
    return guarded


def guarded(c: Change) -> Step | InstallOutcome:
    """The peers asked before anything changes; a refusal files the source in rejected/.

    Peers without an answer that might refuse the set (``peer_unreachable`` only) hold it
    where it is (``held_for_peers``, ``certd.set_held_for_peers``; the daemon re-tries it),
    never refuse it, until the live leaf reaches its last warning threshold
    (``peerhold.hold_until``): then it goes ahead past them (``certd.peer_hold_expired``).
    """
    c.guard = guard(
        c.ctx, c.source.data, subject=str(c.folder), force=c.force_peers, hold=c.hold_peers
    )
    if c.guard.refusals and only_unreachable(c.guard.refusals):
        return held_for_peers(c)
    if c.guard.refusals:
        found = (*c.problems, *c.guard.refusals)
        return filing.refuse(c.ctx, c.folder, found, "peers", c.source, c.recovery, c.report)
    return staged


def held_for_peers(c: Change) -> Step | InstallOutcome:
    """Held (the source stays), or past the hold's end: on to the swap, said critically."""
    assert c.guard is not None
    ctx = c.ctx
    now = ctx.clock()
    try:
        live_cert: bytes | None = read_live(ctx).cert
    except SwapError:
        live_cert = None
    until = peerhold.hold_until(live_cert, ctx.config.expiry.warn_days, now)
    down = list(c.guard.check.without_answer)
    if now >= until:
        logs.emit(
            events.PeerHoldExpired(
                source=str(c.folder),
                peers=down,
                until=until.isoformat(),
                decision="installed past the peers without an answer: the live leaf is at its "
                "last warning threshold; the proof after the swap still asks every peer",
            )
        )
        c.guard = dataclasses.replace(c.guard, refusals=())
        return staged
    detail = " ".join(p.message for p in c.guard.refusals)
    logs.emit(
        events.SetHeldForPeers(
            source=str(c.folder),
            peers=down,
            detail=detail,
            until=until.isoformat(),
            # the daemon (a context that can be interrupted) takes it again; a command does not
            next_try=None
            if ctx.interrupted is None
            else (now + dt.timedelta(seconds=ctx.config.peers.retry_seconds)).isoformat(),
        )
    )
    c.problems = (*c.problems, *c.guard.refusals)
    return c.outcome(
        InstallStatus.HELD_FOR_PEERS,
        source=c.folder,
        held_until=until.isoformat(),
        held_for=tuple(down),
    )


def staged(c: Change) -> Step | InstallOutcome:
    """What the generation records of the set (its metadata), and what is live now."""
    certificate = c.report.certificate
    assert certificate is not None  # a valid report has its certificate
    # The validated chain's leaf is the certificate file's first: not parsed again.
    chain = c.report.chain_certs
    c.meta = {
        **(leaf_meta(chain[0]) if chain else cert_meta(c.source.data.cert)),
        "fingerprint": certificate.sha256,
        "subject": certificate.subject,
        "not_after": certificate.not_after.isoformat(),
        "ca_fingerprints": [fingerprint(ca) for ca in c.report.ca_certs],
        "warnings": [p.code for p in c.problems],
    }
    try:
        c.previous_before = c.ctx.store.current()
    except StateError:
        c.previous_before = None
    return flipped


def flipped(c: Change) -> Step | InstallOutcome:
    """Written and made live by one flip; a failed swap changed nothing ("swap_failed": the
    source stays for the next attempt, the caller says so)."""
    store = c.ctx.store
    try:
        c.gen = flip.swap_in(c.ctx, c.source.data, c.meta, c.folder, c.said)
        live = c.ctx.managed.live
        hazards.remember_written(live.cert, c.source.data.cert)  # the next install reads
        hazards.remember_written(live.ca, c.source.data.ca)  # neither back (nor a status)
        replaced = c.gen.meta.get("replaced")
        before = c.previous_before
        if replaced is None:
            c.previous = None
        elif before is not None and before.id == str(replaced):
            c.previous = before  # read under the same lock in ``staged``: not read again
        else:
            c.previous = store.generation(str(replaced))  # an adoption came between
    except (SwapError, StateError) as exc:
        with contextlib.suppress(OSError):
            store.history.record("install", "failed", source=str(c.folder), error=str(exc))
        return c.outcome(
            InstallStatus.SWAP_FAILED,
            error=str(exc),
            cause=flip.swap_cause(exc),
            source=c.folder,
        )
    return applied


def applied(c: Change) -> Step | InstallOutcome:
    """Harper made to use the set and seen serving it (the applier), then the peers asked."""
    assert c.gen is not None
    done = c.ctx.applier(c.previous, c.gen)
    assert c.guard is not None
    c.proof = prove(c.ctx, done, ask_peers=c.guard.check.checked, before=c.guard.check)
    return proved if c.proof.ok else rolled_back


def proved(c: Change) -> Step | InstallOutcome:
    """Served and accepted: recorded, and said before the source is moved (the set is live
    whatever happens to the folder); a changed CN or first SAN is said with Harper's stale
    record."""
    assert c.gen is not None
    assert c.proof is not None
    assert c.guard is not None
    done = c.proof.applied
    c.ctx.store.finish(c.gen, Outcome.INSTALLED, method=done.method)
    logs.emit(
        events.SetInstalled(
            generation=c.gen.id,
            fingerprint=c.meta["fingerprint"],
            subject=c.meta["subject"],
            not_after=c.meta["not_after"],
            method=done.method,
            verified=done.verified,
            seconds=round(done.seconds, 2),
            source=str(c.folder),
            peers=(c.proof.check or c.guard.check).summary(),
        )
    )
    keep_pristine(c)
    renamed = name_change(c.previous or c.previous_before, c.meta)
    if renamed is not None:
        renamed.say(c.ctx, c.gen, verified=done.verified)
    return filed


def keep_pristine(c: Change) -> None:
    """The new generation's pristine copy, written once it is live (``Store.keep_pristine``:
    no live set ever needs its own copy).  A copy that cannot be written (a full disk, say)
    leaves the generation without one, as a power loss would: it cannot then be put back
    after a writer changes it through a live link, and is refused when rolled back to."""
    assert c.gen is not None
    with contextlib.suppress(OSError):
        c.ctx.store.keep_pristine(c.gen, c.source.data)


def filed(c: Change) -> Step | InstallOutcome:
    """The source in processed/, generations pruned: installed."""
    assert c.gen is not None
    assert c.proof is not None
    ctx = c.ctx
    kept, filing_error = filing.file_installed(ctx, c.folder, c.source, c.gen.id)
    flip.prune(ctx, ctx.config.generations_kept, c.said)  # processed/: at the call's end
    return c.outcome(
        InstallStatus.INSTALLED,
        generation=c.gen.id,
        previous=c.previous.id if c.previous else None,
        applied=c.proof.applied,
        kept_at=kept,
        error=filing_error,
    )


def rolled_back(c: Change) -> Step | InstallOutcome:
    """Harper (or a peer) did not take it: the previous set back, said loudly, and the source
    filed in rejected/ with why."""
    assert c.gen is not None
    assert c.proof is not None
    done = c.proof.applied
    back = after_failed_install(c.ctx, c.previous, c.gen, reason=done.detail)
    keep_pristine(c)
    after = (problem("applied_failed", f"After the swap: {done.detail}"), *c.proof.refusals)
    c.problems = (*c.problems, *after)
    rejected_at = filing.reject(c.ctx, c.folder, c.problems, "after_swap", c.source, c.report)
    # Pruned here too (nothing is pruned before a swap): failed installs never pile up.
    flip.prune(c.ctx, c.ctx.config.generations_kept, c.said)
    ok = back is not None and back.ok
    return c.outcome(
        InstallStatus.ROLLED_BACK if ok else InstallStatus.ROLLBACK_FAILED,
        generation=c.gen.id,
        previous=c.previous.id if c.previous else None,
        applied=done,
        rollback=back,
        kept_at=rejected_at,
    )


# --- a changed record name (issue 9 item 15) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameChange:
    """The CN or first SAN changed between two generations (issue 9 item 15)."""

    old_name: str  # "CN=a, SAN=b" of the previous generation
    new_name: str
    stale_record: str | None  # Harper's record left behind (its name), when it changed

    def say(self, ctx: Context, gen: Generation, *, verified: bool) -> None:
        """``certd.name_changed``; the command that removes the stale record only when the
        install was verified (then the old record is stale for sure): given, never run."""
        stale = self.stale_record
        logs.emit(
            events.NameChanged(
                generation=gen.id,
                old_name=self.old_name,
                new_name=self.new_name,
                stale_record=stale,
                command=remove_certificate_command(ctx, stale)
                if stale is not None and verified
                else None,
            )
        )


def name_change(previous: Generation | None, new: dict[str, Any]) -> NameChange | None:
    """Whether the new set's CN or first SAN differs from ``previous``'s.

    Harper files a certificate in ``system.hdb_certificate`` under its CN, or its first
    SAN; a new record name leaves the old record behind, and Harper logs ``key values
    mismatch`` for it at every later TLS update (tests/HARPER-RIG-FINDINGS.md, h).
    """
    if previous is None:
        return None
    old = previous.meta
    if not old.get("record_name") or not new.get("record_name"):
        return None  # a certificate that could not be read: nothing to compare
    if (old.get("cn"), old.get("first_san")) == (new.get("cn"), new.get("first_san")):
        return None

    def label(meta: dict[str, Any]) -> str:
        return f"CN={meta.get('cn') or '-'}, first SAN={meta.get('first_san') or '-'}"

    record = old["record_name"] if old["record_name"] != new["record_name"] else None
    return NameChange(label(old), label(new), None if record is None else str(record))


def remove_certificate_command(ctx: Context, record: str) -> str:
    """The Operations API call that removes Harper's record ``record``: printed, never run.

    On Harper 4.7.29 ``remove_certificate`` also deletes the record's private key file when
    no other record names it (measured in issue 9), which may be the key harper-certd
    manages; with another record naming the same key file only the record goes (measured in
    tests/test_harper_integration.py).  So the operator runs it after ``list_certificates``.
    """
    body = json.dumps({"operation": "remove_certificate", "name": record})
    harper = ctx.harper
    if harper.operations_socket is not None:
        where = f"--unix-socket {harper.operations_socket} http://localhost/"
    else:
        where = f"http://127.0.0.1:{harper.operations_port or 9925}/"
    return f"curl -u ADMIN -H 'Content-Type: application/json' -d '{body}' {where}"


# --- the entry points --------------------------------------------------------------------------


def _retain(ctx: Context) -> None:
    """The retention applied to processed/ and rejected/ once everything a call files is
    filed (the store's lock held): after a refusal and a superseded set too, not only after
    an install (a newcomer's refused sets piled up past ``retention.keep`` until the next
    install), and once a call, so a storm of refusals gives one ``certd.sources_pruned``
    per loop cycle, not one per set."""
    retention.prune_kept(ctx.paths, ctx.config.retention, ctx.clock(), ctx.interrupted)


def install(
    ctx: Context, folder: Path, *, force_older: bool = False, force_peers: bool = False
) -> InstallOutcome:
    """Validate the set in ``folder``, swap it in, make Harper use it, roll back if not.

    ``force_peers``: install past the peer guard's refusal (``certd.peers_overridden``,
    critical); the proof after the swap still rolls back a set a peer refuses.  Raises
    SwapError when the store could not be written (nothing changed).
    """
    with ctx.store.locked():
        recovery = recover(ctx.store)
        if recovery is not None:  # a swap a crash left: proven before anything else changes
            prove_recovered_locked(ctx, recovery)
        verdict = judge(ctx, folder, force_older, recovery)
        if isinstance(verdict, InstallOutcome):
            outcome = verdict
        else:
            outcome = install_judged(ctx, folder, verdict, recovery, force_peers)
        _retain(ctx)
    if (trust := ctx.trust_store()) is not None:
        outcome = dataclasses.replace(outcome, trust_store=trust.where)
    if outcome.status == InstallStatus.SWAP_FAILED:
        flip.log_swap_failed(str(folder), outcome.cause, outcome.error)
        # The command line says "nothing changed" (exit 1) with the cause.
        raise SwapError(outcome.error or "the swap failed; the live set is unchanged")
    return outcome


def install_judged(
    ctx: Context,
    folder: Path,
    verdict: Judged,
    recovery: Recovery | None,
    force_peers: bool = False,
    hold_peers: bool = True,
) -> InstallOutcome:
    """Run a set judged valid through the pipeline (the store's lock held)."""
    source, report, problems = verdict
    change = Change(ctx, folder, source, report, problems, recovery, force_peers, hold_peers)
    return run(change)


def install_newest(
    ctx: Context,
    folders: list[Path],
    *,
    hold_seconds: float = 0.0,
    on_judged: Callable[[Path, InstallOutcome], None] | None = None,
) -> InstallOutcome | None:
    """A burst of sets is one rotation: each is judged, the newest valid one is installed.

    A set held for its notBefore (see ``judge``) is left in place.  Each set that is held
    or refused is passed to ``on_judged`` with its outcome.

    Newest: issued last (notBefore, then notAfter), then written last.

    Older valid sets are kept in processed/ as superseded; refused ones in rejected/.
    Each source is judged and filed on its own: one that raises is refused by name
    (``judge_failed``) and the others go ahead.  Raises ``Interrupted`` when asked to stop.
    """
    with ctx.store.locked():
        recovery = recover(ctx.store)
        judged_ = judge_each(ctx, folders, recovery, hold_seconds, on_judged)
        outcome = _install_best(ctx, judged_, recovery) if judged_ else None
        _retain(ctx)
        return outcome


def judge_sources(
    ctx: Context,
    folders: list[Path],
    *,
    hold_seconds: float = 0.0,
    on_judged: Callable[[Path, InstallOutcome], None] | None = None,
) -> list[tuple[Path, Judged]]:
    """The valid ones of ``folders`` (read and validated); the others refused and filed.

    For a burst judged over several loop cycles: ``install_judged_newest`` then installs
    the newest of everything judged, one rotation.  Raises ``Interrupted`` when asked to stop.
    """
    with ctx.store.locked():
        judged_ = judge_each(ctx, folders, recover(ctx.store), hold_seconds, on_judged)
        _retain(ctx)  # the refused ones are filed
        return judged_


def install_judged_newest(
    ctx: Context, judged: list[tuple[Path, Judged]], held_for_peers: Collection[Path] = ()
) -> InstallOutcome | None:
    """Install the newest of sets judged valid earlier (``judge_sources``); file the others.

    ``held_for_peers``: sets the daemon holds for their peers already; the guard of such a
    set does not retry within the call (the daemon's next try is its retry)."""
    with ctx.store.locked():
        recovery = recover(ctx.store)
        outcome = _install_best(ctx, judged, recovery, held_for_peers) if judged else None
        _retain(ctx)
        return outcome


def _install_best(
    ctx: Context,
    judged: list[tuple[Path, Judged]],
    recovery: Recovery | None,
    held_for_peers: Collection[Path] = (),
) -> InstallOutcome:
    def newest(item: tuple[Path, Judged]) -> tuple[dt.datetime, dt.datetime, int]:
        folder, (_, report, _) = item
        assert report.certificate is not None
        try:
            written = folder.stat().st_mtime_ns
        except OSError:
            written = 0
        return report.certificate.not_before, report.certificate.not_after, written

    judged = sorted(judged, key=newest)
    chosen, verdict = judged[-1]
    outcome = install_judged(
        ctx, chosen, verdict, recovery, hold_peers=chosen not in held_for_peers
    )
    if outcome.status not in ("installed", "unchanged"):
        return outcome  # the others were superseded by nothing: they stay for the next try
    for folder, (source, _, _) in judged[:-1]:
        kept = filing.file_away(ctx, folder, ctx.paths.processed, source)
        logs.emit(
            events.SetSuperseded(
                source=str(folder), by=str(chosen), kept_at=str(kept) if kept else None
            )
        )
    return outcome
