"""Events of putting a set live: the swap, Harper told and checked, rollback, the peers.

One frozen record per event (``base.Event``); every field is a key of the event's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harper_certd.events.base import Event, event


@event("certd.set_installed", "info", operation=("rotation", "installed"))
@dataclass(frozen=True, slots=True)
class SetInstalled(Event):
    """A validated set replaced the live files (atomic swap).

    Attributes:
        generation: the new live generation's id.
        fingerprint: SHA-256 of the new leaf (hex).
        subject: the new leaf's subject (RFC 4514).
        not_after: the new leaf's notAfter (ISO 8601).
        method: how Harper was told (hot-reload, operations-api, cli, systemd, none, ...).
        verified: Harper was seen serving it.
        seconds: seconds from the swap to the proof.
        source: the installed source.
        peers: per-peer verdicts (None: not a replication set, or no peers probed).
    """

    generation: str
    fingerprint: str
    subject: str
    not_after: str
    method: str
    verified: bool
    seconds: float
    source: str
    peers: list[dict[str, Any]] | None


@event("certd.swap_failed", "error")
@dataclass(frozen=True, slots=True)
class SwapFailed(Event):
    """Putting a validated set in place failed and was undone; the live set is unchanged and the
    swap is retried with backoff (next_attempt).

    Attributes:
        source: the source (or what was being restored).
        cause: the short cause (disk full, permission denied, ...).
        error: the full error.
        failures: consecutive failures (None from the command line, which does not retry).
        next_attempt: when the daemon tries again (ISO 8601; None: no retry).
    """

    source: str
    cause: str | None
    error: str | None
    failures: int | None
    next_attempt: str | None


@event("certd.swap_recovered", "warning")
@dataclass(frozen=True, slots=True)
class SwapRecovered(Event):
    """A swap interrupted by a crash or power loss was completed or undone at start.

    Attributes:
        op: the interrupted operation (install, rollback, adopt, ...).
        outcome: completed or undone.
        generation: the generation it concerned.
    """

    op: str
    outcome: str
    generation: str | None


@event("certd.harper_restarted", "info")
@dataclass(frozen=True, slots=True)
class HarperRestarted(Event):
    """Harper was told to load the new set (hot reload, Operations API, CLI or systemd).

    Attributes:
        method: how Harper was told (operations-api, cli, systemd, command).
        detail: what the method answered (None after a missed hot reload).
    """

    method: str
    detail: str | None = None


@event("certd.served_verified", "info")
@dataclass(frozen=True, slots=True)
class ServedVerified(Event):
    """Harper's TLS ports serve the new certificate and a handshake with it succeeds.

    Attributes:
        fingerprint: SHA-256 of the leaf served.
        ports: the secure ports dialled, by Harper's config key.
        pid: Harper's main process id.
        seconds: seconds until every port served it.
        failed_handshakes: handshakes that failed meanwhile.
        method: how Harper was told (or watch-only).
        dialled: the addresses dialled (None: watch-only check).
    """

    fingerprint: str
    ports: dict[str, int]
    pid: int | None
    seconds: float
    failed_handshakes: int
    method: str
    dialled: list[str] | None = None


@event("certd.verify_failed", "error")
@dataclass(frozen=True, slots=True)
class VerifyFailed(Event):
    """Harper does not serve the new set, or a handshake with it fails.

    Attributes:
        generation: the generation that should be served.
        detail: what was served instead, or why the check failed.
    """

    generation: str | None
    detail: str


@event("certd.hot_reload_missed", "warning")
@dataclass(frozen=True, slots=True)
class HotReloadMissed(Event):
    """Harper did not pick up the new set by itself in time; a restart follows.

    Attributes:
        method: the method tried (hot-reload).
        seen: what Harper served meanwhile.
        fallback: the restart method used next.
    """

    method: str
    seen: str
    fallback: str


@event("certd.harper_not_running", "warning")
@dataclass(frozen=True, slots=True)
class HarperNotRunning(Event):
    """A set was installed while Harper is stopped; Harper loads it when it starts.

    Attributes:
        root: Harper's root folder.
        generation: the generation installed.
    """

    root: str
    generation: str


@event("certd.rolled_back", "error", operation=("rollback", "rolled_back"))
@dataclass(frozen=True, slots=True)
class RolledBack(Event):
    """The previous set was put back after a failed verification, and Harper serves it.

    Attributes:
        failed_generation: the generation that failed verification.
        restored_generation: the generation put back.
        failure: why the new set failed.
        fingerprint: SHA-256 of the restored leaf.
    """

    failed_generation: str
    restored_generation: str
    failure: str
    fingerprint: str | None


@event("certd.operator_rollback", "warning", operation=("rollback", "operator"))
@dataclass(frozen=True, slots=True)
class OperatorRollback(Event):
    """An operator put an earlier generation back (harper-certd rollback).

    Attributes:
        restored_generation: the generation put back.
        from_generation: the generation that was live.
    """

    restored_generation: str
    from_generation: str


@event("certd.rollback_failed", "critical", operation=("rollback", "rollback_failed"))
@dataclass(frozen=True, slots=True)
class RollbackFailed(Event):
    """Putting the previous set back failed; the node needs an operator now.

    Attributes:
        reason: why the rollback failed (no generation to return to, or what the restart or
            verification found).
        failed_generation: the generation being rolled back from (None: a restore of a live set gone
            bad, or an operator's rollback).
        restored_generation: the generation being put back (None: none was found).
        failure: why a rollback was needed (None: an operator's rollback or a restore).
    """

    reason: str
    failed_generation: str | None = None
    restored_generation: str | None = None
    failure: str | None = None


@event("certd.name_changed", "warning")
@dataclass(frozen=True, slots=True)
class NameChanged(Event):
    """The new certificate's CN or first SAN differs: Harper keeps a stale record of the old name
    (the command to remove it is given once the install is verified).

    Attributes:
        generation: the new generation.
        old_name: the old leaf's CN or first SAN.
        new_name: the new leaf's.
        stale_record: Harper's record left under the old name, if known.
        command: the command that removes it (once the install is verified).
    """

    generation: str
    old_name: str | None
    new_name: str | None
    stale_record: str | None
    command: str | None


@event("certd.peers_checked", "info")
@dataclass(frozen=True, slots=True)
class PeersChecked(Event):
    """Every replication peer was probed with a candidate (before) or the live set (after a swap):
    per-peer verdicts.

    Attributes:
        stage: before (a candidate) or after (the live set, after a swap).
        fingerprint: SHA-256 of the leaf probed with.
        peers: per-peer verdicts.
        codes: the problem codes found.
    """

    stage: str
    fingerprint: str
    peers: list[dict[str, Any]]
    codes: list[str]


@event("certd.peer_unreachable", "warning")
@dataclass(frozen=True, slots=True)
class PeerUnreachable(Event):
    """A replication peer could not be probed; the probe is retried until retry_until, then the set
    is held for it (stage before: certd.set_held_for_peers) or the peer only reported (stage after).

    Attributes:
        stage: before or after.
        peer: the peer's node name.
        url: its replication URL.
        detail: what failed.
        retry_until: until when it is probed again (ISO 8601).
    """

    stage: str
    peer: str
    url: str
    detail: str | None
    retry_until: str


@event("certd.peers_unchecked", "warning")
@dataclass(frozen=True, slots=True)
class PeersUnchecked(Event):
    """The peers of a replication set could not be listed (no Operations API or it failed): the swap
    goes ahead unprobed.

    Attributes:
        stage: before or after.
        reason: why the peers could not be listed.
    """

    stage: str
    reason: str


@event("certd.peers_overridden", "critical")
@dataclass(frozen=True, slots=True)
class PeersOverridden(Event):
    """A replication set was installed past the peer guard's refusal (install --force).

    Attributes:
        source: the source installed.
        codes: the guard's problem codes.
        reason: the first problem's message.
    """

    source: str
    codes: list[str]
    reason: str


@event("certd.peer_cas_refreshed", "info")
@dataclass(frozen=True, slots=True)
class PeerCasRefreshed(Event):
    """The ca remove command had Harper exchange CAs with each peer again (update_node), so that the
    CA each node keeps for the other is the new one (peers left alone are named).

    Attributes:
        refreshed: peers refreshed (Harper's answer each).
        not_refreshed: peers left alone, name: why.
    """

    refreshed: list[str]
    not_refreshed: list[str]


@event("certd.restart_deferred", "warning")
@dataclass(frozen=True, slots=True)
class RestartDeferred(Event):
    """A full Harper restart waits (jitter, bounded) for every peer to be connected, or goes ahead
    after the wait with proceeding=true.

    Attributes:
        waiting_for: the peers not connected.
        waited: seconds waited so far.
        max_wait: the bound on the wait.
        proceeding: the wait is over: the restart goes ahead.
    """

    waiting_for: list[str]
    waited: float
    max_wait: float
    proceeding: bool


@event("certd.generation_pruned", "info")
@dataclass(frozen=True, slots=True)
class GenerationPruned(Event):
    """An old generation was deleted from the state directory.

    Attributes:
        generation: the generation deleted.
    """

    generation: str


@event("certd.prune_failed", "warning")
@dataclass(frozen=True, slots=True)
class PruneFailed(Event):
    """An old generation could not be deleted (owner, permissions); it is kept and said.

    Attributes:
        generation: the generation kept (None: the generations folder could not be listed).
        error: why.
    """

    generation: str | None
    error: str


@event("certd.released", "warning")
@dataclass(frozen=True, slots=True)
class Released(Event):
    """Harper's files were handed back as plain files (harper-certd release); not managed now.

    Attributes:
        generation: the generation that was live.
        paths: the paths now plain files.
    """

    generation: str | None
    paths: list[str]


# --- issue 18: a peer that cannot be reached blocks only what it might refuse ---------------


@event("certd.peer_unreachable_trusted", "warning")
@dataclass(frozen=True, slots=True)
class PeerUnreachableTrusted(Event):
    """A replication peer could not be probed but already trusts the set (its leaf from a CA the
    peer accepts this node by, its CA file still trusting the peer): the change goes ahead.

    Attributes:
        stage: before (the guard).
        peer: the peer's node name.
        url: its replication URL.
        detail: what failed.
        why: why the peer cannot refuse the set.
        source: the set (its folder, or "generation N").
    """

    stage: str
    peer: str
    url: str
    detail: str | None
    why: str
    source: str


@event("certd.set_held_for_peers", "warning")
@dataclass(frozen=True, slots=True)
class SetHeldForPeers(Event):
    """A set the unreachable peers might refuse (a CA they may not trust yet) is held and re-tried,
    never refused, until they answer or the live leaf reaches its last warning threshold.

    Attributes:
        source: the set held (it stays where it is).
        peers: the peers without an answer.
        detail: what failed, per peer.
        until: when the hold ends (ISO 8601): then certd.peer_hold_expired.
        next_try: when the daemon tries again (ISO 8601; None from the command line).
    """

    source: str
    peers: list[str]
    detail: str
    until: str
    next_try: str | None


@event("certd.peer_hold_expired", "critical")
@dataclass(frozen=True, slots=True)
class PeerHoldExpired(Event):
    """A set held for unreachable peers reached the live leaf's last warning threshold: it is
    installed past them (the live leaf would soon break replication with every peer); a
    reachable peer's refusal still rolls it back after the swap.

    Attributes:
        source: the set.
        peers: the peers still without an answer.
        until: the end of the hold (ISO 8601).
        decision: what was done.
    """

    source: str
    peers: list[str]
    until: str
    decision: str


# --- h-clusterB (issue 18): the cluster CA rotation (harper_certd.rotation) -----------------


@event("certd.rotation_step", "info")
@dataclass(frozen=True, slots=True)
class RotationStep(Event):
    """This node took a step of the cluster CA rotation (ca rotate), or reported a new phase in
    its row of harper_certd.ca_rotation.

    Attributes:
        plan: the rotation plan's id.
        node: this node's name.
        phase: this node's phase (planned, ca-added, leaf-switched, old-removed, restarted)
            when the step was decided.
        action: report (the phase written to this node's row), add_ca, switch_leaf,
            remove_old or restart.
    """

    plan: str
    node: str
    phase: str
    action: str


@event("certd.rotation_waiting", "info")
@dataclass(frozen=True, slots=True)
class RotationWaiting(Event):
    """The cluster CA rotation waits on this node (logged when the reason changes): for other
    nodes to report a phase and to see each other's rows (replication proven), for a
    staged new-CA leaf, or because the plan is paused, aborted or done.

    Attributes:
        plan: the rotation plan's id.
        node: this node's name.
        phase: this node's phase.
        waiting_for: what holds the plan, node by node ("" never).
    """

    plan: str
    node: str
    phase: str
    waiting_for: str


@event("certd.rotation_failed", "error")
@dataclass(frozen=True, slots=True)
class RotationFailed(Event):
    """A step of the cluster CA rotation failed on this node; it is tried again after 5 s (the
    live set is as the failed step's install left it: refused, rolled back or unchanged).

    Attributes:
        plan: the rotation plan's id.
        node: this node's name.
        error: what failed.
    """

    plan: str
    node: str
    error: str


@event("certd.harper_version_unknown", "warning")
@dataclass(frozen=True, slots=True)
class HarperVersionUnknown(Event):
    """Harper's version could not be read (or is outside the known lines); the decision
    that depends on it (``restart.method: auto``) takes a restart, not hot reload.

    Attributes:
        root: Harper's root folder.
        version: the version read, if any (None: not found).
        method: the restart method used instead.
    """

    root: str
    version: str | None
    method: str
