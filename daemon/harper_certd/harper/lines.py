"""Harper's release lines and what differs between them (a leaf: imports nothing of ours).

One ``Line`` per family of releases that behave alike for certificates.  Facts, measured
on real nodes installed from npm (``tests/install-harper.sh``; docs/harper-lines.md has
the matrix with times) unless marked "documented":

- 4.0.7: no ``tls`` section; TLS is ``operationsApi.network.https`` /
  ``customFunctions.network.https`` on the plain port, files in ``operationsApi.tls`` and
  ``customFunctions.tls``.  Runs under PM2 with no ``hdb.pid``; the server process is
  ``launchServiceScripts/launchHarperDB.js`` (title rewritten).  No hot reload.
- 4.3.0: ``tls`` (HTTP, MQTT, Operations API) and NATS clustering with ``clustering.tls``
  (``certificate``, ``certificateAuthority``, ``privateKey``, ``insecure``, ``verify``);
  the NATS route port ``clustering.hubServer.cluster.network.port`` speaks direct TLS.
  No hot reload: the Operations API ``restart`` (about 7 s), and ``restart_service
  clustering_config`` makes the NATS servers load the new files (about 0.5 s).
- 4.4.18: ``replication`` (WebSocket), served on ``operationsApi.network.securePort``
  unless ``replication.securePort`` is set; ``enableRootCAs`` exists.  Hot reload, but
  the first reload after a change fails in the worker (``key values mismatch``) and
  keeps the old pair: a second change event makes it load the new one.
- 4.7.19, 4.7.29: hot reload about 1.5 s after the change, 0 failed handshakes.
- 5.x: documented only (HarperFast/harper): the 4.7 configuration keys and operations;
  not installable here (replication is in the paid edition).
"""

import enum
from typing import NamedTuple


class Clustering(enum.StrEnum):
    """How nodes of a line talk to each other."""

    NATS = "nats"  # clustering.* (nats-server hub and leaf), clustering.tls
    REPLICATION = "replication"  # replication.* (WebSocket), tls with uses: replication


class Line(NamedTuple):
    """One release line.

    ``since``/``until``: (major, minor) bounds, ``until`` exclusive.  ``hot_reload``: Harper
    reloads changed certificate files itself.  ``second_change_event``: its first reload
    after a change fails and a second change event is needed (4.4).  ``replication_keys``:
    the configuration keys of the replication port, first set wins.  ``root_cas``:
    ``replication.enableRootCAs`` exists.  ``legacy_https``: TLS through
    ``*.network.https`` on the plain port (4.0-4.1).  ``measured``: False when known from
    the documentation only.
    """

    name: str
    since: tuple[int, int]
    until: tuple[int, int]
    clustering: Clustering
    hot_reload: bool
    second_change_event: bool = False
    replication_keys: tuple[str, ...] = ()
    root_cas: bool = False
    legacy_https: bool = False
    measured: bool = True

    @property
    def restart(self) -> str:
        """How ``restart.method: auto`` makes this line use a new set."""
        return "hot-reload" if self.hot_reload else "operations-api"


LINES: tuple[Line, ...] = (
    Line("4.0", (4, 0), (4, 2), Clustering.NATS, hot_reload=False, legacy_https=True),
    Line("4.2-4.3", (4, 2), (4, 4), Clustering.NATS, hot_reload=False),
    Line(
        "4.4",
        (4, 4),
        (4, 5),
        Clustering.REPLICATION,
        hot_reload=True,
        second_change_event=True,
        replication_keys=("replication.securePort", "operationsApi.network.securePort"),
        root_cas=True,
    ),
    Line(
        "4.5-4.7",
        (4, 5),
        (5, 0),
        Clustering.REPLICATION,
        hot_reload=True,
        replication_keys=("replication.securePort", "operationsApi.network.securePort"),
        root_cas=True,
    ),
    Line(
        "5.x",
        (5, 0),
        (6, 0),
        Clustering.REPLICATION,
        hot_reload=True,
        replication_keys=("replication.securePort", "operationsApi.network.securePort"),
        root_cas=True,
        measured=False,
    ),
)


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """``"4.7.29"`` -> ``(4, 7, 29)``; digits only per part ("5.0.0-beta" -> (5, 0, 0));
    None for None or a string without a leading number."""
    if not version or not version[0].isdigit():
        return None
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def line_of(version: str | None) -> Line | None:
    """The line of ``version`` ("4.3.0"), or None when unknown or outside every line."""
    parsed = version_tuple(version)
    if parsed is None:
        return None
    major_minor = (*parsed, 0, 0)[:2]
    return next((li for li in LINES if li.since <= major_minor < li.until), None)


def support(version: str | None, pid: int | None = None) -> str:
    """One sentence for ``check``/``status``: what is known of this version's support.
    ``pid``: the running Harper's, when one was found (its version then unread)."""
    line = line_of(version)
    if version is None:
        why = (
            "its package.json was not read"
            if pid is not None
            else "no running Harper found, or its package.json not read"
        )
        return (
            f"Harper's version is unknown ({why}): decisions that depend on it take the safe "
            "way (a restart, no hot reload)"
        )
    if line is None:
        return f"Harper {version} is outside the lines harper-certd knows (4.0 to 5.x)"
    if not line.measured:
        return (
            f"Harper {version} (line {line.name}) is supported from its documentation, "
            "not yet from a real node"
        )
    return f"Harper {version} (line {line.name}) is supported, measured on a real node"
