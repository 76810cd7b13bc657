"""The records of a rotation as stored in Harper's table ``harper_certd.ca_rotation``.

One plan record (primary key ``plan``), written only by the ``ca rotate`` command, and one
row per node (primary key ``node:<name>``), each written only by that node's daemon.  The
JSON shapes (Harper stores them as given):

- plan: ``{"id": "plan", "plan_id": str, "new_ca": PEM str, "new_sha256": hex,
  "old_sha256": [hex, ...], "nodes": [name, ...], "state": "active"|"paused"|"aborted",
  "created": ISO 8601, "by": node name}``;
- node row: ``{"id": "node:<name>", "plan_id": str, "node": name, "phase": 0..3,
  "phase_name": str, "seen": {peer name: the phase read in that peer's row}, "updated":
  ISO 8601, "note": str}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harper_certd.rotation.phases import Phase, State

PLAN_ID = "plan"


def row_id(node: str) -> str:
    return f"node:{node}"


@dataclass(frozen=True, slots=True)
class Plan:
    plan_id: str
    new_ca: str  # PEM of the new CA certificate
    new_sha256: str
    old_sha256: tuple[str, ...]  # the CAs to remove at the end
    nodes: tuple[str, ...]  # every node of the cluster when the plan was made
    state: State = State.ACTIVE
    created: str = ""
    by: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "id": PLAN_ID,
            "plan_id": self.plan_id,
            "new_ca": self.new_ca,
            "new_sha256": self.new_sha256,
            "old_sha256": list(self.old_sha256),
            "nodes": list(self.nodes),
            "state": self.state.value,
            "created": self.created,
            "by": self.by,
        }

    @staticmethod
    def from_record(record: Mapping[str, Any]) -> Plan | None:
        """None when the record is not a readable plan."""
        try:
            return Plan(
                plan_id=str(record["plan_id"]),
                new_ca=str(record["new_ca"]),
                new_sha256=str(record["new_sha256"]),
                old_sha256=tuple(str(x) for x in record["old_sha256"]),
                nodes=tuple(str(x) for x in record["nodes"]),
                state=State(str(record.get("state", "active"))),
                created=str(record.get("created", "")),
                by=str(record.get("by", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class NodeRow:
    plan_id: str
    node: str
    phase: Phase
    seen: Mapping[str, int] = field(default_factory=dict)
    updated: str = ""
    note: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "id": row_id(self.node),
            "plan_id": self.plan_id,
            "node": self.node,
            "phase": int(self.phase),
            "phase_name": self.phase.label,
            "seen": dict(self.seen),
            "updated": self.updated,
            "note": self.note,
        }

    @staticmethod
    def from_record(record: Mapping[str, Any]) -> NodeRow | None:
        try:
            seen = record.get("seen") or {}
            return NodeRow(
                plan_id=str(record["plan_id"]),
                node=str(record["node"]),
                phase=Phase(int(record["phase"])),
                seen={str(k): int(v) for k, v in dict(seen).items()},
                updated=str(record.get("updated", "")),
                note=str(record.get("note", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None
