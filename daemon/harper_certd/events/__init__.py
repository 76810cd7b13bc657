"""The event catalogue: one frozen record per event, and what is generated from them.

``base`` defines the record type and the registry; ``node``, ``intake``, ``install`` and
``live`` hold the records, one class per event.  A call site builds the record
(``logs.emit(events.SetInstalled(...))``), so mypy checks its keys and types.  ``EVENTS``
(name -> level, meaning) and ``catalogue()`` / ``markdown()`` are derived from the records:
the README's table and ``docs/`` come from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harper_certd.events.base import (
    RESERVED_KEYS,
    Entry,
    Event,
    EventShapeError,
    Level,
    build,
    catalogue,
    description,
    field_docs,
    keys,
    markdown,
    records,
    required,
)

if TYPE_CHECKING:  # the records themselves are built on first use (``__getattr__``)
    from harper_certd.events.install import (
        GenerationPruned,
        HarperNotRunning,
        HarperRestarted,
        HarperVersionUnknown,
        HotReloadMissed,
        NameChanged,
        OperatorRollback,
        PeerCasRefreshed,
        PeerHoldExpired,
        PeersChecked,
        PeersOverridden,
        PeersUnchecked,
        PeerUnreachable,
        PeerUnreachableTrusted,
        PruneFailed,
        Released,
        RestartDeferred,
        RollbackFailed,
        RolledBack,
        RotationFailed,
        RotationStep,
        RotationWaiting,
        ServedVerified,
        SetHeldForPeers,
        SetInstalled,
        SwapFailed,
        SwapRecovered,
        VerifyFailed,
    )
    from harper_certd.events.intake import (
        IncomingStray,
        IncomingUnsafe,
        JudgeDisagreed,
        RestartHeld,
        SetDetected,
        SetHeld,
        SetIncomplete,
        SetRefused,
        SetRouted,
        SetStaged,
        SetSuperseded,
        SetUnchanged,
        SourceLeft,
        SourcesPruned,
    )
    from harper_certd.events.live import (
        ContentFailed,
        Expired,
        ExpiryWarning,
        LiveAdopted,
        LiveChanged,
        LiveInvalid,
        LiveRestored,
        MetricsFailed,
        RenewalFailed,
        RenewalStarted,
        RenewalSucceeded,
        ServedMatches,
        ServedMismatch,
        WatchOnly,
    )
    from harper_certd.events.node import (
        CertificatesInDatabase,
        ClockJumped,
        ConfigRefused,
        ConfigReloaded,
        Crashed,
        CycleFailed,
        EnvironmentWarning,
        HarperDiscovered,
        HarperStarted,
        HarperStopped,
        LayoutHazard,
        LayoutWarning,
        LibraryMessage,
        LibraryRepeated,
        Rescan,
        SetManaged,
        SetUnmanaged,
        Started,
        Stopped,
        Stopping,
        Summary,
        WatchLost,
        WatchRearmed,
    )

    # name -> (level, meaning): the catalogue as the README and the tests read it.
    EVENTS: dict[str, tuple[str, str]]
    # name -> (kind, outcome) for the metrics' last operation of each kind.
    OPERATIONS: dict[str, tuple[str, str]]


def __getattr__(name: str) -> Any:
    """A record type, ``EVENTS`` or ``OPERATIONS``.  The 67 record classes are built on
    the first use of any of them (measured: about as long as importing structlog), so a
    command that logs nothing (``status``, ``validate``) does not pay for them."""
    found = records()
    namespace = globals()
    namespace.update({record.__name__: record for record in found.values()})
    namespace["EVENTS"] = {n: (r.level, description(r)) for n, r in found.items()}
    namespace["OPERATIONS"] = {n: r.operation for n, r in found.items() if r.operation is not None}
    if name not in namespace:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return namespace[name]


__all__ = [
    "EVENTS",
    "OPERATIONS",
    "RESERVED_KEYS",
    "CertificatesInDatabase",
    "ClockJumped",
    "ConfigRefused",
    "ConfigReloaded",
    "ContentFailed",
    "Crashed",
    "CycleFailed",
    "Entry",
    "EnvironmentWarning",
    "Event",
    "EventShapeError",
    "Expired",
    "ExpiryWarning",
    "GenerationPruned",
    "HarperDiscovered",
    "HarperNotRunning",
    "HarperRestarted",
    "HarperStarted",
    "HarperStopped",
    "HarperVersionUnknown",
    "HotReloadMissed",
    "IncomingStray",
    "IncomingUnsafe",
    "JudgeDisagreed",
    "LayoutHazard",
    "LayoutWarning",
    "Level",
    "LibraryMessage",
    "LibraryRepeated",
    "LiveAdopted",
    "LiveChanged",
    "LiveInvalid",
    "LiveRestored",
    "MetricsFailed",
    "NameChanged",
    "OperatorRollback",
    "PeerCasRefreshed",
    "PeerHoldExpired",
    "PeerUnreachable",
    "PeerUnreachableTrusted",
    "PeersChecked",
    "PeersOverridden",
    "PeersUnchecked",
    "PruneFailed",
    "Released",
    "RenewalFailed",
    "RenewalStarted",
    "RenewalSucceeded",
    "Rescan",
    "RestartDeferred",
    "RestartHeld",
    "RollbackFailed",
    "RolledBack",
    "RotationFailed",
    "RotationStep",
    "RotationWaiting",
    "ServedMatches",
    "ServedMismatch",
    "ServedVerified",
    "SetDetected",
    "SetHeld",
    "SetHeldForPeers",
    "SetIncomplete",
    "SetInstalled",
    "SetManaged",
    "SetRefused",
    "SetRouted",
    "SetStaged",
    "SetSuperseded",
    "SetUnchanged",
    "SetUnmanaged",
    "SourceLeft",
    "SourcesPruned",
    "Started",
    "Stopped",
    "Stopping",
    "Summary",
    "SwapFailed",
    "SwapRecovered",
    "VerifyFailed",
    "WatchLost",
    "WatchOnly",
    "WatchRearmed",
    "build",
    "catalogue",
    "description",
    "field_docs",
    "keys",
    "markdown",
    "records",
    "required",
]
