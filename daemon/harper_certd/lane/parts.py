"""What a lane's parts (``lane.intake``, ``lane.renewal``) use of their lane, as Protocols.

The lane (``lane.lane.Lane``) builds its parts and hands itself to them; typed against
``Lane`` they imported ``lane.lane`` back (for annotations only, but a circle all the
same: intake -> lane -> intake, renewal -> lane -> renewal).  This leaf exists to break
that circle, as structlog's leaf modules do: the parts name ``LaneView``, and ``Lane``
satisfies it structurally (mypy checks it where ``Lane`` hands itself over).  Members are
read-only properties: a part reads its lane and asks it to move (``change_state``,
``rotate``), it never assigns the lane's attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import threading
    from pathlib import Path

    from harper_certd import events
    from harper_certd.clock import Clock
    from harper_certd.incoming import Candidate, Tracker
    from harper_certd.install import context, outcomes
    from harper_certd.lane.state import LaneState, RenewalState
    from harper_certd.schedule import Watched
    from harper_certd.trackers import HeldSets, Retry


class RenewalView(Protocol):
    """The lane's renewal, as the intake tells it of a refused set."""

    def refused(self, codes: list[str]) -> None: ...


class IntakeView(Protocol):
    """The lane's intake, as the renewal asks whether its set is still on its way."""

    @property
    def held(self) -> HeldSets: ...

    @property
    def peer_held(self) -> Mapping[Path, object]: ...

    def on_judged(self, folder: Path, outcome: outcomes.InstallOutcome) -> None: ...


class LaneView(Protocol):
    """The lane as its parts see it (``Lane``'s docstring says what each member is)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def ctx(self) -> context.Context: ...

    @property
    def state(self) -> LaneState: ...

    @property
    def stopping(self) -> threading.Event: ...

    @property
    def tracker(self) -> Tracker | None: ...

    @property
    def leaf(self) -> Watched | None: ...

    @property
    def swap_retry(self) -> Retry: ...

    @property
    def intake(self) -> IntakeView: ...

    @property
    def renewal(self) -> RenewalView: ...

    @property
    def candidates(self) -> dict[str, Candidate]: ...

    def change_state(
        self, new: LaneState | RenewalState, record: events.Event | None = None
    ) -> None: ...

    def rotate(
        self, install: Callable[[], outcomes.InstallOutcome | None]
    ) -> outcomes.InstallOutcome | None: ...
