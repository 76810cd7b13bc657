"""The pure decision of a node's next step in a rotation: ``next_step(plan, rows, local)``.

No I/O: the executor reads the plan, the rows and this node's live files, asks here, and
does what it is told.  The rules (why they are enough without consensus: docs/cluster.md):

- a node writes only its own row; its phase is the highest of the phase in its row and the
  phase its live files show (:func:`reached`), so phases only move forward and a step found
  done (after a crash, or by hand) is reported, not repeated;
- a node reports first: when its row is missing, behind its files, or its ``seen`` (the phase
  it reads in every other node's row) changed, the step is ``report``;
- adding the new CA (phase 0 -> 1) needs nobody: trusting one more CA refuses nothing;
- every later step from phase P needs the gate of P: every node of the plan has a row at
  P or later **and** every row has seen every other node at P or later.  Row n seeing m at
  P proves that m's write replicated to n; all rows seeing all others proves replication in
  every direction after every node finished P.  A node that is down writes nothing and
  holds the plan;
- the restart after ``old-removed`` takes turns: a node restarts only once the gate of
  ``old-removed`` is open and every node before it (the plan's node names, sorted) has
  reported ``restarted``, which a node writes only when its Harper serves again and is
  connected to every peer; so never two nodes are down at once;
- a paused or aborted plan gets no step (``idle``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from harper_certd.rotation.phases import Phase, State
from harper_certd.rotation.plan import NodeRow, Plan


class Do(StrEnum):
    REPORT = "report"  # write this node's row (phase, seen)
    ADD_CA = "add_ca"  # the new CA appended to the CA file (ca add)
    SWITCH_LEAF = "switch_leaf"  # install this node's new-CA leaf
    REMOVE_OLD = "remove_old"  # ca remove of every old CA
    RESTART = "restart"  # Harper restarted, so that it forgets the old CA
    WAIT = "wait"  # the gate is closed: ``reason`` names the nodes
    IDLE = "idle"  # paused, aborted or finished


@dataclass(frozen=True, slots=True)
class Local:
    """This node's live files: SHA-256 of each CA in the CA file (in order) and of the CA
    that issued the live leaf (None: none in the file)."""

    node: str
    ca_sha256: tuple[str, ...]
    leaf_issuer_sha256: str | None


@dataclass(frozen=True, slots=True)
class Step:
    do: Do
    phase: Phase  # this node's phase (what to report)
    seen: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""


def reached(plan: Plan, local: Local) -> Phase:
    """The phase this node's live files show."""
    if plan.new_sha256 not in local.ca_sha256:
        return Phase.PLANNED
    if local.leaf_issuer_sha256 != plan.new_sha256:
        return Phase.CA_ADDED
    if any(old in local.ca_sha256 for old in plan.old_sha256):
        return Phase.LEAF_SWITCHED
    return Phase.OLD_REMOVED


def gate(plan: Plan, rows: Mapping[str, NodeRow], phase: Phase) -> list[str]:
    """What keeps the gate of ``phase`` closed ("" each: node and why); [] when open."""
    closed = []
    for node in plan.nodes:
        row = rows.get(node)
        if row is None or row.plan_id != plan.plan_id:
            closed.append(f"{node}: no row for this plan yet")
            continue
        if row.phase < phase:
            closed.append(f"{node}: at {row.phase.label}")
            continue
        behind = [
            other
            for other in plan.nodes
            if other != node and int(row.seen.get(other, Phase.PLANNED)) < phase
        ]
        if behind:
            closed.append(f"{node}: has not yet seen {', '.join(behind)} at {phase.label}")
    return closed


def next_step(plan: Plan, rows: Mapping[str, NodeRow], local: Local) -> Step:
    """This node's next step (see the module docstring)."""
    rows = {n: r for n, r in rows.items() if r.plan_id == plan.plan_id}
    me = local.node
    mine = rows.get(me)
    phase = max(mine.phase if mine else Phase.PLANNED, reached(plan, local))
    seen = {
        n: int(rows[n].phase) if n in rows else int(Phase.PLANNED) for n in plan.nodes if n != me
    }
    if plan.state is not State.ACTIVE:
        return Step(Do.IDLE, phase, seen, f"the plan is {plan.state.value}")
    if me not in plan.nodes:
        return Step(Do.IDLE, phase, seen, f"{me} is not a node of this plan")
    if mine is None or mine.phase != phase or dict(mine.seen) != seen:
        return Step(Do.REPORT, phase, seen)
    if phase is Phase.PLANNED:
        return Step(Do.ADD_CA, phase, seen)
    closed = gate(plan, rows, phase)
    if closed:
        return Step(Do.WAIT, phase, seen, "; ".join(closed))
    if phase is Phase.CA_ADDED:
        return Step(Do.SWITCH_LEAF, phase, seen)
    if phase is Phase.LEAF_SWITCHED:
        return Step(Do.REMOVE_OLD, phase, seen)
    if phase is Phase.OLD_REMOVED:
        before = [n for n in sorted(plan.nodes) if n < me]
        turn = [n for n in before if rows[n].phase < Phase.RESTARTED]
        if turn:
            return Step(Do.WAIT, phase, seen, f"restarts take turns: {', '.join(turn)} first")
        return Step(Do.RESTART, phase, seen)
    return Step(Do.IDLE, phase, seen, "done: every node restarted without the old CA")
