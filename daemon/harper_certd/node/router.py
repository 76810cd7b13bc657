"""The incoming folder of a node with several certificate sets (issue 11): a router.

On such a node every set has a folder of its own, ``incoming/<set name>/``, watched and
judged by that set's lane (``lane.Lane``).  A folder placed straight in ``incoming/``
(or loose set files there, gathered into one folder) is taken once it has settled, as any
source is, and moved with one ``rename(2)`` into the folder of the one set it fits
(``routing.route``: role, names, CA file or not), or refused (``set_unroutable``) and
filed in ``rejected/`` with its reason.  Nothing else is judged here: the set's own lane
validates what arrives, exactly as if it had been placed there by hand.  A folder whose
certificate cannot be read goes to the primary set, whose validation says what is wrong.

A node with one set has no router: its set takes ``incoming/`` itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from harper_certd import hazards, routing
from harper_certd.discover import CertSet
from harper_certd.incoming import Inbox, Tracker
from harper_certd.lane.intake import gather_loose
from harper_certd.source import Identity, SourceRefused, read_source
from harper_certd.watch import Root, Watcher


def leaf_of(
    folder: Path, *, trusted_uids: set[int], ca_fallback: Path | None
) -> tuple[x509.Certificate, bool] | None:
    """The folder's leaf and whether it holds a CA file (``ca.pem``); None: unreadable.

    Read as a source is read (``source.read_source``: no link followed, owners checked),
    first as a set with a CA file, then as one without (a public full chain).
    """
    for ca_file in (True, False):
        with contextlib.suppress(SourceRefused, OSError):
            source = read_source(
                folder, trusted_uids=trusted_uids, ca_fallback=ca_fallback, ca_file=ca_file
            )
            try:
                leaf = x509.load_pem_x509_certificates(source.data.cert)[0]
            except Exception:  # the set's own validation names what is wrong
                return None
            return leaf, any(name == "ca.pem" for name, _ in source.members)
    return None


def decide(
    folder: Path,
    sets: Sequence[CertSet],
    primary: str,
    *,
    trusted_uids: set[int],
    ca_fallback: Path | None,
    node_name: str | None,
) -> routing.Routed:
    """Where ``folder`` goes: a set's name, or None with the reason (``set_unroutable``)."""
    found = leaf_of(folder, trusted_uids=trusted_uids, ca_fallback=ca_fallback)
    if found is None:
        return routing.Routed(primary, "its certificate cannot be read: the primary set says why")
    leaf, has_ca_file = found
    return routing.route(
        sets,
        {s.name: hazards.read_material(s) for s in sets},
        leaf,
        has_ca_file=has_ca_file,
        node_name=node_name,
    )


def move_to(folder: Path, target_dir: Path, now: dt.datetime) -> Path:
    """``folder`` moved into ``target_dir`` with one rename (a stamp added on a clash)."""
    target_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    target = target_dir / folder.name
    if os.path.lexists(target):
        target = target_dir / f"{folder.name}-{now:%Y%m%dT%H%M%S%f}"
    os.rename(folder, target)
    return target


@dataclass
class Router:
    """The router's own tracker, inbox and watch of ``incoming`` (recursive: a folder still
    being written keeps changing), leaving the sets' folders (``reserved``) alone."""

    incoming: Path
    tracker: Tracker
    wake: Callable[[], None]
    inbox: Inbox = field(init=False)
    watcher: Watcher | None = None

    def __post_init__(self) -> None:
        self.inbox = Inbox(self.incoming, {self.incoming}, self.wake)

    def start(self) -> list[str]:
        self.incoming.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.watcher = Watcher([Root(self.incoming, recursive=True, create=True)], self.inbox.put)
        return self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def next_due(self, now: float) -> float | None:
        return self.tracker.next_due(now)

    def tick(self, now: float, place: Callable[[Path], None], clock: dt.datetime) -> None:
        """What changed since the last tick noted; each settled source handed to ``place``."""
        taken = self.inbox.take()
        if taken.rescan:
            self.tracker.rescan(now)
        for name in taken.names:
            self.tracker.touch(name, now)
        ready = self.tracker.ready(now)
        if not ready:
            return
        sources: dict[Path, Identity | None] = self.tracker.take(ready)
        try:
            for path in sources:
                folder = gather_loose(self.incoming, clock) if path == self.incoming else path
                if folder is not None and os.path.lexists(folder):
                    place(folder)
        finally:
            self.tracker.settled(sources)  # a source that could not be moved: not again
