"""watchdog's move-pairing delay is shortened (watch.py), and renames still pair."""

from __future__ import annotations

import os
import threading
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
