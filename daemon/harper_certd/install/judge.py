"""Judging a source: read it (never through a link others can write), validate it for the
managed set's use, add the layout hazards it would create and the "older than live"
check; the verdict is the judged set or the refusal (filed in rejected/ with its reason).

``validate_set`` is the one judgement every path uses: install, rollback (the target, as it
is now), a live change, ``status``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from harper_certd import events, fsio, hazards, sdnotify
from harper_certd.errors import Interrupted
from harper_certd.generation import Generation
from harper_certd.install.context import Context
from harper_certd.install.filing import refuse, unmovable
from harper_certd.install.outcomes import InstallOutcome, InstallStatus
from harper_certd.install.verdict import validate_set
from harper_certd.problems import Problem, problem
from harper_certd.recover import Recovery
from harper_certd.roles import SetBytes
from harper_certd.source import Source, SourceRefused, read_source
from harper_certd.trust import system_store
from harper_certd.validate import Report, summarize

Judged = tuple[Source, Report, tuple[Problem, ...]]


def new_hazards(ctx: Context, data: SetBytes) -> tuple[Problem, ...]:
    """The layout hazards installing ``data`` as the managed set would create (hazards.py).

    Errors among them refuse the install; the live layout's own hazards are not repeated
    (``check`` and the daemon's ``certd.layout_hazard`` report those).
    """
    store = ctx.config.harper.trust_store
    try:
        return hazards.for_candidate(
            ctx.harper, lambda: system_store(store), ctx.managed.live.cert, data.cert, data.ca
        )
    except Exception:  # the live layout's content is hostile: its own checks say so
        # Imported here for start-up cost: `status` loads this module and logs nothing.
        from harper_certd import logs

        logs.emit(
            events.LayoutHazard(
                code="check_failed",
                severity="error",
                message="the layout's hazards could not be judged; the candidate is judged alone",
            )
        )
        return ()


def other_keys(source: Source) -> tuple[Problem, ...]:
    """``source_other_key`` (a warning) when the folder holds other files named like private
    keys: they move with it into processed/ (a newcomer's CA key did, from the folder the
    docs' recipe made the set in)."""
    found = source.other_keys()
    if not found or source.is_certbot_lineage:  # a lineage is read, never moved
        return ()
    listed = ", ".join(found)
    return (
        problem(
            "source_other_key",
            f"{source.folder} also holds {listed}, named like a private key, besides the set's "
            f"key ({Path(source.labels[1]).name}); the folder is filed whole, with it, in "
            "processed/ or rejected/. Keep a CA's key off the node; hand over the set's files "
            "only.",
        ),
    )


def older_than_live(ctx: Context, new: Report, folder: Path) -> Problem | None:
    # Only the live leaf's names and expiry matter here: no need to validate the live set.
    # Read as the layout's hazards read it (parsed once per content, remembered by stamp:
    # after a swap, the files the swap wrote are known without reading them back).
    certs = hazards.certificates_at(ctx.managed.live.cert)
    if not certs or new.certificate is None:
        return None
    live = summarize(certs[0])
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


def same_as_live(ctx: Context, data: SetBytes) -> bool:
    current = ctx.store.current()
    if current is None:
        return False
    try:
        return current.read() == data
    except OSError:
        return False


def _crash_text(exc: BaseException) -> str:
    # Imported here for start-up cost: `status` loads this module and logs nothing.
    from harper_certd import logs

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
    return refuse(ctx, folder, refused, "judge", None, recovery, file=False)


def refuse_unroutable(ctx: Context, folder: Path, reason: str) -> InstallOutcome:
    """A folder straight in incoming/ that fits none or several of the node's sets: refused
    (``set_unroutable``) and filed in rejected/ with the reason beside it."""
    text = f"{folder} cannot be given to one certificate set: {reason}."
    unset = ctx._replace(set_name=None)  # its reason.json names no set
    return refuse(unset, folder, (problem("set_unroutable", text),), "route", None, None)


def judge(
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
        return refuse(ctx, folder, refused, "source", None, recovery, file=False)
    try:
        source: Source = read_source(
            folder,
            trusted_uids=ctx.trusted_uids(),
            ca_fallback=ctx.config.ca_file or ctx.managed.live.ca,
            ca_file=ctx.managed.live.ca is not None,
        )
    except SourceRefused as exc:
        return refuse(ctx, folder, (problem(exc.code, str(exc)),), "source", None, recovery)
    except OSError as exc:
        text = f"{folder} cannot be read: {fsio.describe_os_error(exc)}"
        return refuse(ctx, folder, (problem("source_unreadable", text),), "source", None, recovery)
    names = source.labels  # the files read: messages name them
    try:
        report = validate_set(ctx, source.data, (names[0], names[1], names[2]))
        problems = (*report.problems, *other_keys(source))
        if report.valid:
            problems = (*problems, *new_hazards(ctx, source.data))
        if report.valid and not force_older and (older := older_than_live(ctx, report, folder)):
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
        return refuse(ctx, folder, problems, "validate", source, recovery, report)
    return source, report, problems


def judge_each(
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
        sdnotify.keepalive()  # a batch's judging can outlast a ping interval on a busy host
        try:
            verdict = judge(ctx, folder, False, recovery, hold_seconds)
        except Exception as exc:  # one source never stops the others
            verdict = judge_failed(ctx, folder, exc, recovery)
        if not isinstance(verdict, InstallOutcome):
            judged.append((folder, verdict))
        elif on_judged is not None:
            on_judged(folder, verdict)
    return judged


def last_good(ctx: Context, exclude: set[str] | None = None) -> Generation | None:
    """The newest kept generation that is intact (its digests) and valid now."""
    for gen in ctx.store.generations()[::-1]:
        if gen.id in (exclude or set()):
            continue
        ctx.store.intact(gen)  # changed in place and not live: put back (Pristine.repair)
        try:
            data = gen.read()
        except OSError:
            continue
        if gen.meta.get("digests") not in (None, ctx.store.digests(data)):
            continue  # changed in place since it was written
        if validate_set(ctx, data, ("generation certificate", "key", "CA file")).valid:
            return gen
    return None
