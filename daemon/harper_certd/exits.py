"""The command line's exit statuses (README, "Exit status").

A leaf of its own, so that the command line's output helpers (``cliout``) and ``validate``
do not import the install path's outcome tables to name a status.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    """The command line's exit statuses (README, "Exit status")."""

    OK = 0
    INVALID = 1  # refused, or nothing to do: nothing changed
    USAGE = 2  # bad arguments, configuration or state
    ROLLED_BACK = 3  # a set went live and Harper did not take it (back, or not even that)
