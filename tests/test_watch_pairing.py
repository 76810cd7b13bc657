"""watchdog's move-pairing delay is shortened (watch.py), and renames still pair."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from harper_certd import watch


def test_the_pairing_delay_is_found_and_shortened() -> None:
    # Fails when a watchdog upgrade moves the attribute: drop -> installed would again wait
    # up to 0.5 s behind every set the daemon files away.
    assert watch.MOVE_PAIRING_CLASS is not None
    assert watch.MOVE_PAIRING_CLASS.delay == watch.MOVE_PAIRING_SECONDS  # type: ignore[attr-defined]


class _Moves(FileSystemEventHandler):
    def __init__(self) -> None:
        self.moved: list[tuple[str, str]] = []
        self.seen = threading.Event()

    def on_moved(self, event: FileSystemEvent) -> None:
        self.moved.append((os.fsdecode(event.src_path), os.fsdecode(event.dest_path)))
        self.seen.set()


def test_a_rename_inside_a_watched_folder_is_still_one_move(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    (incoming / ".partial").mkdir(parents=True)
    handler = _Moves()
    observer = Observer()
    observer.schedule(handler, str(incoming), recursive=True)
    observer.start()
    try:
        os.rename(incoming / ".partial", incoming / "set1")
        assert handler.seen.wait(timeout=30)
    finally:
        observer.stop()
        observer.join(timeout=10)
    assert (str(incoming / ".partial"), str(incoming / "set1")) in handler.moved


def _emitters(watcher: watch.Watcher) -> list[object]:
    return list(watcher.observer.emitters)


def test_a_watch_whose_thread_died_is_armed_again_and_stop_never_raises(tmp_path: Path) -> None:
    """watchdog 7.1's inotify thread can die of a ``KeyError`` after a kernel queue overflow
    and raise it again from ``stop`` (tests/test_storms.py saw both: the reload's new watcher
    never started).  The watch check arms a folder whose thread died again and events reach
    the daemon again; ``stop`` does not raise, and the next watcher (a reload's) starts and
    sees events.  (The library's fault is injected: its thread stopped behind its observer's
    back, and its stop made to raise as it did.)"""
    folder = tmp_path / "incoming"
    folder.mkdir()
    seen: list[str] = []

    def wait_for(name: str) -> None:
        deadline = time.monotonic() + 10
        while not any(name in s for s in seen):
            assert time.monotonic() < deadline, f"no event for {name}: {seen}"
            time.sleep(0.02)

    watcher = watch.Watcher([watch.Root(folder, recursive=True)], seen.append)
    watcher.start()
    try:
        assert watcher.check() == []  # armed and alive: nothing to do
        [emitter] = _emitters(watcher)
        emitter.stop()  # type: ignore[attr-defined]  # the thread dies, the observer knows nothing
        emitter.join(5)  # type: ignore[attr-defined]
        assert watcher.check() == [f"lost {folder}", f"watching {folder} again"]
        (folder / "set-1").mkdir()
        wait_for("set-1")
        [fresh] = _emitters(watcher)

        def broken() -> None:
            raise KeyError(b"/gone")  # watchdog's _remove_watch_internally, as it raised

        fresh.on_thread_stop = broken  # type: ignore[attr-defined]
    finally:
        watcher.stop()  # must not raise
    assert not watcher.observer.is_alive()
    again = watch.Watcher([watch.Root(folder, recursive=True)], seen.append)
    again.start()
    try:
        (folder / "set-2").mkdir()
        wait_for("set-2")
    finally:
        again.stop()
