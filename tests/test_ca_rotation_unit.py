"""The cluster CA rotation's decision (``rotation.decide.next_step``), the ``ca remove``
fingerprint rule, and the same-name CA rule measured against Node 20 itself.

The decision is pure: plan, rows and this node's live files in, one step out.  A cluster is
simulated here by replaying the steps of three nodes with a replication that delivers rows
late and out of order: the phases only move forward, no node skips the gate, and the plan
ends with every node at ``old-removed``.  The real thing, on three Harper nodes:
tests/test_ca_rotation.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harper_certd.cafile import CaError, resolve, same_name_conflict
from harper_certd.rotation.decide import Do, Local, gate, next_step, reached
from harper_certd.rotation.phases import Phase, State
from harper_certd.rotation.plan import NodeRow, Plan

NODES = ("nodea", "nodeb", "nodec")
NEW, OLD = "n" * 64, "o" * 64
ORACLE = Path(__file__).with_name("node_tls_oracle.js")


def _plan(state: State = State.ACTIVE) -> Plan:
    return Plan("p1", "PEM", NEW, (OLD,), NODES, state)


def _row(node: str, phase: Phase, seen: dict[str, int] | None = None) -> NodeRow:
    return NodeRow("p1", node, phase, seen if seen is not None else {})


def _everyone_at(phase: Phase) -> dict[str, NodeRow]:
    return {n: _row(n, phase, {m: int(phase) for m in NODES if m != n}) for n in NODES}


LOCAL_AT = {
    Phase.PLANNED: Local("nodea", (OLD,), OLD),
    Phase.CA_ADDED: Local("nodea", (OLD, NEW), OLD),
    Phase.LEAF_SWITCHED: Local("nodea", (NEW, OLD), NEW),
    Phase.OLD_REMOVED: Local("nodea", (NEW,), NEW),
}


def test_reached_reads_the_phase_from_the_live_files() -> None:
    for phase, local in LOCAL_AT.items():
        assert reached(_plan(), local) is phase


def test_a_node_reports_before_it_acts_and_never_goes_back() -> None:
    plan = _plan()
    step = next_step(plan, {}, LOCAL_AT[Phase.PLANNED])
    assert (step.do, step.phase) == (Do.REPORT, Phase.PLANNED)
    assert step.seen == {"nodeb": 0, "nodec": 0}
    rows = {"nodea": _row("nodea", Phase.PLANNED, dict(step.seen))}
    assert next_step(plan, rows, LOCAL_AT[Phase.PLANNED]).do is Do.ADD_CA  # needs nobody
    # The files say ca-added (the step done, then a SIGKILL before the report): reported.
    step = next_step(plan, rows, LOCAL_AT[Phase.CA_ADDED])
    assert (step.do, step.phase) == (Do.REPORT, Phase.CA_ADDED)
    # A row ahead of the files (never written back to a lower phase).
    rows = {"nodea": _row("nodea", Phase.LEAF_SWITCHED, {"nodeb": 0, "nodec": 0})}
    assert next_step(plan, rows, LOCAL_AT[Phase.CA_ADDED]).phase is Phase.LEAF_SWITCHED


def test_the_gate_needs_every_node_and_every_direction() -> None:
    plan = _plan()
    rows = _everyone_at(Phase.CA_ADDED)
    assert gate(plan, rows, Phase.CA_ADDED) == []
    assert next_step(plan, rows, LOCAL_AT[Phase.CA_ADDED]).do is Do.SWITCH_LEAF
    # nodec is down (no row): the plan is held, naming it.
    held = {n: r for n, r in rows.items() if n != "nodec"}
    for n in held:
        held[n] = _row(n, Phase.CA_ADDED, {m: 1 for m in NODES if m != n} | {"nodec": 0})
    step = next_step(plan, held, LOCAL_AT[Phase.CA_ADDED])
    assert step.do is Do.WAIT
    assert "nodec: no row" in step.reason
    # nodeb has not seen nodec's row yet (replication nodec -> nodeb not proven).
    partial = dict(rows)
    partial["nodeb"] = _row("nodeb", Phase.CA_ADDED, {"nodea": 1, "nodec": 0})
    step = next_step(plan, partial, LOCAL_AT[Phase.CA_ADDED])
    assert (step.do, step.reason) == (Do.WAIT, "nodeb: has not yet seen nodec at ca-added")
    # Rows of an older plan do not count.
    stale = {n: NodeRow("p0", n, Phase.OLD_REMOVED, {}) for n in NODES}
    assert next_step(plan, stale, LOCAL_AT[Phase.PLANNED]).do is Do.REPORT


def test_paused_aborted_and_done_plans_get_no_step() -> None:
    rows = _everyone_at(Phase.CA_ADDED)
    for state in (State.PAUSED, State.ABORTED):
        step = next_step(_plan(state), rows, LOCAL_AT[Phase.CA_ADDED])
        assert (step.do, step.reason) == (Do.IDLE, f"the plan is {state.value}")
    step = next_step(_plan(), _everyone_at(Phase.RESTARTED), LOCAL_AT[Phase.OLD_REMOVED])
    assert step.do is Do.IDLE
    assert (
        next_step(_plan(), _everyone_at(Phase.LEAF_SWITCHED), LOCAL_AT[Phase.LEAF_SWITCHED]).do
        is Do.REMOVE_OLD
    )


def test_restarts_take_turns_in_name_order() -> None:
    rows = _everyone_at(Phase.OLD_REMOVED)
    local = {n: Local(n, (NEW,), NEW) for n in NODES}
    assert next_step(_plan(), rows, local["nodea"]).do is Do.RESTART
    step = next_step(_plan(), rows, local["nodec"])
    assert (step.do, step.reason) == (Do.WAIT, "restarts take turns: nodea, nodeb first")
    rows["nodea"] = _row("nodea", Phase.RESTARTED, {"nodeb": 3, "nodec": 3})
    assert next_step(_plan(), rows, local["nodeb"]).do is Do.REPORT  # seen nodea restarted
    rows["nodeb"] = _row("nodeb", Phase.OLD_REMOVED, {"nodea": 4, "nodec": 3})
    assert next_step(_plan(), rows, local["nodeb"]).do is Do.RESTART
    rows["nodec"] = _row("nodec", Phase.OLD_REMOVED, {"nodea": 4, "nodeb": 3})
    step = next_step(_plan(), rows, local["nodec"])
    assert (step.do, step.reason) == (Do.WAIT, "restarts take turns: nodeb first")


def test_three_nodes_with_late_replication_finish_in_order() -> None:
    """Each node acts on a stale copy of the table (rows delivered late, at random); the
    steps taken never break the gate and every node ends at old-removed."""
    rng = random.Random(18)
    files = {n: [OLD] for n in NODES}  # each node's CA file
    leaf = dict.fromkeys(NODES, OLD)
    truth: dict[str, NodeRow] = {}  # each node's own row as written
    copies: dict[str, dict[str, NodeRow]] = {n: {} for n in NODES}  # what each node reads
    plan = _plan()
    restarts: list[str] = []
    for _ in range(4000):
        for n in NODES:  # replication: each row reaches each node late, at random
            for m, row in truth.items():
                if rng.random() < 0.3:
                    copies[n][m] = row
        n = rng.choice(NODES)
        copies[n].update({n: truth[n]} if n in truth else {})
        step = next_step(plan, copies[n], Local(n, tuple(files[n]), leaf[n]))
        if step.do is Do.REPORT:
            if n in truth:
                assert step.phase >= truth[n].phase
            truth[n] = NodeRow("p1", n, step.phase, dict(step.seen))
        elif step.do is Do.ADD_CA:
            files[n] = [*files[n], NEW]
        elif step.do is Do.SWITCH_LEAF:
            # The guard's view: every other node trusts NEW already.
            assert all(NEW in files[m] for m in NODES), files
            files[n] = [NEW, *[f for f in files[n] if f != NEW]]
            leaf[n] = NEW
        elif step.do is Do.REMOVE_OLD:
            assert all(leaf[m] == NEW for m in NODES), leaf  # nobody still serves OLD
            files[n] = [NEW]
        elif step.do is Do.RESTART:
            assert all(NEW not in files[m] or OLD not in files[m] for m in NODES), files
            # Never two at once: every node before this one has restarted already.
            assert all(truth[m].phase is Phase.RESTARTED for m in NODES if m < n), truth
            restarts.append(n)
            truth[n] = NodeRow("p1", n, Phase.RESTARTED, dict(step.seen))
        if all(r.phase is Phase.RESTARTED for r in truth.values()) and len(truth) == 3:
            break
    assert {n: r.phase for n, r in truth.items()} == dict.fromkeys(NODES, Phase.RESTARTED)
    assert restarts == list(NODES)
    assert files == {n: [NEW] for n in NODES}


def test_ca_remove_takes_only_an_unambiguous_fingerprint() -> None:
    known = ["ab" * 32, "ab" * 8 + "cd" * 24, "ef" * 32]
    assert resolve("ef" * 8, known) == "ef" * 32  # 16 hex digits (what cluster prints)
    assert resolve(":".join(["EF"] * 32), known) == "ef" * 32  # openssl's spelling
    assert resolve("ab" * 9, known) == "ab" * 32  # longer than 16, unique
    assert resolve("12" * 32, known) == "12" * 32  # full, unknown here: records may hold it
    for given, says in (
        ("ef" * 7 + "e", "too short"),
        ("ab" * 8, "more than one"),
        ("12" * 8, "no CA"),
        ("xyz", "not a SHA-256"),
    ):
        with pytest.raises(CaError, match=says):
            resolve(given, known)


# --------------------------------------------------------------------------- same-name CAs

NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(ids: bool, days_old: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("Same CA"))
        .issuer_name(_name("Same CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=days_old))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ids:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(key, hashes.SHA256()), key


def _leaf(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, ids: bool
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if ids:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.skipif(shutil.which("node") is None, reason="node (Node.js 20) is not on PATH")
@pytest.mark.parametrize("ids", [False, True], ids=["no key identifiers", "key identifiers"])
def test_same_name_cas_as_node_sees_them(ids: bool) -> None:
    """Two CAs with one subject in one CA file, in both orders, each CA's leaf in a mutual
    TLS handshake through Node (tests/node_tls_oracle.js).  Without key identifiers only the
    first CA's leaves pass, in either order, so no overlap exists: same_name_conflict refuses
    exactly that case.  With them both pass in both orders, and it lets them through."""
    old, old_key = _ca(ids, 30)
    new, new_key = _ca(ids, 1)
    leaves = {"old": _leaf(old, old_key, "nodea", ids), "new": _leaf(new, new_key, "nodeb", ids)}
    cases = []
    for order, ca_file in (("old,new", _pem(old) + _pem(new)), ("new,old", _pem(new) + _pem(old))):
        for which, (cert, key) in leaves.items():
            cases.append(
                {
                    "id": f"{order}:{which}",
                    **{
                        k: base64.b64encode(v).decode()
                        for k, v in (("cert", cert), ("key", key), ("ca", ca_file))
                    },
                }
            )
    run = subprocess.run(
        ["node", str(ORACLE)], input=json.dumps(cases), capture_output=True, text=True, check=True
    )
    ok = {r["id"]: r["ok"] for r in json.loads(run.stdout)}
    if ids:
        assert all(ok.values()), ok
        assert same_name_conflict([old], [new]) is None
    else:
        assert ok == {
            "old,new:old": True,
            "old,new:new": False,
            "new,old:old": False,
            "new,old:new": True,
        }
        why = same_name_conflict([old], [new])
        assert why is not None
        assert "either order" in why
        assert "Fix:" in why
