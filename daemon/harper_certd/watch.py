"""Watch stage: inotify (through watchdog) on the folders that matter, never polling them.

Events only say "look again at this path"; the daemon decides what they mean.  A
watched folder may be deleted and created again: ``check()`` notices (by inode),
re-arms the watch and tells the caller to rescan.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

# watchdog reports a watch torn down with its folder at warning level through the root
# logger; the daemon re-arms such watches itself and logs certd.watch_lost instead.
logging.getLogger("watchdog").setLevel(logging.ERROR)


OVERFLOW = "<inotify overflow>"  # a note meaning "events were lost: rescan everything"


class _OverflowHook(logging.Handler):
    """watchdog's only signal of a kernel queue overflow is a log record: turn it into a note."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self.notify = notify

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.notify(OVERFLOW)


class _Forward(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str], None]) -> None:
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reading is not changing
        self.notify(os.fsdecode(event.src_path))
        dest = getattr(event, "dest_path", "")
        if dest:
            self.notify(os.fsdecode(dest))


@dataclass(frozen=True, slots=True)
class Root:
    path: Path
    recursive: bool


class Watcher:
    def __init__(self, roots: Iterable[Root], notify: Callable[[str], None]) -> None:
        self.roots = list(roots)
        self.handler = _Forward(notify)
        self.overflow = _OverflowHook(notify)
        inotify_log = logging.getLogger("watchdog.observers.inotify_c")
        inotify_log.setLevel(logging.WARNING)
        inotify_log.propagate = False  # the daemon logs certd.watch_lost instead
        inotify_log.addHandler(self.overflow)
        self.observer = Observer()
        self.watches: dict[Path, tuple[ObservedWatch, int]] = {}

    def start(self) -> list[str]:
        self.observer.start()
        return self.check()

    def stop(self) -> None:
        # Stopping races watchdog's own emitter threads, which then log a harmless error.
        logging.getLogger("watchdog").setLevel(logging.CRITICAL)
        logging.getLogger("watchdog.observers.inotify_c").removeHandler(self.overflow)
        self.observer.stop()
        self.observer.join(timeout=5)

    def check(self) -> list[str]:
        """Re-arm watches on folders that vanished or were made again; say what changed."""
        changes = []
        for root in self.roots:
            try:
                inode = os.stat(root.path).st_ino
            except OSError:
                inode = None
            armed = self.watches.get(root.path)
            if armed is not None and armed[1] == inode:
                continue
            if armed is not None:
                self.observer.unschedule(armed[0])
                del self.watches[root.path]
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
                if armed is not None:
                    changes.append(f"watching {root.path} again")
        return changes
