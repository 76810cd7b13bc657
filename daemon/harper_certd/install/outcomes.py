"""How an install or a rollback ended, and the exit code the command line gives for each.

Every table here is keyed by an enum and covers every member (tests/test_outcomes.py
says so), so a new status is a failing test, never a KeyError at run time.  A leaf: only
the exit statuses (``exits.Exit``, a leaf) and type names (for annotations) are imported
from the rest of the package.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harper_certd.exits import Exit

if TYPE_CHECKING:
    from harper_certd.problems import Problem
    from harper_certd.recover import Recovery
    from harper_certd.restart import Applied
    from harper_certd.validate import Report


class InstallStatus(enum.StrEnum):
    """How an install ended (``InstallOutcome.status``; ``install --json``'s ``status``)."""

    INSTALLED = "installed"
    UNCHANGED = "unchanged"  # the same set is already live; the source is filed
    REFUSED = "refused"  # found wanting before anything changed; kept in rejected/
    HELD = "held"  # daemon: a notBefore a little ahead, installed when it is valid
    # peers without an answer might refuse it: the source stays, re-tried by the daemon
    HELD_FOR_PEERS = "held_for_peers"
    ROLLED_BACK = "rolled_back"  # Harper did not take it; the previous set is back, verified
    ROLLBACK_FAILED = "rollback_failed"  # neither the new set nor the previous one is served
    SWAP_FAILED = "swap_failed"  # the store could not be written; nothing changed


class RollbackStatus(enum.StrEnum):
    """How a rollback ended (``RollbackOutcome.status``)."""

    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    REFUSED = "refused"  # the target is damaged, invalid or refused by the peers; watch-only
    NOTHING = "nothing"  # nothing to roll back to


INSTALL_EXIT: dict[InstallStatus, Exit] = {
    InstallStatus.INSTALLED: Exit.OK,
    InstallStatus.UNCHANGED: Exit.OK,
    InstallStatus.REFUSED: Exit.INVALID,
    # Only the daemon holds a set (install from the command line never waits for notBefore);
    # nothing changed.
    InstallStatus.HELD: Exit.INVALID,
    InstallStatus.HELD_FOR_PEERS: Exit.INVALID,  # nothing changed; the source stays
    InstallStatus.ROLLED_BACK: Exit.ROLLED_BACK,
    InstallStatus.ROLLBACK_FAILED: Exit.ROLLED_BACK,
    # install() raises SwapError for this one (the CLI says "nothing changed", exit 1).
    InstallStatus.SWAP_FAILED: Exit.INVALID,
}

ROLLBACK_EXIT: dict[RollbackStatus, Exit] = {
    RollbackStatus.ROLLED_BACK: Exit.OK,
    RollbackStatus.NOTHING: Exit.INVALID,
    RollbackStatus.REFUSED: Exit.INVALID,
    RollbackStatus.ROLLBACK_FAILED: Exit.ROLLED_BACK,
}


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    status: InstallStatus
    problems: tuple[Problem, ...] = ()
    generation: str | None = None
    previous: str | None = None
    applied: Applied | None = None
    rollback: Applied | None = None
    recovery: Recovery | None = None
    kept_at: Path | None = None  # where the source went (processed/ or rejected/)
    report: Report | None = None
    # swap_failed: why; installed: why the source could not be filed (a warning)
    error: str | None = None
    cause: str | None = None  # swap_failed: the cause in a few words (disk full, read-only)
    # swap_failed, held_for_peers: the source that stays for the next attempt
    source: Path | None = None
    held_until: str | None = None  # held_for_peers: when the hold ends (ISO 8601)
    held_for: tuple[str, ...] = ()  # held_for_peers: the peers without an answer
    trust_store: str | None = None  # a set without a CA file: the roots it was judged against

    @property
    def exit_code(self) -> Exit:
        return INSTALL_EXIT[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "generation": self.generation,
            "previous": self.previous,
            "problems": [p.as_dict() for p in self.problems],
            "applied": None if self.applied is None else self.applied.detail,
            "kept_at": None if self.kept_at is None else str(self.kept_at),
            "verified": None if self.applied is None else self.applied.verified,
            "error": self.error,
            "trust_store": self.trust_store,
            "held_until": self.held_until,
            "held_for": list(self.held_for),
            # who judged the set: Harper's Node.js, or harper-certd's model (and why)
            "judge": None
            if self.report is None or self.report.judge is None
            else self.report.judge.line(),
        }


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    status: RollbackStatus
    generation: str | None
    previous: str | None
    applied: Applied | None
    message: str
    trust_store: str | None = None  # a set without a CA file: the roots it was judged against
    problems: tuple[Problem, ...] = ()  # refused: what refused it (the peers, say)

    @property
    def exit_code(self) -> Exit:
        return ROLLBACK_EXIT[self.status]
