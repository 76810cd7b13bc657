"""``harper-certd ca rotate``: write a plan, stage this node's new-CA leaf, show, pause,
resume or abort the plan.  Every function raises :class:`harper_certd.cafile.CaError` with
the reason when it refuses (nothing written then).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509

from harper_certd import cafile, stage
from harper_certd.clock import utc_now
from harper_certd.errors import HarperError
from harper_certd.harper.api import Api, hdb_nodes, operations_api
from harper_certd.install.context import Context, read_live
from harper_certd.rotation import table
from harper_certd.rotation.decide import gate
from harper_certd.rotation.executor import issued_by, staged_dir
from harper_certd.rotation.phases import Phase, State
from harper_certd.rotation.plan import NodeRow, Plan
from harper_certd.source import SourceRefused
from harper_certd.validate import fingerprint


def _api(ctx: Context) -> Api:
    api = operations_api(ctx.config, ctx.harper)
    if api is None:
        raise cafile.CaError("ca rotate needs the Operations API (operations_api in the config)")
    return api


def node_names(api: Api, this: str) -> tuple[str, ...]:
    """This node and every node of ``system.hdb_nodes``, sorted."""
    names = {this}
    for row in hdb_nodes(api, ["name"]):
        if row.get("name"):
            names.add(str(row["name"]))
    return tuple(sorted(names))


def finished(plan: Plan, rows: dict[str, NodeRow]) -> bool:
    return not gate(plan, rows, Phase.RESTARTED)


def start(ctx: Context, new_ca_pem: bytes) -> Plan:
    """Write a new plan (refused while another one is active and not finished)."""
    certs = x509.load_pem_x509_certificates(new_ca_pem) if b"BEGIN" in new_ca_pem else []
    if len(certs) != 1:
        raise cafile.CaError("give exactly one CA certificate (PEM) to rotate to")
    new = certs[0]
    try:
        is_ca = new.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise cafile.CaError(f"{new.subject.rfc4514_string()} is not a CA (basicConstraints)")
    live = x509.load_pem_x509_certificates(read_live(ctx).ca)
    new_sha = fingerprint(new)
    if [fingerprint(c) for c in live] == [new_sha]:
        raise cafile.CaError("the live CA file holds only that CA already: nothing to rotate")
    conflict = cafile.same_name_conflict(live, [new])
    if conflict is not None:
        raise cafile.CaError(conflict)
    api = _api(ctx)
    this = str(ctx.harper.node_name)
    try:
        table.ensure(api)
        plan, rows = table.read(api)
        if plan is not None and plan.state is not State.ABORTED and not finished(plan, rows):
            raise cafile.CaError(
                f"plan {plan.plan_id} is {plan.state.value} and not finished: "
                "ca rotate --status, or --abort it first"
            )
        new_plan = Plan(
            plan_id=uuid.uuid4().hex[:12],
            new_ca=cafile.pem_of([new]).decode(),
            new_sha256=new_sha,
            old_sha256=tuple(fingerprint(c) for c in live if fingerprint(c) != new_sha),
            nodes=node_names(api, this),
            created=utc_now().isoformat(timespec="seconds"),
            by=this,
        )
        table.upsert(api, new_plan.record())
    except HarperError as exc:
        raise cafile.CaError(f"the plan could not be written to Harper: {exc}") from None
    return new_plan


def set_state(ctx: Context, state: State) -> Plan:
    api = _api(ctx)
    try:
        plan, _rows = table.read(api)
        if plan is None:
            raise cafile.CaError("there is no rotation plan")
        if plan.state is State.ABORTED:
            raise cafile.CaError(f"plan {plan.plan_id} was aborted; start a new one")
        record = plan.record()
        record["state"] = state.value
        table.upsert(api, record)
    except HarperError as exc:
        raise cafile.CaError(f"Harper: {exc}") from None
    return Plan.from_record(record) or plan


def status(ctx: Context) -> dict[str, Any]:
    """``{"plan": plan record without the PEM | None, "finished": bool, "nodes": [{"node",
    "phase", "seen", "updated", "note"}], "waiting_for": str}``; every node of the plan,
    phase ``null`` for a node that has not written its row."""
    api = _api(ctx)
    try:
        plan, rows = table.read(api)
    except HarperError as exc:
        raise cafile.CaError(f"Harper: {exc}") from None
    if plan is None:
        return {"plan": None, "finished": False, "nodes": [], "waiting_for": ""}
    record = plan.record()
    record.pop("new_ca")
    nodes = []
    for name in plan.nodes:
        row = rows.get(name)
        nodes.append(
            {
                "node": name,
                "phase": None if row is None else row.phase.label,
                "seen": {} if row is None else dict(row.seen),
                "updated": None if row is None else row.updated,
            }
        )
    lowest = min((rows[n].phase if n in rows else Phase.PLANNED) for n in plan.nodes)
    return {
        "plan": record,
        "finished": finished(plan, rows),
        "nodes": nodes,
        "waiting_for": "; ".join(gate(plan, rows, lowest)),
    }


def render(data: dict[str, Any]) -> list[str]:
    plan = data["plan"]
    if plan is None:
        return ["no CA rotation plan"]
    state = "finished" if data["finished"] else plan["state"]
    lines = [
        f"CA rotation {plan['plan_id']}: {state}; to {plan['new_sha256'][:16]}, removing "
        + (", ".join(o[:16] for o in plan["old_sha256"]) or "-")
    ]
    for node in data["nodes"]:
        lines.append(f"  {node['node']}: {node['phase'] or 'no row yet'}")
    if data["waiting_for"] and not data["finished"]:
        lines.append(f"  waiting for: {data['waiting_for']}")
    return lines


def stage_leaf(ctx: Context, source: Path) -> Path:
    """Copy this node's new-CA set (``certificate.pem`` and ``privateKey.pem`` in SOURCE) to
    ``<state>/ca-rotation/`` for the ``switch_leaf`` step; refused unless the active plan's
    new CA issued it."""
    api = _api(ctx)
    # The plan may have been written on another node a moment ago: wait for its replica.
    deadline = time.monotonic() + ctx.config.verify.timeout
    while True:
        try:
            plan, _rows = table.read(api)
        except HarperError as exc:
            raise cafile.CaError(f"Harper: {exc}") from None
        if plan is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if plan is None:
        raise cafile.CaError("there is no rotation plan: ca rotate NEW_CA.pem first")
    try:
        files = stage.read_files(source / "certificate.pem", source / "privateKey.pem", None)
    except SourceRefused as exc:
        raise cafile.CaError(f"{source}: {exc}") from None
    cert, key = files["fullchain.pem"], files["privkey.pem"]
    leaf = x509.load_pem_x509_certificates(cert)[0]
    if not issued_by(leaf, x509.load_pem_x509_certificate(plan.new_ca.encode())):
        raise cafile.CaError(f"{source}/certificate.pem is not issued by the plan's new CA")
    target = staged_dir(ctx)
    target.mkdir(mode=0o700, exist_ok=True)
    st = os.stat(ctx.store.root)
    staged = stage.stage_files(
        {"certificate.pem": cert, "privateKey.pem": key}, target, (st.st_uid, st.st_gid)
    )
    return staged.path
