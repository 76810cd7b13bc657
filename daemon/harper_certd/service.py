"""The service: wires discover, source, validate, swap and restart into operations.

``install``, ``rollback`` and ``status`` here are what the CLI commands and the
daemon both call; each returns a frozen outcome, and the CLI maps it to an exit
status.  Every operation first completes or undoes an interrupted swap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import errno
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from harper_certd import discover, environment, fsio, load, logs, peers, retention
from harper_certd.check import validate_data_against_store
from harper_certd.config import Config, Paths, resolve_paths
from harper_certd.errors import ConfigError, Interrupted, StateError, SwapError
from harper_certd.journal import Outcome
from harper_certd.problems import Problem, problem
from harper_certd.restart import Applied, Applier, command_applier, none_applier, run_command
from harper_certd.roles import Purpose, SetBytes, SetPaths
from harper_certd.schedule import RestartBudget
from harper_certd.source import Source, SourceRefused, read_source, user_name
from harper_certd.swap import Generation, Recovery, Store, cert_meta, require_no_foreign_files
from harper_certd.trust import TrustStore, system_store
from harper_certd.validate import Inputs, Report, fingerprint, summarize, validate

log = structlog.get_logger("harper_certd")
ADOPTION_SETTLE = 1.0
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Managed:
    """The certificate set this daemon manages, and what it must be fit for."""

    live: SetPaths
    purpose: Purpose
    hostnames: tuple[str, ...]
    uses: tuple[str, ...]
    verbatim_names: tuple[str, ...] = ()
    url_hosts: tuple[str, ...] = ()


SETS_DIR = "sets"  # <state>/sets/<set name>/: the store of a set other than the primary one


def managed_set(harper: discover.HarperConfig, name: str | None = None) -> Managed:
    """The set to manage: ``name`` (a ``CertSet`` name), else the primary set (the
    replication set, else the first). ConfigError for an unknown name or a set whose
    files are not named (kept in Harper's database).

    A named set without a CA file (a public certificate) is managed as two files
    (``SetPaths.ca`` None): its chain is judged against the system trust store.
    """
    if name is not None:
        by_name = {c.name: c for c in harper.sets()}
        if name not in by_name:
            raise ConfigError(
                f"no certificate set is named '{name}' in {harper.config_path} "
                f"(sets: {', '.join(by_name) or 'none'})"
            )
        chosen = by_name[name]
        if chosen.first.paths is None and chosen.first.cert_key is not None:
            return _without_ca_file(chosen)
        harper = dataclasses.replace(
            harper, entries=tuple(e for e in harper.entries if e in chosen.entries)
        )
    entries = harper.file_entries()
    if not entries:
        notes = " ".join(e.note for e in harper.entries if e.note)
        raise ConfigError(
            f"{harper.config_path} names no certificate files to manage. {notes}".strip()
        )
    primary = next((e for e in entries if e.purpose is Purpose.CLUSTER), entries[0])
    same = [e for e in entries if e.paths == primary.paths]
    purpose = (
        Purpose.CLUSTER if any(e.purpose is Purpose.CLUSTER for e in same) else primary.purpose
    )
    hostnames = tuple(dict.fromkeys(h for e in same if not e.insecure for h in e.hostnames))
    uses = tuple(dict.fromkeys(u for e in same for u in e.uses))
    verbatim = tuple(dict.fromkeys(n for e in same for n in e.verbatim_names))
    assert primary.paths is not None
    url_hosts = tuple(dict.fromkeys(h for e in same for h in e.url_hosts))
    return Managed(primary.paths, purpose, hostnames, uses, verbatim, url_hosts)


def _without_ca_file(chosen: discover.CertSet) -> Managed:
    """A set naming a certificate and a key, no CA file: its entries' names and uses."""
    entries = tuple(e for e in chosen.entries if e.cert_key == chosen.first.cert_key)
    assert chosen.first.cert_key is not None
    cert, key = chosen.first.cert_key
    purpose = (
        Purpose.CLUSTER
        if any(e.purpose is Purpose.CLUSTER for e in entries)
        else chosen.first.purpose
    )
    return Managed(
        SetPaths(cert, key, None),
        purpose,
        tuple(dict.fromkeys(h for e in entries if not e.insecure for h in e.hostnames)),
        tuple(dict.fromkeys(u for e in entries for u in e.uses)),
        tuple(dict.fromkeys(n for e in entries for n in e.verbatim_names)),
        tuple(dict.fromkeys(h for e in entries for h in e.url_hosts)),
    )


@dataclass(frozen=True, slots=True)
class Context:
    config: Config
    paths: Paths
    harper: discover.HarperConfig
    managed: Managed
    store: Store
    applier: Applier
    clock: Clock = utc_now
    budget: RestartBudget = field(default_factory=lambda: RestartBudget(3))
    interrupted: threading.Event | None = None
    set_name: str | None = None  # the set's name (``discover.CertSet``), as ``check`` shows it

    def trust_store(self) -> TrustStore | None:
        """The roots a set without a CA file must chain to (``harper.trust_store``, else
        OpenSSL's default); None for a set with a CA file."""
        if self.managed.live.ca is not None:
            return None
        return system_store(self.config.harper.trust_store)

    def trusted_uids(self) -> set[int]:
        uids = {0, os.geteuid()}
        for path in (self.managed.live.key, self.paths.harper_root):
            try:
                uids.add(os.stat(path).st_uid)
            except OSError:
                continue
        return uids


def make_applier(
    config: Config,
    harper: discover.HarperConfig,
    store: Store,
    interrupted: threading.Event | None = None,
    cert: Path | None = None,
) -> Applier:
    """``cert``: the managed set's certificate path (verification on that set's ports)."""
    method = config.restart.method
    if method == "none":
        return none_applier
    if method == "command" and not config.verify.enabled:
        return command_applier(config.restart.command, config.restart.timeout, interrupted)
    from harper_certd.harper import harper_applier

    return harper_applier(config, harper, store, interrupted, cert)


def build_context(
    config: Config,
    *,
    clock: Clock = utc_now,
    applier: Applier | None = None,
    interrupted: threading.Event | None = None,
    set_name: str | None = None,
) -> Context:
    paths = resolve_paths(config)
    harper = discover.load_config(paths.harper_root)
    try:
        primary: Managed | None = managed_set(harper)
    except ConfigError:
        if set_name is None:
            raise
        primary = None  # a node whose only set has no CA file: that set is named
    managed = managed_set(harper, set_name) if set_name is not None or primary is None else primary
    # The primary set's store stays where it always was (one-set nodes, crash tests); any
    # other set has its own under <state>/sets/<name>/.
    same = primary is not None and managed.live == primary.live
    state = paths.state if same else paths.state / SETS_DIR / str(set_name)
    store = Store(state, managed.live)
    environment.refuse_second_state_dir(store.live_paths(), state)  # h-ops: one store
    store.ensure()
    return Context(
        config,
        paths,
        harper,
        managed,
        store,
        applier or make_applier(config, harper, store, interrupted, managed.live.cert),
        clock,
        RestartBudget(config.restart.restarts_per_hour),
        interrupted,
        next((c.name for c in harper.sets() if c.first.cert_path == managed.live.cert), None),
    )


def store_dir(paths: Paths, harper: discover.HarperConfig, name: str) -> Path:
    """Where set ``name``'s store is: ``<state>/`` for the primary set (the replication set,
    else the first), ``<state>/sets/<name>/`` for any other (``build_context``)."""
    try:
        primary = managed_set(harper).live.cert
    except ConfigError:
        primary = None
    cert = next((c.first.cert_path for c in harper.sets() if c.name == name), None)
    return paths.state if cert is not None and cert == primary else paths.state / SETS_DIR / name


# --- outcomes ----------------------------------------------------------------------------


class InstallStatus(enum.StrEnum):
    """How an install ended (``InstallOutcome.status``; ``install --json``'s ``status``)."""

    INSTALLED = "installed"
    UNCHANGED = "unchanged"  # the same set is already live; the source is filed
    REFUSED = "refused"  # found wanting before anything changed; kept in rejected/
    HELD = "held"  # daemon: a notBefore a little ahead, installed when it is valid
    ROLLED_BACK = "rolled_back"  # Harper did not take it; the previous set is back, verified
    ROLLBACK_FAILED = "rollback_failed"  # neither the new set nor the previous one is served
    SWAP_FAILED = "swap_failed"  # the store could not be written; nothing changed


class RollbackStatus(enum.StrEnum):
    """How a rollback ended (``RollbackOutcome.status``)."""

    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    REFUSED = "refused"  # the target is damaged or invalid now, or the node is watch-only
    NOTHING = "nothing"  # nothing to roll back to


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    status: InstallStatus
    problems: tuple[Problem, ...] = ()
    generation: str | None = None
    previous: str | None = None
    applied: Applied | None = None
    rollback: Applied | None = None
    recovery: Recovery | None = None
    kept_at: Path | None = None  # where the source went (processed/ or rejected/)
    report: Report | None = None
    # swap_failed: why; installed: why the source could not be filed (a warning)
    error: str | None = None
    cause: str | None = None  # swap_failed: the cause in a few words (disk full, read-only)
    source: Path | None = None  # swap_failed: the source that stays for the next attempt
    trust_store: str | None = None  # a set without a CA file: the roots it was judged against

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "generation": self.generation,
            "previous": self.previous,
            "problems": [p.as_dict() for p in self.problems],
            "applied": None if self.applied is None else self.applied.detail,
            "kept_at": None if self.kept_at is None else str(self.kept_at),
            "verified": None if self.applied is None else self.applied.verified,
            "error": self.error,
            "trust_store": self.trust_store,
        }


# --- the source's fate: never deleted unexamined -------------------------------------------


def _stamp(clock: Clock) -> str:
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


def _keep(ctx: Context, folder: Path, where: Path, source: Source | None) -> Path:
    """File ``folder`` under ``where``; returns where it went. Raises FilingError.

    A folder is moved (rename(2): links stay links, nothing is read or copied).  A
    certbot lineage is not ours to move: only the member files already read are
    written, from memory, 0600, and the same content is never written twice; a lineage
    refused before it was read gets a record (reason.json) only, never a copy (issue 10
    item 4: filing once copied with links followed, /etc/shadow and /dev/zero included).
    """
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = _stamp(ctx.clock)
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
    return dest


def _filing(
    ctx: Context, folder: Path, where: Path, source: Source | None
) -> tuple[Path | None, str | None]:
    """``_keep``: (where it went, None), or (None, why) with a ``certd.source_left`` warning
    when the source cannot be filed (it stays in incoming/, ignored until it changes)."""
    try:
        return _keep(ctx, folder, where, source), None
    except (FilingError, OSError, ValueError) as exc:
        why = fsio.describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        log.warning(
            "certd.source_left",
            source=str(folder),
            to=str(where),
            reason=why,
            note="left in place and ignored until it changes; move or remove it by hand",
        )
        return None, f"{folder} could not be moved to {where}: {why}; move or remove it by hand"


def _file(ctx: Context, folder: Path, where: Path, source: Source | None) -> Path | None:
    """``_filing`` when only the place matters."""
    return _filing(ctx, folder, where, source)[0]


def _reject(
    ctx: Context,
    folder: Path,
    problems: tuple[Problem, ...],
    stage: str,
    source: Source | None,
    report: Report | None = None,
) -> Path | None:
    if not os.path.lexists(folder):
        return None
    dest = _file(ctx, folder, ctx.paths.rejected, source)
    if dest is None:
        return None
    reason = {
        "source": str(folder),
        "time": ctx.clock().isoformat(),
        "stage": stage,
        "set": ctx.set_name,  # None: refused for no set (set_unroutable)
        "problems": [p.as_dict() for p in problems],
        "certificate": None if report is None else report.as_dict()["certificate"],
    }
    if not os.path.lexists(dest / "reason.json"):
        fsio.write_new(dest / "reason.json", json.dumps(reason, indent=2).encode(), mode=0o600)
    return dest


# --- install ---------------------------------------------------------------------------


def _read_live(ctx: Context) -> SetBytes:
    """The live files' bytes (``ca`` ``b""`` for a set without a CA file)."""
    live = ctx.managed.live
    try:
        return SetBytes(
            load.read_bounded(live.cert),
            load.read_bounded(live.key),
            b"" if live.ca is None else load.read_bounded(live.ca),
        )
    except load.Unreadable as exc:
        raise SwapError(f"the live set cannot be read: {exc}") from None


def _validate(ctx: Context, data: SetBytes, names: tuple[str, str, str]) -> Report:
    """``data`` judged for the managed set's use; a set without a CA file against the
    system trust store (``check.validate_data_against_store``, the validator ``check``
    uses), ``names[2]`` then unused."""
    kwargs: dict[str, Any] = {
        "at": ctx.clock(),
        "purpose": ctx.managed.purpose,
        "hostnames": ctx.managed.hostnames,
        "expiry_warning_days": ctx.config.expiry_warning_days,
        "node_names": ctx.managed.verbatim_names,
        "url_hosts": ctx.managed.url_hosts,
    }
    trust = ctx.trust_store()
    if trust is not None:
        return validate_data_against_store(
            data.cert, data.key, trust, cert_name=names[0], key_name=names[1], **kwargs
        )
    return validate(Inputs(data.cert, data.key, data.ca, *names), **kwargs)


def new_hazards(ctx: Context, data: SetBytes) -> tuple[Problem, ...]:
    """The layout hazards installing ``data`` as the managed set would create (hazards.py).

    Errors among them refuse the install; the live layout's own hazards are not repeated
    (``check`` and the daemon's ``certd.layout_hazard`` report those).
    """
    from harper_certd import hazards
    from harper_certd.trust import system_store

    store = ctx.config.harper.trust_store
    try:
        return hazards.for_candidate(
            ctx.harper, lambda: system_store(store), ctx.managed.live.cert, data.cert, data.ca
        )
    except Exception:  # the live layout's content is hostile: its own checks say so
        log.error(
            "certd.layout_hazard",
            code="check_failed",
            severity="error",
            message="the layout's hazards could not be judged; the candidate is judged alone",
        )
        return ()


def _older_than_live(ctx: Context, new: Report, folder: Path) -> Problem | None:
    # Only the live leaf's names and expiry matter here: no need to validate the live set.
    try:
        data = load.read_bounded(ctx.managed.live.cert)
        live = summarize(load.parse_certificates(data, name="live certificate").certs[0])
    except load.Unreadable:
        return None
    if new.certificate is None:
        return None
    same_names = set(live.dns_names) == set(new.certificate.dns_names) and set(
        live.ip_addresses
    ) == set(new.certificate.ip_addresses)
    if same_names and new.certificate.not_after < live.not_after:
        return problem(
            "older_than_live",
            f"The new certificate expires {new.certificate.not_after.isoformat()}, before the "
            f"live one ({live.not_after.isoformat()}) for the same names; "
            f"to install it anyway: harper-certd install --force-older {folder}",
        )
    return None


def _same_as_live(ctx: Context, data: SetBytes) -> bool:
    current = ctx.store.current()
    if current is None:
        return False
    try:
        return current.read() == data
    except OSError:
        return False


def install(
    ctx: Context, folder: Path, *, force_older: bool = False, force_peers: bool = False
) -> InstallOutcome:
    """Validate the set in ``folder``, swap it in, make Harper use it, roll back if not.

    ``force_peers``: install past the peer guard's refusal (``certd.peers_overridden``,
    critical); the proof after the swap still rolls back a set a peer refuses.
    """
    with ctx.store.locked():
        recovery = ctx.store.recover()
        outcome = _install_locked(ctx, folder, force_older, recovery, force_peers)
    if (trust := ctx.trust_store()) is not None:
        outcome = dataclasses.replace(outcome, trust_store=trust.where)
    if outcome.status == InstallStatus.SWAP_FAILED:
        log_swap_failed(str(folder), outcome.cause, outcome.error)
        # The command line says "nothing changed" (exit 1) with the cause.
        raise SwapError(outcome.error or "the swap failed; the live set is unchanged")
    return outcome


Judged = tuple[Source, Report, tuple[Problem, ...]]


def log_swap_failed(
    source: str,
    cause: str | None,
    error: str | None,
    *,
    failures: int | None = None,
    next_attempt: dt.datetime | None = None,
) -> None:
    """The one shape of ``certd.swap_failed``: the live set is unchanged.  ``failures`` and
    ``next_attempt`` when the daemon retries (None from the command line, which does not)."""
    log.error(
        "certd.swap_failed",
        source=source,
        cause=cause,
        error=error,
        failures=failures,
        next_attempt=None if next_attempt is None else next_attempt.isoformat(),
    )


def _refuse(
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
    kept = _reject(ctx, folder, problems, stage, source, report) if file else None
    log.error(
        "certd.set_refused",
        source=str(folder),
        codes=[p.code for p in errors],
        reason=errors[0].message,
        kept_at=str(kept) if kept else None,
        now=ctx.clock().isoformat(),
    )
    return InstallOutcome(
        InstallStatus.REFUSED, problems, recovery=recovery, kept_at=kept, report=report
    )


def _crash_text(exc: BaseException) -> str:
    text = logs.describe_error(exc)
    return text if len(text) <= 300 else text[:300] + "…"


def judge_failed(
    ctx: Context, folder: Path, exc: BaseException, recovery: Recovery | None
) -> InstallOutcome:
    """A source whose judging raised: refused by name, left in place (nothing filed)."""
    refused = (
        problem(
            "judge_failed",
            f"Judging {folder} raised {_crash_text(exc)} (a fault in harper-certd: please report "
            "it with the certificate, never the key); it is left in place and ignored until it "
            "changes.",
        ),
    )
    return _refuse(ctx, folder, refused, "judge", None, recovery, file=False)


def refuse_unroutable(ctx: Context, folder: Path, reason: str) -> InstallOutcome:
    """A folder straight in incoming/ that fits none or several of the node's sets: refused
    (``set_unroutable``) and filed in rejected/ with the reason beside it."""
    text = f"{folder} cannot be given to one certificate set: {reason}."
    unset = dataclasses.replace(ctx, set_name=None)  # its reason.json names no set
    return _refuse(unset, folder, (problem("set_unroutable", text),), "route", None, None)


def _judge(
    ctx: Context,
    folder: Path,
    force_older: bool,
    recovery: Recovery | None,
    hold_seconds: float = 0.0,
) -> Judged | InstallOutcome:
    """The source, read and validated; or the refusal (the source then kept in rejected/).

    With ``hold_seconds``, a set whose only error is a notBefore at most that many seconds
    ahead of ``ctx.clock()`` is not refused: the outcome is "held" and the source stays.
    """
    why = unmovable(ctx, folder)
    if why is not None:
        # Checked first: a set that could never be filed would be judged at every event.
        refused = (problem("source_unmovable", why),)
        return _refuse(ctx, folder, refused, "source", None, recovery, file=False)
    try:
        source: Source = read_source(
            folder,
            trusted_uids=ctx.trusted_uids(),
            ca_fallback=ctx.config.ca_file or ctx.managed.live.ca,
            ca_file=ctx.managed.live.ca is not None,
        )
    except SourceRefused as exc:
        return _refuse(ctx, folder, (problem(exc.code, str(exc)),), "source", None, recovery)
    except OSError as exc:
        text = f"{folder} cannot be read: {fsio.describe_os_error(exc)}"
        return _refuse(ctx, folder, (problem("source_unreadable", text),), "source", None, recovery)
    names = tuple(str(folder / n) for n in ("certificate", "private key", "CA file"))
    try:
        report = _validate(ctx, source.data, (names[0], names[1], names[2]))
        problems = report.problems
        if report.valid:
            problems = (*problems, *new_hazards(ctx, source.data))
        if report.valid and not force_older and (older := _older_than_live(ctx, report, folder)):
            problems = (*problems, older)
        report.as_dict()  # parts are read lazily: anything raising must raise here
    except Exception as exc:  # a set's content never stops the daemon
        return judge_failed(ctx, folder, exc, recovery)
    errors = tuple(p for p in problems if p.severity.value == "error")
    if errors and hold_seconds > 0 and {p.code for p in errors} == {"not_yet_valid"}:
        assert report.certificate is not None
        ahead = (report.certificate.not_before - ctx.clock()).total_seconds()
        if ahead <= hold_seconds:  # not_yet_valid: notBefore is ahead (ahead >= 0)
            return InstallOutcome(InstallStatus.HELD, problems, recovery=recovery, report=report)
    if errors:
        return _refuse(ctx, folder, problems, "validate", source, recovery, report)
    return source, report, problems


def install_newest(
    ctx: Context,
    folders: list[Path],
    *,
    hold_seconds: float = 0.0,
    on_judged: Callable[[Path, InstallOutcome], None] | None = None,
) -> InstallOutcome | None:
    """A burst of sets is one rotation: each is judged, the newest valid one is installed.

    A set held for its notBefore (see ``_judge``) is left in place.  Each set that is held
    or refused is passed to ``on_judged`` with its outcome.

    Newest: issued last (notBefore, then notAfter), then written last.

    Older valid sets are kept in processed/ as superseded; refused ones in rejected/.
    Each source is judged and filed on its own: one that raises is refused by name
    (``judge_failed``) and the others go ahead.  Raises ``Interrupted`` when asked to stop.
    """
    with ctx.store.locked():
        recovery = ctx.store.recover()
        judged = _judge_each(ctx, folders, recovery, hold_seconds, on_judged)
        return _install_best(ctx, judged, recovery) if judged else None


def judge_sources(
    ctx: Context,
    folders: list[Path],
    *,
    hold_seconds: float = 0.0,
    on_judged: Callable[[Path, InstallOutcome], None] | None = None,
) -> list[tuple[Path, Judged]]:
    """The valid ones of ``folders`` (read and validated); the others refused and filed.

    For a burst judged over several loop cycles: ``install_judged_newest`` then installs
    the newest of everything judged, one rotation.  Raises ``Interrupted`` when asked to stop.
    """
    with ctx.store.locked():
        return _judge_each(ctx, folders, ctx.store.recover(), hold_seconds, on_judged)


def install_judged_newest(ctx: Context, judged: list[tuple[Path, Judged]]) -> InstallOutcome | None:
    """Install the newest of sets judged valid earlier (``judge_sources``); file the others."""
    with ctx.store.locked():
        recovery = ctx.store.recover()
        return _install_best(ctx, judged, recovery) if judged else None


def _judge_each(
    ctx: Context,
    folders: list[Path],
    recovery: Recovery | None,
    hold_seconds: float = 0.0,
    on_judged: Callable[[Path, InstallOutcome], None] | None = None,
) -> list[tuple[Path, Judged]]:
    judged: list[tuple[Path, Judged]] = []
    for folder in folders:
        if ctx.interrupted is not None and ctx.interrupted.is_set():
            raise Interrupted("stopping")
        try:
            verdict = _judge(ctx, folder, False, recovery, hold_seconds)
        except Exception as exc:  # one source never stops the others
            verdict = judge_failed(ctx, folder, exc, recovery)
        if not isinstance(verdict, InstallOutcome):
            judged.append((folder, verdict))
        elif on_judged is not None:
            on_judged(folder, verdict)
    return judged


def _install_best(
    ctx: Context, judged: list[tuple[Path, Judged]], recovery: Recovery | None
) -> InstallOutcome:
    def newest(item: tuple[Path, Judged]) -> tuple[dt.datetime, dt.datetime, int]:
        folder, (_, report, _) = item
        assert report.certificate is not None
        try:
            written = folder.stat().st_mtime_ns
        except OSError:
            written = 0
        return report.certificate.not_before, report.certificate.not_after, written

    judged = sorted(judged, key=newest)
    chosen, verdict = judged[-1]
    outcome = _install_judged(ctx, chosen, verdict, recovery)
    if outcome.status not in ("installed", "unchanged"):
        return outcome  # the others were superseded by nothing: they stay for the next try
    for folder, (source, _, _) in judged[:-1]:
        kept = _file(ctx, folder, ctx.paths.processed, source)
        log.info(
            "certd.set_superseded",
            source=str(folder),
            by=str(chosen),
            kept_at=str(kept) if kept else None,
        )
    return outcome


def _install_locked(
    ctx: Context,
    folder: Path,
    force_older: bool,
    recovery: Recovery | None,
    force_peers: bool = False,
) -> InstallOutcome:
    verdict = _judge(ctx, folder, force_older, recovery)
    if isinstance(verdict, InstallOutcome):
        return verdict
    return _install_judged(ctx, folder, verdict, recovery, force_peers)


def _swap_cause(exc: BaseException) -> str:
    """The OS's reason behind a failed swap, in words ("no space left on the device")."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    return fsio.describe_os_error(cause) if isinstance(cause, OSError) else str(exc)


def _no_space(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.ENOSPC


def _prune(ctx: Context, keep: int, said: set[str] | None = None) -> list[str]:
    """Prune generations beyond ``keep`` (never the live one or the one before it); logs
    ``certd.generation_pruned`` only for directories really gone, ``certd.prune_failed``
    for the others (once per operation: ids in ``said`` are not said again)."""
    said = set() if said is None else said
    try:
        result = ctx.store.prune(max(keep, 2))
    except OSError as exc:
        log.warning("certd.prune_failed", generation=None, error=fsio.describe_os_error(exc))
        return []
    for gen_id in result.removed:
        log.info("certd.generation_pruned", generation=gen_id)
    for gen_id, why in result.failed:
        if gen_id not in said:
            said.add(gen_id)
            log.warning("certd.prune_failed", generation=gen_id, error=why)
    return result.removed


def _swap_in(
    ctx: Context, data: SetBytes, meta: dict[str, Any], folder: Path, said: set[str]
) -> Generation:
    """Adopt the live files if needed, stage ``data`` and flip to it; SwapError when it fails.

    The state directory is pruned before staging (room for one more generation), and again
    to the minimum (the live generation and the one before it) when a write finds no
    space, then tried once more.
    """
    store = ctx.store
    _prune(ctx, ctx.config.generations_kept - 1, said)
    for attempt in (1, 2):
        try:
            adopted = store.adopt(lambda: _read_live(ctx), {"source": "live files"})
            if adopted is not None:
                log.info(
                    "certd.live_adopted", generation=adopted.id, live=str(ctx.managed.live.cert)
                )
                if ctx.config.restart.method in ("auto", "hot-reload"):
                    # Harper's watchers move from the replaced files to the links' targets a
                    # few ms after adoption; a flip before that goes unseen (measured: 6 of 6
                    # misses without this pause, 0 of 3 with it). Once per node, ever.
                    time.sleep(ADOPTION_SETTLE)
            gen = store.stage(data, meta, str(folder))
            store.commit_flip(gen)
        except SwapError as exc:
            # Whatever was written is undone; the live set never changed.
            with contextlib.suppress(SwapError, OSError):
                store.recover()
            if attempt == 1 and _no_space(exc) and _prune(ctx, 2, said):
                continue
            raise
        except OSError as exc:
            with contextlib.suppress(SwapError, OSError):
                store.recover()
            raise SwapError(
                f"the swap failed: {fsio.describe_os_error(exc)}; the live set is unchanged"
            ) from exc
        else:
            return gen
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class NameChange:
    """The CN or first SAN changed between two generations (issue 9 item 15)."""

    old_name: str  # "CN=a, SAN=b" of the previous generation
    new_name: str
    stale_record: str | None  # Harper's record left behind (its name), when it changed


def _name_change(previous: Generation | None, new: dict[str, Any]) -> NameChange | None:
    """Whether the new set's CN or first SAN differs from ``previous``'s.

    Harper files a certificate in ``system.hdb_certificate`` under its CN, or its first
    SAN; a new record name leaves the old record behind, and Harper logs ``key values
    mismatch`` for it at every later TLS update (tests/HARPER-RIG-FINDINGS.md, h).
    """
    if previous is None:
        return None
    old = previous.meta
    if not old.get("record_name") or not new.get("record_name"):
        return None  # a certificate that could not be read: nothing to compare
    if (old.get("cn"), old.get("first_san")) == (new.get("cn"), new.get("first_san")):
        return None

    def label(meta: dict[str, Any]) -> str:
        return f"CN={meta.get('cn') or '-'}, first SAN={meta.get('first_san') or '-'}"

    record = old["record_name"] if old["record_name"] != new["record_name"] else None
    return NameChange(label(old), label(new), None if record is None else str(record))


def remove_certificate_command(ctx: Context, record: str) -> str:
    """The Operations API call that removes Harper's record ``record``: printed, never run.

    On Harper 4.7.29 ``remove_certificate`` also deletes the record's private key file when
    no other record names it (measured in issue 9), which may be the key harper-certd
    manages; with another record naming the same key file only the record goes (measured in
    tests/test_harper_integration.py).  So the operator runs it after ``list_certificates``.
    """
    body = json.dumps({"operation": "remove_certificate", "name": record})
    harper = ctx.harper
    if harper.operations_socket is not None:
        where = f"--unix-socket {harper.operations_socket} http://localhost/"
    else:
        where = f"http://127.0.0.1:{harper.operations_port or 9925}/"
    return f"curl -u ADMIN -H 'Content-Type: application/json' -d '{body}' {where}"


def _file_installed(
    ctx: Context, folder: Path, source: Source, generation: str | None
) -> tuple[Path | None, str | None]:
    """File a live (installed or unchanged) source in processed/: (where, None), or
    (None, why) when it cannot be filed: the set is live whatever happens to the folder,
    so that is a warning (``certd.source_left``), never a failure."""
    del generation  # the event names the source; the outcome names the generation
    return _filing(ctx, folder, ctx.paths.processed, source)


def _install_judged(
    ctx: Context,
    folder: Path,
    verdict: Judged,
    recovery: Recovery | None,
    force_peers: bool = False,
) -> InstallOutcome:
    store = ctx.store
    require_no_foreign_files(store)
    source, report, problems = verdict
    if (why := store.foreign()) is not None:
        # Watch-only: these files belong to someone else (or cannot be written). The source
        # stays where it is; nothing is written anywhere.
        refused = (
            problem("live_not_managed", f"Not installed: {why}; harper-certd only watches."),
        )
        log.error(
            "certd.set_refused",
            source=str(folder),
            codes=["live_not_managed"],
            reason=refused[0].message,
            kept_at=None,
            now=ctx.clock().isoformat(),
        )
        return InstallOutcome(
            InstallStatus.REFUSED, (*problems, *refused), recovery=recovery, report=report
        )
    if _same_as_live(ctx, source.data):
        kept, filing_error = _file_installed(ctx, folder, source, store.current_id())
        log.info("certd.set_unchanged", source=str(folder), kept_at=str(kept) if kept else None)
        return InstallOutcome(
            InstallStatus.UNCHANGED,
            problems,
            store.current_id(),
            recovery=recovery,
            kept_at=kept,
            report=report,
            error=filing_error,
        )

    assert report.certificate is not None
    # --- h-peers hook 1: the guard before the swap (issue 12) ---------------------------
    guard = peers.check_set(ctx, source.data, stage="before")
    if not guard.ok:
        if not force_peers:
            found = (*problems, *guard.problems)
            return _refuse(ctx, folder, found, "peers", source, recovery, report)
        log.critical(
            "certd.peers_overridden",
            source=str(folder),
            codes=[p.code for p in guard.problems],
            reason=guard.problems[0].message,
        )
    # --- end of hook 1 ---------------------------------------------------------------
    meta = {
        **cert_meta(source.data.cert),
        "fingerprint": report.certificate.sha256,
        "subject": report.certificate.subject,
        "not_after": report.certificate.not_after.isoformat(),
        "ca_fingerprints": [fingerprint(c) for c in report.ca_certs],
        "warnings": [p.code for p in problems],
    }
    try:
        previous_before = store.current()
    except StateError:
        previous_before = None
    said: set[str] = set()
    try:
        gen = _swap_in(ctx, source.data, meta, folder, said)
        previous = (
            None
            if gen.meta.get("replaced") is None
            else store.generation(str(gen.meta["replaced"]))
        )
    except (SwapError, StateError) as exc:
        cause = _swap_cause(exc)
        with contextlib.suppress(OSError):
            store.history.record("install", "failed", source=str(folder), error=str(exc))
        # The source stays where it is (it was not found wanting) for the next attempt;
        # the caller says so (log_swap_failed): the daemon with its next attempt.
        return InstallOutcome(
            InstallStatus.SWAP_FAILED,
            problems,
            recovery=recovery,
            report=report,
            error=str(exc),
            cause=cause,
            source=folder,
        )
    renamed = _name_change(previous or previous_before, meta)
    applied = ctx.applier(previous, gen)
    # --- h-peers hook 2: the proof after the swap (issue 12) ------------------------------
    proof: peers.PeerCheck | None = None
    peer_refusals: list[Problem] = []
    if applied.ok and guard.checked:
        proof = peers.check_set(ctx, _read_live(ctx), stage="after", hold=False)
        peer_refusals = [p for p in proof.problems if p.code != "peer_unreachable"]
        if peer_refusals:
            why = " ".join(p.message for p in peer_refusals)
            applied = dataclasses.replace(applied, ok=False, detail=f"peers refuse it: {why}")
    # --- end of hook 2 ---------------------------------------------------------------
    if applied.ok:
        store.finish(gen, Outcome.INSTALLED, method=applied.method)
        # Said before the source is moved: the set is live whatever happens to the folder.
        log.info(
            "certd.set_installed",
            generation=gen.id,
            fingerprint=meta["fingerprint"],
            subject=meta["subject"],
            not_after=meta["not_after"],
            method=applied.method,
            verified=applied.verified,
            seconds=round(applied.seconds, 2),
            source=str(folder),
            peers=(proof or guard).summary(),
        )
        if renamed is not None:
            # Only a verified install proves the new record serves: then the old one is
            # stale for sure, and the command to remove it is given (never run: see
            # remove_certificate_command).
            stale = renamed.stale_record
            log.warning(
                "certd.name_changed",
                generation=gen.id,
                old_name=renamed.old_name,
                new_name=renamed.new_name,
                stale_record=stale,
                command=(
                    remove_certificate_command(ctx, stale)
                    if stale is not None and applied.verified
                    else None
                ),
            )
        filed, filing_error = _file_installed(ctx, folder, source, gen.id)
        _prune(ctx, ctx.config.generations_kept, said)
        retention.prune_kept(ctx.paths, ctx.config.retention, ctx.clock(), ctx.interrupted)
        return InstallOutcome(
            InstallStatus.INSTALLED,
            problems,
            gen.id,
            previous.id if previous else None,
            applied,
            recovery=recovery,
            kept_at=filed,
            report=report,
            error=filing_error,
        )
    # Harper could not use the new set: put the previous one back, and say so loudly.
    back = _roll_back_to(ctx, previous, gen, reason=applied.detail)
    after = (problem("applied_failed", f"After the swap: {applied.detail}"), *peer_refusals)
    filing_error = None
    rejected_at = _reject(ctx, folder, (*problems, *after), "after_swap", source, report)
    status = (
        InstallStatus.ROLLED_BACK if back is not None and back.ok else InstallStatus.ROLLBACK_FAILED
    )
    return InstallOutcome(
        status,
        (*problems, *after),
        gen.id,
        previous.id if previous else None,
        applied,
        back,
        recovery,
        rejected_at,
        report,
        filing_error,
    )


def _switch_back(ctx: Context, target: Generation, leaving: Generation) -> Applied:
    """Make ``target`` live again the way an install does, and make Harper use it."""
    ctx.store.begin_rollback(target)
    ctx.store.commit_flip(target, op="rollback")
    applied = ctx.applier(leaving, target)
    if applied.ok:
        ctx.store.finish(target, Outcome.RESTORED, op="rollback", replaced=leaving.id)
    else:
        ctx.store.finish(target, Outcome.RESTORE_UNVERIFIED, op="rollback", failure=applied.detail)
    return applied


def _roll_back_to(
    ctx: Context, target: Generation | None, failed: Generation, reason: str
) -> Applied | None:
    store = ctx.store
    if target is None:
        log.critical(
            "certd.rollback_failed",
            generation=failed.id,
            reason="no earlier generation to return to",
            failure=reason,
        )
        store.finish(failed, Outcome.FAILED, op="install")
        return None
    if (damage := store.intact(target)) is not None:
        # Written through a live path's link since: go back to the newest intact, valid one.
        good = _last_good(ctx, exclude={failed.id})
        if good is None:
            log.critical(
                "certd.rollback_failed",
                generation=failed.id,
                reason=f"{damage}; no other kept generation is intact and valid",
                failure=reason,
            )
            store.finish(failed, Outcome.FAILED, op="install")
            return None
        target = good
    # Marked first: a crash during the rollback must not find it "pending" and keep it.
    store.update_meta(failed, outcome=Outcome.ROLLED_BACK, failure=reason)
    back = _switch_back(ctx, target, failed)
    if back.ok:
        log.error(
            "certd.rolled_back",
            failed_generation=failed.id,
            restored_generation=target.id,
            failure=reason,
            fingerprint=target.meta.get("fingerprint"),
        )
    else:
        log.critical(
            "certd.rollback_failed",
            failed_generation=failed.id,
            restored_generation=target.id,
            failure=reason,
            rollback_failure=back.detail,
        )
    return back


# --- rollback by hand ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    status: RollbackStatus
    generation: str | None
    previous: str | None
    applied: Applied | None
    message: str
    trust_store: str | None = None  # a set without a CA file: the roots it was judged against


def rollback(ctx: Context, gen_id: str | None = None) -> RollbackOutcome:
    """Put generation ``gen_id`` (default: the one the live one replaced) back, if it is
    intact and valid now, and make Harper use it."""
    outcome = _rollback(ctx, gen_id)
    if (trust := ctx.trust_store()) is not None:
        return dataclasses.replace(outcome, trust_store=trust.where)
    return outcome


def _rollback(ctx: Context, gen_id: str | None) -> RollbackOutcome:
    if (why := ctx.store.foreign()) is not None:
        return RollbackOutcome(RollbackStatus.REFUSED, gen_id, None, None, f"watch-only: {why}")
    with ctx.store.locked():
        ctx.store.recover()
        store = ctx.store
        current = store.current()
        if current is None:
            return RollbackOutcome(
                RollbackStatus.NOTHING,
                None,
                None,
                None,
                "no generation is live yet: nothing to roll back",
            )
        target_id = gen_id or current.meta.get("replaced")
        if not target_id:
            return RollbackOutcome(
                RollbackStatus.NOTHING,
                None,
                current.id,
                None,
                f"generation {current.id} has no earlier generation",
            )
        try:
            target = store.generation(target_id)
        except Exception as exc:
            raise SwapError(f"generation {target_id} is not kept: {exc}") from None
        if target.id == current.id:
            return RollbackOutcome(
                RollbackStatus.NOTHING,
                current.id,
                current.id,
                None,
                f"generation {current.id} is already live",
            )
        if (damage := store.intact(target)) is not None:
            return RollbackOutcome(RollbackStatus.REFUSED, target.id, current.id, None, damage)
        report = _validate(
            ctx,
            target.read(),
            tuple(
                str(target.file(r))
                for r in ("cert", "key", "ca")  # type: ignore[arg-type]
            ),
        )
        if not report.valid:
            codes = ", ".join(report.codes)
            return RollbackOutcome(
                RollbackStatus.REFUSED,
                target.id,
                current.id,
                None,
                f"generation {target.id} is not valid now ({codes})",
            )
        applied = _switch_back(ctx, target, current)
        if applied.ok:
            log.warning(
                "certd.operator_rollback",
                restored_generation=target.id,
                from_generation=current.id,
            )
            return RollbackOutcome(
                RollbackStatus.ROLLED_BACK,
                target.id,
                current.id,
                applied,
                f"generation {target.id} is live again",
            )
        log.critical(
            "certd.rollback_failed", restored_generation=target.id, rollback_failure=applied.detail
        )
        return RollbackOutcome(
            RollbackStatus.ROLLBACK_FAILED,
            target.id,
            current.id,
            applied,
            f"generation {target.id} is in place but Harper did not take it: {applied.detail}",
        )


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    live: Report | None
    current: str | None
    generations: tuple[Generation, ...]
    history: tuple[dict[str, Any], ...]
    recovery: Recovery | None
    live_paths: dict[str, str] = field(default_factory=dict)
    watch_only: str | None = None  # why the live paths are only watched (Store.foreign)
    damaged: dict[str, str] = field(default_factory=dict)  # generation id -> Store.intact's
    trust_store: str | None = None  # a set without a CA file: the roots it is judged against

    def as_dict(self, at: dt.datetime) -> dict[str, Any]:
        live = None
        if self.live is not None and self.live.certificate is not None:
            cert = self.live.certificate
            live = {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "sha256": cert.sha256,
                "not_after": cert.not_after.isoformat(),
                "days_left": round(cert.days_left(at), 2),
                "valid": self.live.valid,
                "problems": [p.as_dict() for p in self.live.problems],
            }
        return {
            "live": live,
            "live_paths": self.live_paths,
            "current_generation": self.current,
            "generations": [
                {
                    "id": g.id,
                    "current": g.id == self.current,
                    "created": g.info.created,
                    "outcome": g.info.outcome,
                    "fingerprint": g.info.fingerprint,
                    "subject": g.info.subject,
                    "not_after": g.info.not_after,
                    "source": g.info.source,
                }
                for g in self.generations
            ],
            "history": list(self.history),
            "recovered": None if self.recovery is None else self.recovery.outcome,
            "watch_only": self.watch_only,
            "damaged": self.damaged,
            "trust_store": self.trust_store,
        }


def status(ctx: Context) -> Status:
    recovery = None
    if ctx.store.foreign() is None:
        with ctx.store.locked():
            recovery = ctx.store.recover()
    try:
        live: Report | None = _validate(ctx, _read_live(ctx), _live_names(ctx))
    except SwapError:
        live = None
    generations = tuple(ctx.store.generations())
    damaged = {g.id: d for g in generations if (d := ctx.store.intact(g)) is not None}
    trust = ctx.trust_store()
    return Status(
        live,
        ctx.store.current_id(),
        generations,
        tuple(ctx.store.history.last(10)),
        recovery,
        {r: str(p) for r, p in ctx.store.live_paths().items()},
        ctx.store.foreign(),
        damaged,
        None if trust is None else trust.where,
    )


# --- the daemon's other duties ---------------------------------------------------------------


def _live_names(ctx: Context) -> tuple[str, str, str]:
    live = ctx.managed.live
    return str(live.cert), str(live.key), "no CA file" if live.ca is None else str(live.ca)


def live_report(ctx: Context) -> Report:
    """The live set, validated for its use; SwapError when it cannot be read."""
    return _validate(ctx, _read_live(ctx), _live_names(ctx))


def _last_good(ctx: Context, exclude: set[str] | None = None) -> Generation | None:
    """The newest kept generation that is intact (its digests) and valid now."""
    for gen in reversed(ctx.store.generations()):
        if gen.id in (exclude or set()):
            continue
        try:
            data = gen.read()
        except OSError:
            continue
        if gen.meta.get("digests") not in (None, ctx.store.digests(data)):
            continue  # changed in place since it was written
        if _validate(ctx, data, ("generation certificate", "key", "CA file")).valid:
            return gen
    return None


def handle_live_change(ctx: Context) -> None:
    """The live files changed, not by us: adopt a valid set, report (or restore) an invalid one."""
    store = ctx.store
    watch_only = store.foreign()
    with store.locked():
        if watch_only is None:
            store.recover()
        try:
            data: SetBytes | None = _read_live(ctx)
        except SwapError:
            data = None
        report = None if data is None else _validate(ctx, data, _live_names(ctx))
        current = store.current()
        if data is not None and report is not None and report.valid:
            if (
                current is not None
                and store.managed()
                and current.meta.get("digests") == store.digests(data)
            ):
                return  # only touched: the content is the live generation's
            assert report.certificate is not None
            if watch_only is not None:
                # Someone else's files: said, never written (Harper reads them itself).
                log.warning(
                    "certd.live_changed",
                    generation=None,
                    fingerprint=report.certificate.sha256,
                    subject=report.certificate.subject,
                    written_through=None,
                    watch_only=True,
                )
                check_served(ctx, report.certificate.sha256)
                return
            through = (
                current.id
                if current is not None and store.managed() and store.intact(current)
                else None
            )
            try:
                gen = store.take_live(
                    data,
                    {
                        "source": "changed by hand",
                        "fingerprint": report.certificate.sha256,
                        "subject": report.certificate.subject,
                        "not_after": report.certificate.not_after.isoformat(),
                    },
                )
            except (SwapError, OSError) as exc:
                # Harper already reads the new files; only our record of them failed.
                with contextlib.suppress(SwapError, OSError):
                    store.recover()
                log_swap_failed("live files (changed by hand)", _swap_cause(exc), str(exc))
                return
            log.warning(
                "certd.live_changed",
                generation=gen.id,
                fingerprint=report.certificate.sha256,
                subject=report.certificate.subject,
                written_through=through,
                watch_only=False,
            )
            applied = ctx.applier(current, gen)
            if not applied.ok:
                log.error("certd.verify_failed", generation=gen.id, detail=applied.detail)
            return
        codes = (
            ["live_unreadable"]
            if report is None
            else [p.code for p in report.problems if p.severity.value == "error"]
        )
        log.error(
            "certd.live_invalid",
            codes=codes,
            problems=[]
            if report is None
            else [p.message for p in report.problems if p.severity.value == "error"],
            action="report" if watch_only is not None else ctx.config.on_invalid_live,
        )
        if ctx.config.on_invalid_live != "restore" or watch_only is not None:
            return
        if current is not None and (damage := store.intact(current)) is not None:
            store.update_meta(current, outcome=Outcome.CHANGED_IN_PLACE, damage=damage)
        target = _last_good(ctx)
        if target is None:
            log.critical("certd.rollback_failed", reason="no kept generation is valid to restore")
            return
        try:
            store.restore(target)
        except (SwapError, OSError) as exc:
            log_swap_failed(f"generation {target.id} (restore)", _swap_cause(exc), str(exc))
            return
        applied = ctx.applier(None, target)
        log.warning(
            "certd.live_restored",
            generation=target.id,
            fingerprint=target.meta.get("fingerprint"),
            verified=applied.ok,
            detail=applied.detail,
        )


def check_served(ctx: Context, fingerprint: str) -> bool | None:
    """Watch-only: does Harper serve ``fingerprint`` on every secure port (within
    ``verify.timeout``, Harper reloading by itself)?  Nothing is restarted or written.

    None when there is nothing to check (verification off, no port, Harper not running);
    otherwise logs ``certd.served_verified`` or ``certd.verify_failed`` and says which.
    """
    if not ctx.config.verify.enabled or ctx.config.restart.method == "none":
        return None
    from harper_certd.harper import harper_pid, make_harper

    harper = make_harper(ctx.config, ctx.harper, interrupted=ctx.interrupted)
    if not harper.ports or harper_pid(harper.root) is None:
        return None

    def sleep(seconds: float) -> None:
        if ctx.interrupted is not None and ctx.interrupted.wait(seconds):
            raise Interrupted("stopped while checking what Harper serves")
        if ctx.interrupted is None:
            time.sleep(seconds)

    result = harper.verify(fingerprint, sleep=sleep)
    if result.ok:
        log.info(
            "certd.served_verified",
            fingerprint=fingerprint,
            ports=dict(harper.ports),
            pid=result.pid,
            seconds=round(result.seconds, 2),
            failed_handshakes=result.failed_handshakes,
            method="watch-only",
        )
        return True
    log.error(
        "certd.verify_failed",
        generation=None,
        detail=f"watch-only: Harper does not serve the live set: {result.describe()}",
    )
    return False


def on_start(ctx: Context) -> str | None:
    """What the daemon does once at start for the store: say when it only watches (the
    reason, or None), and apply the retention to processed/ and rejected/."""
    why = ctx.store.foreign()
    if why is not None:
        log.warning(
            "certd.watch_only",
            reason=why,
            live=[str(p) for p in ctx.store.live_paths().values()],
            does="validates, warns about expiry and invalid sets; never writes the live files",
        )
    with contextlib.suppress(OSError):
        retention.prune_kept(ctx.paths, ctx.config.retention, ctx.clock(), ctx.interrupted)
    return why


def verify_current(ctx: Context) -> Applied | None:
    """After a recovered swap: make Harper use the live generation and check it."""
    current = ctx.store.current()
    if current is None:
        return None
    applied = ctx.applier(None, current)
    if not applied.ok:
        log.error("certd.verify_failed", generation=current.id, detail=applied.detail)
    return applied


def run_renewal(ctx: Context, interrupted: threading.Event | None) -> tuple[int | None, str]:
    return run_command(ctx.config.renew.command, ctx.config.renew.timeout, interrupted)
