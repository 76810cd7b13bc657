"""The thin part of a rotation the daemon runs: read the plan and rows, ask
:func:`harper_certd.rotation.decide.next_step`, do that one step, write this node's row.

Each step is idempotent because the decision starts from what the live files show: a
SIGKILL in the middle of ``ca add`` leaves a swap that the next start completes or rolls back
(harper_certd.recovery), and the next tick then reports the phase the files show, or does
the step again.  Steps:

- ``add_ca``: :func:`harper_certd.cafile.ca_add` (the live CA file plus the new CA, after
  the live leaf's issuer: ``ca_file_issuer_not_first``), guarded by the peers like any set;
- ``switch_leaf``: the newest set staged in ``<state>/ca-rotation/`` (``harper-certd ca
  rotate --leaf SOURCE``) installed with the CA file "new CA, then the live file's other
  CAs" (the peers still serve old-CA leaves until they switch too);
- ``remove_old``: :func:`harper_certd.cafile.ca_remove` of each old CA (which also removes
  Harper's authority record and has Harper exchange the kept CAs again, ``update_node``);
- ``restart``: Harper restarted (Operations API ``restart``, else its CLI), a new process
  seen serving the live leaf, then every peer connected again (``cluster_status``, at most
  ``peers.restart_wait_seconds``) before the row says ``restarted``: the next node restarts
  only then.  A running Harper 4.7.29 still accepts a removed CA's leaves until it restarts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from harper_certd import cafile, events, logs, peers, sdnotify, stage
from harper_certd.errors import CertdError, HarperError
from harper_certd.harper.api import Api, operations_api
from harper_certd.harper.apply import make_harper
from harper_certd.harper.method import RestartMethod
from harper_certd.harper.process import harper_pid
from harper_certd.install.context import Context, read_live
from harper_certd.install.outcomes import InstallStatus
from harper_certd.install.pipeline import install
from harper_certd.rotation import table
from harper_certd.rotation.decide import Do, Local, Step, next_step
from harper_certd.rotation.phases import Phase
from harper_certd.rotation.plan import NodeRow, Plan
from harper_certd.validate import fingerprint

ACTIVE_SECONDS = 1.0  # between reads of the table while a plan is active
IDLE_SECONDS = 3.0  # between reads while there is no plan (or no table)
RETRY_SECONDS = 5.0  # after a failed step


def staged_dir(ctx: Context) -> Path:
    """Where ``ca rotate --leaf`` stages this node's new-CA set."""
    return ctx.store.root / "ca-rotation"


def issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``ca`` signed ``leaf`` (name and signature)."""
    if leaf.issuer != ca.subject:
        return False
    try:
        leaf.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def local_state(ctx: Context) -> Local:
    """This node's live CA file and the CA in it that issued the live leaf."""
    live = read_live(ctx)
    cas = x509.load_pem_x509_certificates(live.ca) if live.ca else []
    leaf = x509.load_pem_x509_certificates(live.cert)[0]
    issuer = next((fingerprint(c) for c in cas if issued_by(leaf, c)), None)
    return Local(str(ctx.harper.node_name), tuple(fingerprint(c) for c in cas), issuer)


class Rotation:
    """The node loop's rotation duty: ``tick`` when ``next_due`` (monotonic seconds)."""

    def __init__(self) -> None:
        self.next_due = 0.0
        self._said: tuple[str, str, str] | None = None  # the last waiting event's content
        self._restarted: str | None = None  # the plan this daemon restarted Harper for

    def tick(self, ctx: Context, now: float) -> None:
        if now < self.next_due or not ctx.harper.node_name:
            return
        api = operations_api(ctx.config, ctx.harper)
        if api is None:
            self.next_due = now + 60.0
            return
        try:
            plan, rows = table.read(api)
        except HarperError:
            self.next_due = now + IDLE_SECONDS
            return
        if plan is None:
            self.next_due = now + IDLE_SECONDS
            return
        self.next_due = now + ACTIVE_SECONDS
        try:
            step = next_step(plan, rows, local_state(ctx))
            self._do(ctx, api, plan, rows, step)
        except (CertdError, HarperError, OSError, ValueError) as exc:
            logs.emit(
                events.RotationFailed(
                    plan=plan.plan_id, node=str(ctx.harper.node_name), error=str(exc)
                )
            )
            self.next_due = time.monotonic() + RETRY_SECONDS

    def _do(self, ctx: Context, api: Api, plan: Plan, rows: dict[str, NodeRow], step: Step) -> None:
        me = str(ctx.harper.node_name)
        if step.do is Do.REPORT:
            mine = rows.get(me)
            table.upsert(
                api,
                NodeRow(
                    plan.plan_id,
                    me,
                    step.phase,
                    step.seen,
                    ctx.clock().isoformat(),
                ).record(),
            )
            if mine is None or mine.phase != step.phase:
                logs.emit(
                    events.RotationStep(
                        plan=plan.plan_id, node=me, phase=step.phase.label, action="report"
                    )
                )
            self.next_due = time.monotonic() + 0.1
            return
        if step.do in (Do.WAIT, Do.IDLE):
            said = (plan.plan_id, step.phase.label, step.reason)
            if said != self._said:
                self._said = said
                logs.emit(
                    events.RotationWaiting(
                        plan=plan.plan_id,
                        node=me,
                        phase=step.phase.label,
                        waiting_for=step.reason,
                    )
                )
            return
        self._said = None
        if step.do is Do.ADD_CA:
            added = cafile.ca_add(ctx, plan.new_ca.encode())
            _check(added.outcome.status if added.outcome else InstallStatus.UNCHANGED, "ca add")
        elif step.do is Do.SWITCH_LEAF:
            if not self._switch_leaf(ctx, plan, step):
                return
        elif step.do is Do.RESTART:
            if not self._restart(ctx, api, plan, step):
                return
        elif step.do is Do.REMOVE_OLD:
            live = local_state(ctx)
            for old in plan.old_sha256:
                if old in live.ca_sha256:
                    removal = cafile.ca_remove(ctx, old)
                    if removal.outcome is not None:
                        _check(removal.outcome.status, "ca remove")
        logs.emit(
            events.RotationStep(
                plan=plan.plan_id, node=me, phase=step.phase.label, action=step.do.value
            )
        )
        self.next_due = time.monotonic() + 0.1

    def _restart(self, ctx: Context, api: Api, plan: Plan, step: Step) -> bool:
        """Restart Harper once for ``plan``, then report ``restarted`` when every peer is
        connected again; False (a waiting event) while one is not."""
        me = str(ctx.harper.node_name)
        if self._restarted != plan.plan_id:
            # Every node has removed the old CA (the gate): the records exchanged now are
            # clean, so the CAs each node keeps for the others no longer hold the old one.
            leaf = x509.load_pem_x509_certificates(read_live(ctx).cert)[0]
            cafile.refresh_peer_cas(ctx, api, leaf, always=True)
            harper = make_harper(ctx.config, ctx.harper)
            method = (
                RestartMethod.OPERATIONS_API
                if harper.api is not None and harper.api.credentials
                else RestartMethod.CLI
            )
            before = harper_pid(ctx.harper.root)
            detail = harper.restart(method)
            logs.emit(events.HarperRestarted(method=method.value, detail=detail))
            expected = fingerprint(x509.load_pem_x509_certificates(read_live(ctx).cert)[0])
            deadline = time.monotonic() + ctx.config.verify.timeout
            while True:
                seen = harper.verify(expected, timeout=max(0.0, deadline - time.monotonic()))
                if seen.ok and seen.pid is not None and seen.pid != before:
                    break
                if time.monotonic() >= deadline:
                    raise CertdError(
                        f"Harper does not serve again after the restart: {seen.describe()}"
                    )
                sdnotify.sleep(ctx.config.verify.interval)
            self._restarted = plan.plan_id
        deadline = time.monotonic() + ctx.config.peers.restart_wait_seconds
        while True:
            down = peers.disconnected(api)
            if not down:
                break
            if time.monotonic() >= deadline:
                reason = f"restarted; not connected again to {', '.join(down)}"
                logs.emit(
                    events.RotationWaiting(
                        plan=plan.plan_id, node=me, phase=step.phase.label, waiting_for=reason
                    )
                )
                return False
            sdnotify.sleep(0.5)
        table.upsert(
            api,
            NodeRow(plan.plan_id, me, Phase.RESTARTED, step.seen, ctx.clock().isoformat()).record(),
        )
        return True

    def _switch_leaf(self, ctx: Context, plan: Plan, step: Step) -> bool:
        """Install the newest staged new-CA set; False (a waiting event) when none is staged."""
        folder = staged_dir(ctx)
        sets = (
            sorted(
                (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                key=lambda p: p.name,
            )
            if folder.is_dir()
            else []
        )
        me = str(ctx.harper.node_name)
        if not sets:
            reason = f"no new-CA leaf staged: harper-certd ca rotate --leaf SOURCE (on {me})"
            said = (plan.plan_id, step.phase.label, reason)
            if said != self._said:
                self._said = said
                logs.emit(
                    events.RotationWaiting(
                        plan=plan.plan_id, node=me, phase=step.phase.label, waiting_for=reason
                    )
                )
            return False
        source = sets[-1]
        cert = (source / "certificate.pem").read_bytes()
        key = (source / "privateKey.pem").read_bytes()
        new_ca = x509.load_pem_x509_certificate(plan.new_ca.encode())
        leaf = x509.load_pem_x509_certificates(cert)[0]
        if not issued_by(leaf, new_ca):
            raise CertdError(f"the leaf staged in {source} is not issued by the new CA")
        live_ca = x509.load_pem_x509_certificates(read_live(ctx).ca)
        others = [c for c in live_ca if fingerprint(c) != plan.new_sha256]
        ca_pem = cafile.pem_of([new_ca, *others])  # the leaf's issuer first
        copies = ctx.paths.processed.parent / ".harper-certd-copies"
        copies.mkdir(mode=0o700, exist_ok=True)
        st = os.stat(copies)
        staged = stage.stage_files(
            {"certificate.pem": cert, "privateKey.pem": key, "ca.pem": ca_pem},
            copies,
            (st.st_uid, st.st_gid),
        )
        outcome = install(ctx, staged.path)
        _check(outcome.status, "the new-CA leaf's install")
        return True


def _check(status: InstallStatus, what: str) -> None:
    if status not in (InstallStatus.INSTALLED, InstallStatus.UNCHANGED):
        raise CertdError(f"{what} was not installed ({status.value}); retried")
