"""A set's report for a person to read (the JSON form is ``Report.as_dict``): ``validate``'s
output, and each set's part of ``check``'s (``render_check``)."""

from __future__ import annotations

import datetime as dt

from harper_certd import spans
from harper_certd.problems import Severity
from harper_certd.roles import SetPaths
from harper_certd.troubleshoot import openssl_commands
from harper_certd.validate import CertSummary, Report

MARK = {Severity.ERROR: "ERROR  ", Severity.WARNING: "warning"}


def _days(summary: CertSummary, at: dt.datetime) -> str:
    days = summary.days_left(at)
    if abs(days) < 1:  # hours and minutes: never "0 days left"
        return spans.days_left(days)
    return f"{days:.0f} days left" if days >= 0 else f"expired {-days:.0f} days ago"


def report_lines(
    report: Report, paths: SetPaths | None = None, indent: str = "", ca_label: str = "CA file"
) -> list[str]:
    """``ca_label``: what the report's CA certificates are (``trust root`` for a set without a
    CA file, judged against the system trust store)."""
    lines = []
    cert = report.certificate
    if cert is not None:
        lines += [
            f"{indent}subject   {cert.subject}",
            f"{indent}issuer    {cert.issuer}",
            f"{indent}serial    {cert.serial}",
            f"{indent}sha256    {cert.sha256}",
            f"{indent}valid     {cert.not_before:%Y-%m-%d %H:%M} .. {cert.not_after:%Y-%m-%d %H:%M}"
            f" UTC ({_days(cert, report.at)})",
            f"{indent}names     "
            + (
                ", ".join(
                    [*(f"DNS:{d}" for d in cert.dns_names), *(f"IP:{i}" for i in cert.ip_addresses)]
                )
                or "(no SAN)"
            ),
            f"{indent}pubkey    {cert.key_type} {cert.key_size} bits",  # the certificate's key
        ]
        if report.chain:
            lines.append(
                f"{indent}chain     " + " -> ".join(c.subject or "?" for c in report.chain)
            )
    for ca in report.ca_file:
        lines.append(f"{indent}{ca_label:<9} {ca.subject} ({_days(ca, report.at)})")
    for p in report.problems:
        lines.append(f"{indent}{MARK[p.severity]} {p.code}: {p.message}")
        if paths is not None and p.severity is Severity.ERROR:
            lines += [f"{indent}          see: {c}" for c in openssl_commands(p, paths)]
    if report.judge is not None:
        lines.append(f"{indent}{report.judge.line()}")
        if report.judge.node_reason and report.judge.disagreement != "node_refused":
            lines.append(f"{indent}Node says {report.judge.node_reason}")
    lines.append(f"{indent}{'VALID' if report.valid else 'INVALID'}")
    return lines
