"""``harper-certd fleet``: many nodes' ``status --json`` side by side, no collector needed.

Input: files (or folders of ``*.json``) each holding one node's ``harper-certd status
--json`` (collected by whatever runs commands on the nodes: ssh, Ansible, a cron job
writing to a share).  Output: one row per node, set and certificate (leaf, intermediates,
CA file entries) with days left, served == live and the node's health; a CA shared by
nodes shows as the same sha256 on each.  The exit status is the worst node's (0/1/2);
an unreadable or foreign file is exit 2 with its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harper_certd.errors import CertdError

LEVELS = {"ok": 0, "warning": 1, "critical": 2}


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


def rows(paths: list[Path]) -> tuple[list[Row], int]:
    """Every node's sets and certificates, and the worst health (0/1/2)."""
    out: list[Row] = []
    worst = 0
    for path in files_of(paths):
        data = read_status(path)
        node = str(data.get("node_name") or path.stem)
        health = str(data.get("health"))
        worst = max(worst, LEVELS.get(health, 2))
        for s in data.get("sets") or []:
            for c in s.get("certificates") or []:
                out.append(
                    Row(
                        node,
                        health,
                        str(s.get("name")),
                        str(c.get("role")),
                        str(c.get("subject")),
                        str(c.get("issuer")),
                        c.get("days_left"),
                        str(c.get("sha256")),
                        s.get("served_matches_live"),
                        str(path),
                    )
                )
    return out, worst


def table(found: list[Row]) -> list[str]:
    header = ("NODE", "HEALTH", "SET", "CERT", "DAYS", "SERVED", "SHA256", "SUBJECT")
    body = [
        (
            r.node,
            r.health,
            r.set,
            r.role,
            "?" if r.days_left is None else f"{r.days_left:.1f}",
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
