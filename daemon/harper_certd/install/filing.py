"""Where a source goes once judged: never deleted unexamined.

An installed (or already live) source goes to processed/, a refused one to rejected/ with
``reason.json`` beside it (the stage, the problems, the certificate's summary).  The same
record is kept by the daemon itself in ``rejected/.reasons/<filed name>.json``
(``reasons.py``): that is the one ``status``, the metrics and ``stage --wait`` read, so a
refused folder (whose content its sender chose: a FIFO or a link to ``/dev/zero`` as
``reason.json``, issue 17) is never read again once filed.  A folder
is moved (rename(2)); a certbot lineage is never moved: only the files already read are
written, from memory, 0600.  A source that cannot be filed stays where it is, said
(``certd.source_left``) and ignored until it changes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

from harper_certd import events, fsio, reasons, retention
from harper_certd.hints import moved
from harper_certd.install.context import Clock, Context
from harper_certd.install.outcomes import InstallOutcome, InstallStatus
from harper_certd.problems import Problem
from harper_certd.recover import Recovery
from harper_certd.source import Source, user_name
from harper_certd.validate import Report


def time_stamp(clock: Clock) -> str:
    return clock().strftime("%Y%m%dT%H%M%S%fZ")


class FilingError(Exception):
    """A source could not be moved into processed/ or rejected/; it stays where it is."""


def _in_incoming(ctx: Context, folder: Path) -> bool:
    return folder.parent == ctx.paths.incoming


def _cannot_move(folder: Path, owner: int) -> str:
    me = user_name(os.geteuid())
    return (
        f"{folder} is owned by {user_name(owner)} and cannot be moved by {me}: "
        f"hand sets over owned by {me}"
    )


def unmovable(ctx: Context, folder: Path) -> str | None:
    """Why the daemon's user could not move ``folder`` out of incoming/, or None.

    rename(2) of a folder to another parent needs write permission on the folder itself
    (its ``..`` changes), and a sticky incoming/ needs its entries to be ours: a folder
    handed over by root (a certbot deploy hook) fails both when the daemon runs as
    Harper's user (issue 9 item 3).
    """
    if os.geteuid() == 0 or not _in_incoming(ctx, folder):
        return None
    st = fsio.lstat_or_none(folder)
    parent = fsio.lstat_or_none(folder.parent)
    if st is None or parent is None or st.st_uid == os.geteuid():
        return None
    sticky = bool(parent.st_mode & stat.S_ISVTX) and parent.st_uid != os.geteuid()
    if sticky or (stat.S_ISDIR(st.st_mode) and not os.access(folder, os.W_OK)):
        return _cannot_move(folder, st.st_uid)
    return None


def _members_digest(source: Source) -> str:
    digest = hashlib.sha256()
    for name, data in source.members:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _is_lineage(ctx: Context, folder: Path, source: Source | None) -> bool:
    """A certbot lineage (read through live/ -> archive/, a live/<name> folder, or the
    configured ``renew.lineage_dir``): certbot's to keep, never ours to move."""
    if source is not None and source.is_certbot_lineage:
        return True
    return folder.parent.name == "live" or folder == ctx.config.renew.lineage_dir


def keep(ctx: Context, folder: Path, where: Path, source: Source | None) -> Path:
    """File ``folder`` under ``where``; returns where it went. Raises FilingError.

    A folder is moved (rename(2): links stay links, nothing is read or copied).  A
    certbot lineage is not ours to move: only the member files already read are
    written, from memory, 0600, and the same content is never written twice; a lineage
    refused before it was read gets a record (reason.json) only, never a copy (issue 10
    item 4: filing once copied with links followed, /etc/shadow and /dev/zero included).
    """
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time_stamp(ctx.clock)
    before = retention.folder_stamp(where)  # the retention's listing follows what we file
    if _is_lineage(ctx, folder, source):
        if source is None:
            dest = where / f"{stamp}-{folder.name}"
            dest.mkdir(mode=0o700)  # a record of the refusal only (reason.json)
        else:
            tail = f"-{folder.name}-{_members_digest(source)[:12]}"
            existing = sorted(n for n in os.listdir(where) if n.endswith(tail))
            if existing:
                return where / existing[-1]  # this content was filed before: never copied twice
            dest = where / f"{stamp}{tail}"
            fsio.write_folder(dest, list(source.members), mode=0o600)
        fsio.fsync_dir(where)
        retention.filed(where, dest.name, before)
        return dest
    dest = where / f"{stamp}-{folder.name}"
    try:
        os.rename(folder, dest)
    except OSError as exc:
        st = fsio.lstat_or_none(folder)
        if (
            exc.errno in (errno.EACCES, errno.EPERM)
            and st is not None
            and (st.st_uid != os.geteuid() and os.geteuid() != 0)
        ):
            raise FilingError(_cannot_move(folder, st.st_uid)) from None
        if exc.errno == errno.EXDEV:
            raise FilingError(
                f"{folder} cannot be moved to {where}: another file system; keep incoming/, "
                "processed/ and rejected/ on one"
            ) from None
        raise FilingError(
            f"{folder} cannot be moved to {where}: {fsio.describe_os_error(exc)}"
        ) from None
    fsio.fsync_dir(where)
    retention.filed(where, dest.name, before)
    return dest


def filing(
    ctx: Context, folder: Path, where: Path, source: Source | None
) -> tuple[Path | None, str | None]:
    """``keep``: (where it went, None), or (None, why) with a ``certd.source_left`` warning
    when the source cannot be filed (it stays in incoming/, ignored until it changes)."""
    try:
        return keep(ctx, folder, where, source), None
    except (FilingError, OSError, ValueError) as exc:
        why = fsio.describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        # Imported here for start-up cost: `status` loads this module and logs nothing.
        from harper_certd import logs

        logs.emit(
            events.SourceLeft(
                source=str(folder),
                to=str(where),
                reason=why,
                note="left in place and ignored until it changes; move or remove it by hand",
            )
        )
        return None, f"{folder} could not be moved to {where}: {why}; move or remove it by hand"


def file_away(ctx: Context, folder: Path, where: Path, source: Source | None) -> Path | None:
    """``filing`` when only the place matters."""
    return filing(ctx, folder, where, source)[0]


def reject(
    ctx: Context,
    folder: Path,
    problems: tuple[Problem, ...],
    stage: str,
    source: Source | None,
    report: Report | None = None,
) -> Path | None:
    if not os.path.lexists(folder):
        return None
    dest = file_away(ctx, folder, ctx.paths.rejected, source)
    if dest is None:
        return None
    reason = {
        "source": str(folder),
        "time": ctx.clock().isoformat(),
        "stage": stage,
        "set": ctx.set_name,  # None: refused for no set (set_unroutable)
        # a sentence naming the folder or a file in it ("--force-older SRC", "SRC/ca.pem is
        # empty") names it where rejected/ keeps it, as the command line says it; ``source``
        # keeps where it came from
        "problems": [{**p.as_dict(), "message": moved(p.message, folder, dest)} for p in problems],
        "certificate": None if report is None else report.as_dict()["certificate"],
        "judge": None if report is None or report.judge is None else report.judge.as_dict(),
    }
    raw = json.dumps(reason, indent=2).encode()
    reasons.record(ctx.paths.rejected, dest.name, raw)
    if not os.path.lexists(dest / "reason.json"):
        fsio.write_new(dest / "reason.json", raw, mode=0o600)  # O_EXCL | O_NOFOLLOW
    return dest


def refuse(
    ctx: Context,
    folder: Path,
    problems: tuple[Problem, ...],
    stage: str,
    source: Source | None,
    recovery: Recovery | None,
    report: Report | None = None,
    *,
    file: bool = True,
) -> InstallOutcome:
    """The one outcome event of a refused source; the source filed in rejected/ if it can be."""
    errors = tuple(p for p in problems if p.severity.value == "error")
    kept = reject(ctx, folder, problems, stage, source, report) if file else None
    # Imported here for start-up cost: `status` loads this module and logs nothing.
    from harper_certd import logs

    logs.emit(
        events.SetRefused(
            source=str(folder),
            codes=[p.code for p in errors],
            reason=moved(errors[0].message, folder, kept),  # as in reason.json
            kept_at=str(kept) if kept else None,
            now=ctx.clock().isoformat(),
        )
    )
    return InstallOutcome(
        InstallStatus.REFUSED, problems, recovery=recovery, kept_at=kept, report=report
    )


def file_installed(
    ctx: Context, folder: Path, source: Source, generation: str | None
) -> tuple[Path | None, str | None]:
    """File a live (installed or unchanged) source in processed/: (where, None), or
    (None, why) when it cannot be filed: the set is live whatever happens to the folder,
    so that is a warning (``certd.source_left``), never a failure."""
    del generation  # the event names the source; the outcome names the generation
    return filing(ctx, folder, ctx.paths.processed, source)
