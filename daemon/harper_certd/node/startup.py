"""What the node says once at start and after a reload: Harper as discovered, the layout's
hazards, the ``certd.started`` line with every TLS entry of Harper's configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harper_certd import __version__, discover, events, hazards, logs
from harper_certd.check import find_process, set_facts
from harper_certd.clock import Clock
from harper_certd.environment import Finding
from harper_certd.harper.lines import line_of, support
from harper_certd.install import context
from harper_certd.problems import Problem, problem
from harper_certd.trust import system_store
from harper_certd.validate import Report


def find_hazards(ctx: context.Context, harper: discover.HarperConfig) -> tuple[Problem, ...]:
    """The layout's hazards (``hazards.find``); a fault here never stops the daemon."""
    store = ctx.config.harper.trust_store
    try:
        return hazards.find(harper, lambda: system_store(store))
    except Exception as exc:  # reported, not fatal: discovery must go on
        return (problem("judge_failed", f"judging the layout's hazards raised {exc!r}"),)


def log_hazards(found: tuple[Problem, ...]) -> None:
    """One ``certd.layout_hazard`` per hazard of error severity, one ``certd.layout_warning``
    per warning."""
    for p in found:
        if p.severity.value == "error":
            logs.emit(events.LayoutHazard(code=p.code, severity="error", message=p.message))
        else:
            logs.emit(events.LayoutWarning(code=p.code, message=p.message))


def said(found: tuple[Problem, ...]) -> frozenset[tuple[str, str, str]]:
    """Hazards as what their events say (code, severity, message): to tell a change."""
    return frozenset((p.code, p.severity.value, p.message) for p in found)


def log_discovered(ctx: context.Context, clock: Clock) -> tuple[Problem, ...]:
    """``certd.harper_discovered``, the hazards, and the TLS entries kept in Harper's database;
    returns the hazards logged."""
    found = find_hazards(ctx, ctx.harper)
    harper = ctx.harper
    process = find_process(harper)
    logs.emit(
        events.HarperDiscovered(
            config=str(harper.config_path),
            pid=process.pid,
            version=process.version,
            secure_ports=dict(harper.secure_ports),
            operations_port=harper.operations_port,
            operations_socket=str(harper.operations_socket) if harper.operations_socket else None,
            managed=str(ctx.managed.live.cert),
            purpose=ctx.managed.purpose.value,
            hostnames=list(ctx.managed.hostnames),
            notes=[e.note for e in harper.entries if e.note and e.paths is not None]
            + list(harper.notes),
            sets=list(set_facts(harper, clock.now()).values()),
            hazards=[p.code for p in found],
            line=None if (line := line_of(process.version)) is None else line.name,
            support=support(process.version, process.pid),
        )
    )
    log_hazards(found)
    for entry in harper.entries:
        # fresh Harper 4.7: certificates kept in its database
        if entry.paths is None and entry.cert_key is None:
            logs.emit(
                events.CertificatesInDatabase(
                    where=entry.where,
                    uses=list(entry.uses),
                    note=entry.note,
                )
            )
    return found


def log_started(ctx: context.Context, report: Report | None, incoming: Path, clock: Clock) -> None:
    """``certd.started``: the node, its folders, and every TLS entry of Harper's config."""
    sets = []
    facts = set_facts(ctx.harper, clock.now())
    by_where = {w: f for f in facts.values() for w in f["where"]}
    for entry in ctx.harper.entries:
        info: dict[str, Any] = {"where": entry.where, "purpose": entry.purpose.value}
        if entry.note:
            info["note"] = entry.note
        if (fact := by_where.get(entry.where)) is not None:
            info.update({k: fact[k] for k in ("set", "role", "ports", "days_left")})
        if entry.paths == ctx.managed.live and report and report.certificate:
            info["days_left"] = round(report.certificate.days_left(clock.now()), 1)
            info["subject"] = report.certificate.subject
            info["fingerprint"] = report.certificate.sha256
            info["valid"] = report.valid
        sets.append(info)
    logs.emit(
        events.Started(
            version=__version__,
            harper_root=str(ctx.paths.harper_root),
            node_name=ctx.harper.node_name,
            incoming=str(incoming),
            state=str(ctx.paths.state),
            restart_method=ctx.config.restart.method,
            generation=ctx.store.current_id(),
            sets=sets,
        )
    )


def log_environment(findings: list[Finding]) -> None:
    """``certd.environment_warning`` for what may not work under the unit (h-ops)."""
    for finding in findings:
        logs.emit(
            events.EnvironmentWarning(key=finding.key, problem=finding.problem, fix=finding.fix)
        )
