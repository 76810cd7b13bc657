"""Shared values for certificate sets: what a set is (its files ``SetPaths``, its bytes
``SetBytes``, what it is validated for ``Purpose``), the roles Harper gives a set, its
file names, and Harper's default root.

A leaf module (imports nothing from the project): every other module may use it.
Facts, measured on Harper 4.7.29 (issue 11): Harper reads certificates only from
``tls`` and ``operationsApi.tls`` (object or list); an entry's ``uses`` holds
``replication``, ``server`` (the HTTP and MQTT secure ports) and ``operations-api``;
``operationsApi.tls`` only adds ``uses: [operations-api]``; a ``tls`` list without
``uses`` makes the replication certificate the default on every port. Legacy
``clustering.tls`` is replication.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


class Purpose(enum.StrEnum):
    """What a set is validated for (the EKUs it needs)."""

    CLUSTER = "cluster"  # replication/clustering: TLS server and TLS client
    SERVER = "server"  # HTTPS and Operations API only
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class SetPaths:
    """A set's files; ``ca`` None for a set without a CA file (a public certificate: its
    chain must reach a root in the system trust store, ``trust.py``)."""

    cert: Path
    key: Path
    ca: Path | None


@dataclass(frozen=True, slots=True)
class SetBytes:
    """A set's bytes; ``ca`` is ``b""`` for a set without a CA file (its store's live
    paths say which kind it is: ``swap.Store.roles``)."""

    cert: bytes
    key: bytes
    ca: bytes = b""

    def role(self, role: str) -> bytes:
        """The bytes of ``role``: ``cert``, ``key`` or ``ca`` (the keys of ``KEY_FILES``)."""
        value: bytes = getattr(self, role)
        return value


def default_root(env: Mapping[str, str] | None = None) -> Path:
    """Harper's ROOTPATH: ``$ROOTPATH``, else ``~/hdb`` (Harper's own default)."""
    env = os.environ if env is None else env
    if env.get("ROOTPATH"):
        return Path(env["ROOTPATH"])
    return Path(env.get("HOME", "~")).expanduser() / "hdb"


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

# A set name that can be a folder, incoming/<set name>/ (no separator, no leading dot, no
# "..": a name from Harper's config is never trusted as a path).
SET_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\[\]-]{0,63}")

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
