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
import shutil
import stat
import threading
from pathlib import Path

import structlog

from harper_certd.config import Paths, RetentionSection

log = structlog.get_logger("harper_certd")

# The file names a private key has in the sets we file (Harper's, certbot's, common ones).
KEY_NAMES = frozenset({"privateKey.pem", "privkey.pem", "key.pem", "tls.key"})
_SNIFF_BYTES = 65536
_KEY_MARKER = b"PRIVATE KEY-----"


def filed_at(entry: Path) -> dt.datetime | None:
    """When ``entry`` was filed: the ``%Y%m%dT%H%M%S%fZ`` stamp its name starts with.

    A rename keeps the source folder's mtime, so the name is the only trustworthy date;
    None for a name without a stamp (not ours: never removed by age).
    """
    stamp = entry.name.split("-", 1)[0]
    try:
        return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _is_key(path: Path, st: os.stat_result) -> bool:
    name = path.name
    if name in KEY_NAMES or name.endswith(".key") or name.startswith("privkey"):
        return True
    if not stat.S_ISREG(st.st_mode) or st.st_size > 4 * _SNIFF_BYTES:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return _KEY_MARKER in os.read(fd, _SNIFF_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)


def protect_keys(folder: Path) -> list[Path]:
    """Make every private key file directly in ``folder`` ``0600``; the files changed."""
    changed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            st = entry.lstat()
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) & 0o077 == 0:
                continue
            if _is_key(entry, st):
                with contextlib.suppress(OSError):
                    os.chmod(entry, stat.S_IMODE(st.st_mode) & 0o600, follow_symlinks=False)
                    changed.append(entry)
    return changed


# Folders removed per call at most (~3.5 ms each on a loaded 2-core machine): a backlog (a
# storm of 2,000 refused folders) is worked off over several installs, and a stop request is
# answered between two folders.
PRUNE_PER_CALL = 300


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
        entries = [e for e in where.iterdir() if filed_at(e) is not None]
    except OSError:
        return []
    entries.sort(key=lambda e: (filed_at(e), e.name), reverse=True)
    removed: list[str] = []
    for index, entry in enumerate(entries):
        when = filed_at(entry)
        assert when is not None
        too_many = index >= max(keep, 1)
        too_old = days is not None and index > 0 and now - when > dt.timedelta(days=days)
        if not (too_many or too_old):
            if entry.is_dir() and not entry.is_symlink():
                protect_keys(entry)
            continue
        if len(removed) >= PRUNE_PER_CALL or (stop is not None and stop.is_set()):
            break
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
        if not os.path.lexists(entry):
            removed.append(entry.name)
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
            log.info(
                "certd.sources_pruned",
                folder=str(where),
                removed=removed,
                keep=config.keep,
                days=config.days,
            )
    return out
