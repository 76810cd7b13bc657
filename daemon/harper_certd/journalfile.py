"""The store's journal file, ``<state>/journal.json``: what an adoption or a rollback has
under way, written whole before each step (its record is ``journal.Journal``).

An install writes none: its generation says ``pending`` until it finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harper_certd import fsio
from harper_certd.errors import StateError, SwapError
from harper_certd.generation import read_file


class JournalFile:
    """``<root>/journal.json``, owned by ``owner()``'s (uid, gid) (the state directory's)."""

    def __init__(self, root: Path, owner: Callable[[], tuple[int, int]]) -> None:
        self.root = root
        self.path = root / "journal.json"
        self._owner = owner

    def read(self) -> dict[str, Any] | None:
        """The entry as written, or None when there is none (or it cannot be parsed).
        StateError when the path is not a regular file of ours (a FIFO, a link, a device)."""
        try:
            data: dict[str, Any] = json.loads(read_file(self.path))
        except FileNotFoundError:
            return None
        except OSError as exc:  # a FIFO, a link, a device: never ours
            raise StateError(f"the journal {self.path}: {exc}") from exc
        except ValueError:
            # A torn journal cannot be: it is written whole and renamed. Treat as absent.
            return None
        return data

    def write(self, **entry: Any) -> None:
        """Replace the entry by ``entry`` (JSON), 0600, renamed in and fsynced; SwapError."""
        tmp = self.root / ".journal.json.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            uid, gid = self._owner()
            fsio.write_new(tmp, json.dumps(entry).encode(), mode=0o600, uid=uid, gid=gid)
            os.rename(tmp, self.path)
            fsio.fsync_dir(self.root)
        except OSError as exc:
            raise SwapError(
                f"writing the journal in {self.root} failed: {fsio.describe_os_error(exc)}; "
                "the live set is unchanged"
            ) from exc

    def clear(self) -> None:
        """Remove the entry: the operation is over."""
        # Not fsynced: a journal that comes back after a crash names a generation that is
        # already current, which recovery completes (and verifies) again, harmlessly.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
