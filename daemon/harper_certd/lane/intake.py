"""A lane's intake: the sets that settled in its incoming folder, judged in paced batches,
installed as one rotation per burst (the newest valid set wins), held back by the node's
restart budget (said once: ``certd.restart_held``) unless the live set is urgent, or held
until their notBefore (``certd.set_held``); and what waits, published for ``status``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harper_certd import events, logs, peerhold, statefile
from harper_certd.errors import Interrupted, SwapError
from harper_certd.incoming import LOOSE_NAMES, Kind, classify
from harper_certd.install import judge, outcomes, pipeline
from harper_certd.lane.state import LaneState
from harper_certd.source import Identity, identity_of
from harper_certd.trackers import HeldSets

if TYPE_CHECKING:
    from harper_certd.lane.parts import LaneView

PENDING_MAX_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class PeerHeld:
    """A set held for peers without an answer: its next try (monotonic seconds), the end of
    the hold (ISO 8601) and the peers."""

    next_try: float
    until: str
    peers: tuple[str, ...]  # a burst that never ends still gets its newest valid set installed


def gather_loose(incoming: Path, now: dt.datetime) -> Path | None:
    """Loose set files in ``incoming``, moved together into a folder of their own (its path;
    None when there are none).  Written under a dot-name, then renamed: seen whole."""
    names = []
    for name in sorted(LOOSE_NAMES):
        with contextlib.suppress(OSError):
            if classify(name, os.lstat(incoming / name)) is Kind.LOOSE:
                names.append(name)
    if not names:
        return None
    folder = incoming / f".loose-{now:%Y%m%dT%H%M%S%f}"
    folder.mkdir(mode=0o700)
    for name in names:
        os.rename(incoming / name, folder / name)
    renamed = incoming / folder.name.removeprefix(".")
    os.rename(folder, renamed)
    return renamed


class Intake:
    """What arrives in ``lane``'s incoming folder, from settled to installed or held."""

    def __init__(self, lane: LaneView) -> None:
        self.lane = lane
        # Valid sets of a burst judged in earlier cycles, installed together (one rotation).
        self.pending: list[tuple[Path, judge.Judged]] = []
        self.pending_taken: dict[Path, Identity | None] = {}
        self.pending_since = 0.0
        self.held = HeldSets()
        self.peer_held: dict[Path, PeerHeld] = {}  # held for peers without an answer
        self.budget_waiting: tuple[list[Path], dt.datetime] | None = None
        self.published: list[dict[str, Any]] | None = None  # None: not yet written

    def process(self, now: float) -> None:
        tracker = self.lane.tracker
        if tracker is None:
            return
        ready = tracker.ready(now) if tracker.candidates else []
        if not ready:
            self.install_pending()  # the rest of a burst went away meanwhile
            return
        for cand in ready:
            if not cand.announced:
                cand.announced = True
                logs.emit(events.SetDetected(source=str(cand.path)))
        if not self.budget_allows([c.path for c in ready]):
            tracker.held = True  # woken by the budget's own timer, not by the settle rule
            return
        tracker.held = False
        taken = tracker.take(ready)
        folders = []
        for path in list(taken):
            incoming = self.lane.ctx.paths.incoming
            folder = gather_loose(incoming, self.lane.clock.now()) if path == incoming else path
            if folder is not None and folder != path:
                del taken[path]
                taken[folder] = identity_of(os.lstat(folder))
            if folder in self.pending_taken:  # judged valid already; installed with its burst
                del taken[folder]
            elif folder is not None and os.path.lexists(folder):
                folders.append(folder)
        if not folders:
            if not tracker.backlog:
                self.install_pending()
            return
        # Judged a paced batch a cycle; one rotation is one restart however many sets
        # arrived: the newest valid one of the whole burst wins, once it is all judged.
        started = time.monotonic()
        try:
            judged = pipeline.judge_sources(
                self.lane.ctx,
                folders,
                hold_seconds=self.lane.ctx.config.schedule.hold_not_yet_valid_seconds,
                on_judged=self.on_judged,
            )
        except (SwapError, Interrupted):
            raise  # the sources stay; they are taken again at the next rescan
        except Exception:
            tracker.settled(taken)
            raise
        tracker.pace(time.monotonic() - started, len(folders))
        valid = {folder for folder, _ in judged}
        # what could not be filed is not judged again until it changes (a held set is
        # taken again when it becomes valid)
        tracker.settled(
            {p: i for p, i in taken.items() if p not in valid and p not in self.held.sets}
        )
        if not self.pending:
            self.pending_since = now
        self.pending += judged
        self.pending_taken.update({p: i for p, i in taken.items() if p in valid})
        if tracker.backlog and now - self.pending_since < PENDING_MAX_SECONDS:
            return  # more of this burst next cycle
        self.install_pending()

    def install_pending(self) -> None:
        if not self.pending or self.lane.tracker is None:
            return
        pending, taken = self.pending, self.pending_taken
        self.pending, self.pending_taken = [], {}
        outcome: outcomes.InstallOutcome | None = None
        try:
            outcome = self.lane.rotate(
                lambda: pipeline.install_judged_newest(self.lane.ctx, pending, set(self.peer_held))
            )
        finally:
            # A failed swap's sources are taken again, and so is a burst held for its peers.
            again = (outcomes.InstallStatus.SWAP_FAILED, outcomes.InstallStatus.HELD_FOR_PEERS)
            if outcome is None or outcome.status not in again:
                self.lane.tracker.settled(taken)
        self.note_peer_hold(outcome, [folder for folder, _ in pending])

    def note_peer_hold(self, outcome: outcomes.InstallOutcome | None, folders: list[Path]) -> None:
        """A burst held for its peers (``held_for_peers``) is taken again every
        ``peers.retry_seconds``; any other outcome ends the hold of its folders."""
        if outcome is None or outcome.status != outcomes.InstallStatus.HELD_FOR_PEERS:
            for folder in folders:
                self.peer_held.pop(folder, None)
            return
        retry = time.monotonic() + self.lane.ctx.config.peers.retry_seconds
        for folder in folders:
            self.peer_held[folder] = PeerHeld(retry, outcome.held_until or "", outcome.held_for)

    def peer_hold_due(self, now: float) -> list[Path]:
        """Sets held for their peers whose next try has come (forgotten: judged again), and
        those gone from incoming/ (forgotten)."""
        for path in [p for p in self.peer_held if not p.exists()]:
            del self.peer_held[path]
        due = [p for p, h in self.peer_held.items() if h.next_try <= now]
        for path in due:
            held = self.peer_held[path]
            # still shown as held (status) until the try decides
            self.peer_held[path] = PeerHeld(math.inf, held.until, held.peers)
        return due

    def peer_hold_next(self) -> float | None:
        """The monotonic instant of the next try of a set held for its peers."""
        return min((h.next_try for h in self.peer_held.values()), default=None)

    def on_judged(self, folder: Path, outcome: outcomes.InstallOutcome) -> None:
        wall = self.lane.clock.now()
        if outcome.status == outcomes.InstallStatus.HELD:
            assert outcome.report is not None
            assert outcome.report.certificate is not None
            not_before = outcome.report.certificate.not_before
            if self.held.hold(folder, not_before, wall):
                logs.emit(
                    events.SetHeld(
                        source=str(folder),
                        not_before=not_before.isoformat(),
                        now=wall.isoformat(),
                        seconds_ahead=round((not_before - wall).total_seconds(), 1),
                        hold_limit_seconds=self.lane.ctx.config.schedule.hold_not_yet_valid_seconds,
                    )
                )
        elif outcome.status == outcomes.InstallStatus.REFUSED:
            self.lane.renewal.refused(
                [p.code for p in outcome.problems if p.severity.value == "error"]
            )

    def live_urgent(self, wall: dt.datetime) -> bool:
        """The live leaf is unreadable, expired, or inside its last warning threshold."""
        if self.lane.leaf is None:
            return True
        last = min(self.lane.ctx.config.expiry.warn_days, default=0.0)
        return wall >= self.lane.leaf.not_after - dt.timedelta(days=last)

    def budget_allows(self, waiting: list[Path]) -> bool:
        """Whether a rotation may run now; says once (restart_held) when it may not.

        The budget never holds a set while the live one is expired or about to be.
        """
        wall = self.lane.clock.now()
        if self.lane.ctx.budget.allowed(wall) or self.live_urgent(wall):
            if self.lane.state is LaneState.HELD:
                self.lane.change_state(LaneState.WATCHING)
            self.budget_waiting = None
            return True
        next_allowed = self.lane.ctx.budget.next_allowed(wall)
        self.budget_waiting = (waiting, next_allowed)
        if self.lane.state is not LaneState.HELD:
            held = events.RestartHeld(
                waiting=[str(p) for p in waiting],
                limit_per_hour=self.lane.ctx.config.restart.restarts_per_hour,
                next_allowed=next_allowed.isoformat(),
            )
            self.lane.change_state(LaneState.HELD, held)
        return False

    def waiting(self) -> list[str]:
        """Sets waiting to be installed: settling or held back in incoming/, or held."""
        paths = [*(c.path for c in self.lane.candidates.values()), *self.held.sets]
        return [str(p) for p in dict.fromkeys(paths)]

    def publish(self) -> None:
        """Tell ``harper-certd status`` what waits and why (state/waiting.json)."""
        entries: list[dict[str, Any]] = []
        if self.budget_waiting is not None:
            paths, until = self.budget_waiting
            entries += [
                {"source": str(p), "reason": "restart budget", "until": until.isoformat()}
                for p in paths
                if p.exists()
            ]
        entries += [
            {"source": str(h.path), "reason": "notBefore ahead", "until": h.not_before.isoformat()}
            for h in self.held.sets.values()
        ]
        entries += [
            {"source": str(p), "reason": peerhold.reason_text(h.peers), "until": h.until}
            for p, h in self.peer_held.items()
        ]
        if entries != self.published:
            self.published = entries
            statefile.write_waiting(self.lane.ctx.store.root, entries)  # the set's own state
