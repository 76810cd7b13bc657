"""Shared values for certificate sets: the roles Harper gives a set, and its file names.

A leaf module (imports nothing from the project). Facts, measured on Harper 4.7.29
(issue 11): Harper reads certificates only from ``tls`` and ``operationsApi.tls``
(object or list); an entry's ``uses`` holds ``replication``, ``server`` (the HTTP and
MQTT secure ports) and ``operations-api``; ``operationsApi.tls`` only adds
``uses: [operations-api]``; a ``tls`` list without ``uses`` makes the replication
certificate the default on every port. Legacy ``clustering.tls`` is replication.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Role(enum.StrEnum):
    """What a set is for, in Harper's own ``uses`` words."""

    REPLICATION = "replication"
    SERVER = "server"
    OPERATIONS_API = "operations-api"


# Role -> the keys of HarperConfig.secure_ports it is served on.
ROLE_PORTS: dict[Role, tuple[str, ...]] = {
    Role.REPLICATION: ("replication",),
    Role.SERVER: ("http", "mqtt"),
    Role.OPERATIONS_API: ("operationsApi",),
}

# Harper's default file names in <root>/keys (the set a fresh install writes).
KEY_FILES = {"cert": "certificate.pem", "key": "privateKey.pem", "ca": "ca.pem"}


def role_of(uses: Iterable[str]) -> Role:
    """The set's main role: replication wins (it needs the most), then server.

    ``uses`` values outside :class:`Role` are ignored (Harper ignores them too);
    an empty ``uses`` is server.
    """
    found = set(uses)
    for role in (Role.REPLICATION, Role.SERVER, Role.OPERATIONS_API):
        if role.value in found:
            return role
    return Role.SERVER
