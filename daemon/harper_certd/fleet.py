"""``harper-certd fleet``: many nodes' ``status --json`` side by side, no collector needed.

Input: files (or folders of ``*.json``) each holding one node's ``harper-certd status
--json`` (collected by whatever runs commands on the nodes: ssh, Ansible, a cron job
writing to a share).  Output: one row per node, set and certificate (leaf, intermediates,
CA file entries) with days left, served == live and the node's health; a CA shared by
nodes shows as the same sha256 on each.  The exit status is the worst node's (0/1/2);
an unreadable or foreign file is exit 2 with its name.

Days left are counted again now from each certificate's notAfter (a status file can be
hours old), and a certificate within the node's last expiry threshold (the smallest of
``expiry.warn_days``, in the file as ``expiry_warn_days``; 1 day without it) or expired
makes its row, and the fleet, critical whatever the node said when the file was written.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harper_certd import spans
from harper_certd.clock import utc_now
from harper_certd.errors import CertdError

LEVELS = {"ok": 0, "warning": 1, "critical": 2}
LAST_THRESHOLD_DAYS = 1.0  # expiry.warn_days' smallest default, for files that do not say


class FleetError(CertdError):
    """A file is not one node's ``status --json``."""


@dataclass(frozen=True, slots=True)
class Row:
    node: str
    health: str
    set: str
    role: str
    subject: str
    issuer: str
    days_left: float | None
    sha256: str
    served_matches_live: bool | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def files_of(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix == ".json")
        else:
            out.append(path)
    return out


def read_status(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FleetError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or "sets" not in data or "health" not in data:
        raise FleetError(f"{path}: not the output of `harper-certd status --json`")
    return data


def _days_now(cert: dict[str, Any], at: dt.datetime) -> float | None:
    """Days left at ``at`` from the certificate's notAfter; the file's figure without one."""
    try:
        not_after = dt.datetime.fromisoformat(str(cert["not_after"]))
    except (KeyError, ValueError):
        days = cert.get("days_left")
        return float(days) if isinstance(days, int | float) else None
    if not_after.tzinfo is None:
        not_after = not_after.replace(tzinfo=dt.UTC)
    return round((not_after - at).total_seconds() / 86400, 4)


def _last_threshold(data: dict[str, Any]) -> float:
    given = data.get("expiry_warn_days")
    if isinstance(given, list) and all(isinstance(d, int | float) for d in given) and given:
        return float(min(given))
    return LAST_THRESHOLD_DAYS


def rows(paths: list[Path], at: dt.datetime | None = None) -> tuple[list[Row], int]:
    """Every node's sets and certificates, and the worst health (0/1/2); days left and the
    last-threshold rule are judged at ``at`` (now)."""
    at = at or utc_now()
    out: list[Row] = []
    worst = 0
    for path in files_of(paths):
        data = read_status(path)
        node = str(data.get("node_name") or path.stem)
        health = str(data.get("health"))
        last = _last_threshold(data)
        worst = max(worst, LEVELS.get(health, 2))
        if data.get("error"):  # status could not read the node: one row saying why
            row = Row(node, health, "-", "-", str(data["error"]), "", None, "", None, str(path))
            out.append(row)
        for s in data.get("sets") or []:
            for c in s.get("certificates") or []:
                days = _days_now(c, at)
                row_health = health
                if days is not None and days < last:  # within the last threshold, or expired
                    row_health = "critical"
                    worst = 2
                out.append(
                    Row(
                        node,
                        row_health,
                        str(s.get("name")),
                        str(c.get("role")),
                        str(c.get("subject")),
                        str(c.get("issuer")),
                        days,
                        str(c.get("sha256")),
                        s.get("served_matches_live"),
                        str(path),
                    )
                )
    return out, worst


def table(found: list[Row]) -> list[str]:
    header = ("NODE", "HEALTH", "SET", "CERT", "LEFT", "SERVED", "SHA256", "SUBJECT")
    body = [
        (
            r.node,
            r.health,
            r.set,
            r.role,
            "?" if r.days_left is None else spans.signed(r.days_left),
            {True: "live", False: "OTHER", None: "-"}[r.served_matches_live]
            if r.role == "leaf"
            else "",
            r.sha256[:16],
            r.subject,
        )
        for r in found
    ]
    widths = [max(len(x[i]) for x in (header, *body)) for i in range(len(header))]
    return [
        "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
        for line in (header, *body)
    ]
