"""The daemon's own records of refused sets: ``rejected/.reasons/<filed name>.json``.

A refused folder is moved into ``rejected/`` as it is: its files are its sender's (a FIFO
or a link to ``/dev/zero`` named ``reason.json`` hung or flooded every reader, issue 17).
So the refusal (the ``reason.json`` content: source, time, stage, set, problems,
certificate, judge) is also written here, by the daemon, with ``fsio.write_replace``
(mode 0600, folder 0700), and every reader (``status``, the metrics, ``stage --wait``)
reads only these records, each with ``fsio.read_regular`` (at most ``RECORD_LIMIT``
bytes).  A record goes when retention removes its folder (``retention.prune_folder``).
A leaf module (imports only ``fsio``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harper_certd import fsio

FOLDER = ".reasons"
RECORD_LIMIT = 1 << 20  # bytes: a record is a few kB (problems and a certificate summary)


def record(rejected: Path, name: str, raw: bytes) -> None:
    """Keep ``raw`` (JSON bytes) as the record of the folder filed as ``rejected/name``."""
    folder = rejected / FOLDER
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    fsio.write_replace(folder, f"{name}.json", raw, mode=0o600)


def read(rejected: Path, name: str) -> dict[str, Any] | None:
    """The record of ``rejected/name``; None when there is none or it is damaged."""
    try:
        data = json.loads(fsio.read_regular(rejected / FOLDER / f"{name}.json", RECORD_LIMIT))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_all(rejected: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(filed name, record) of every record whose folder is still in ``rejected/``, in no
    particular order.  Removing a refused folder by hand dismisses its refusal (the status
    finding ``refused`` clears without a newer install); the folder is only looked up by
    name (``lstat``), never read."""
    try:
        names = os.listdir(rejected / FOLDER)
    except OSError:
        return
    for entry in names:
        if entry.endswith(".json") and not entry.startswith("."):
            name = entry.removesuffix(".json")
            if not os.path.lexists(rejected / name):
                continue  # dismissed: the operator removed the folder
            found = read(rejected, name)
            if found is not None:
                yield name, found


def forget(rejected: Path, name: str) -> None:
    """Remove the record of ``rejected/name`` (retention removed the folder)."""
    with contextlib.suppress(OSError):
        os.unlink(rejected / FOLDER / f"{name}.json")
