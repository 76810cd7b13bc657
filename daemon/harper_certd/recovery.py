"""Recovery as a pure decision: ``plan = decide(journal, current, pending, existing)``.

What a crash left (the journal, the generation ``current`` names, the generations still
``pending``) fully determines what to do; ``recover.recover`` only carries the plan out.
The rules (each a named crash point in tests/test_crash.py):

- A pending generation that ``current`` names was switched in: keep it (``recovered``),
  wake Harper (nudge) and verify.  A pending one newer than ``current`` was never switched
  in: remove it.
- An adoption that reached the flip is completed (the live paths linked); one that did not
  is undone (its generation removed).
- A rollback is finished, never undone: it goes back to a set that was live and whole.
- Anything else in a journal that did not reach the flip is undone.
"""

import enum
from collections.abc import Iterable
from typing import NamedTuple

from harper_certd.journal import Journal, Op, Step


class Act(enum.StrEnum):
    MARK_RECOVERED = "mark_recovered"  # meta outcome -> recovered, then nudge Harper
    DISCARD = "discard"  # remove a generation never switched in
    LINK_LIVE = "link_live"  # link the live paths (an adoption's last step), undo on failure
    FLIP = "flip"  # make the generation current (a rollback's switch)
    CLEAR_JOURNAL = "clear_journal"
    RECORD = "record"  # a history line: op, outcome, generation


class Action(NamedTuple):
    act: Act
    generation: str | None = None
    op: str | None = None  # RECORD: the history line's op
    outcome: str | None = None  # RECORD: its outcome
    prev: str | None = None  # LINK_LIVE: where ``current`` goes back to if undone


class Plan(NamedTuple):
    actions: tuple[Action, ...]
    op: str | None  # None: nothing was under way
    outcome: str | None  # "completed" or "undone"
    generation: str | None  # the generation live once the plan is carried out
    needs_verify: bool


NOTHING = Plan((), None, None, None, needs_verify=False)


def _record(op: str, outcome: str, generation: str | None) -> Action:
    return Action(Act.RECORD, generation, op=op, outcome=outcome)


def decide_pending(current: str | None, pending: Iterable[str]) -> Plan:
    """Installs cut short: ``pending`` are the ids (not older than ``current``) whose
    generation still says ``pending``."""
    floor = int(current or 0)
    actions: list[Action] = []
    plan = NOTHING
    for gen_id in sorted(pending):
        if gen_id == current:
            actions += [
                Action(Act.MARK_RECOVERED, gen_id),
                _record(Op.INSTALL, "completed after a crash", gen_id),
            ]
            plan = Plan((), Op.INSTALL, "completed", gen_id, needs_verify=True)
        elif int(gen_id) > floor:
            actions += [
                Action(Act.DISCARD, gen_id),
                _record(Op.INSTALL, "undone after a crash", current),
            ]
            if plan.op is None:
                plan = Plan((), Op.INSTALL, "undone", current, needs_verify=False)
    return Plan(tuple(actions), plan.op, plan.outcome, plan.generation, plan.needs_verify)


def decide(
    journal: Journal | None, current: str | None, pending: Iterable[str], existing: set[str]
) -> Plan:
    """The whole recovery: pending installs first, then the journal's operation."""
    first = decide_pending(current, pending)
    if journal is None:
        return first
    op, new = journal.op, journal.new
    done: tuple[Action, ...]
    if op == Op.ADOPT:
        if journal.step in (Step.FLIPPING, Step.LINKING) and new is not None and current == new:
            done = (
                Action(Act.LINK_LIVE, new, prev=journal.prev),
                Action(Act.CLEAR_JOURNAL),
                _record(op, "completed after a crash", new),
            )
            return Plan(first.actions + done, op, "completed", new, needs_verify=False)
        discard = (Action(Act.DISCARD, new),) if new is not None and current != new else ()
        done = (*discard, Action(Act.CLEAR_JOURNAL), _record(op, "undone after a crash", None))
        return Plan(first.actions + done, op, "undone", None, needs_verify=False)
    if new is not None and current == new:
        done = (
            Action(Act.MARK_RECOVERED, new),
            Action(Act.CLEAR_JOURNAL),
            _record(op, "completed after a crash", new),
        )
        return Plan(first.actions + done, op, "completed", new, needs_verify=True)
    if op == Op.ROLLBACK and new is not None and new in existing:
        done = (
            Action(Act.FLIP, new),
            Action(Act.CLEAR_JOURNAL),
            _record(op, "completed after a crash", new),
        )
        return Plan(first.actions + done, op, "completed", new, needs_verify=True)
    discard = (Action(Act.DISCARD, new),) if op == Op.INSTALL and new is not None else ()
    done = (*discard, Action(Act.CLEAR_JOURNAL), _record(op, "undone after a crash", current))
    return Plan(first.actions + done, op, "undone", current, needs_verify=False)
