"""Every table keyed by an outcome enum covers every member (a new status is a failing test
here, never a KeyError at run time), and the exit codes are the documented ones."""

from __future__ import annotations

from harper_certd.exits import Exit
from harper_certd.install.outcomes import (
    INSTALL_EXIT,
    ROLLBACK_EXIT,
    InstallOutcome,
    InstallStatus,
    RollbackOutcome,
    RollbackStatus,
)


def test_install_exit_table_covers_every_status() -> None:
    assert set(INSTALL_EXIT) == set(InstallStatus)
    for status in InstallStatus:
        assert InstallOutcome(status).exit_code is INSTALL_EXIT[status]


def test_rollback_exit_table_covers_every_status() -> None:
    assert set(ROLLBACK_EXIT) == set(RollbackStatus)
    for status in RollbackStatus:
        assert RollbackOutcome(status, None, None, None, "").exit_code is ROLLBACK_EXIT[status]


def test_exit_codes_are_the_documented_ones() -> None:
    """README "Exit status": 0 done, 1 refused or nothing changed, 3 live but not taken."""
    assert {s.value: int(c) for s, c in INSTALL_EXIT.items()} == {
        "installed": 0,
        "unchanged": 0,
        "refused": 1,
        "held": 1,
        "held_for_peers": 1,
        "rolled_back": 3,
        "rollback_failed": 3,
        "swap_failed": 1,
    }
    assert {s.value: int(c) for s, c in ROLLBACK_EXIT.items()} == {
        "rolled_back": 0,
        "nothing": 1,
        "refused": 1,
        "rollback_failed": 3,
    }
    assert [int(e) for e in Exit] == [0, 1, 2, 3]
