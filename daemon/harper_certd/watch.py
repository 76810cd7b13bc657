"""Watch stage: inotify (through watchdog) on the folders that matter, never polling them.

Events only say "look again at this path"; the daemon decides what they mean.  A
watched folder may be deleted and created again: ``check()`` notices (by inode),
re-arms the watch and tells the caller to rescan.

watchdog holds an IN_MOVED_FROM for 0.5 s waiting for its IN_MOVED_TO, and every event
queued behind it waits too: the daemon filing a set out of ``incoming/`` (a move to a folder
it does not watch) delayed the next drop's events by half a second, so drop -> installed was
the settle period plus up to 0.5 s (measured with watchdog 7.1: a drop right after a move out
was reported 502 ms late).  The kernel queues the two halves of a rename back to back, so
pairing needs far less: ``MOVE_PAIRING_SECONDS``.  The daemon reads events as "look again at
this path" and never relies on the pairing.

watchdog 7.1.1 is excluded (pyproject.toml): it buffers what it reads from inotify without
bound and pairs each move by a linear scan of its queue, so under a storm of renames its
dispatcher fell minutes behind (the racing-swapper test: changes seen 90 s and more late).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import queue
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import EventDispatcher, ObservedWatch

from harper_certd import quiet
from harper_certd.incoming import OVERFLOW

MOVE_PAIRING_SECONDS = 0.02  # how long an IN_MOVED_FROM waits for its IN_MOVED_TO


def _shorten_move_pairing() -> type | None:
    """Set watchdog's move-pairing delay (a class attribute read when a watch is made) to
    ``MOVE_PAIRING_SECONDS``; the class that holds it, or None where watchdog has neither
    (not Linux, or a watchdog that renamed it: tests/test_watch_pairing.py fails then)."""
    # watchdog 7 (inotify_move_event_grouper), then the older inotify_buffer.
    for module, name in (
        ("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),
        ("watchdog.observers.inotify_buffer", "InotifyBuffer"),
    ):
        try:
            holder = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(holder, type) and isinstance(getattr(holder, "delay", None), float):
            holder.delay = MOVE_PAIRING_SECONDS  # type: ignore[attr-defined]
            return holder
    return None


MOVE_PAIRING_CLASS = _shorten_move_pairing()


class _LibraryRecords(logging.Handler):
    """watchdog's own log records become ``certd.library_message`` events, never raw lines.

    Every line the daemon writes is a catalogued JSON event (issue 10 item 11); without
    this, Python's last-resort handler prints a library's errors as plain text.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted is still reported
            message = str(record.msg)
        quiet.library(record.name, message[:500])  # a storm of them is one line a minute


# watchdog reports a watch torn down with its folder at warning level; the daemon re-arms
# such watches itself and logs certd.watch_lost instead: only errors are passed on.
_WATCHDOG_LOG = logging.getLogger("watchdog")
_WATCHDOG_LOG.setLevel(logging.ERROR)
_WATCHDOG_LOG.propagate = False
if not any(isinstance(h, _LibraryRecords) for h in _WATCHDOG_LOG.handlers):
    _WATCHDOG_LOG.addHandler(_LibraryRecords(logging.ERROR))


class _OverflowHook(logging.Handler):
    """watchdog's only signal of a kernel queue overflow is a log record: turn it into a note.

    Installed once for the process and never removed: with no handler at all, Python's
    last-resort handler would print watchdog's records as raw text on stderr.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        # Every running Watcher's notify (a multi-set daemon runs one per set and a router):
        # the record does not say whose queue overflowed, so each of them rescans.
        self.notify: dict[int, Callable[[str], None]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            for notify in list(self.notify.values()):
                notify(OVERFLOW)


_OVERFLOW_HOOK = _OverflowHook()
for _name in ("watchdog.observers.inotify_c", "watchdog.observers.inotify"):
    _inotify_log = logging.getLogger(_name)
    _inotify_log.setLevel(logging.WARNING)
    _inotify_log.propagate = False  # the daemon logs certd.watch_lost instead
    if _OVERFLOW_HOOK not in _inotify_log.handlers:
        _inotify_log.addHandler(_OVERFLOW_HOOK)


class _Forward(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify
        self.roots: set[str] = set()
        self.deleted: set[str] = set()  # watched roots seen deleted or moved away

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reading is not changing
        if event.event_type in ("deleted", "moved") and os.fsdecode(event.src_path) in self.roots:
            self.deleted.add(os.fsdecode(event.src_path))
        self.notify(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.notify(os.fsdecode(dest))


@dataclass(frozen=True, slots=True)
class Root:
    path: Path
    recursive: bool
    create: bool = False  # made again (0750) when it goes missing, if its parent is there


class Watcher:
    def __init__(self, roots: Iterable[Root], notify: Callable[[str], None]) -> None:
        self.roots = list(roots)
        self.handler = _Forward(notify)
        self.handler.roots = {str(r.path) for r in self.roots}
        _OVERFLOW_HOOK.notify[id(self)] = notify
        self.observer = Observer()
        self.watches: dict[Path, tuple[ObservedWatch, tuple[int, int]]] = {}
        self.lost: set[Path] = set()

    def start(self) -> list[str]:
        _WATCHDOG_LOG.setLevel(logging.ERROR)  # a previous stop() silenced it
        self.observer.start()
        return self.check()

    def stop(self) -> None:
        """Stop watching; never raises for watchdog's own state.  watchdog 7.1's inotify
        emitter can lose track of its watches after a kernel queue overflow (a ``KeyError``
        in its thread, then again in ``stop``: seen under tests/test_storms.py's churn); the
        emitters that stop did not reach are stopped one by one, so that a reload's new
        watcher always starts (a thread watchdog can no longer wake may stay blocked on its
        own inotify descriptor: a daemon thread, gone with the process)."""
        # Stopping races watchdog's own emitter threads, which then log a harmless error.
        _WATCHDOG_LOG.setLevel(logging.CRITICAL)
        _OVERFLOW_HOOK.notify.pop(id(self), None)
        try:
            self.observer.stop()
        except Exception:  # watchdog's bookkeeping broke (above): finish its stop by hand
            for emitter in list(self.observer.emitters):
                with contextlib.suppress(Exception):
                    emitter.stop()
            # what EventDispatcher.stop does after the step that raised: wake its thread
            with contextlib.suppress(queue.Full):
                self.observer.event_queue.put_nowait(EventDispatcher.stop_event)
        self.observer.join(timeout=5)
        if _OVERFLOW_HOOK.notify:  # other watchers run on (a multi-set daemon's reload)
            _WATCHDOG_LOG.setLevel(logging.ERROR)

    def check(self) -> list[str]:
        """Re-arm watches on folders that vanished or were made again; say what changed.

        Each line is "lost X", "watching X again" or "cannot watch X: why"; the caller
        rescans when the list is not empty.  A missing ``create`` root is made again.
        """
        changes = []
        deleted, self.handler.deleted = self.handler.deleted, set()
        for root in self.roots:
            # A folder deleted and made again often gets its inode number back: a deletion
            # seen (an event, or the folder missing now) re-arms whatever the inode says.
            gone = str(root.path) in deleted or not os.path.exists(root.path)
            if root.create and not os.path.lexists(root.path) and root.path.parent.is_dir():
                try:
                    root.path.mkdir(mode=0o750)
                except OSError as exc:
                    changes.append(f"cannot make {root.path} again: {exc.strerror}")
            try:
                inode: tuple[int, int] | None = _ident(os.stat(root.path))
            except OSError:
                inode = None
            armed = self.watches.get(root.path)
            if armed is not None and armed[1] == inode and not gone and self._alive(armed[0]):
                continue
            if armed is not None:
                with contextlib.suppress(KeyError, OSError):
                    self.observer.unschedule(armed[0])
                del self.watches[root.path]
                self.lost.add(root.path)
                changes.append(f"lost {root.path}")
            if inode is not None:
                try:
                    watch = self.observer.schedule(
                        self.handler, str(root.path), recursive=root.recursive
                    )
                except OSError as exc:
                    changes.append(f"cannot watch {root.path}: {exc.strerror}")
                    continue
                self.watches[root.path] = (watch, inode)
                if root.path in self.lost:
                    self.lost.discard(root.path)
                    changes.append(f"watching {root.path} again")
        return changes

    def _alive(self, watch: ObservedWatch) -> bool:
        """Whether the thread reading ``watch``'s events still runs: watchdog's inotify
        thread dies of a ``KeyError`` after some queue overflows (see ``stop``), and its
        folder then goes unwatched until it is scheduled again."""
        return any(e.watch == watch and e.is_alive() for e in self.observer.emitters)


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino
