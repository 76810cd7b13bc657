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

import enum
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple


class Purpose(enum.StrEnum):
    """What a set is validated for (the EKUs it needs)."""

    CLUSTER = "cluster"  # replication/clustering: TLS server and TLS client
    SERVER = "server"  # HTTPS and Operations API only
    CLIENT = "client"


class SetPaths(NamedTuple):
    """A set's files; ``ca`` None for a set without a CA file (a public certificate: its
    chain must reach a root in the system trust store, ``trust.py``)."""

    cert: Path
    key: Path
    ca: Path | None


class SetBytes(NamedTuple):
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


class Handover(NamedTuple):
    """The file names one tool writes a set under, as the incoming folder and ``stage``
    recognise them (issue 17 item 6).

    ``cert``: the certificate file's names, the first present wins (the leaf first, then its
    intermediates: a full chain); ``chain``: intermediates to append to a ``cert`` that holds
    the leaf alone (certbot's ``cert.pem`` + ``chain.pem``); ``key``: the private key;
    ``ca``: the tool's CA file, when it writes one (Harper's ``certificateAuthority``).
    A name ``*.ext`` stands for the one file with that suffix in the folder (two or more:
    not this tool's shape); with ``*`` in both ``cert`` and ``key`` the two share a stem
    (step's ``<name>.crt`` + ``<name>.key``).
    """

    tool: str
    cert: tuple[str, ...]
    key: str
    ca: str | None = None
    chain: str | None = None


# Facts (each tool's documentation): Harper's own ``<root>/keys`` names; certbot's
# ``live/<name>/`` (``fullchain.pem``, ``cert.pem``, ``chain.pem``, ``privkey.pem``);
# cert-manager's ``kubernetes.io/tls`` Secret keys and Vault agent templates after it
# (``tls.crt``: leaf + intermediates, ``tls.key``, ``ca.crt``: the issuing CA); acme.sh's
# ``~/.acme.sh/<domain>/`` (``fullchain.cer``, ``<domain>.key``; its ``ca.cer`` holds the
# intermediates already in ``fullchain.cer``, not a root: never a CA file); step's
# ``step ca certificate <name> <name>.crt <name>.key`` (the ``.crt`` bundles the
# intermediate) and ``step ca root root_ca.crt``.  Harper's and certbot's come first: a
# folder matching several is read as the first.
HANDOVERS: tuple[Handover, ...] = (
    Handover("Harper", ("certificate.pem",), "privateKey.pem", ca="ca.pem"),
    Handover(
        "certbot", ("fullchain.pem", "cert.pem"), "privkey.pem", ca="ca.pem", chain="chain.pem"
    ),
    Handover("cert-manager/Vault", ("tls.crt",), "tls.key", ca="ca.crt"),
    Handover("acme.sh", ("fullchain.cer",), "*.key"),
    Handover("step", ("*.crt",), "*.key", ca="root_ca.crt"),
)


# Derived from HANDOVERS, the one table of hand-over names (issue 16 item 5).
HARPER_NAMES: tuple[str, str, str] = ("certificate.pem", "privateKey.pem", "ca.pem")
CERTBOT_NAMES: tuple[str, ...] = ("fullchain.pem", "cert.pem", "chain.pem", "privkey.pem")
# The literal key names (a ``*.key`` pattern is matched by suffix where it is used).
KEY_NAMES = frozenset(h.key for h in HANDOVERS if "*" not in h.key)
assert (*HANDOVERS[0].cert, HANDOVERS[0].key, HANDOVERS[0].ca) == HARPER_NAMES
assert set(CERTBOT_NAMES) == {*HANDOVERS[1].cert, HANDOVERS[1].chain, HANDOVERS[1].key}


def handover_names(
    handover: Handover, names: Iterable[str]
) -> tuple[str, str, str | None, str | None] | None:
    """(cert, key, ca or None, chain or None): the names ``handover`` gives the set among
    ``names`` (a folder's listing), or None when the folder is not in that tool's shape."""
    present = {n for n in names if not n.startswith(".")}
    ca = handover.ca if handover.ca in present else None
    cert = next((c for c in handover.cert if c in present), None)
    if cert is None and handover.cert and handover.cert[0].startswith("*"):
        suffix = handover.cert[0][1:]
        found = [n for n in present if n.endswith(suffix) and n != ca and len(n) > len(suffix)]
        cert = found[0] if len(found) == 1 else None
    if cert is None:
        return None
    key: str | None = handover.key if handover.key in present else None
    if handover.key.startswith("*"):
        suffix = handover.key[1:]
        if handover.cert[0].startswith("*"):  # one stem: <name>.crt + <name>.key
            stem = cert[: len(cert) - len(handover.cert[0]) + 1]
            key = stem + suffix if stem + suffix in present else None
        else:
            found = [n for n in present if n.endswith(suffix) and len(n) > len(suffix)]
            key = found[0] if len(found) == 1 else None
    if key is None:
        return None
    chain = handover.chain if handover.chain in present and cert != handover.cert[0] else None
    return cert, key, ca, chain
