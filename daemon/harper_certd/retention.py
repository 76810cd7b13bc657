"""Retention of filed sources: ``processed/`` and ``rejected/`` keep sets, private keys included.

Every installed, superseded or refused set is filed there, never deleted unexamined
(service.py); kept forever they pile up private keys (a renewal loop filed 1,440 a
day, issue 9).  ``prune_kept`` keeps the newest ``retention.keep`` folders of each and
none older than ``retention.days``, makes every key file there ``0600``, and logs one
``certd.sources_pruned`` per folder it pruned.  Symlinks are never followed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import stat
import threading
from pathlib import Path

from harper_certd import events, fsio, logs, reasons, roles
from harper_certd.config import Paths, RetentionSection

_SNIFF_BYTES = 65536
_KEY_MARKER = b"PRIVATE KEY-----"


def filed_at(entry: Path) -> dt.datetime | None:
    """When ``entry`` was filed: the ``%Y%m%dT%H%M%S%fZ`` stamp its name starts with.

    A rename keeps the source folder's mtime, so the name is the only trustworthy date;
    None for a name without a stamp (not ours: never removed by age).
    """
    stamp = _stamp(entry.name)
    return None if stamp is None else dt.datetime.strptime(stamp, _FORMAT).replace(tzinfo=dt.UTC)


_FORMAT = "%Y%m%dT%H%M%S%fZ"
# The shape of the stamps we write (fixed width: they sort as they were filed).
_CANONICAL = re.compile(
    r"\d{4}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3])[0-5]\d[0-5]\d\d{6}Z", re.ASCII
)


def _stamp(name: str) -> str | None:
    """The name's filing stamp in the fixed-width form (``_CANONICAL``), or None.

    Every kept folder is looked at on every install: a name in the form we write is
    matched, never parsed (strptime costs 50 us a name); another form strptime reads
    (shorter fields) is parsed and written in the fixed-width form.
    """
    stamp = name.split("-", 1)[0]
    if _CANONICAL.fullmatch(stamp):
        return stamp
    try:
        return dt.datetime.strptime(stamp, _FORMAT).strftime(_FORMAT)
    except ValueError:
        return None


def _is_key(name: str, dir_fd: int, st: os.stat_result) -> bool:
    if name in roles.KEY_NAMES or name.endswith(".key") or name.startswith("privkey"):
        return True
    if not stat.S_ISREG(st.st_mode) or st.st_size > 4 * _SNIFF_BYTES:
        return False
    try:
        head = fsio.read_regular(name, 4 * _SNIFF_BYTES, dir_fd=dir_fd)
    except OSError:
        return False
    return _KEY_MARKER in head


def protect_keys(folder: Path) -> list[Path]:
    """Make every private key file directly in ``folder`` ``0600``; the files changed.

    Through descriptors only (the folder opened ``O_NOFOLLOW``, each file opened
    ``O_NOFOLLOW | O_NONBLOCK`` relative to it, ``fstat``-ed, ``fchmod``-ed): a filed folder
    is its sender's, and a name swapped for a link is never followed (issue 17)."""
    changed = []
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        for name in os.listdir(dir_fd):
            with contextlib.suppress(OSError):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077 == 0:
                    continue
                if _is_key(name, dir_fd, st):
                    fd = fsio.open_regular(name, dir_fd=dir_fd)
                    try:
                        os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) & 0o600)
                    finally:
                        os.close(fd)
                    changed.append(folder / name)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return changed


# Folders removed per call at most (~3.5 ms each on a loaded 2-core machine): a backlog (a
# storm of 2,000 refused folders) is worked off over several installs, and a stop request is
# answered between two folders.
PRUNE_PER_CALL = 300

# The kept folders whose keys this process has made 0600 already, per filing folder: each
# kept folder is protected once (when first seen), not on every install, so an install's
# cost does not grow with the folders kept.  Bounded by retention.keep per folder.
_PROTECTED: dict[str, frozenset[str]] = {}
# The names each filing folder held at the last call, with their stamps (None: not ours):
# a name is read once, not on every install.  Bounded by what the folder holds.
_SEEN: dict[str, dict[str, str | None]] = {}


def prune_folder(
    where: Path,
    keep: int,
    days: float | None,
    now: dt.datetime,
    stop: threading.Event | None = None,
) -> list[str]:
    """Remove filed sets in ``where`` beyond the newest ``keep`` or older than ``days``.

    Returns the names removed (a folder that cannot be removed is not listed).  Only
    entries whose name carries our filing stamp are considered; the newest is never
    removed, whatever its age.  At most ``PRUNE_PER_CALL`` a call, none once ``stop`` is set.
    """
    try:
        with os.scandir(where) as listing:
            names = [e.name for e in listing]
    except OSError:
        return []
    seen = _SEEN.get(str(where), {})
    stamps = {name: seen[name] if name in seen else _stamp(name) for name in names}
    _SEEN[str(where)] = stamps
    stamped = [(stamp, name) for name, stamp in stamps.items() if stamp is not None]
    # Fixed-width stamps compare as the times they stand for.
    cutoff = None if days is None else (now - dt.timedelta(days=days)).strftime(_FORMAT)
    protected = _PROTECTED.get(str(where), frozenset())
    if len(stamped) <= max(keep, 1) and (
        cutoff is None or not stamped or min(stamped)[0] >= cutoff
    ):
        # Nothing to remove (the usual install): only folders filed since are looked at, so
        # the cost stays flat in the folders kept (10,000 kept: 24 -> 5 ms, issue 21).
        ours = frozenset(name for _, name in stamped)
        for name in ours - protected:
            entry = where / name
            if entry.is_dir() and not entry.is_symlink():
                protect_keys(entry)
        _PROTECTED[str(where)] = ours
        return []
    stamped.sort(reverse=True)
    kept: set[str] = set()
    removed: list[str] = []
    for index, (stamp, name) in enumerate(stamped):
        too_many = index >= max(keep, 1)
        too_old = cutoff is not None and index > 0 and stamp < cutoff
        if not (too_many or too_old):
            kept.add(name)
            if name not in protected:
                entry = where / name
                if entry.is_dir() and not entry.is_symlink():
                    protect_keys(entry)
            continue
        entry = where / name
        if len(removed) >= PRUNE_PER_CALL or (stop is not None and stop.is_set()):
            break
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        if not os.path.lexists(entry):
            removed.append(entry.name)
            reasons.forget(where, entry.name)  # a rejected/ folder's record (reasons.py)
    _PROTECTED[str(where)] = frozenset(kept)
    return removed


def prune_kept(
    paths: Paths,
    config: RetentionSection,
    now: dt.datetime,
    stop: threading.Event | None = None,
) -> dict[str, list[str]]:
    """Apply the retention to ``processed/`` and ``rejected/``; logs what was removed."""
    out: dict[str, list[str]] = {}
    for where in (paths.processed, paths.rejected):
        removed = prune_folder(where, config.keep, config.days, now, stop)
        if removed:
            out[str(where)] = removed
            logs.emit(
                events.SourcesPruned(
                    folder=str(where),
                    removed=removed,
                    keep=config.keep,
                    days=config.days,
                )
            )
    return out
