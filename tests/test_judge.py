"""Node as the judge: the judge line in validate's text and JSON with and without Node, the
verdict laid over the model's, and the judge under the shipped unit's MemoryDenyWriteExecute.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

import rootsfix
from harper_certd import devca, judge, warmstart
from harper_certd.judge import node
from harper_certd.judge.verdict import reconcile
from harper_certd.problems import problem
from harper_certd.roles import Purpose
from harper_certd.validate import Inputs, validate
from harper_certd.validate.cafile_rules import MAX_CA_NAMES_BYTES, ca_names_size

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not on PATH")
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def _set(tmp_path: Path) -> list[str]:
    root = devca.make_ca("judge root")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "key.pem").chmod(0o600)
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    return [
        "--cert",
        str(tmp_path / "cert.pem"),
        "--key",
        str(tmp_path / "key.pem"),
        "--ca",
        str(tmp_path / "ca.pem"),
    ]


def _cli(args: list[str], path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        [sys.executable, "-m", "harper_certd", "validate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@needs_node
def test_judge_line_with_node(tmp_path: Path) -> None:
    args = _set(tmp_path)
    text = _cli(args, os.environ["PATH"])
    assert text.returncode == 0, text.stdout + text.stderr
    assert "judged by Node v" in text.stdout
    assert ", OpenSSL 3." in text.stdout
    data = json.loads(_cli([*args, "--json"], os.environ["PATH"]).stdout)
    assert data["judge"]["kind"] == "node"
    assert data["judge"]["node_accepts"] is True
    assert data["judge"]["line"].startswith("judged by Node v")


@needs_node
def test_validate_node_option_is_named_and_a_bad_one_refused(tmp_path: Path) -> None:
    """``validate --node PATH``: the judge line names ``--node`` (validate reads no
    configuration, so never ``judge.node``); a path that is not an executable file is a
    usage error with no report, never the model answering in its place (the newcomer's
    ``--node /nonexistent/node`` printed VALID and exited 0)."""
    assert NODE is not None
    args = _set(tmp_path)
    named = json.loads(_cli([*args, "--json", "--node", NODE], os.environ["PATH"]).stdout)
    assert named["judge"]["kind"] == "node"
    assert named["judge"]["line"].endswith(f"({NODE}, from --node)"), named["judge"]
    for bad in (str(tmp_path / "no-such-node"), str(tmp_path)):
        done = _cli([*args, "--node", bad], os.environ["PATH"])
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stdout == ""
        assert f"--node {bad} is not an executable file" in done.stderr


def test_judge_line_without_node(tmp_path: Path) -> None:
    """No node on PATH (an operator's laptop): the model answers and says so."""
    args = _set(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    text = _cli(args, str(empty))
    assert text.returncode == 0, text.stdout + text.stderr
    assert "judged by harper-certd's model of Node 20 (no node" in text.stdout
    data = json.loads(_cli([*args, "--json"], str(empty)).stdout)
    assert data["judge"]["kind"] == "model"
    off = json.loads(_cli([*args, "--json", "--node", "none"], os.environ["PATH"]).stdout)
    assert off["judge"]["kind"] == "model"
    assert off["judge"]["why_model"] == "--node none"  # validate reads no configuration


@needs_node
def test_node_refusal_the_model_misses_is_node_refused() -> None:
    """Node's real refusal (a CA that did not issue the leaf) over an empty analysis."""
    assert NODE is not None
    root, other = devca.make_ca("real root"), devca.make_ca("other root")
    leaf = devca.make_leaf(root, "nodea")
    batch = node.judge_sets(
        NODE, [node.SetRequest("s", leaf.cert_pem, leaf.key_pem, other.cert_pem)]
    )
    found = batch.verdicts["s"]
    assert not found.ok
    problems, disagreement = reconcile((), found.ok, found.reason, "Node x")
    assert disagreement == "node_refused"
    assert [p.code for p in problems] == ["node_refused"]
    assert "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in problems[0].message
    # The model's own refusal stands when Node refuses too; a non-policy refusal Node does
    # not make becomes model_disagrees (Node decides); a policy refusal stands.
    mine = (problem("chain_invalid", "x"),)
    assert reconcile(mine, False, "r", "Node x") == (mine, "")
    out, kind = reconcile(mine, True, "", "Node x")
    assert kind == "model_refused"
    assert [p.code for p in out] == ["model_disagrees"]
    weak = (problem("weak_key", "x"),)
    assert reconcile(weak, True, "", "Node x") == (weak, "")


@needs_node
def test_validate_reports_node_verdict() -> None:
    root = devca.make_ca("v root")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    now = dt.datetime.now(dt.UTC)
    good = validate(Inputs(leaf.cert_pem, leaf.key_pem, root.cert_pem), at=now)
    assert good.valid
    assert good.judge is not None
    assert good.judge.kind == "node"
    named = validate(
        Inputs(leaf.cert_pem, leaf.key_pem, root.cert_pem), at=now, hostnames=["nodeb"]
    )
    assert named.codes == ("hostname_mismatch",)
    assert named.judge is not None
    assert "ERR_TLS_CERT_ALTNAME_INVALID" in named.judge.node_reason
    # Another instant across the leaf's notAfter: Node judges only the present.
    later = validate(
        Inputs(leaf.cert_pem, leaf.key_pem, root.cert_pem),
        at=leaf.cert.not_valid_after_utc + dt.timedelta(days=1),
    )
    assert later.codes == ("expired",)
    assert later.judge is not None
    assert later.judge.kind == "model"
    assert "only the present" in later.judge.why


def test_the_time_rule_reads_the_seconds_node_judged_in() -> None:
    """Node's answer says when it judged: its verdict stands for ``at`` unless a validity
    bound lies between the whole seconds of the two. A newcomer validating a certificate
    made a second before got "Node judges only the present" whenever Node's start and the
    model's instant fell in different seconds (a 2 s slack around Node's start)."""
    root = devca.make_ca("time root")
    made = dt.datetime(2026, 12, 7, 1, 0, 0, tzinfo=dt.UTC)
    leaf = devca.make_leaf(root, "nodea", not_before=made)
    t = made.timestamp()
    at = made + dt.timedelta(seconds=2.05)
    assert judge.holds_at([leaf.cert], at, (t + 1.8, t + 1.9))  # both after notBefore
    assert judge.holds_at([leaf.cert], made + dt.timedelta(seconds=0.5), (t + 0.1, t + 0.2))
    assert not judge.holds_at([leaf.cert], at, (t - 0.5, t - 0.4))  # Node judged before it
    # an answer that does not say when it judged, or says it badly, is not read
    assert node._judged({"judged": [t, t + 0.1]}) == (t, t + 0.1)
    for bad in ({}, {"judged": [t]}, {"judged": [t + 1, t]}, {"judged": [True, t]}):
        with pytest.raises(ValueError, match="judged"):
            node._judged(bad)
    later = leaf.cert.not_valid_after_utc + dt.timedelta(days=1)
    assert not judge.holds_at([leaf.cert], later, (t + 1.8, t + 1.9))


@needs_node
def test_a_certificate_made_a_moment_ago_is_judged_by_node() -> None:
    root = devca.make_ca("fresh root")
    now = dt.datetime.now(dt.UTC)
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"], not_before=now - dt.timedelta(seconds=1))
    for _ in range(3):  # each run may fall across a second's boundary, or not
        report = validate(Inputs(leaf.cert_pem, leaf.key_pem, root.cert_pem), at=now)
        assert report.judge is not None
        assert report.judge.kind == "node", report.judge.why
        now = dt.datetime.now(dt.UTC)


def _skip_without_mdwe() -> None:
    """Skip where the kernel has no PR_SET_MDWE (Linux before 6.3); probed in a child, as the
    setting cannot be undone."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ctypes; l=ctypes.CDLL(None); "
            f"print(l.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    if probe.stdout.strip() != "0":
        pytest.skip("this kernel has no PR_SET_MDWE")


def _mdwe() -> None:  # runs in the child before exec: the unit's MemoryDenyWriteExecute
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE")


@needs_node
def test_judge_runs_under_memory_deny_write_execute() -> None:
    """systemd/harper-certd.service has MemoryDenyWriteExecute=yes; PR_SET_MDWE with
    PR_MDWE_REFUSE_EXEC_GAIN is the kernel's own form of it (Linux 6.3+).  Plain node dies
    under it (V8's JIT maps W+X memory); the judge's --jitless node works."""
    assert NODE is not None
    _skip_without_mdwe()
    plain = subprocess.run(
        [NODE, "-e", "for (let i = 0; i < 1e6; i++) Math.sqrt(i)"],
        capture_output=True,
        preexec_fn=_mdwe,
        timeout=60,
        check=False,
    )
    assert plain.returncode != 0
    root = devca.make_ca("mdwe root")
    leaf = devca.make_leaf(root, "nodea")
    request = node.SetRequest("s", leaf.cert_pem, leaf.key_pem, root.cert_pem)
    done = subprocess.run(
        node.argv(NODE),
        input=node.encode([request]),
        capture_output=True,
        preexec_fn=_mdwe,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout)["results"][0]["ok"] is True


@needs_node
def test_validate_under_memory_deny_write_execute_is_judged_jitless(tmp_path: Path) -> None:
    """``validate`` asks for Node's JIT; under the unit's restriction (PR_SET_MDWE, inherited
    by every child) that Node dies by SIGTRAP, and the set is judged again ``--jitless``:
    still Node's verdict, from a second start."""
    _skip_without_mdwe()
    folder, log = _counting_node(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "harper_certd", "validate", *_set(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"},
        preexec_fn=_mdwe,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "judged by Node v" in done.stdout, done.stdout
    assert len(log.read_text().split()) == 2  # the JIT's start, then the --jitless one


@needs_node
def test_the_default_store_changes_no_verdict(tmp_path: Path) -> None:
    """The judge runs Node with an empty default trust store (``--use-openssl-ca``, OpenSSL's
    default paths on the null device, no NODE_EXTRA_CA_CERTS: 26 ms and 15 ms of Node's
    time).  That changes no verdict: a context with its own ``ca`` (Harper's) never uses
    the default store.  Node as Harper runs it (its bundled roots, and the root in
    NODE_EXTRA_CA_CERTS and in SSL_CERT_FILE) gives the judge's verdict on a set whose root
    is in the default store alone and on a valid one."""
    assert NODE is not None
    root, other = devca.make_ca("extra root"), devca.make_ca("other root")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    extra = tmp_path / "extra.pem"
    extra.write_bytes(root.cert_pem)
    requests = [
        node.SetRequest("outside", leaf.cert_pem, leaf.key_pem, other.cert_pem),
        node.SetRequest("valid", leaf.cert_pem, leaf.key_pem, root.cert_pem, names=("nodea",)),
    ]
    plain_env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(extra), "SSL_CERT_FILE": str(extra)}
    seen = []
    for command, env in (
        ([NODE, warmstart.SCRIPT], plain_env),  # Node as Harper runs it
        (node.argv(NODE), warmstart.judge_env(plain_env)),  # the judge
    ):
        done = subprocess.run(
            command,
            input=node.encode(requests),
            capture_output=True,
            env=env,
            timeout=60,
            check=True,
        )
        seen.append(
            [(r["id"], r["ok"], r["stage"], r["code"]) for r in json.loads(done.stdout)["results"]]
        )
    assert (
        seen[0]
        == seen[1]
        == [
            ("outside", False, "server", "UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
            ("valid", True, "", ""),
        ]
    ), seen
    env = warmstart.judge_env({"NODE_EXTRA_CA_CERTS": str(extra), "SSL_CERT_FILE": str(extra)})
    assert env == {"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}
    # An operator's NODE_OPTIONS choosing the bundled store would make Node exit 9 beside the
    # judge's --use-openssl-ca: the judge leaves that flag out and judges.
    bundled = {**os.environ, "NODE_OPTIONS": "--use-bundled-ca --max-old-space-size=256"}
    assert warmstart.judge_env(bundled)["NODE_OPTIONS"] == "--max-old-space-size=256"
    conflict = subprocess.run(
        node.argv(NODE),
        input=node.encode(requests),
        capture_output=True,
        env=bundled,
        timeout=60,
        check=False,
    )
    assert conflict.returncode != 0  # Node's own refusal, which judge_env avoids
    done = subprocess.run(
        node.argv(NODE),
        input=node.encode(requests),
        capture_output=True,
        env=warmstart.judge_env(bundled),
        timeout=60,
        check=True,
    )
    assert [r["ok"] for r in json.loads(done.stdout)["results"]] == [False, True]
    assert "--use-openssl-ca" in node.argv(NODE)
    assert "--use-openssl-ca" in node.argv(NODE, jit=True)


@needs_node
def test_a_request_node_cannot_parse_is_not_echoed() -> None:
    """V8's JSON.parse error quotes the input ("Unexpected token 'M', "MIGHAgEAMB"... is not
    valid JSON"), and the request holds the key: the script's error on stderr (which a
    failure reason quotes) names the fault without a byte of the request."""
    assert NODE is not None
    key_body = b"".join(
        devca.make_leaf(devca.make_ca("echo root"), "nodea").key_pem.split(b"\n")[1:-2]
    )
    child = warmstart.spawn(node.argv(NODE))
    out, err = child.communicate(b'{"sets": [' + key_body + b"]}", timeout=60)
    assert child.returncode == 1
    assert out == b""
    assert b"the request is not valid JSON" in err
    assert key_body[:12] not in err
    assert not any(key_body[i : i + 8] in err for i in range(0, len(key_body) - 8, 4))


def test_child_pipes_end_bounded(tmp_path: Path) -> None:
    """The judge's process plumbing (``warmstart.spawn``) on real processes: a request
    larger than a pipe reaches the child whole; a child that never reads is killed at the
    timeout and reaped; one that exits without reading is no error but its status; a
    program that does not exist is FileNotFoundError (an OSError)."""
    payload = os.urandom(1 << 20)
    cat = warmstart.spawn(["cat"])
    out, err = cat.communicate(payload, timeout=60)
    assert (out, err, cat.returncode) == (payload, b"", 0)
    stuck = warmstart.spawn(["sleep", "60"])
    with pytest.raises(TimeoutError):
        stuck.communicate(b"x", timeout=0.5)
    assert stuck.returncode == -9
    assert not Path(f"/proc/{stuck.pid}").exists()
    gone = warmstart.spawn(["sh", "-c", "echo bye >&2; exit 3"])
    out, err = gone.communicate(payload, timeout=60)
    assert (out, err, gone.returncode) == (b"", b"bye\n", 3)
    with pytest.raises(FileNotFoundError):
        warmstart.spawn([str(tmp_path / "no-such-program")])


def _root_with_foreign_aki() -> devca.Issued:
    """A self-signed root whose AKI names another key: OpenSSL does not take it as
    self-signed (x509-limbo webpki::aki::root-with-aki-ski-mismatch); the model does."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = devca.make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aki root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=100))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(b"\x01" * 20, None, None), critical=False)
        .sign(key, hashes.SHA256())
    )
    return devca.Issued(cert, key)


@needs_node
def test_disagreement_codes_come_from_real_sets() -> None:
    """node_refused and model_disagrees from Node's real verdicts on x509-limbo sets.  The
    model no longer has a known fault there (tests/test_judge_limbo.py's KNOWN is empty), so
    validate itself agrees with Node; a fault is emulated by handing ``judge.finish`` the
    model's problems without its own finding (the set, Node and its verdict are real)."""
    now = dt.datetime.now(dt.UTC)
    limbo_file = Path(__file__).resolve().parents[2] / "shared" / "limbo" / "limbo-subset.json"
    if not limbo_file.exists():
        pytest.skip("shared/limbo is not there")
    cases = {c["id"]: c for c in json.loads(limbo_file.read_text())["testcases"]}

    def inputs_of(case_id: str) -> Inputs:
        tc = cases[case_id]
        return Inputs(
            (tc["peer_certificate"] + "".join(tc["untrusted_intermediates"])).encode(),
            tc["peer_certificate_key"].encode(),
            "".join(tc["trusted_certs"]).encode(),
        )

    def pending_of(inputs: Inputs, names: list[str], server: bool) -> judge.Pending:
        assert isinstance(inputs.cert, bytes)
        assert isinstance(inputs.key, bytes)
        assert isinstance(inputs.ca, bytes)
        return judge.start(
            inputs.cert, inputs.key, inputs.ca, names=names, server=server, client=not server
        )

    # OpenSSL builds one chain and does not try the other path: the model now does the same.
    same_chain = cases["rfc5280::nc::nc-forbids-same-chain-ica"]
    names = [same_chain["expected_peer_name"]["value"]]
    inputs = inputs_of(same_chain["id"])
    agreed = validate(inputs, at=now, hostnames=names, purpose=Purpose.SERVER)
    assert agreed.codes == ("chain_invalid",)
    assert "does not try another path" in agreed.problems[0].message
    assert agreed.judge is not None
    assert agreed.judge.node_accepts is False
    assert agreed.judge.disagreement == ""
    out, info = judge.finish(pending_of(inputs, names, True), (), [], now)
    assert [p.code for p in out] == ["node_refused"]
    assert "excluded subtree violation" in out[0].message
    assert info.disagreement == "node_refused"
    # An email name constraint: refused as documented policy although Node accepts.
    inputs = inputs_of("rfc5280::nc::nc-permits-invalid-email-san")
    policy = validate(inputs, at=now, purpose=Purpose.CLIENT)
    assert policy.codes == ("chain_invalid",)
    assert policy.judge is not None
    assert policy.judge.node_accepts is True
    assert policy.judge.disagreement == ""
    fault = problem("chain_invalid", "a refusal the model makes by mistake")
    out, info = judge.finish(pending_of(inputs, [], False), (fault,), [], now)
    assert [p.code for p in out] == ["model_disagrees"]
    assert "chain_invalid" in out[0].message
    assert info.disagreement == "model_refused"


@needs_node
def test_root_whose_aki_names_another_is_refused_as_node_does() -> None:
    """The model's fix for x509-limbo webpki::aki::root-with-aki-*: Node and the model agree."""
    root = _root_with_foreign_aki()
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    report = validate(
        Inputs(leaf.cert_pem, leaf.key_pem, root.cert_pem), at=dt.datetime.now(dt.UTC)
    )
    assert report.codes == ("chain_invalid",)
    assert "Authority Key Identifier" in report.problems[0].message
    assert report.judge is not None
    assert report.judge.node_accepts is False
    assert report.judge.disagreement == ""


@needs_node
def test_early_node_counts_only_for_the_bytes_analysed(tmp_path: Path) -> None:
    """validate's CLI starts Node on the files before importing the analysis; when a file
    changes in between, that verdict is not used: Node judges the analysed bytes again."""
    args = _set(tmp_path)
    cert, key, ca = (Path(args[i]) for i in (1, 3, 5))
    pending = judge.start_files(
        cert, key, ca, names=[], server=True, client=True, limit=judge.EARLY_LIMIT
    )
    assert pending.judges(cert.read_bytes(), key.read_bytes(), ca.read_bytes())
    other = devca.make_ca("another root")
    changed = Inputs(cert.read_bytes(), key.read_bytes(), other.cert_pem)
    assert not pending.judges(changed.cert, changed.key, changed.ca)
    report = validate(changed, at=dt.datetime.now(dt.UTC), pending=pending)
    assert report.judge is not None
    assert report.judge.kind == "node"
    assert report.judge.node_accepts is False  # Node judged the CA file analysed, not the first


def test_the_node_is_harpers_own_then_configured_then_path(tmp_path: Path) -> None:
    """Harper's node from /proc/PID/exe of its pid (here a real process: a sleeping node or
    this Python), else judge.node, else PATH's; 'none' is the model alone."""
    from harper_certd.judge import runtime

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = runtime.choose(runtime.Settings(harper_pid=lambda: child.pid))
        assert isinstance(found, runtime.NodeChoice)
        assert found.path == os.path.realpath(sys.executable)
        assert f"pid {child.pid}" in found.source
    finally:
        child.kill()
        child.wait()
    gone = runtime.choose(runtime.Settings(node=sys.executable, harper_pid=lambda: None))
    assert gone == runtime.NodeChoice(sys.executable, "from judge.node")
    assert runtime.choose(runtime.Settings(node="none")) is runtime.MODEL
    missing = runtime.choose(runtime.Settings(node=str(tmp_path / "no-node")))
    assert isinstance(missing, str)
    assert "not an executable file" in missing


@needs_node
def test_the_same_set_asked_again_shares_one_node_run() -> None:
    """``status`` judges the live set twice: the second ask shares the first Node run (one
    process), a different ask (other names) starts its own; both give Node's verdict."""
    root = devca.make_ca("reuse root")
    leaf = devca.make_leaf(root, "nodea")
    cert, key, ca = leaf.cert_pem, leaf.key_pem, root.cert_pem
    first = judge.start(cert, key, ca, names=["nodea"], server=True, client=True)
    again = judge.start(cert, key, ca, names=["nodea"], server=True, client=True)
    other = judge.start(cert, key, ca, names=["nodeb"], server=True, client=True)
    assert first.run is not None
    assert again.run is first.run
    assert other.run is not first.run
    now = dt.datetime.now(dt.UTC)
    _, info = judge.finish(again, (), [leaf.cert, root.cert], now)
    assert info.kind == "node"
    assert info.node_accepts is True
    _, info = judge.finish(other, (), [leaf.cert, root.cert], now)
    assert info.node_accepts is False  # nodeb is not the certificate's name


@needs_node
def test_ca_names_limit_is_nodes() -> None:
    """``ca_names_too_large`` starts exactly where Node starts failing mutual TLS: the CA
    file's names (2 + DER subject each) at MAX_CA_NAMES_BYTES are accepted by both, one byte
    more refused by both (Node: ERR_SSL_INTERNAL_ERROR); a server-only set sends
    no list, so both accept it.  Found by Node itself: a 2,300-root CA file was refused as
    ``node_refused`` with no cause of the model's own."""
    root = devca.make_ca("Names Limit Root")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    # Stranger roots until one more root with a CN of 20 to 60 characters reaches the limit:
    # a CN of n ASCII characters is a 13 + n byte Name (n < 110), 15 + n in the list.
    blocks = [root.cert_pem]
    size = ca_names_size([root.cert])
    while MAX_CA_NAMES_BYTES - size - 15 > 60:
        cn = f"Stranger Root {len(blocks)}"
        blocks.append(rootsfix.root(cn, serial=len(blocks)))
        size += 15 + len(cn)
    base = b"".join(blocks)
    assert ca_names_size(x509.load_pem_x509_certificates(base)) == size
    now = dt.datetime.now(dt.UTC)
    seen = {}
    for target in (MAX_CA_NAMES_BYTES, MAX_CA_NAMES_BYTES + 1):
        ca = base + rootsfix.root("x" * (target - size - 15))
        assert ca_names_size(x509.load_pem_x509_certificates(ca)) == target
        report = validate(Inputs(leaf.cert_pem, leaf.key_pem, ca), at=now)
        server = validate(Inputs(leaf.cert_pem, leaf.key_pem, ca), at=now, purpose=Purpose.SERVER)
        assert report.judge is not None
        assert report.judge.kind == "node", report.judge
        assert server.judge is not None
        assert server.judge.node_accepts is True, server.judge
        assert "ca_names_too_large" not in server.codes
        seen[target] = (report.codes, report.judge.node_accepts, report.judge.node_reason)
    fits, over = seen[MAX_CA_NAMES_BYTES], seen[MAX_CA_NAMES_BYTES + 1]
    assert fits[:2] == ((), True), fits
    assert over[:2] == (("ca_names_too_large",), False), over
    # At the limit the extensions block overflows; further on, the names list itself.
    assert "tls_construct_extensions:internal error" in over[2], over
    # OpenSSL's thread id and source path are left out: the reason reads the same every run
    assert over[2].startswith("ERR_SSL_INTERNAL_ERROR in the TLS handshake: error:"), over
    assert ".c:" not in over[2], over
    assert not re.search(r"[0-9A-F]{16}:error", over[2]), over


def test_node_reason_leaves_out_the_thread_id_and_source_path() -> None:
    """Node quotes OpenSSL's error-queue line, whose first field is the thread's id (new every
    run) and whose last are OpenSSL's source file and line: the reason keeps the code, the
    library, the function and OpenSSL's reason (the newcomer's case 13 read differently on
    every run)."""
    raw = (
        "809C30ADC27F0000:error:0200008A:rsa routines:RSA_padding_check_PKCS1_type_1:"
        "invalid padding:../deps/openssl/openssl/crypto/rsa/rsa_pk1.c:75:"
    )
    verdict = node.NodeVerdict("s", False, "handshake", "ERR_SSL_INVALID_PADDING", raw)
    assert verdict.reason == (
        "ERR_SSL_INVALID_PADDING in the TLS handshake: error:0200008A:rsa routines:"
        "RSA_padding_check_PKCS1_type_1:invalid padding"
    )
    plain = node.NodeVerdict("s", False, "server", "CERT_HAS_EXPIRED", "certificate has expired")
    assert plain.reason.endswith(": certificate has expired")


def _counting_node(tmp_path: Path) -> tuple[Path, Path]:
    """A ``node`` on a PATH of its own that logs each start (its pid) and runs the real
    node: ``(bin folder, log)``."""
    assert NODE is not None
    folder = tmp_path / "nodebin"
    folder.mkdir()
    log = tmp_path / "node-starts"
    wrapper = folder / "node"
    wrapper.write_text(f'#!/bin/sh\necho $$ >> {log}\nexec {NODE} "$@"\n')
    wrapper.chmod(0o755)
    return folder, log


@needs_node
def test_validate_starts_node_once_before_its_imports(tmp_path: Path) -> None:
    """``harper-certd validate`` starts the judge before the CLI's imports and the judge
    takes that process: one Node start per run (a second would be the cold start), Node's
    verdict given; ``--node none`` starts none, and ``-h`` kills the one it started."""
    args = _set(tmp_path)
    folder, log = _counting_node(tmp_path)
    path = f"{folder}:{os.environ['PATH']}"
    text = _cli(args, path)
    assert text.returncode == 0, text.stdout + text.stderr
    assert "judged by Node v" in text.stdout
    assert f"{folder}/node, from PATH" in text.stdout
    assert len(log.read_text().split()) == 1
    log.unlink()
    off = _cli([*args, "--node", "none"], path)
    assert "judged by harper-certd's model" in off.stdout
    assert not log.exists()
    helped = _cli(["-h"], path)
    assert helped.returncode == 0
    pids = [int(p) for p in log.read_text().split()]
    assert len(pids) == 1
    assert not Path(f"/proc/{pids[0]}").exists()  # killed and reaped, not left behind


def _warm_process() -> warmstart.Child | None:
    return None if warmstart._warm is None else warmstart._warm[1]


def test_request_encoding_is_what_json_dumps_gives() -> None:
    """One encoder for the request sent before the imports and the judge's own: its bytes are
    ``json.dumps``'s for the documented shape (names quoted as JSON quotes them, bytes in
    base64), so Node reads what the judge meant and two equal requests are equal bytes."""
    sets = [
        (
            "set",
            b"\x00cert\xff",
            b"key",
            b"",
            ("nodea", 'we"ird\\', "b\u00fccher.example"),
            True,
            False,
        ),
        ("two", b"c", b"k", b"ca" * 100, (), False, True),
    ]
    expected = {
        "sets": [
            {
                "id": i,
                "cert": base64.b64encode(c).decode(),
                "key": base64.b64encode(k).decode(),
                "ca": base64.b64encode(a).decode(),
                "names": list(n),
                "server": srv,
                "client": cli,
            }
            for i, c, k, a, n, srv, cli in sets
        ]
    }
    assert warmstart.encode_request(sets) == json.dumps(expected).encode()


def test_validate_request_is_read_from_the_command_line_only_when_it_says_it_all(
    tmp_path: Path,
) -> None:
    """``prestart``'s reading of ``validate``'s arguments: the request the CLI will make, from
    options written out (both ``--opt value`` and ``--opt=value``), names in the CLI's order
    (hostnames, then URL hosts); None for anything argparse might read otherwise (an
    abbreviation, an unknown option, a missing value or file, a purpose it refuses)."""
    files = {}
    for name in ("cert", "key", "ca"):
        files[name] = tmp_path / name
        files[name].write_bytes(name.encode() * 3)
    base = [
        "validate",
        "--cert",
        str(files["cert"]),
        f"--key={files['key']}",
        "--ca",
        str(files["ca"]),
    ]
    got = warmstart._validate_request(
        [
            *base,
            "--url-host",
            "u",
            "--hostname",
            "h",
            "--json",
            "--at",
            "2026-01-01",
            "--purpose",
            "server",
            "--warn-days=5",
            "--replication",
        ]
    )
    assert got == warmstart.encode_request(
        [("set", b"certcertcert", b"keykeykey", b"cacaca", ("h", "u"), True, False)]
    )
    for bad in (
        [*base, "--ce", "x"],
        [*base, "--verbose"],
        [*base, "--hostname"],
        [*base, "--hostname", "--json"],
        [*base, "--purpose", "both"],
        [*base, "extra"],
        ["validate", "--cert", str(files["cert"]), "--key", str(files["key"])],
        [*base[:-1], str(tmp_path / "missing")],
    ):
        assert warmstart._validate_request(bad) is None, bad


@needs_node
def test_validate_request_sent_before_the_imports_is_used_only_for_the_same_bytes(
    tmp_path: Path,
) -> None:
    """``prestart`` sends Node ``validate``'s request at once; the judge takes that process
    when its own request is the same bytes (Node's verdict on it: a refusal of the names
    asked), and kills it and judges cold when a file changed in between (the verdict is then
    on the new bytes)."""
    root, other = devca.make_ca("sent root"), devca.make_ca("sent other")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    paths = devca.write_set(tmp_path, leaf, [root])
    assert paths.ca is not None
    args = [
        "validate",
        "--cert",
        str(paths.cert),
        "--key",
        str(paths.key),
        "--ca",
        str(paths.ca),
        "--hostname",
        "nodeb",
    ]
    judge.configure(node=None, jit=True)  # validate's choice
    try:
        for change in (False, True):
            warmstart.prestart(args)
            assert warmstart._warm is not None
            assert warmstart._warm[2] is not None
            warm = _warm_process()
            if change:
                paths.ca.write_bytes(other.cert_pem)
            pending = judge.start_files(
                paths.cert,
                paths.key,
                paths.ca,
                names=["nodeb"],
                server=True,
                client=True,
                limit=judge.EARLY_LIMIT,
            )
            assert pending.run is not None
            assert (pending.run._proc is warm) is not change
            _, info = judge.finish(pending, (), [leaf.cert, root.cert], dt.datetime.now(dt.UTC))
            assert info.kind == "node", info
            assert info.node_accepts is False
            if change:
                assert warm is not None
                assert warm.returncode is not None  # killed and reaped
                assert "UNABLE_TO_VERIFY_LEAF_SIGNATURE" in info.node_reason, info.node_reason
            else:
                assert "ERR_TLS_CERT_ALTNAME_INVALID" in info.node_reason, info.node_reason
    finally:
        warmstart._discard()
        judge.configure()


def test_status_names_its_own_judge_only_in_block_style() -> None:
    """``prestart``'s guess at the configuration a ``status`` reads: ``judge.node`` given a
    value (none, a path) under a top-level ``judge:`` line; any other shape is no (Node is
    then started, and killed if the configuration reads otherwise)."""
    said = {
        b"judge:\n  node: none\n": True,
        b"x: 1\njudge:   # the judge\n  # which node\n  node: '/opt/node/bin/node'\n": True,
        b"judge :\n    node:  none  # model\n": True,
        b"judge:\n  node: null\n": False,  # PATH's node
        b"judge:\n  node:\n": False,
        b"judge: {node: none}\n": False,  # flow style: not read
        b"judge:\nnode: none\n": False,  # a top-level key of its own
        b"other:\n  node: none\n": False,
        b"": False,
    }
    assert {text: warmstart._names_judge(text) for text in said} == said


def test_status_text_says_who_judged_the_live_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The text of ``status`` names the live set's judge under it, as ``validate`` does."""
    from harper_certd import cli
    from nodefix import make_node

    made = make_node(tmp_path / "node", method="none", extra={"judge": {"node": "none"}})
    args = ["status", "--no-probe", "--config", str(made.write_config())]
    try:
        assert cli.main(args) == 0
    finally:
        judge.configure()
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("live set: "))
    said = [line.strip() for line in lines[at + 1 : at + 4]]
    assert "judged by harper-certd's model of Node 20 (judge.node: none)" in said


@needs_node
def test_status_with_a_judge_of_its_own_starts_no_node(tmp_path: Path) -> None:
    """A status whose configuration says ``judge.node: none`` starts no Node process before
    its imports (it would be killed unused); one with the default judge does; an abbreviated
    ``--config`` cannot be read here and starts one."""
    from nodefix import make_node

    made = make_node(tmp_path / "node", method="none", extra={"judge": {"node": "none"}})
    own = made.write_config()
    default = make_node(tmp_path / "other", method="none").write_config()
    try:
        for args, started in (
            (["status", "--config", str(own)], False),
            (["status", f"--config={own}"], False),
            (["status", "--conf", str(own)], True),
            (["status", "--config", str(default)], True),
        ):
            warmstart.prestart(args)
            assert (warmstart._warm is not None) is started, args
            warmstart._discard()
    finally:
        warmstart._discard()


@needs_node
def test_status_takes_the_process_started_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status`` judges its live set with the process ``prestart`` started for it (PATH's
    node with the JIT, its request written once the configuration is read): taken, none
    left to kill at exit, and the status' judge line names that Node."""
    from harper_certd import cli
    from nodefix import make_node

    config = make_node(tmp_path / "node", method="none").write_config()
    args = ["status", "--no-probe", "--json", "--config", str(config)]
    warmstart.prestart(args)
    try:
        started = warmstart._warm
        assert started is not None
        assert NODE is not None
        assert started[0] == node.argv(NODE, jit=True)
        assert cli.main(args) == 0
        assert _warm_process() is None  # the status' judge took it
        live = json.loads(capsys.readouterr().out)["live"]
        assert live["judge"].startswith("judged by Node"), live["judge"]
        assert f"({NODE}, from PATH)" in live["judge"]
    finally:
        warmstart._discard()
        judge.configure()


@needs_node
def test_warm_start_is_taken_only_for_the_same_command(tmp_path: Path) -> None:
    """In process: the warm process is the judge's when the judge runs the same command (PATH's
    node, with the JIT as ``validate`` asks), and a run judges with it; another choice (the
    daemon's --jitless) leaves it to be killed at exit."""
    assert warmstart.wants_warm(["validate", "--cert", "c"])
    assert warmstart.wants_warm(["status", "--no-probe", "--node-ish"])  # status: any options
    for args in (["check"], ["validate", "--node", "none"], ["validate", "--nod=/x"], []):
        assert not warmstart.wants_warm(args), args
    assert warmstart.path_node() == NODE
    root = devca.make_ca("warm root")
    leaf = devca.make_leaf(root, "nodea", dns=["nodea"])
    warmstart.prestart(["validate"])
    try:
        warm = _warm_process()
        assert warm is not None
        judge.configure(node=None)  # the daemon's choice: --jitless, not the warm command
        cold = judge.start(
            leaf.cert_pem, leaf.key_pem, root.cert_pem, names=[], server=True, client=True
        )
        assert cold.run is not None
        assert cold.run._proc is not warm
        assert _warm_process() is warm
        _, cold_info = judge.finish(cold, (), [leaf.cert, root.cert], dt.datetime.now(dt.UTC))
        assert cold_info.kind == "node", cold_info
        judge.configure(node=None, jit=True)  # validate's choice
        pending = judge.start(
            leaf.cert_pem, leaf.key_pem, root.cert_pem, names=["nodea"], server=True, client=True
        )
        assert _warm_process() is None
        assert pending.run is not None
        assert pending.run._proc is warm
        _, info = judge.finish(pending, (), [leaf.cert, root.cert], dt.datetime.now(dt.UTC))
        assert info.kind == "node"
        assert info.node_accepts is True
        warmstart.prestart(["validate"])
        other = _warm_process()
        assert other is not None
        assert warmstart.take([sys.executable, "--jitless", warmstart.SCRIPT], b"") is None
        warmstart._discard()
        assert _warm_process() is None
        assert other.returncode is not None
    finally:
        warmstart._discard()
        judge.configure()


def _with_version(pem: bytes, value: int) -> bytes:
    """A key PEM whose DER has ``value`` as its (one-byte) version, the key unchanged."""
    lines = pem.splitlines()
    blob = bytearray(base64.b64decode(b"".join(lines[1:-1])))
    at = 2 + (blob[1] & 0x7F if blob[1] & 0x80 else 0)  # the outer SEQUENCE's header
    assert blob[at : at + 2] == b"\x02\x01"  # INTEGER, one byte
    blob[at + 2] = value
    body = base64.encodebytes(bytes(blob)).replace(b"\n", b"")
    return b"\n".join([lines[0], *(body[i : i + 64] for i in range(0, len(body), 64)), lines[-1]])


@needs_node
def test_key_versions_as_node_reads_them() -> None:
    """A key file's version field, every kind against Node itself (one batch): OpenSSL 3.0
    ignores it in PKCS#8 and SEC1 keys and refuses only 1 (multi-prime) in an RSA key, where
    cryptography loads only the standard values.  The model now reads it as Node does (the
    key-leak suite's flipped version bytes were accepted by Node and refused by the model)."""
    from cryptography.hazmat.primitives import serialization

    assert NODE is not None
    trad, pkcs8 = serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8
    root = devca.make_ca("version root")
    ec = devca.make_leaf(root, "nodea", dns=["nodea"])
    ed = devca.make_leaf(root, "nodea", dns=["nodea"], key=devca.make_key("ed25519"))
    rsa = devca.make_leaf(root, "nodea", dns=["nodea"], key=devca.make_key("rsa", 2048))
    kinds = {
        "sec1": (ec, devca.key_pem(ec.key, trad)),
        "ec-pkcs8": (ec, devca.key_pem(ec.key, pkcs8)),
        "ed25519-pkcs8": (ed, devca.key_pem(ed.key, pkcs8)),
        "rsa-pkcs8": (rsa, devca.key_pem(rsa.key, pkcs8)),
        "rsa-pkcs1": (rsa, devca.key_pem(rsa.key, trad)),
    }
    cases = {
        f"{kind}-{value:#x}": (leaf, _with_version(pem, value))
        for kind, (leaf, pem) in kinds.items()
        for value in (0, 1, 2, 0x5A, 0x80, 0xFF)
    }
    batch = node.judge_sets(
        NODE,
        [node.SetRequest(n, leaf.cert_pem, key, root.cert_pem) for n, (leaf, key) in cases.items()],
    )
    now = dt.datetime.now(dt.UTC)
    model = {
        n: validate(Inputs(leaf.cert_pem, key, root.cert_pem), at=now, judge=judge.MODEL).valid
        for n, (leaf, key) in cases.items()
    }
    nodes = {n: batch.verdicts[n].ok for n in cases}
    assert model == nodes
    assert sum(nodes.values()) == len(cases) - 1  # only rsa-pkcs1 at version 1 is refused
    assert nodes["rsa-pkcs1-0x1"] is False
