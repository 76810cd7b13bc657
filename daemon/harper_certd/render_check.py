"""``check``'s report: its text for a person (``check_lines``) and its JSON (``check_dict``),
each set's part by ``render.report_lines`` and ``Report.as_dict``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harper_certd import spans
from harper_certd.harper.lines import line_of, support
from harper_certd.problems import Severity
from harper_certd.render import MARK, report_lines
from harper_certd.troubleshoot import openssl_commands

if TYPE_CHECKING:
    from harper_certd.check import CheckResult
    from harper_certd.discover import TlsEntry


def check_lines(result: CheckResult) -> list[str]:
    config = result.config
    lines = [f"Harper root {config.root} (node name: {config.node_name or 'not set'})"]
    process = result.process
    if process.pid is None:
        lines.append("Harper process: not running (no live hdb.pid)")
    else:
        lines.append(f"Harper process: pid {process.pid}, version {process.version or 'unknown'}")
    lines.append(f"Harper line: {support(process.version, process.pid)}")
    if config.secure_ports:
        lines.append(
            "secure ports: " + ", ".join(f"{k} {v}" for k, v in config.secure_ports.items())
        )
    api = [f"port {config.operations_port}"] if config.operations_port else []
    api += [f"socket {config.operations_socket}"] if config.operations_socket else []
    if api:
        lines.append("Operations API: " + ", ".join(api))
    lines += [f"note: {n}" for n in config.notes]
    if not result.results:
        lines.append("No certificate set is configured.")
    for entry_result in result.results:
        entry = entry_result.entry
        lines.append("")
        head = f"{entry.where}: {', '.join(entry.uses)} ({entry.purpose.value} purpose)"
        if entry_result.set_name:
            head = f"set '{entry_result.set_name}' ({entry.role.value}) from {head}"
        lines.append(head + (f", names {', '.join(entry.hostnames)}" if entry.hostnames else ""))
        if entry_result.ports:
            lines.append(
                "  ports     " + ", ".join(f"{k} {v}" for k, v in entry_result.ports.items())
            )
        if entry_result.days_left is not None:
            lines.append(f"  left      {spans.days_left(entry_result.days_left)}")
        if entry.cert_key is not None and entry_result.report is not None:
            lines.append(f"  files     {entry.cert_key[0]}, {entry.cert_key[1]} (no CA file)")
            lines.append(f"  trust     system trust store: {entry_result.trust_store}")
            lines += report_lines(entry_result.report, None, "  ", "trust root")
            continue
        if entry.paths is None or entry_result.report is None:
            lines.append(f"  note: {entry.note}")
            continue
        lines.append(f"  files     {entry.paths.cert}, {entry.paths.key}, {entry.paths.ca}")
        lines += report_lines(entry_result.report, entry.paths, indent="  ")
    if result.hazards:
        lines += ["", "Hazards of this layout:"]
        lines += [f"  {MARK[p.severity]} {p.code}: {p.message}" for p in result.hazards]
    lines.append("")
    if not result.checked:
        lines.append(
            "No certificate set was checked: Harper keeps these certificates in its database, "
            "and harper-certd validates and manages certificate files (see the notes above)."
        )
    else:
        lines.append(
            "All certificate sets are fit."
            if result.valid
            else "Some certificate sets have errors."
        )
    return lines


def check_dict(result: CheckResult) -> dict[str, object]:
    config = result.config
    return {
        "valid": result.valid,
        "checked": result.checked,
        "harper_root": str(config.root),
        "node_name": config.node_name,
        "harper": {
            "pid": result.process.pid,
            "version": result.process.version,
            "line": None if (line := line_of(result.process.version)) is None else line.name,
            "support": support(result.process.version, result.process.pid),
        },
        "secure_ports": dict(config.secure_ports),
        "operations_api": {
            "port": config.operations_port,
            "socket": None if config.operations_socket is None else str(config.operations_socket),
        },
        "notes": list(config.notes),
        "hazards": [p.as_dict() for p in result.hazards],
        "sets": [
            {
                "set": r.set_name or None,
                "role": r.entry.role.value,
                "ports": dict(r.ports),
                "days_left": r.days_left,
                "trust_store": r.trust_store,
                "where": r.entry.where,
                "uses": list(r.entry.uses),
                "purpose": r.entry.purpose.value,
                "hostnames": list(r.entry.hostnames),
                "files": _files(r.entry),
                "note": r.entry.note or None,
                "report": None if r.report is None else r.report.as_dict(),
                "openssl": None
                if r.report is None or r.entry.paths is None
                else {
                    p.code: openssl_commands(p, r.entry.paths)
                    for p in r.report.problems
                    if p.severity is Severity.ERROR
                },
            }
            for r in result.results
        ],
    }


def _files(entry: TlsEntry) -> dict[str, str | None] | None:
    if entry.cert_key is not None:
        cert, key = entry.cert_key
        return {"certificate": str(cert), "privateKey": str(key), "certificateAuthority": None}
    if entry.paths is None:
        return None
    return {
        "certificate": str(entry.paths.cert),
        "privateKey": str(entry.paths.key),
        "certificateAuthority": str(entry.paths.ca),
    }
