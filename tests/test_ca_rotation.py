"""The cluster CA rotation on three real Harper 4.7.29 nodes (issue 18, items 4 and 5).

One module-scoped full mesh (nodea, nodeb, nodec; CA1; joined once; a replicated table), a
handshake poller on every replication port for the whole module, then:

1. ``docs/runbooks/ca-rotation.md``'s "By hand" section, CA1 -> CA2: every fenced ``sh``
   block, command by command in the page's order, on the nodes its marker names, each
   command's exit status 0 (the page can never again disagree with the validator);
2. the page's ``ca rotate`` section, CA2 -> CA3, carried out by one ``harper-certd run`` per
   node; nodeb's daemon SIGKILLed in the middle of its ``add_ca`` step, the plan held by it
   (nodea waits at ca-added, naming nodeb) until it is started again, when it reports the
   step its files show done instead of doing it again; the plan paused and resumed; every
   node's phase read from the table, replication checked in all six directions after each
   phase; the whole rotation's wall time and each phase's printed.

Refusals before anything changes (cheap, through the command line): ``ca remove`` with a
too-short or unknown prefix, ``ca rotate`` to a same-name CA without key identifiers.

Run with ``-s`` to see the timeline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from daemonfix import DaemonProc
from harper_certd import peers
from harper_certd.cafile import CaError
from harper_certd.config import parse_config
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_certd.logs import EVENTS
from harper_certd.rotation import command as rotation
from harper_rig import (
    HandshakePoller,
    HarperError,
    HarperNode,
    RigCA,
    iter_rig_processes,
    needs_harper,
    outages,
)
from test_two_nodes import Member, replicate

pytestmark = needs_harper(timeout=600)

NODES = (("nodea", "127.0.0.2"), ("nodeb", "127.0.0.3"), ("nodec", "127.0.0.4"))
DATABASE = "certd"
TABLE = "probe"
JOIN_TIMEOUT = 30.0
REPLICATION_TIMEOUT = 10.0
PHASE_TIMEOUT = 120.0  # one phase of the daemons' rotation, on a loaded machine
RUNBOOK = Path(__file__).resolve().parent.parent / "docs" / "runbooks" / "ca-rotation.md"
OPERATOR_DIR = "/etc/harper-certd/rotation/"  # the page's folder; each node's own in the test
FAILED = ("certd.set_refused", "certd.rolled_back", "certd.rollback_failed", "certd.crashed")


class RotMember(Member):
    """A node, its daemon configuration (hot reloads) and its operator folder."""

    def write_config(self) -> Path:
        path = self.work / "certd-rotation.yaml"
        path.write_text(yaml.safe_dump(self.config_data("hot-reload"), sort_keys=False))
        return path

    @property
    def operator(self) -> Path:
        return self.work / "rotation"


@dataclass
class Rig:
    members: dict[str, RotMember]
    ca1: RigCA
    ca2: RigCA | None = None  # set by the runbook test: the CA the daemons rotate from
    pollers: list[HandshakePoller] = field(default_factory=list)

    def ordered(self) -> list[RotMember]:
        return [self.members[name] for name, _ in NODES]


def all_ways(rig: Rig, timeout: float = REPLICATION_TIMEOUT) -> dict[str, float]:
    """A row inserted on each node read on each other node: seconds per direction."""
    out = {}
    for src in rig.ordered():
        for dst in rig.ordered():
            if src is not dst:
                out[f"{src.name}->{dst.name}"] = replicate(src.node, dst.node, timeout)
    return out


def _wait_for_table(node: HarperNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            node.operation({"operation": "describe_table", "database": DATABASE, "table": TABLE})
        except HarperError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


def _leaf(ca: RigCA, member: Member) -> Any:
    return ca.issue(member.name, dns_names=[member.name], ip_addresses=[member.node.ip])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """Three started nodes with CA1, a full mesh, a replicated table, live files adopted."""
    base = tmp_path_factory.mktemp("ca-rotation")
    cache = tmp_path_factory.getbasetemp() / "harper-pristine"
    ca1 = RigCA("harper-certd rotation CA1")
    members: dict[str, RotMember] = {}
    for name, ip in NODES:
        node = HarperNode(base, name, ip, pristine_cache=cache)
        work = base / f"{name}-certd"
        work.mkdir()
        credentials = work / "credentials"
        credentials.write_text(f"admin:{node.password}\n")
        os.chmod(credentials, 0o600)
        members[name] = RotMember(node, work, credentials)
    the_rig = Rig(members, ca1)
    a, b, c = the_rig.ordered()
    t0 = time.monotonic()
    try:
        for member in members.values():
            member.node.install()
            first = _leaf(ca1, member)
            member.node.write_tls_files(first.cert_pem, first.key_pem, ca1.cert_pem)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda m: m.node.start(), members.values()))
        for other in (b, c):
            a.node.operation(
                {
                    "operation": "add_node",
                    "hostname": other.name,
                    "url": f"wss://{other.node.ip}:{other.node.ports.replication}",
                    "authorization": {"username": "admin", "password": other.node.password},
                }
            )
        a.node.operation({"operation": "create_database", "database": DATABASE})
        a.node.operation(
            {"operation": "create_table", "database": DATABASE, "table": TABLE, "primary_key": "id"}
        )
        for other in (b, c):
            _wait_for_table(other.node, JOIN_TIMEOUT)
        all_ways(the_rig, JOIN_TIMEOUT)
        # The first install adopts the live files (links into the state directory), hot.
        for member in members.values():
            ctx = build_context(parse_config(member.config_data("hot-reload")))
            outcome = install(ctx, member.staged_set(_leaf(ca1, member), ca1))
            assert outcome.status == "installed", outcome.as_dict()
        all_ways(the_rig, JOIN_TIMEOUT)
        print(
            f"\n[ca rotation] fixture: three nodes joined, adopted: {time.monotonic() - t0:.1f} s"
        )
        for member in the_rig.ordered():
            poller = HandshakePoller(member.node.ip, member.node.ports.replication, interval=0.1)
            the_rig.pollers.append(poller.start())
        yield the_rig
    finally:
        for poller in the_rig.pollers:
            poller.stop()
        for member in members.values():
            member.node.stop()
        leftovers = list(iter_rig_processes(base))
        assert not leftovers, f"Harper processes left behind: {leftovers}"


# --------------------------------------------------------------------------- the page


@dataclass(frozen=True)
class Block:
    where: str  # "every node" (at once), "one node at a time" or "one node" (the first)
    lines: tuple[str, ...]


def runbook_blocks(section: str) -> list[Block]:
    """The fenced ``sh`` blocks of one ``## `` section of the page, each with its marker."""
    text = RUNBOOK.read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    found = [p for p in parts if p.startswith(section)]
    assert len(found) == 1, f"no section {section!r} in {RUNBOOK}"
    blocks = []
    for where, body in re.findall(
        r"<!-- run: (every node|one node at a time|one node) -->\n```sh\n(.*?)```",
        found[0],
        flags=re.S,
    ):
        lines = tuple(line for line in body.splitlines() if line.split("#")[0].strip())
        blocks.append(Block(where, lines))
    unmarked = found[0].count("```sh") - len(blocks)
    assert unmarked == 0, f"{unmarked} sh blocks without a run marker in {section!r}"
    return blocks


def run_line(member: RotMember, line: str, old_fingerprint: str = "") -> str:
    """One command of the page on ``member``: the page's folder mapped to the node's own,
    ``harper-certd`` run with the node's configuration, ``cmd > file`` written by the test
    (no shell).  Returns the output; AssertionError unless it exits 0."""
    argv = shlex.split(line, comments=True)
    argv = [
        arg.replace(OPERATOR_DIR, f"{member.operator}/").replace(
            "OLD_CA_FINGERPRINT", old_fingerprint
        )
        for arg in argv
    ]
    target = None
    if ">" in argv:
        at = argv.index(">")
        argv, target = argv[:at], argv[at + 1]
    if argv == ["harperdb", "restart"]:  # Harper's own command, with the node's environment
        took = member.node.restart()
        print(f"  {member.name}$ {line}\n    restarted in {took:.1f} s")
        return ""
    if argv[0] == "harper-certd":
        argv = [
            sys.executable,
            "-m",
            "harper_certd",
            *argv[1:],
            "--config",
            str(member.write_config()),
        ]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    out = "\n".join(x for x in run.stdout.splitlines() if not x.startswith("<"))
    shown = [] if target is not None else out.splitlines()[:8]
    print(f"  {member.name}$ {line}\n" + "".join(f"    {x}\n" for x in shown))
    assert run.returncode == 0, f"{member.name}: {line}: exit {run.returncode}\n{out}\n{run.stderr}"
    if target is not None:
        Path(target).write_text(run.stdout)
        return ""
    return out


def run_block(rig: Rig, block: Block, old_fingerprint: str = "") -> dict[str, str]:
    """A block on the nodes its marker names: "every node" at once (one thread per node, as
    an operator per node would), "one node at a time" in turn, "one node" on nodea; each
    node's lines in order.  Returns each node's last output."""

    def on(member: RotMember) -> str:
        out = ""
        for line in block.lines:
            out = run_line(member, line, old_fingerprint) or out
        return out

    if block.where == "one node":
        return {rig.ordered()[0].name: on(rig.ordered()[0])}
    if block.where == "one node at a time":
        return {m.name: on(m) for m in rig.ordered()}
    with concurrent.futures.ThreadPoolExecutor(len(rig.members)) as pool:
        return dict(zip(rig.members, pool.map(on, rig.members.values()), strict=True))


def prepare(member: RotMember, old: RigCA, new: RigCA) -> str:
    """The operator's files on ``member``: new-ca.pem, old-ca.pem, new-leaf/; the new leaf's
    fingerprint."""
    shutil.rmtree(member.operator, ignore_errors=True)
    (member.operator / "new-leaf").mkdir(parents=True, mode=0o700)
    (member.operator / "new-ca.pem").write_bytes(new.cert_pem)
    (member.operator / "old-ca.pem").write_bytes(old.cert_pem)
    leaf = _leaf(new, member)
    (member.operator / "new-leaf" / "certificate.pem").write_bytes(leaf.cert_pem)
    key = member.operator / "new-leaf" / "privateKey.pem"
    key.write_bytes(leaf.key_pem)
    os.chmod(key, 0o600)
    return str(leaf.fingerprint)


def _cli(member: RotMember, *args: str) -> tuple[int, str]:
    run = subprocess.run(
        [sys.executable, "-m", "harper_certd", *args, "--config", str(member.write_config())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return run.returncode, "\n".join(x for x in run.stdout.splitlines() if not x.startswith("<"))


# Seconds a peer that does not answer a probe is asked again: a Harper that has just
# restarted in the rotation's last phase may not serve its replication port yet (CI once saw
# nodec refuse the old-CA leaf, then be unreachable for the new-CA one a moment later).
REACHABLE_WITHIN = 30.0


def forgotten(rig: Rig, old: RigCA, new: RigCA) -> dict[str, str]:
    """Each peer's verdict (the peer probe: a fresh replication connection) on a leaf for
    nodea issued by ``old``, and on one issued by ``new`` (the control): peer -> verdicts.
    An unreachable peer is probed again for up to ``REACHABLE_WITHIN`` seconds: what is
    judged is whether it accepts the leaf, not when its port is back."""
    a = rig.ordered()[0]
    out = {}
    for dst in rig.ordered()[1:]:
        peer = peers.Peer(dst.name, f"wss://{dst.node.ip}:{dst.node.ports.replication}")
        verdicts = []
        for ca in (old, new):
            leaf = _leaf(ca, a)
            candidate = peers.Candidate(leaf.cert_pem, leaf.key_pem, ca.cert_pem)
            deadline = time.monotonic() + REACHABLE_WITHIN
            answer = peers.probe_accepts(peer, candidate)
            while answer.verdict.value == "unreachable" and time.monotonic() < deadline:
                time.sleep(0.5)
                answer = peers.probe_accepts(peer, candidate)
            verdicts.append(answer.verdict.value)
        out[dst.name] = "/".join(verdicts)
    if set(out.values()) != {"refused/accepted"}:  # what each node still holds the old CA in
        for member in rig.ordered():
            kept = member.node.operation_raw(
                {
                    "operation": "search_by_value",
                    "database": "system",
                    "table": "hdb_nodes",
                    "search_attribute": "name",
                    "search_value": "*",
                    "get_attributes": ["*"],
                }
            )
            old_pem = old.cert_pem.decode().strip().splitlines()[1]
            holders = [
                f"{r.get('name')}.{k}"
                for r in (kept if isinstance(kept, list) else [])
                for k, v in r.items()
                if old_pem in str(v)
            ]
            rows = member.node.operation_raw({"operation": "list_certificates"})
            holders += [
                f"record {r.get('name')}"
                for r in (rows if isinstance(rows, list) else [])
                if old_pem in str(r.get("certificate"))
            ]
            print(f"  {member.name} still holds the old CA in: {holders}")
    return out


def _handshakes(rig: Rig, since: float) -> dict[str, list[tuple[float, float]]]:
    """Each node's outages on its replication port since ``since`` (its restarts): never
    two nodes down at once; printed with the number of handshakes."""
    down = {}
    for member, poller in zip(rig.ordered(), rig.pollers, strict=True):
        samples = poller.snapshot(since)
        assert samples, member.name
        down[member.name] = outages(samples)
        print(
            f"  {member.name}: {len(samples)} handshakes, {len(poller.failures(since))} failed, "
            "down " + (", ".join(f"{b - a:.1f} s" for a, b in down[member.name]) or "never")
        )
    spans = sorted((a, b, name) for name, runs in down.items() for a, b in runs)
    for (_a1, b1, n1), (a2, _b2, n2) in itertools.pairwise(spans):
        assert b1 < a2 or n1 == n2, f"{n1} and {n2} down at the same time: {down}"
    return down


# --------------------------------------------------------------------------- tests


def test_runbook_by_hand(rig: Rig) -> None:
    """CA1 -> CA2 by the page's "By hand" section, command by command; every node serves its
    CA2 leaf after, CA1 is gone from every CA file, replication in all six directions."""
    ca2 = RigCA("harper-certd rotation CA2")
    leaves = {m.name: prepare(m, rig.ca1, ca2) for m in rig.ordered()}
    old16 = rig.ca1.fingerprint[:16]
    blocks = runbook_blocks("By hand")
    assert [len(b.lines) for b in blocks] == [2, 3, 2, 2], blocks
    t0 = time.monotonic()
    print("\n[runbook by hand] CA1 -> CA2")
    phases = ("ca-added", "ready-to-remove", "steady", "steady")
    assert [b.where for b in blocks] == ["every node", *["one node at a time"] * 3], blocks
    for block, phase in zip(blocks, phases, strict=True):
        outs = run_block(rig, block, old16)
        assert f"phase: {phase}" in outs["nodec"], outs  # `cluster` on the last node
        all_ways(rig)
    took = time.monotonic() - t0
    for member in rig.ordered():
        assert member.node.try_fingerprint() == leaves[member.name]
        assert member.node.ca_path.read_bytes() == ca2.cert_pem
    print(f"[runbook by hand] {took:.1f} s")
    # After the restarts the old CA is forgotten: a CA1 leaf is refused, a CA2 one accepted.
    verdicts = forgotten(rig, rig.ca1, ca2)
    print(f"  old-CA / new-CA leaf for nodea, per peer: {verdicts}")
    assert verdicts == {"nodeb": "refused/accepted", "nodec": "refused/accepted"}, verdicts
    _handshakes(rig, t0)
    rig.ca2 = ca2


def test_refusals_before_anything_changes(rig: Rig) -> None:
    """``ca remove`` with a prefix shorter than 16 hex digits or one no CA has, and ``ca
    rotate`` to a same-name CA without key identifiers: exit 1, the reason, nothing changed."""
    a = rig.ordered()[0]
    before = a.node.ca_path.read_bytes()
    live = x509.load_pem_x509_certificate(before)
    fp = live.fingerprint(hashes.SHA256()).hex()
    for given, says in (
        (fp[:15], "too short"),
        ("0123456789abcdef" if not fp.startswith("0123") else "fedcba9876543210", "no CA"),
        ("not-hex-at-all-xyz", "not a SHA-256"),
    ):
        code, out = _cli(a, "ca", "remove", given)
        assert (code, says in out, "nothing changed" in out) == (1, True, True), (given, out)
    # The same subject as the live CA, no subjectKeyIdentifier: Node would accept only one.
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    twin = (
        x509.CertificateBuilder()
        .subject_name(live.subject)
        .issuer_name(live.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    twin_file = a.work / "twin-ca.pem"
    twin_file.write_bytes(twin.public_bytes(serialization.Encoding.PEM))
    for args in (("ca", "rotate", str(twin_file)), ("ca", "add", str(twin_file))):
        code, out = _cli(a, *args)
        assert (code, "same subject" in out, "Fix:" in out) == (1, True, True), (args, out)
    assert a.node.ca_path.read_bytes() == before


def _phases(member: RotMember) -> dict[str, str | None]:
    ctx = build_context(parse_config(member.config_data("hot-reload")))
    try:
        data = rotation.status(ctx)
    except CaError:  # that node's Harper is restarting (the last phase): ask again
        return {}
    return {n["node"]: n["phase"] for n in data["nodes"]}


def test_ca_rotate_by_the_daemons(rig: Rig) -> None:
    """CA2 -> CA3 by the page's ``ca rotate`` section with one daemon per node: nodeb's daemon
    SIGKILLed after its first step and started again, the plan paused and resumed, every
    phase reached by every node (read from the table on nodec), replication in all six
    directions after each phase; handshakes fail only while a node restarts in the last
    phase (Harper forgets a removed CA only then), one node at a time (``_handshakes``)."""
    if rig.ca2 is None:
        pytest.skip("needs test_runbook_by_hand first (the cluster on CA2)")
    ca2 = rig.ca2
    ca3 = RigCA("harper-certd rotation CA3")
    leaves = {m.name: prepare(m, ca2, ca3) for m in rig.ordered()}
    blocks = runbook_blocks("With one command")
    assert [b.where for b in blocks] == ["one node", "every node", "one node"], blocks
    a, b, c = rig.ordered()
    daemons = {m.name: DaemonProc(m) for m in rig.ordered()}
    restarted: DaemonProc | None = None
    try:
        for d in daemons.values():
            d.wait_for("certd.started", 60.0)
        print("\n[ca rotate] CA2 -> CA3")
        t0 = time.monotonic()
        for line in blocks[0].lines:
            run_line(a, line)
        # nodeb's daemon SIGKILLed in the middle of its add_ca step (the CA-file install done,
        # Harper's authority record awaited, nothing reported yet).  While it is down the
        # plan holds: nodea reaches ca-added and then waits, naming nodeb.
        daemons["nodeb"].wait_for("certd.set_installed", PHASE_TIMEOUT)
        os.kill(daemons["nodeb"].proc.pid, signal.SIGKILL)
        daemons["nodeb"].proc.wait(10)
        killed_at = time.monotonic() - t0
        # nodec done too, nodeb (dead) still at planned: nodea waits for nodeb alone.
        held = _wait_waiting(daemons["nodea"], "nodeb: at planned", unless="nodec: at")
        rows = _phases(a)
        b_row = rows["nodeb"]
        assert rows["nodea"] == "ca-added", rows
        print(f"  nodeb's daemon SIGKILLed mid add_ca at {killed_at:.1f} s; its row: {b_row}")
        print(f"  nodea holds the plan: {held}")
        assert b_row in (None, "planned"), b_row
        restarted = DaemonProc(b)
        restarted.wait_for("certd.started", 60.0)
        # Every node at ca-added: the plan waits for the staged leaves; pause it there.
        reached: dict[str, float] = {}
        _wait_phase(c, "ca-added", t0, reached)
        code, out = _cli(a, "ca", "rotate", "--pause")
        assert (code, "paused" in out) == (0, True), out
        for d in (daemons["nodea"], restarted, daemons["nodec"]):
            _wait_waiting(d, "the plan is paused")
        ways = {"ca-added": all_ways(rig)}
        run_block(rig, blocks[1])
        code, out = _cli(a, "ca", "rotate", "--resume")
        assert (code, "active" in out) == (0, True), out
        _wait_phase(c, "leaf-switched", t0, reached)
        ways["leaf-switched"] = all_ways(rig)
        _wait_phase(c, "old-removed", t0, reached)
        ways["old-removed"] = all_ways(rig)
        _wait_phase(c, "restarted", t0, reached)
        ways["restarted"] = all_ways(rig, JOIN_TIMEOUT)
        _wait_finished(c, t0, reached)
        took = time.monotonic() - t0
        status = run_line(c, blocks[2].lines[0])
        assert "finished" in status, status
    finally:
        everyone = [*daemons.values(), *([restarted] if restarted else [])]
        for d in everyone:
            if d.proc.poll() is None:
                d.stop()
            d.__exit__()
    previous = 0.0
    for phase, at in reached.items():
        print(f"  every node {phase} at {at:.1f} s (+{at - previous:.1f} s)")
        previous = at
    print(f"[ca rotate] whole rotation: {took:.1f} s")
    for phase, w in ways.items():
        print(f"  after {phase}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in w.items()))

    for member in rig.ordered():
        assert member.node.try_fingerprint() == leaves[member.name]
        assert member.node.ca_path.read_bytes() == ca3.cert_pem
    for d in (daemons["nodea"], restarted, daemons["nodec"]):
        assert d is not None
        assert {e["event"] for e in d.events} <= set(EVENTS)
        assert not [e for e in d.events if e["event"] in FAILED], d.raw[-30:]
        steps = [e["action"] for e in d.named("certd.rotation_step") if e["action"] != "report"]
        # The restarted nodeb found its add_ca done in its files: reported, not done again.
        wanted = (
            ["switch_leaf", "remove_old", "restart"]
            if d is restarted
            else ["add_ca", "switch_leaf", "remove_old", "restart"]
        )
        assert steps == wanted, steps
    verdicts = forgotten(rig, ca2, ca3)
    print(f"  old-CA / new-CA leaf for nodea, per peer: {verdicts}")
    assert verdicts == {"nodeb": "refused/accepted", "nodec": "refused/accepted"}, verdicts
    all_ways(rig)
    down = _handshakes(rig, t0)
    target = os.environ.get(TIMELINE_ENV)
    if target:
        timeline = Timeline(reached, took, killed_at, ways, down, _handshake_counts(rig, t0))
        Path(target).write_text(timeline.markdown())


# Where test_ca_rotate_by_the_daemons writes its timeline as Markdown (for the benchmark
# report: docs/bench/rotation-timeline.md, which `python -m bench` puts in report.md).
TIMELINE_ENV = "HARPER_CERTD_TIMELINE"


def _handshake_counts(rig: Rig, since: float) -> dict[str, tuple[int, int]]:
    """Per node: handshakes made with its replication port since ``since``, and failed."""
    return {
        m.name: (len(p.snapshot(since)), len(p.failures(since)))
        for m, p in zip(rig.ordered(), rig.pollers, strict=True)
    }


@dataclass(frozen=True)
class Timeline:
    """A measured ``ca rotate`` on three nodes: when every node reached each phase (seconds
    after ``ca rotate``), the whole rotation, nodeb's daemon's SIGKILL, replication times
    after each phase (seconds, per direction), each replication port's outages (start, end)
    and handshakes (made, failed)."""

    reached: dict[str, float]
    took: float
    killed_at: float
    ways: dict[str, dict[str, float]]
    down: dict[str, list[tuple[float, float]]]
    handshakes: dict[str, tuple[int, int]]

    def markdown(self) -> str:
        load1, _, _ = os.getloadavg()
        lines = [
            "## Three-node rotation timeline",
            "",
            f"`ca rotate` CA2 -> CA3 on three real Harper nodes (one `harper-certd run` each), "
            f"measured by `tests/test_ca_rotation.py::test_ca_rotate_by_the_daemons` on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (load average {load1:.2f} at the "
            f"end). nodeb's daemon is SIGKILLed in its first step ({self.killed_at:.1f} s) and "
            "started again; the plan is paused at `ca-added` while each node's new-CA leaf is "
            "staged, then resumed. A handshake poller dials every replication port all along.",
            "",
            "| every node at | seconds after `ca rotate` | phase took | replication after "
            "(min / max over the six directions) |",
            "|---|---|---|---|",
        ]
        previous = 0.0
        for phase, at in self.reached.items():
            ways = self.ways.get(phase)
            rep = (
                f"{min(ways.values()) * 1000:.0f} / {max(ways.values()) * 1000:.0f} ms"
                if ways
                else ""
            )
            lines.append(f"| {phase} | {at:.1f} | +{at - previous:.1f} | {rep} |")
            previous = at
        lines.extend(
            [
                "",
                f"Whole rotation: **{self.took:.1f} s**.",
                "",
                "| node | handshakes | failed | replication port down |",
                "|---|---|---|---|",
            ]
        )
        for name, (made, failed) in self.handshakes.items():
            spans = ", ".join(f"{b - a:.1f} s" for a, b in self.down.get(name, [])) or "never"
            lines.append(f"| {name} | {made} | {failed} | {spans} |")
        lines.extend(
            [
                "",
                "Handshakes fail only while a node's Harper restarts in the last phase (Harper "
                "forgets a removed CA only then), one node at a time.",
            ]
        )
        return "\n".join(lines) + "\n"


def _wait_phase(member: RotMember, phase: str, t0: float, reached: dict[str, float]) -> None:
    """Until every node's row (read on ``member``) is at ``phase`` or later."""
    order = ["planned", "ca-added", "leaf-switched", "old-removed", "restarted"]
    deadline = time.monotonic() + PHASE_TIMEOUT
    seen: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        seen = _phases(member)
        if seen and all(
            p is not None and order.index(p) >= order.index(phase) for p in seen.values()
        ):
            reached[phase] = time.monotonic() - t0
            return
        time.sleep(0.2)
    raise AssertionError(f"not every node at {phase} within {PHASE_TIMEOUT} s: {seen}")


def _wait_step(daemon: DaemonProc, action: str) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while time.monotonic() < deadline:
        if any(e["action"] == action for e in daemon.named("certd.rotation_step")):
            return
        if daemon.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no rotation_step {action}: {daemon.raw[-20:]}")


def _wait_finished(member: RotMember, t0: float, reached: dict[str, float]) -> None:
    """Until the plan is finished as read on ``member`` (every row has seen every other at
    restarted)."""
    ctx = build_context(parse_config(member.config_data("hot-reload")))
    deadline = time.monotonic() + PHASE_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(CaError):
            if rotation.status(ctx)["finished"]:
                reached["finished"] = time.monotonic() - t0
                return
        time.sleep(0.2)
    raise AssertionError(f"not finished within {PHASE_TIMEOUT} s: {rotation.status(ctx)}")


def _wait_waiting(daemon: DaemonProc, reason: str, unless: str = "\0") -> str:
    """The first ``certd.rotation_waiting`` whose ``waiting_for`` holds ``reason`` and not
    ``unless``."""
    deadline = time.monotonic() + PHASE_TIMEOUT
    while time.monotonic() < deadline:
        for e in daemon.named("certd.rotation_waiting"):
            if reason in e["waiting_for"] and unless not in e["waiting_for"]:
                return str(e["waiting_for"])
        time.sleep(0.2)
    raise AssertionError(f"no rotation_waiting {reason!r}: {daemon.raw[-20:]}")
