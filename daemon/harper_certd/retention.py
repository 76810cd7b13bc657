"""Retention of filed sources: ``processed/`` and ``rejected/`` keep sets, private keys included.

Every installed, superseded or refused set is filed there, never deleted unexamined
(service.py); kept forever they pile up private keys (a renewal loop filed 1,440 a
day, issue 9).  ``prune_kept`` keeps the newest ``retention.keep`` folders of each and
none older than ``retention.days``, makes every key file there ``0600``, and logs one
``certd.sources_pruned`` per folder it pruned.  Symlinks are never followed.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import os
import re
import shutil
import stat
import threading
from dataclasses import dataclass
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

# A folder's own stat as the listing's key: (device, inode, mtime ns, ctime ns, links, size).
FolderStamp = tuple[int, int, int, int, int, int]
_LINKS = 4  # the index of st_nlink in a FolderStamp


def folder_stamp(where: Path) -> FolderStamp | None:
    """What changes when an entry of the folder ``where`` is added, removed or renamed (its
    mtime and ctime, and its link count for a subfolder); None when it cannot be read."""
    try:
        st = os.stat(where)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_size


@dataclass(slots=True)
class _Listing:
    """What a filing folder held when this process last listed it, kept up to date with what
    this process files and removes there, so that an install's cost does not grow with the
    folders kept (issue 21: 10,000 kept folders were listed and their names matched on every
    install).

    ``stamp``: the folder's ``folder_stamp`` at the last listing or at our own last change;
    anyone else's change gives another, and the folder is listed again.  ``stamps``: each
    name and its filing stamp (None: not ours).  ``order``: our names as (stamp, name),
    oldest first (fixed-width stamps sort as the times they stand for).  ``unprotected``:
    our names whose keys are not yet made 0600 (each folder is protected once)."""

    stamp: FolderStamp
    stamps: dict[str, str | None]
    order: list[tuple[str, str]]
    unprotected: set[str]


# One listing per filing folder (processed/, rejected/), bounded by what the folders hold.
_LISTINGS: dict[str, _Listing] = {}


def _listing(where: Path) -> _Listing | None:
    """The folder's listing: the one kept when the folder is as this process left it, else
    read again (a name read before is not matched again)."""
    stamp = folder_stamp(where)  # before the listing: a change while listing is seen next time
    if stamp is None:
        return None
    known = _LISTINGS.get(str(where))
    if known is not None and known.stamp == stamp:
        return known
    try:
        with os.scandir(where) as entries:
            names = [e.name for e in entries]
    except OSError:
        return None
    seen = {} if known is None else known.stamps
    stamps = {name: seen[name] if name in seen else _stamp(name) for name in names}
    order = sorted((stamp, name) for name, stamp in stamps.items() if stamp is not None)
    protected = set() if known is None else {n for _, n in known.order} - known.unprotected
    listing = _Listing(stamp, stamps, order, {n for _, n in order if n not in protected})
    _LISTINGS[str(where)] = listing
    return listing


def _changed(where: Path, before: FolderStamp, links: int) -> _Listing | None:
    """The kept listing of ``where`` after this process changed it (``links``: subfolders
    added, negative when removed), with its new stamp; None (and the listing forgotten) when
    it was not current before the change or the link count says someone else's subfolder
    came or went meanwhile: its stamp then stays the old one, and the folder is listed
    again next time (a name read before is not matched again, a protected folder not read
    again).  A file someone else adds in the same instant goes unseen until the folder
    changes again: only our stamped folders are pruned and protected."""
    listing = _LISTINGS.get(str(where))
    if listing is None or listing.stamp != before:
        return None
    after = folder_stamp(where)
    if after is None or after[_LINKS] != before[_LINKS] + links:
        return None
    listing.stamp = after
    return listing


def filed(where: Path, name: str, before: FolderStamp | None) -> None:
    """Note the entry ``name`` this process just filed in ``where`` (``before``: the folder's
    stamp just before), so the next prune does not list the folder again."""
    entry = fsio.lstat_or_none(where / name)
    folder = entry is not None and stat.S_ISDIR(entry.st_mode)
    listing = None if before is None else _changed(where, before, 1 if folder else 0)
    if listing is None:
        return
    stamp = _stamp(name)
    listing.stamps[name] = stamp
    if stamp is not None:
        bisect.insort(listing.order, (stamp, name))
        listing.unprotected.add(name)


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
    The keys of every folder kept are made 0600 (``protect_keys``), once per folder.
    """
    listing = _listing(where)
    if listing is None:
        return []
    order = listing.order
    # Fixed-width stamps compare as the times they stand for.
    cutoff = None if days is None else (now - dt.timedelta(days=days)).strftime(_FORMAT)
    # The oldest first: those beyond ``keep`` and those older than ``days`` are a prefix.
    end = 0
    while end < len(order) - 1 and (
        end < len(order) - max(keep, 1) or (cutoff is not None and order[end][0] < cutoff)
    ):
        end += 1
    removed: list[str] = []
    links = 0
    before = listing.stamp
    for _, name in order[:end]:
        if len(removed) >= PRUNE_PER_CALL or (stop is not None and stop.is_set()):
            break
        entry = where / name
        folder = entry.is_dir() and not entry.is_symlink()
        if folder:
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        if not os.path.lexists(entry):
            removed.append(name)
            links -= folder
            reasons.forget(where, name)  # a rejected/ folder's record (reasons.py)
    if removed:
        gone = set(removed)
        listing.order = [item for item in order[:end] if item[1] not in gone] + order[end:]
        for name in gone:
            del listing.stamps[name]
        listing.unprotected -= gone
        _changed(where, before, links)
    # The kept folders filed since the last call are protected; those left beyond the limit
    # (PRUNE_PER_CALL, a stop) go next time and are not read now.
    waiting = {name for _, name in listing.order[: end - len(removed)]}
    for name in sorted(listing.unprotected - waiting):
        entry = where / name
        if entry.is_dir() and not entry.is_symlink():
            protect_keys(entry)
        listing.unprotected.discard(name)
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
