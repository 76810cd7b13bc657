"""The guard before a change of a live set and the proof after it, the same for every change:
an install, a rollback (by hand or after a failed install), a swap recovered after a
crash, a set restored by the daemon.

The guard asks every replication peer whether it would accept the set (``peers.check_set``,
"before"; an unreachable peer is held for, then a problem); the proof, once Harper serves
the set (the applier's verification), asks them again ("after").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harper_certd import events, logs, peerhold, peers
from harper_certd.errors import SwapError
from harper_certd.install.context import Context, read_live
from harper_certd.problems import Problem
from harper_certd.restart import Applied
from harper_certd.roles import SetBytes


@dataclass(frozen=True, slots=True)
class Guard:
    """What the peers said before a change: ``refusals`` (empty: go ahead) and whether the
    peers could be asked at all (``check.checked``; then the proof asks them again)."""

    check: peers.PeerCheck
    refusals: tuple[Problem, ...] = ()


def guard(
    ctx: Context, data: SetBytes, *, subject: str, force: bool = False, hold: bool = True
) -> Guard:
    """Ask every peer whether it would accept ``data`` (``peers.check_set``, "before").

    A peer without an answer that already trusts ``data`` (``peerhold.TrustView``: the same
    issuing CA as the live leaf, or the one the cluster keeps for this node) is no
    refusal (``certd.peer_unreachable_trusted``).  ``force`` (``--force``): a refusal is
    overridden, loudly (``certd.peers_overridden``, critical, ``source`` = ``subject``: the
    source folder or "generation N").  ``hold`` False: no retries within the call (a set
    the daemon already holds for its peers: it re-tries it every ``peers.retry_seconds``).
    """
    scope = ctx.peer_scope()
    view = peerhold.TrustView(scope, data, lambda: _live_or_none(ctx))
    check = peers.check_set(
        scope, data, stage="before", trusts=view.reason, source=subject, hold=hold
    )
    if check.ok:
        return Guard(check)
    if not force:
        return Guard(check, check.problems)
    logs.emit(
        events.PeersOverridden(
            source=subject, codes=[p.code for p in check.problems], reason=check.problems[0].message
        )
    )
    return Guard(check)


def _live_or_none(ctx: Context) -> SetBytes | None:
    try:
        return read_live(ctx)
    except SwapError:
        return None


def only_unreachable(refusals: tuple[Problem, ...]) -> bool:
    """Whether every refusal is a peer without an answer (none refused the set)."""
    return bool(refusals) and all(p.code == "peer_unreachable" for p in refusals)


@dataclass(frozen=True, slots=True)
class Proof:
    """Harper's answer (``applied``, made not ok when a peer refuses the live set), and the
    peers' (``check``: None when they were not asked; ``refusals``)."""

    applied: Applied
    check: peers.PeerCheck | None = None
    refusals: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return self.applied.ok


def prove(
    ctx: Context, applied: Applied, *, ask_peers: bool, before: peers.PeerCheck | None = None
) -> Proof:
    """After Harper serves the live set (``applied.ok``): every peer asked again ("after";
    an unreachable peer is waited for, never a refusal, unless it had no answer ``before``
    the swap already).  A refusal turns ``applied`` into a failure naming the peers."""
    if not applied.ok or not ask_peers:
        return Proof(applied)
    down = frozenset(before.without_answer) if before is not None else frozenset()
    check = peers.check_set(ctx.peer_scope(), read_live(ctx), stage="after", hold=False, skip=down)
    refusals = tuple(p for p in check.problems if p.code != "peer_unreachable")
    if refusals:
        why = " ".join(p.message for p in refusals)
        applied = dataclasses.replace(applied, ok=False, detail=f"peers refuse it: {why}")
    return Proof(applied, check, refusals)
