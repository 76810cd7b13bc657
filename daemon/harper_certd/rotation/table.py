"""The rotation's records in Harper: database ``harper_certd``, table ``ca_rotation``
(primary key ``id``), through the Operations API (``create_database``, ``create_table``,
``upsert``, ``search_by_value``).  Harper replicates the table to every node like any other
(a table created on one node of a full mesh appears on the others: tests/test_two_nodes.py
waits for exactly that).

Raises :class:`harper_certd.errors.HarperError` when Harper refuses a call.
"""

from __future__ import annotations

import time
from typing import Any

from harper_certd.errors import HarperError
from harper_certd.harper.api import Api
from harper_certd.rotation.plan import PLAN_ID, NodeRow, Plan

DATABASE = "harper_certd"
TABLE = "ca_rotation"


def ensure(api: Api, timeout: float = 10.0) -> None:
    """Create the database and table unless they exist, then wait (at most ``timeout``
    seconds) until the table answers a search."""
    try:
        api.call({"operation": "describe_table", "database": DATABASE, "table": TABLE})
    except HarperError:
        pass
    else:
        return
    for op in (
        {"operation": "create_database", "database": DATABASE},
        {"operation": "create_table", "database": DATABASE, "table": TABLE, "primary_key": "id"},
    ):
        try:
            api.call(op)
        except HarperError as exc:
            if "already exists" not in str(exc):
                raise
    deadline = time.monotonic() + timeout
    while True:
        try:
            read_all(api)
        except HarperError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
        else:
            return


def read_all(api: Api) -> list[dict[str, Any]]:
    """Every record of the table."""
    answer = api.call(
        {
            "operation": "search_by_value",
            "database": DATABASE,
            "table": TABLE,
            "search_attribute": "id",
            "search_value": "*",
            "get_attributes": ["*"],
        }
    )
    rows = answer.get("result", answer)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def read(api: Api) -> tuple[Plan | None, dict[str, NodeRow]]:
    """The plan (None: no plan, or no table yet) and the rows of its nodes by node name
    (rows of an older plan left out)."""
    try:
        records = read_all(api)
    except HarperError as exc:
        if "not exist" in str(exc) or "does not exist" in str(exc) or "404" in str(exc):
            return None, {}
        raise
    plan = next((Plan.from_record(r) for r in records if r.get("id") == PLAN_ID), None)
    if plan is None:
        return None, {}
    rows = {}
    for record in records:
        if str(record.get("id", "")).startswith("node:"):
            row = NodeRow.from_record(record)
            if row is not None and row.plan_id == plan.plan_id:
                rows[row.node] = row
    return plan, rows


def upsert(api: Api, record: dict[str, Any]) -> None:
    api.call({"operation": "upsert", "database": DATABASE, "table": TABLE, "records": [record]})
