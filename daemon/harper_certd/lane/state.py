"""The lane's states and the edges between them, with the one event each edge logs.

This module imports nothing from harper_certd and must stay that way: it is the leaf
that the lane, the node, the status readers and the tests can all import without a loop
(the model is supervisor's ``supervisor/states.py``).

A lane (one certificate set) has two small machines, because they run independently: a
renewal's set can arrive while a rotation is held back by the restart budget, and a swap
can fail while a renewal awaits its set.

* ``LaneState``: what happens to the sets that arrive (installed at once, held back by the
  restart budget, or retried after a failed swap).
* ``RenewalState``: the renewal command of the set (idle, running, awaiting its set,
  backing off after a failure).

``LANE_EDGES`` and ``RENEWAL_EDGES`` map every allowed edge ``(old, new)`` to the event
logged when it is taken (``None``: a silent edge).  ``Lane.change_state`` is the one
function that moves a machine along an edge and logs that event; an edge not in the
table is a programming error (``InvalidTransition``).
"""

from __future__ import annotations

import enum


class LaneState(enum.Enum):
    """Where the lane's rotation stands."""

    STARTING = "starting"  # built; its store not yet recovered, its folders not yet watched
    WATCHING = "watching"  # watching incoming/ and the live files; nothing held back
    HELD = "held"  # a rotation waits for the restart budget (said once: restart_held)
    RETRYING = "retrying"  # a swap failed; its sources are taken again after a backoff
    STOPPED = "stopped"  # the daemon stops, or the set left Harper's configuration


class RenewalState(enum.Enum):
    """Where the lane's renewal command stands."""

    IDLE = "idle"  # not run yet, or its last run succeeded
    RUNNING = "running"  # the command runs (the cycle waits for it, bounded by its timeout)
    AWAITING = "awaiting"  # it exited 0: its set must arrive and be installed by a deadline
    BACKOFF = "backoff"  # its last run failed: not again before the backoff ends


class InvalidTransition(RuntimeError):
    """A change of state along an edge the table does not have (a programming error)."""


# (old, new) -> the event logged on that edge, None for a silent one.  Every edge that
# the lane takes is here; the tests walk this table.
LANE_EDGES: dict[tuple[LaneState, LaneState], str | None] = {
    # set start: store recovered, folders watched, schedule planned
    (LaneState.STARTING, LaneState.WATCHING): None,
    # the restart budget is spent and the live set is not urgent: held back, said once
    (LaneState.WATCHING, LaneState.HELD): "certd.restart_held",
    (LaneState.RETRYING, LaneState.HELD): "certd.restart_held",
    # the budget allows again (or the live set became urgent)
    (LaneState.HELD, LaneState.WATCHING): None,
    # a swap failed and was undone: retried with backoff
    (LaneState.WATCHING, LaneState.RETRYING): "certd.swap_failed",
    (LaneState.RETRYING, LaneState.RETRYING): "certd.swap_failed",
    # a renewal's set installed while held (a lineage is not held by the budget) failed
    (LaneState.HELD, LaneState.RETRYING): "certd.swap_failed",
    # a rotation went through after failed swaps
    (LaneState.RETRYING, LaneState.WATCHING): None,
    # the daemon stops, or the set is gone from Harper's configuration after a reload
    (LaneState.STARTING, LaneState.STOPPED): None,
    (LaneState.WATCHING, LaneState.STOPPED): None,
    (LaneState.HELD, LaneState.STOPPED): None,
    (LaneState.RETRYING, LaneState.STOPPED): None,
}

RENEWAL_EDGES: dict[tuple[RenewalState, RenewalState], str | None] = {
    # the leaf entered its renewal window and the backoff (if any) has ended
    (RenewalState.IDLE, RenewalState.RUNNING): "certd.renewal_started",
    (RenewalState.BACKOFF, RenewalState.RUNNING): "certd.renewal_started",
    # the command exited 0: its set is awaited (through incoming/ or its lineage)
    (RenewalState.RUNNING, RenewalState.AWAITING): None,
    # the command exited non-zero or timed out
    (RenewalState.RUNNING, RenewalState.BACKOFF): "certd.renewal_failed",
    # running it raised (a fault of the daemon, said by certd.cycle_failed): nothing is
    # awaited, and it is started again at the next cycle, as before the lanes existed
    (RenewalState.RUNNING, RenewalState.IDLE): None,
    # the live leaf changed while its set was awaited
    (RenewalState.AWAITING, RenewalState.IDLE): "certd.renewal_succeeded",
    # what it produced was refused, could not be swapped in, or nothing new arrived
    (RenewalState.AWAITING, RenewalState.BACKOFF): "certd.renewal_failed",
}


def edge_event(old: LaneState | RenewalState, new: LaneState | RenewalState) -> str | None:
    """The event of the edge ``old -> new``; ``InvalidTransition`` when there is no edge."""
    found: tuple[bool, str | None]
    if isinstance(old, LaneState) and isinstance(new, LaneState):
        found = ((old, new) in LANE_EDGES, LANE_EDGES.get((old, new)))
    elif isinstance(old, RenewalState) and isinstance(new, RenewalState):
        found = ((old, new) in RENEWAL_EDGES, RENEWAL_EDGES.get((old, new)))
    else:
        found = (False, None)
    if not found[0]:
        raise InvalidTransition(f"no edge {old.name} -> {new.name}")
    return found[1]
