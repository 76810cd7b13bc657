"""How Harper is made to use a new set: the restart methods (``restart.method``).

A leaf: imports nothing of the package, so ``config`` can type ``restart.method`` with it.
"""

from __future__ import annotations

import enum


class RestartMethod(enum.StrEnum):
    """``restart.method``'s values (the configuration's spelling)."""

    AUTO = "auto"  # hot reload on Harper 4.4 and later, else the Operations API
    HOT_RELOAD = "hot-reload"  # Harper reloads the watched files itself; verified
    OPERATIONS_API = "operations-api"  # {"operation": "restart"}
    CLI = "cli"  # harperdb restart (node <entry> restart)
    SYSTEMD = "systemd"  # systemctl restart <restart.unit>
    COMMAND = "command"  # restart.command (argv, no shell)
    NONE = "none"  # Harper is never asked; nothing is verified

    @property
    def may_hot_reload(self) -> bool:
        """Whether this method relies on Harper's file watchers (so adoption must settle,
        and a missed reload falls back to a restart)."""
        return self in (RestartMethod.AUTO, RestartMethod.HOT_RELOAD)
