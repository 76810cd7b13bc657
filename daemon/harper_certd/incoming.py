"""The incoming folder: what changed in it, what is ready to be judged, what to ignore.

Two pieces, so that a storm of file events can neither starve the daemon nor grow
its memory (issue 10 item 6: 20,000 operations a second once reached 1 GB and a
20 s SIGTERM; 5,000 folders took 116 s in one cycle, a rescan per event):

- ``Inbox``: filled by watchdog's thread, emptied by the loop.  One dirty flag per
  top-level entry of incoming/ (a dict capped at ``INBOX_LIMIT`` names; beyond that a
  single "rescan" flag), and one wake-up note per clean-to-dirty transition.  Names
  that are ignored (editor and dot leftovers) cost nothing.
- ``Tracker``: the incoming/settle state machine with ``next_due(now)`` and
  ``tick(now)`` on an injected monotonic ``now``.  A burst is taken once the folder has
  been quiet for the settle period (or its oldest entry has waited ten), at most
  ``drain`` sources a tick; loose files wait until they make a whole set; sources
  that could not be filed are remembered by (device, inode, mtime) and not judged
  again until they change; strays are reported once; a group/world-writable
  incoming/ is warned about once per change.
"""

from __future__ import annotations

import enum
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harper_certd import events, logs
from harper_certd.roles import CERTBOT_NAMES, HARPER_NAMES
from harper_certd.source import Identity, identity_of, user_name

LOOSE_NAMES = frozenset({*HARPER_NAMES, *CERTBOT_NAMES})
LOOSE = ""  # the key of the loose set: files dropped straight into incoming/
# Work per loop cycle is kept near this (the drain adapts to the measured cost of a source),
# so that watchdog pings and SIGTERM are answered within seconds whatever arrives.
CYCLE_SECONDS = 1.0
INBOX_LIMIT = 10_000  # distinct dirty names held before falling back to one rescan
OVERFLOW = "<inotify overflow>"  # a note meaning "events were lost: rescan everything"


def ignored(name: str) -> bool:
    """Editor and dot leftovers: ``.*``, ``*~``, ``*.tmp``, ``*.swp``/``*.swx``, ``#*#``.

    A dot-name is also how a set is written safely (a dot-folder, then one rename).
    """
    return (
        not name
        or name.startswith(".")
        or name.endswith(("~", ".tmp", ".swp", ".swx"))
        or (name.startswith("#") and name.endswith("#"))
    )


class Kind(enum.Enum):
    SET = "set"  # a folder (or anything else judged as a source: a link, say)
    LOOSE = "loose"  # a regular file with a set file's name, straight in incoming/
    STRAY = "stray"  # any other file: reported once, left alone
    IGNORED = "ignored"
    GONE = "gone"


def classify(name: str, st: os.stat_result | None) -> Kind:
    if ignored(name):
        return Kind.IGNORED
    if st is None:
        return Kind.GONE
    if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
        return Kind.SET
    if stat.S_ISREG(st.st_mode) and name in LOOSE_NAMES:
        return Kind.LOOSE
    return Kind.STRAY


@dataclass
class Taken:
    """What the inbox held: dirty names of incoming/, and flags."""

    names: dict[str, None] = field(default_factory=dict)
    rescan: bool = False  # events were lost (inotify overflow or the inbox's cap)
    incoming_self: bool = False  # incoming/ itself changed (mode, owner, made again)
    watched: bool = False  # a watched folder itself changed: re-arm check
    live: bool = False  # something outside incoming/ changed (live files, generations)

    def __bool__(self) -> bool:
        return bool(self.names or self.rescan or self.incoming_self or self.watched or self.live)


class Inbox:
    """Thread-safe and bounded: ``put`` from watchdog's thread, ``take`` from the loop."""

    def __init__(
        self, incoming: Path, roots: set[Path], wake: Callable[[], None], limit: int = INBOX_LIMIT
    ) -> None:
        self.incoming = str(incoming)
        self.prefix = self.incoming + os.sep
        self.roots = {str(r) for r in roots}
        self.wake = wake
        self.limit = limit
        self.lock = threading.Lock()
        self.held = Taken()

    def put(self, raw: str) -> None:
        with self.lock:
            was_empty = not self.held
            self._note(raw)
            woke = was_empty and bool(self.held)
        if woke:
            self.wake()

    def _note(self, raw: str) -> None:
        held = self.held
        if raw == OVERFLOW:
            held.rescan = True
        elif raw == self.incoming:
            held.incoming_self = True
            held.watched = True
        elif raw.startswith(self.prefix):
            name = raw[len(self.prefix) :].split(os.sep, 1)[0]
            if ignored(name) or name in held.names:
                return
            if len(held.names) >= self.limit:
                held.rescan = True
            else:
                held.names[name] = None
        else:
            if raw in self.roots:
                held.watched = True
            held.live = True

    def take(self) -> Taken:
        with self.lock:
            taken, self.held = self.held, Taken()
        return taken


@dataclass
class Candidate:
    path: Path
    first: float  # monotonic time it was first seen
    changed: float  # monotonic time of the last event under it
    announced: bool = False


@dataclass
class Tracker:
    """The incoming/settle tracker: injected monotonic ``now`` everywhere."""

    incoming: Path
    settle: float
    loose_wait: float = 300.0  # seconds an incomplete loose set waits before a warning
    drain: int = 50  # sources taken per tick at most
    candidates: dict[str, Candidate] = field(default_factory=dict)
    remembered: dict[str, Identity] = field(default_factory=dict)
    strays: dict[str, Identity] = field(default_factory=dict)
    incomplete_warned: bool = False
    unsafe_seen: tuple[int, int] | None = None  # (mode, uid) last warned about
    backlog: bool = False  # ready sources left over by the drain cap
    held: bool = False  # ready sources held back by the restart budget: not due by settling
    paced: int = 10  # sources a cycle of CYCLE_SECONDS can judge, as last measured
    # Sub-folders that are other sets' incoming folders (incoming/<set name>/): never a source.
    reserved: frozenset[str] = frozenset()

    def pace(self, seconds: float, sources: int) -> None:
        """Judging ``sources`` took ``seconds``: take as many next time as fit CYCLE_SECONDS."""
        if sources > 0:
            per = max(seconds / sources, 1e-4)
            self.paced = max(1, min(self.drain, int(CYCLE_SECONDS / per)))

    # --- what changed ---------------------------------------------------------------

    def _lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.lstat(self.incoming / name)
        except OSError:
            return None

    def touch(self, name: str, now: float) -> None:
        """Something changed under incoming/<name>."""
        if name in self.reserved:
            return
        st = self._lstat(name)
        kind = classify(name, st)
        if kind is Kind.IGNORED:
            return
        if kind is Kind.GONE:
            self.candidates.pop(name, None)
            self.remembered.pop(name, None)
            self.strays.pop(name, None)
            if name in LOOSE_NAMES:
                self._touch(LOOSE, now, only_existing=True)
            return
        assert st is not None
        if kind is Kind.STRAY:
            self._stray(name, st)
            return
        if kind is Kind.LOOSE:
            self._touch(LOOSE, now)
            return
        known = self.remembered.get(name)
        if known is not None:
            if known == identity_of(st):
                return  # refused once and unchanged since: not judged again
            del self.remembered[name]
        self._touch(name, now)

    def _touch(self, key: str, now: float, *, only_existing: bool = False) -> None:
        cand = self.candidates.get(key)
        if cand is not None:
            cand.changed = now
        elif not only_existing:
            path = self.incoming if key == LOOSE else self.incoming / key
            self.candidates[key] = Candidate(path, now, now)

    def _stray(self, name: str, st: os.stat_result) -> None:
        ident = identity_of(st)
        if self.strays.get(name) == ident:
            return
        self.strays[name] = ident
        logs.emit(
            events.IncomingStray(
                path=str(self.incoming / name),
                note="not part of a set; left alone and not reported again unless it changes",
            )
        )

    def rescan(self, now: float) -> None:
        """One linear pass over incoming/: every entry touched once, forgotten names dropped."""
        self.check_mode()
        try:
            with os.scandir(self.incoming) as it:
                names = [entry.name for entry in it]
        except OSError:
            names = []
        present = set(names)
        for gone in [n for n in self.candidates if n != LOOSE and n not in present]:
            del self.candidates[gone]
        for table in (self.remembered, self.strays):
            for gone in [n for n in table if n not in present]:
                del table[gone]
        for name in names:
            if name in self.candidates and name != LOOSE:
                continue  # already waiting; a rescan says nothing about when it changed
            self.touch(name, now)

    def check_mode(self) -> None:
        """Warn once per change when incoming/ is writable by group or others."""
        try:
            st = os.stat(self.incoming)
        except OSError:
            return
        if not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            self.unsafe_seen = None
            return
        seen = (stat.S_IMODE(st.st_mode), st.st_uid)
        if seen == self.unsafe_seen:
            return
        self.unsafe_seen = seen
        logs.emit(
            events.IncomingUnsafe(
                incoming=str(self.incoming),
                mode=f"{seen[0]:04o}",
                owner=user_name(st.st_uid),
                note="other users can drop, rename or replace sets here; make it 0750 or 0700",
            )
        )

    # --- what is ready --------------------------------------------------------------

    def _loose_state(self) -> tuple[list[str], list[str]]:
        """(present, missing) set files among the loose names in incoming/."""
        present = sorted(n for n in LOOSE_NAMES if classify(n, self._lstat(n)) is Kind.LOOSE)
        have = set(present)
        if set(HARPER_NAMES) <= have:
            return present, []
        if "privkey.pem" in have and have & {"fullchain.pem", "cert.pem"}:
            return present, []
        if have & {"fullchain.pem", "cert.pem", "privkey.pem", "chain.pem"}:
            missing = ["privkey.pem"] if "privkey.pem" not in have else ["fullchain.pem"]
        else:
            missing = [n for n in HARPER_NAMES if n not in have]
        return present, sorted(missing)

    def _waiting(self) -> list[Candidate]:
        """Candidates that count for the settle rule (an incomplete loose set does not)."""
        out = list(self.candidates.values())
        loose = self.candidates.get(LOOSE)
        if loose is not None and self._loose_state()[1]:
            out.remove(loose)
        return out

    def next_due(self, now: float) -> float | None:
        """Monotonic time of the next ``tick`` with something to do, or None."""
        if self.backlog and not self.held:
            return now
        dues = []
        waiting = self._waiting()
        if waiting and not self.held:
            last = max(c.changed for c in waiting)
            first = min(c.changed for c in waiting)
            dues.append(min(last + self.settle, first + 10 * self.settle))
        loose = self.candidates.get(LOOSE)
        if loose is not None and not self.incomplete_warned and loose not in waiting:
            dues.append(loose.first + self.loose_wait)
        return min(dues) if dues else None

    def ready(self, now: float) -> list[Candidate]:
        """Sources ready to be judged now (at most ``drain``), oldest change first; not taken."""
        self._warn_incomplete(now)
        waiting = self._waiting()
        if not waiting:
            self.backlog = False
            return []
        # A burst is taken whole once incoming/ has been quiet for the settle period; a
        # folder that never stops changing holds the others back ten periods at most.
        quiet = now - max(c.changed for c in waiting) >= self.settle
        oldest = now - min(c.changed for c in waiting)
        if not quiet and oldest < 10 * self.settle:
            self.backlog = False
            return []
        ready = sorted(
            (c for c in waiting if now - c.changed >= self.settle),
            key=lambda c: (c.changed, c.path.name),
        )
        cap = min(self.paced, self.drain)
        self.backlog = len(ready) > cap
        return ready[:cap]

    def _warn_incomplete(self, now: float) -> None:
        loose = self.candidates.get(LOOSE)
        if loose is None:
            self.incomplete_warned = False
            return
        present, missing = self._loose_state()
        if not present:
            del self.candidates[LOOSE]
            self.incomplete_warned = False
            return
        if not missing:
            self.incomplete_warned = False
            return
        if not self.incomplete_warned and now - loose.first >= self.loose_wait:
            self.incomplete_warned = True
            note = "held until the rest arrives; write a set into a dot-folder, then rename it"
            incomplete = events.SetIncomplete(
                incoming=str(self.incoming),
                present=present,
                missing=missing,
                waited_seconds=round(now - loose.first, 1),
                note=note,
            )
            logs.emit(incomplete)

    def take(self, ready: list[Candidate]) -> dict[Path, Identity | None]:
        """Remove ``ready`` from the candidates: {path: identity as taken}."""
        taken: dict[Path, Identity | None] = {}
        for cand in ready:
            key = LOOSE if cand.path == self.incoming else cand.path.name
            self.candidates.pop(key, None)
            st = None if key == LOOSE else self._lstat(key)
            taken[cand.path] = None if st is None else identity_of(st)
        return taken

    def settled(self, taken: dict[Path, Identity | None]) -> None:
        """After judging: a source still there, unchanged, could not be filed; remember it."""
        for path, ident in taken.items():
            if ident is None or path.parent != self.incoming:
                continue
            st = self._lstat(path.name)
            if st is not None and identity_of(st) == ident:
                self.remembered[path.name] = ident

    def tick(self, now: float) -> list[Candidate]:
        """The ready sources, taken (for callers with no budget to check in between)."""
        ready = self.ready(now)
        self.take(ready)
        return ready
