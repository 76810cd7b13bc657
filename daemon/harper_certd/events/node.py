"""The node's own events: start, stop, configuration, Harper discovered, the loop's faults.

One frozen record per event (``base.Event``); every field is a key of the event's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harper_certd.events.base import Event, event


@event("certd.started", "info")
@dataclass(frozen=True, slots=True)
class Started(Event):
    """The daemon started and told systemd it is ready.

    Attributes:
        version: harper-certd's version.
        harper_root: Harper's root folder (ROOTPATH).
        node_name: Harper's node name (replication.hostname), if set.
        incoming: the node's incoming folder.
        state: the state folder (the primary set's store).
        restart_method: restart.method of the configuration.
        generation: the live generation's id (None: none yet).
        sets: every TLS entry of Harper's configuration: where, purpose, and for a set its name,
            role, ports, days_left (the managed one also subject, fingerprint, valid).
    """

    version: str
    harper_root: str
    node_name: str | None
    incoming: str
    state: str
    restart_method: str
    generation: str | None
    sets: list[dict[str, Any]]


@event("certd.stopping", "info")
@dataclass(frozen=True, slots=True)
class Stopping(Event):
    """The daemon was asked to stop and is finishing its cycle."""


@event("certd.stopped", "info")
@dataclass(frozen=True, slots=True)
class Stopped(Event):
    """The daemon stopped; no swap was left half done.

    Attributes:
        swap_in_flight: a swap was left half done (it is completed at the next start).
        note: what happens to that swap; None when there is none.
    """

    swap_in_flight: bool
    note: str | None


@event("certd.config_reloaded", "info")
@dataclass(frozen=True, slots=True)
class ConfigReloaded(Event):
    """The configuration was re-read (SIGHUP) and is in force.

    Attributes:
        config: the configuration file.
    """

    config: str


@event("certd.config_refused", "error")
@dataclass(frozen=True, slots=True)
class ConfigRefused(Event):
    """A re-read configuration is invalid; the previous one stays in force.

    Attributes:
        error: why it was refused (one sentence).
        config: the configuration file.
    """

    error: str
    config: str


@event("certd.cycle_failed", "error")
@dataclass(frozen=True, slots=True)
class CycleFailed(Event):
    """A cycle failed on an unexpected error; the daemon goes on with the next one.

    Attributes:
        error: the error (ours by message, others by type only).
        exception: where it was raised (a traceback without messages or locals).
    """

    error: str
    exception: str


@event("certd.crashed", "critical")
@dataclass(frozen=True, slots=True)
class Crashed(Event):
    """An unexpected error outside a cycle; the daemon exits 1 (the traceback is in the event).

    Attributes:
        error: the error (bounded).
        traceback: where it was raised (bounded).
    """

    error: str
    traceback: str


@event("certd.library_message", "warning")
@dataclass(frozen=True, slots=True)
class LibraryMessage(Event):
    """A library (watchdog) reported an error, or Python a warning: an event, never a raw line.

    Attributes:
        logger: the library's logger, or the warning's category and place.
        message: its text (bounded).
    """

    logger: str
    message: str


@event("certd.clock_jumped", "warning")
@dataclass(frozen=True, slots=True)
class ClockJumped(Event):
    """The wall clock was set (NTP step, VM resume) by more than 5 s; expiry and renewal were
    planned again from the new time.

    Attributes:
        seconds: the step (positive: forward).
        now: the wall time now (ISO 8601).
    """

    seconds: float
    now: str


@event("certd.harper_discovered", "info")
@dataclass(frozen=True, slots=True)
class HarperDiscovered(Event):
    """Harper's configuration was read: root, certificate sets, ports and node name.

    Attributes:
        config: harperdb-config.yaml.
        pid: Harper's main process id (None: not running).
        version: Harper's version, if known.
        secure_ports: the secure ports, by config key.
        operations_port: operationsApi.network.port.
        operations_socket: operationsApi.network.domainSocket.
        managed: the managed (primary) certificate path.
        purpose: what the managed set must be fit for.
        hostnames: the names it must hold.
        notes: remarks on the layout.
        sets: each set: name, role, ports, files, days_left.
        hazards: the layout's hazard codes.
        line: Harper's release line ("4.2-4.3", "4.4", ...; harper/lines.py), None if unknown.
        support: what is known of this version's support (measured, or documented only).
    """

    config: str
    pid: int | None
    version: str | None
    secure_ports: dict[str, int]
    operations_port: int | None
    operations_socket: str | None
    managed: str
    purpose: str
    hostnames: list[str]
    notes: list[str]
    sets: list[dict[str, Any]]
    hazards: list[str]
    line: str | None = None
    support: str = ""


@event("certd.layout_hazard", "error")
@dataclass(frozen=True, slots=True)
class LayoutHazard(Event):
    """A hazard of the node's certificate layout (issue 11: record-name collision, public root in a
    CA file...), one event per hazard with its problem code, at start and after a configuration
    reload that brings it (a reload that changes nothing logs none again).  Hazards of warning
    severity are ``certd.layout_warning``.

    Attributes:
        code: the problem code.
        severity: error (a warning-severity hazard is ``certd.layout_warning``).
        message: what is wrong and what to do.
    """

    code: str
    severity: str
    message: str


@event("certd.layout_warning", "warning")
@dataclass(frozen=True, slots=True)
class LayoutWarning(Event):
    """A hazard of the node's certificate layout whose severity is a warning (Harper's default
    ``replication.enableRootCAs``, for one): said as ``certd.layout_hazard`` is, at start and
    after a reload that brings it, at warning level (an error-level line for Harper's default
    on every start paged whoever alerts on errors).

    Attributes:
        code: the problem code.
        message: what is wrong and what to do.
    """

    code: str
    message: str


@event("certd.environment_warning", "warning")
@dataclass(frozen=True, slots=True)
class EnvironmentWarning(Event):
    """Something configured is unlikely to work where the daemon runs (e.g. renewal under the unit's
    sandbox); the event names the fix.

    Attributes:
        key: the configuration key concerned.
        problem: what is unlikely to work.
        fix: what to do.
    """

    key: str
    problem: str
    fix: str


@event("certd.certificates_in_database", "warning")
@dataclass(frozen=True, slots=True)
class CertificatesInDatabase(Event):
    """A TLS section of harperdb-config.yaml names no files: its certificates are in Harper's
    database, which harper-certd cannot manage.

    Attributes:
        where: the TLS section of harperdb-config.yaml.
        uses: what uses it.
        note: a remark on it.
    """

    where: str
    uses: list[str]
    note: str | None


@event("certd.set_managed", "info")
@dataclass(frozen=True, slots=True)
class SetManaged(Event):
    """At start or reload, a certificate set other than the primary one is managed on its own: its
    role, incoming folder, store and live generation.

    Attributes:
        role: the set's purpose (replication, https, ...).
        uses: the sections that use it.
        live: its live certificate path.
        incoming: its incoming folder.
        state: its store.
        generation: the live generation's id (None: none yet).
        renewal: a renewal command is configured for it.
        valid: the live set is valid (None: unreadable).
    """

    role: str
    uses: list[str]
    live: str
    incoming: str
    state: str
    generation: str | None
    renewal: bool
    valid: bool | None


@event("certd.set_unmanaged", "warning")
@dataclass(frozen=True, slots=True)
class SetUnmanaged(Event):
    """A certificate set of Harper's configuration is not managed (its name is not usable as a
    folder name, or it cannot be read); it is still checked by `harper-certd check`.

    Attributes:
        set: the set's name.
        reason: why it is not managed.
    """

    set: str
    reason: str


@event("certd.summary", "info")
@dataclass(frozen=True, slots=True)
class Summary(Event):
    """Periodic summary: each live set, its expiry and its state.

    Attributes:
        generation: the live generation's id (None: none yet).
        subject: the live leaf's subject (None: unreadable).
        fingerprint: SHA-256 of the live leaf.
        days_left: days until its notAfter.
        valid: the live set is valid.
        waiting: sources waiting in incoming/.
    """

    generation: str | None
    subject: str | None
    fingerprint: str | None
    days_left: float | None
    valid: bool | None
    waiting: list[str]


@event("certd.watch_lost", "warning")
@dataclass(frozen=True, slots=True)
class WatchLost(Event):
    """A filesystem watch stopped working; rescans on a timer cover for it.

    Attributes:
        change: what happened to the watch.
    """

    change: str


@event("certd.watch_rearmed", "info")
@dataclass(frozen=True, slots=True)
class WatchRearmed(Event):
    """A watch lost with its folder is in place again; incoming/ was rescanned at once.

    Attributes:
        change: the watch in place again.
    """

    change: str


@event("certd.rescan", "debug")
@dataclass(frozen=True, slots=True)
class Rescan(Event):
    """A full rescan of the watched directories ran.

    Attributes:
        incoming: the incoming folder rescanned.
    """

    incoming: str


# --- h-trustB (issue 17 items 7, 8): storms coalesced, Harper stopping and starting -----------


@event("certd.library_repeated", "warning")
@dataclass(frozen=True, slots=True)
class LibraryRepeated(Event):
    """The same library message (logger and text, numbers aside) came again within a minute
    of being logged as certd.library_message: counted, and this one line ends the minute.

    A storm of watchdog warnings is a few lines, not thousands (``quiet.Coalescer``).

    Attributes:
        logger: the library's logger, or the warning's category and place (as in
            ``certd.library_message``).
        message: the last of the repeated messages (bounded, 500 characters).
        count: how many came after the one logged, within the window.
        window_seconds: the window's length in seconds (60).
    """

    logger: str
    message: str
    count: int
    window_seconds: float


@event("certd.harper_stopped", "warning")
@dataclass(frozen=True, slots=True)
class HarperStopped(Event):
    """Harper's process went away (hdb.pid names no live process, or another one): nothing is
    served until it starts again.

    Noticed by the node's look at ``hdb.pid`` every 5 s (``node.harperwatch``).

    Attributes:
        root: Harper's root folder.
        pid: the process id last seen alive.
    """

    root: str
    pid: int


@event("certd.harper_started", "info")
@dataclass(frozen=True, slots=True)
class HarperStarted(Event):
    """Harper's process is running (again): after certd.harper_stopped, or first seen after the
    daemon started with Harper stopped.

    Attributes:
        root: Harper's root folder.
        pid: its process id (``hdb.pid``).
    """

    root: str
    pid: int
