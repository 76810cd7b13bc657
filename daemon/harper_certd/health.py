"""The node's health as a monitoring system needs it: one snapshot, a Nagios-style level.

``snapshot(ctx, at)`` gathers, from the store's public methods and the folders the daemon
files sets into, everything ``status --json``, the Prometheus textfile and ``fleet`` show:
each set with its certificates and days left, what Harper serves against what is live,
sets waiting in the incoming folder, refusals (``rejected/.reasons/*.json``), the last
rotation and rollback (the store's history), the next renewal and the next warning.
``level`` is 0 ok, 1 warning, 2 critical (the Nagios plugin convention, which Icinga,
Sensu and Zabbix's agents read too); ``status`` exits with it.

Warnings mean problems.  A fixed 30-day threshold fires for every healthy 90-day
certificate (Let's Encrypt renews at 30 days left) and at once for a 24-hour one; so the
leaf's first warning is *renewal overdue*: ``health.overdue_after`` (a half by default) of
its renewal window (``renew.before_fraction``/``before_days`` before notAfter) has passed
without a new set.  CAs in the CA file keep ``expiry.warn_days``: they are rotated by
hand, in phases, and need the long notice.

Per set: today the daemon manages one set; ``sets`` is a list with one entry named after
its role, so a per-set store (issue 11) adds entries, not a new shape.
"""

import contextlib
import datetime as dt
import os
from collections.abc import Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from harper_certd import hazards, reasons, renewfile, spans, statefile
from harper_certd.adoption import foreign
from harper_certd.check import check_entry
from harper_certd.config import Config
from harper_certd.errors import CertdError
from harper_certd.harper.process import harper_pid
from harper_certd.install.context import store_dir
from harper_certd.install.verdict import live_report
from harper_certd.roles import SET_FOLDER
from harper_certd.schedule import Mark, Watched, renewal_at
from harper_certd.trust import system_store
from harper_certd.validate import summarize

if TYPE_CHECKING:
    from harper_certd.discover import CertSet
    from harper_certd.install.context import Context
    from harper_certd.install.managed import Managed
    from harper_certd.problems import Problem
    from harper_certd.validate import CertSummary, Report

WAITING_HELD_FACTOR = 10  # a set still in incoming/ after 10 settle periods + a minute: held
WAITING_HELD_EXTRA = 60.0


class Level(IntEnum):
    """Nagios plugin exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def word(self) -> str:
        return self.name.lower()


# Health finding codes: stable, in the README's status table (tests check).
FINDINGS: dict[str, tuple[Level, str]] = {
    "live_unreadable": (Level.CRITICAL, "The live set cannot be read."),
    "live_invalid": (Level.CRITICAL, "The live set fails validation (expired, say)."),
    "served_mismatch": (Level.CRITICAL, "Harper serves another certificate than the live one."),
    "rollback_failed": (
        Level.CRITICAL,
        "The last rollback could not be confirmed: look at Harper now.",
    ),
    "renewal_overdue": (
        Level.WARNING,
        "The leaf is past health.overdue_after of its renewal window without a new set.",
    ),
    "ca_expiring": (Level.WARNING, "A CA in the CA file is within expiry.warn_days."),
    "renewal_failing": (
        Level.WARNING,
        "The last renewal failed (from the first failure: its reason and the next attempt).",
    ),
    "rolled_back": (Level.WARNING, "The last rotation was rolled back; nothing newer installed."),
    "refused": (
        Level.WARNING,
        "The newest candidate set was refused; nothing newer installed, its folder still in "
        "`rejected/`.",
    ),
    "set_held": (
        Level.WARNING,
        "A set waits in the incoming folder, held: its notBefore is ahead of the clock, a peer "
        "has not answered, or the restart budget is spent (the finding says which, and until "
        "when).",
    ),
    "harper_not_running": (Level.WARNING, "Harper is not running: nothing is served."),
    "not_managed": (
        Level.WARNING,
        "The live paths are plain files (released, or never installed through harper-certd): "
        "nothing rotates them; `harper-certd install` adopts them again.",
    ),
    "layout_hazard": (
        Level.CRITICAL,
        "The certificate layout has a hazard (issue 11: a problem code of hazards.py).",
    ),
}


class Finding(NamedTuple):
    code: str
    message: str

    @property
    def level(self) -> Level:
        return FINDINGS[self.code][0]

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "level": self.level.word, "message": self.message}


# --- time: when renewal is overdue ---------------------------------------------------------


def overdue_at(leaf: Watched, config: Config) -> dt.datetime:
    """The instant the leaf's renewal is overdue: its first warning (UTC)."""
    start = renewal_at(
        leaf, before_fraction=config.renew.before_fraction, before_days=config.renew.before_days
    )
    start = max(start, leaf.not_before)
    return start + (leaf.not_after - start) * config.health.overdue_after


def warning_marks(marks: list[Mark], leaf: Watched | None, config: Config) -> list[Mark]:
    """The daemon's expiry marks with the leaf's early thresholds replaced by 'overdue'.

    Leaf warnings due before the overdue instant are dropped and one is added at it
    (its ``days`` is the days left then); CA and "expired" marks are kept as they are.
    """
    if leaf is None:
        return marks
    due = overdue_at(leaf, config)
    kept = [
        m
        for m in marks
        if not (m.cert.sha256 == leaf.sha256 and m.kind == "warning" and m.at < due)
    ]
    # a tenth of a day where it is a day or more (the renewal schedule's jitter does not show);
    # 4 decimals (about 9 s) under a day: a 24-hour leaf's threshold is 0.125 days, never "0.0"
    exact = (leaf.not_after - due).total_seconds() / 86400
    days = (round(exact, 1) if exact >= 1 else round(exact, 4)) or 0.0
    kept.append(Mark(due, "warning", days, leaf))
    return sorted(kept, key=lambda m: m.at)


# --- the snapshot ---------------------------------------------------------------------------


class CertView(NamedTuple):
    role: str  # "leaf", "intermediate" or "ca" (an entry of the CA file)
    subject: str
    issuer: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime

    def as_dict(self, at: dt.datetime) -> dict[str, Any]:
        return {
            "role": self.role,
            "subject": self.subject,
            "issuer": self.issuer,
            "sha256": self.sha256,
            "not_after": self.not_after.isoformat(),
            "days_left": round((self.not_after - at).total_seconds() / 86400, 2),
        }


class ServedView(NamedTuple):
    port_name: str
    port: int
    dialled: str
    sha256: str | None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "port_name": self.port_name,
            "port": self.port,
            "dialled": self.dialled,
            "sha256": self.sha256,
            "error": self.error or None,
        }


class SetView(NamedTuple):
    name: str
    role: str  # the purpose it is validated for: cluster or server
    uses: tuple[str, ...]
    generation: str | None
    valid: bool | None
    certificates: tuple[CertView, ...]
    served: tuple[ServedView, ...] | None  # None: Harper not running, or not probed
    next_renewal: dt.datetime | None
    renewal_overdue_at: dt.datetime | None
    harper_role: str | None = None  # replication, server, operations-api (roles.Role)
    ports: tuple[tuple[str, int], ...] = ()  # secure-port key, port: where Harper serves it
    managed: bool = True  # False: its name cannot be a folder under incoming/ (not installed)

    @property
    def leaf(self) -> CertView | None:
        return next((c for c in self.certificates if c.role == "leaf"), None)

    @property
    def served_matches_live(self) -> bool | None:
        if self.served is None or self.leaf is None or not self.served:
            return None
        return all(s.sha256 == self.leaf.sha256 for s in self.served)


class Operation(NamedTuple):
    kind: str  # rotation, rollback, refusal, renewal
    outcome: str
    time: dt.datetime
    detail: str = ""
    # a refusal: the folder as handed over, and where it is kept (rejected/<stamp>-<name>)
    source: str | None = None
    kept_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "outcome": self.outcome,
            "time": self.time.isoformat(),
            "detail": self.detail,
        }
        if self.kind == "refusal":
            out |= {"source": self.source, "kept_at": self.kept_at}
        return out


class Waiting(NamedTuple):
    path: str
    since: dt.datetime
    held: bool
    reason: str | None = None  # the daemon's, when it holds the set (restart budget, notBefore)
    until: str | None = None  # ISO 8601: when the daemon expects to take it


class Snapshot(NamedTuple):
    at: dt.datetime
    node_name: str | None
    harper_root: str
    sets: tuple[SetView, ...]
    waiting: tuple[Waiting, ...]
    refusals: tuple[Operation, ...]  # newest first
    last: dict[str, Operation]  # kind -> newest
    findings: tuple[Finding, ...]
    next_warning: dt.datetime | None
    problems_by_code: dict[str, int]

    @property
    def level(self) -> Level:
        return max((f.level for f in self.findings), default=Level.OK)

    def as_dict(self) -> dict[str, Any]:
        at = self.at
        return {
            "node_name": self.node_name,
            "harper_root": self.harper_root,
            "checked_at": at.isoformat(),
            "health": self.level.word,
            "exit_status": int(self.level),
            "findings": [f.as_dict() for f in self.findings],
            "sets": [
                {
                    "name": s.name,
                    "role": s.role,
                    "harper_role": s.harper_role,
                    "ports": dict(s.ports),
                    "managed": s.managed,
                    "uses": list(s.uses),
                    "generation": s.generation,
                    "valid": s.valid,
                    "days_left": None
                    if s.leaf is None
                    else round((s.leaf.not_after - at).total_seconds() / 86400, 2),
                    "live_sha256": None if s.leaf is None else s.leaf.sha256,
                    "served": None if s.served is None else [v.as_dict() for v in s.served],
                    "served_matches_live": s.served_matches_live,
                    "certificates": [c.as_dict(at) for c in s.certificates],
                    "next_renewal": None if s.next_renewal is None else s.next_renewal.isoformat(),
                    "renewal_overdue_at": None
                    if s.renewal_overdue_at is None
                    else s.renewal_overdue_at.isoformat(),
                }
                for s in self.sets
            ],
            "waiting": [
                {
                    "path": w.path,
                    "since": w.since.isoformat(),
                    "held": w.held,
                    "reason": w.reason,
                    "until": w.until,
                }
                for w in self.waiting
            ],
            "held": [w.path for w in self.waiting if w.held],
            "refusals": [r.as_dict() for r in self.refusals],
            "last": {k: v.as_dict() for k, v in self.last.items()},
            "next_renewal": min(
                (s.next_renewal.isoformat() for s in self.sets if s.next_renewal), default=None
            ),
            "next_warning": None if self.next_warning is None else self.next_warning.isoformat(),
            "problems_by_code": dict(self.problems_by_code),
        }


def _views(report: "Report") -> tuple[CertView, ...]:
    out: list[CertView] = []
    leaf = report.certificate
    if leaf is None:
        return ()
    out.append(_view("leaf", leaf))
    # Intermediates: the validated chain's certificates between the leaf and the root
    # (wherever they sat: certificate file or CA file); the CA file's entries follow.
    out += [_view("intermediate", c) for c in report.chain[1:] if c.subject != c.issuer]
    for ca in (summarize(c) for c in report.ca_certs):
        out.append(_view("ca", ca))
    return tuple(out)


def _view(role: str, c: "CertSummary") -> CertView:
    return CertView(role, c.subject, c.issuer, c.sha256, c.not_before, c.not_after)


def _parse_time(text: object) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def refusals(rejected: Path, last: int = 10, set_name: str | None = None) -> list[Operation]:
    """Refused sets from the daemon's own records (``reasons.read_all``:
    ``rejected/.reasons/*.json``), newest first; the refused folders themselves are never
    read (their files are their sender's, issue 17).

    ``set_name``: only refusals for that set, or for no set in particular (a folder that
    fits no set, files written before reason.json named the set); None: every refusal.
    """
    out: list[Operation] = []
    for name, reason in reasons.read_all(rejected):
        if set_name is not None and reason.get("set") not in (None, set_name):
            continue
        when = _parse_time(reason.get("time"))
        if when is None:
            continue
        problems = reason.get("problems")
        listed = problems if isinstance(problems, list) else []
        codes = [p.get("code") for p in listed if isinstance(p, dict)]
        detail = ",".join(map(str, codes))
        source = reason.get("source")
        out.append(
            Operation(
                "refusal",
                str(reason.get("stage", "refused")),
                when,
                detail,
                source=source if isinstance(source, str) else None,
                kept_at=str(rejected / name),
            )
        )
    out.sort(key=lambda o: o.time, reverse=True)
    return out[:last]


def last_operations(history: list[dict[str, Any]]) -> dict[str, Operation]:
    """The newest rotation and rollback in the store's history."""
    out: dict[str, Operation] = {}
    for h in history:
        when = _parse_time(h.get("time"))
        if when is None:
            continue
        op, outcome = h.get("op"), str(h.get("outcome"))
        if op == "install":
            out["rotation"] = Operation("rotation", outcome, when, str(h.get("generation") or ""))
        elif op == "rollback":
            # A rollback by hand that Harper took is "operator" (as certd.operator_rollback's
            # metric): alerts tell it from the daemon's own after a failed install.
            if h.get("by") == "operator" and outcome == "restored":
                outcome = "operator"
            out["rollback"] = Operation("rollback", outcome, when, str(h.get("generation") or ""))
    return out


def waiting_sets(
    incoming: Path,
    at: dt.datetime,
    settle: float,
    held: Sequence[Mapping[str, Any]] = (),
    skip: frozenset[str] = frozenset(),
) -> list[Waiting]:
    """Candidate sets in the incoming folder (not dot-names, which are being written, nor
    the names in ``skip``: the sets' own folders, ``incoming/<set name>/``).

    ``held``: the daemon's own list (``statefile.read_waiting``: source, reason, until); a
    set there is held with the daemon's reason.  Another set is called held when it has
    waited far longer than the settle rule allows (the daemon is stopped or stuck).
    """
    try:
        entries = [
            e for e in incoming.iterdir() if not e.name.startswith(".") and e.name not in skip
        ]
    except OSError:
        return []
    said = {str(h.get("source")): h for h in held}
    out = []
    for entry in entries:
        with contextlib.suppress(OSError):
            since = dt.datetime.fromtimestamp(entry.lstat().st_mtime, dt.UTC)
            age = (at - since).total_seconds()
            hold = said.get(str(entry))
            stuck = age > settle * WAITING_HELD_FACTOR + WAITING_HELD_EXTRA
            out.append(
                Waiting(
                    str(entry),
                    since,
                    hold is not None or stuck,
                    None if hold is None else str(hold.get("reason")),
                    None if hold is None else str(hold.get("until")),
                )
            )
    return sorted(out, key=lambda w: w.since)


def probe_served(ctx: "Context") -> tuple[ServedView, ...] | None:
    """What Harper serves on each secure port it serves the managed set on; None if stopped."""
    if harper_pid(ctx.paths.harper_root) is None:
        return None
    # start-up cost: Harper's API client and the probes only when the ports are dialled
    from harper_certd.harper.apply import make_harper
    from harper_certd.harper.probe import served_local

    harper = make_harper(ctx.config, ctx.harper)
    out = []
    for name, port in harper.ports.items():
        seen = served_local(harper.hosts, port, 3.0, server_name=harper.server_name)
        out.append(ServedView(name, port, seen.dialled, seen.sha256, seen.error))
    return tuple(out)


def snapshot(
    ctx: "Context",
    at: dt.datetime | None = None,
    *,
    served: tuple[ServedView, ...] | bool | None = True,
    live: "Report | None" = None,
) -> Snapshot:
    """The node's health now.  ``served``: True probes Harper's ports, False does not, a
    tuple (or None: Harper not running) is a probe already made by the daemon's re-check.
    ``live``: the live set's report when the caller has just made it (``status``: the set
    is then judged once per command), else None: judged here."""
    at = at or ctx.clock()
    config = ctx.config
    findings: list[Finding] = []
    report: Report | None = live
    if report is None:
        try:
            report = live_report(ctx)
        except CertdError as exc:
            findings.append(Finding("live_unreadable", str(exc)))
    certs = _views(report) if report is not None else ()
    leaf_view = next((c for c in certs if c.role == "leaf"), None)
    next_renewal = overdue = None
    warnings_at: list[dt.datetime] = []
    problems: dict[str, int] = {}
    if report is not None:
        for p in report.problems:
            problems[p.code] = problems.get(p.code, 0) + 1
        if not report.valid:
            codes = ", ".join(p.code for p in report.problems if p.severity.value == "error")
            findings.append(Finding("live_invalid", f"the live set is invalid: {codes}"))
    if leaf_view is not None:
        watched = Watched(
            "leaf", leaf_view.subject, leaf_view.sha256, leaf_view.not_before, leaf_view.not_after
        )
        next_renewal = renewal_at(
            watched,
            before_fraction=config.renew.before_fraction,
            before_days=config.renew.before_days,
        )
        overdue = overdue_at(watched, config)
        if at >= overdue and at < leaf_view.not_after:
            days = (leaf_view.not_after - at).total_seconds() / 86400
            findings.append(
                Finding(
                    "renewal_overdue",
                    f"{leaf_view.subject}: renewal due since {next_renewal.isoformat()}, "
                    f"{spans.days_left(days)}, no new set",
                )
            )
        warnings_at += [overdue, leaf_view.not_after]
    failure = renewfile.failing(ctx.store.root, None if leaf_view is None else leaf_view.sha256)
    if failure is not None:
        refused = failure.get("codes") or []
        why = f"{failure['reason']}" + (f" ({', '.join(map(str, refused))})" if refused else "")
        findings.append(
            Finding(
                "renewal_failing",
                f"renewal failed {failure.get('failures', 1)} time(s), last at "
                f"{failure.get('time')}: {why}; next attempt {failure.get('next_attempt')}",
            )
        )
    warn_days = max(config.expiry.warn_days, default=0.0)
    for ca in (c for c in certs if c.role != "leaf"):
        start = ca.not_after - dt.timedelta(days=warn_days)
        if start <= at:
            days = (ca.not_after - at).total_seconds() / 86400
            findings.append(Finding("ca_expiring", f"{ca.subject}: {spans.days_left(days)}"))
        warnings_at += [start, ca.not_after]
    probed: tuple[ServedView, ...] | None
    if served is True:
        probed = probe_served(ctx)
    elif served is False:
        probed = None
    else:
        probed = served
    if served is not False and probed is None:
        findings.append(Finding("harper_not_running", f"no live {ctx.paths.harper_root}/hdb.pid"))
    current = ctx.store.current_id()
    if current is not None and not ctx.store.managed() and foreign(ctx.store) is None:
        findings.append(
            Finding(
                "not_managed",
                f"generation {current} is recorded but the live paths are not links to it "
                "(harper-certd release, or files replaced by hand)",
            )
        )
    cert_sets = ctx.harper.sets()
    mine = next((c for c in cert_sets if c.first.cert_path == ctx.managed.live.cert), None)
    view = SetView(
        name=set_name(ctx.managed) if mine is None else mine.name,
        harper_role=None if mine is None else mine.role.value,
        ports=() if mine is None else tuple(mine.ports.items()),
        role=ctx.managed.purpose.value,
        uses=ctx.managed.uses,
        generation=current,
        valid=None if report is None else report.valid,
        certificates=certs,
        served=probed,
        next_renewal=next_renewal,
        renewal_overdue_at=overdue,
    )
    if view.served_matches_live is False:
        seen = "; ".join(f"{s.dialled}: {s.sha256 or s.error}" for s in view.served or ())
        findings.append(
            Finding(
                "served_mismatch",
                f"live {leaf_view.sha256 if leaf_view else '?'}, served {seen}",
            )
        )
    last = last_operations(ctx.store.history.last(100))
    refused = refusals(ctx.paths.rejected, set_name=None if mine is None else mine.name)
    if refused:
        last["refusal"] = refused[0]
    rotation = last.get("rotation")
    rollback = last.get("rollback")
    if rollback is not None and rollback.outcome == "restore_unverified":
        findings.append(Finding("rollback_failed", f"rollback at {rollback.time.isoformat()}"))
    elif (
        rotation is not None
        and rotation.outcome == "failed"
        and (rollback is None or rollback.time >= rotation.time)
    ):
        findings.append(
            Finding("rolled_back", f"rotation at {rotation.time.isoformat()} was rolled back")
        )
    if refused and (rotation is None or refused[0].time > rotation.time):
        import shlex  # start-up cost: only a refusal's finding quotes a path

        newest = refused[0]
        more = len(refused) - 1
        earlier = "1 other refusal is" if more == 1 else f"{more} other refusals are"
        findings.append(
            Finding(
                "refused",
                f"a set was refused at {newest.time.isoformat()} ({newest.detail}); it is kept "
                f"in {newest.kept_at} with its reason.json"
                + (f"; {earlier} kept in {ctx.paths.rejected} too" if more else "")
                + ". Fix: install a newer set, or, once handled, remove the folder"
                + (" and the others" if more else "")
                + f" (rm -r {shlex.quote(str(newest.kept_at))})",
            )
        )
    # On a node with several sets each has its folder, incoming/<set name>/; incoming/
    # itself holds what the daemon has yet to route.
    folders = frozenset(c.name for c in cert_sets) if len(cert_sets) > 1 else frozenset()
    held = statefile.read_waiting(ctx.store.root)
    settle = config.watch.settle_seconds
    waiting = waiting_sets(ctx.paths.incoming, at, settle, held, folders)
    if folders and mine is not None:
        waiting = sorted(
            [*waiting, *waiting_sets(ctx.paths.incoming / mine.name, at, settle, held)],
            key=lambda w: w.since,
        )
    for w in waiting:
        if w.held:
            why = f" (held: {w.reason}, until {w.until})" if w.reason else ""
            findings.append(
                Finding("set_held", f"{w.path} waiting since {w.since.isoformat()}{why}")
            )
    others = _other_sets(ctx, [c for c in cert_sets if c is not mine], at, findings)
    for p in _hazards(ctx):
        findings.append(Finding("layout_hazard", f"{p.code}: {p.message}"))
    future = [t for t in warnings_at if t > at]
    return Snapshot(
        at=at,
        node_name=ctx.harper.node_name,
        harper_root=str(ctx.paths.harper_root),
        sets=(view, *others),
        waiting=tuple(waiting),
        refusals=tuple(refused),
        last=last,
        findings=tuple(findings),
        next_warning=min(future, default=None),
        problems_by_code=problems,
    )


def _other_sets(
    ctx: "Context", cert_sets: "list[CertSet]", at: dt.datetime, findings: list[Finding]
) -> tuple[SetView, ...]:
    """The other sets of the node, validated in their role, with their own store's live
    generation (``managed``: the daemon manages every set whose name can be a folder)."""
    store = ctx.config.harper.trust_store
    views = []
    for c in cert_sets:
        result = check_entry(
            c.first, at, ctx.config.expiry_warning_days, lambda: system_store(store)
        )
        report = result.report
        if report is not None and not report.valid:
            codes = ", ".join(p.code for p in report.problems if p.severity.value == "error")
            findings.append(Finding("live_invalid", f"set '{c.name}' is invalid: {codes}"))
        leaf = None if report is None else report.certificate
        own = next((x.renew for x in ctx.config.sets if x.name == c.name), None)
        watched = (
            None
            if leaf is None
            else Watched("leaf", leaf.subject, leaf.sha256, leaf.not_before, leaf.not_after)
        )
        renew_config = ctx.config._replace(renew=own) if own is not None else None
        views.append(
            SetView(
                name=c.name,
                role=c.purpose.value,
                uses=c.uses,
                generation=_live_generation(store_dir(ctx.paths, ctx.harper, c.name)),
                valid=None if report is None else report.valid,
                certificates=() if report is None else _views(report),
                served=None,
                # A set renews when it has its own ``sets[].renew`` (the top-level one is the
                # primary set's): otherwise no date is promised.
                next_renewal=None
                if watched is None or own is None
                else renewal_at(
                    watched, before_fraction=own.before_fraction, before_days=own.before_days
                ),
                renewal_overdue_at=None
                if watched is None or renew_config is None
                else overdue_at(watched, renew_config),
                harper_role=c.role.value,
                ports=tuple(c.ports.items()),
                managed=SET_FOLDER.fullmatch(c.name) is not None,
            )
        )
    return tuple(views)


def _live_generation(state: Path) -> str | None:
    """The generation ``<state>/current`` names (None: no store, or nothing live yet)."""
    try:
        return Path(os.readlink(state / "current")).name
    except OSError:
        return None


def _hazards(ctx: "Context") -> "tuple[Problem, ...]":
    store = ctx.config.harper.trust_store
    return tuple(
        p
        for p in hazards.find(ctx.harper, lambda: system_store(store))
        if p.severity.value == "error"
    )


def set_name(managed: "Managed") -> str:
    """The set's name: its role (``replication`` for a cluster set), as issue 11 names sets."""
    if "replication" in managed.uses or managed.purpose.value == "cluster":
        return "replication"
    return managed.uses[0] if managed.uses else "default"
