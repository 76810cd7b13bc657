"""Fuzz: the validator answers every hostile set with a report, promptly, as Node would.

2,000 seeded sets from ``fuzz_cases`` (byte flips, truncation, PEM damage, DER edits re-signed
so they reach the checks, undecodable names, duplicate/malformed extensions in CA entries,
unknown key algorithms, damaged RSA keys, unusable key types, floods) go through
``validate`` + ``Report.as_dict`` + ``json.dumps`` + ``render.report_lines``:

* nothing raises, and no report is the last-resort ``check_failed`` (a bug caught);
* each set takes at most ``TIME_LIMIT`` in process (the worst is printed);
* a Node 20 mutual-TLS handshake (``tests/node_handshake.js``) with the same files accepts
  a sample of valid verdicts, and refuses the sets refused with the codes that claim Node
  cannot use them (key_inconsistent, key_type_unusable, leaf_not_first, chain_too_large).

Counts by outcome and mutation kind are printed (run with ``-s``).  ``bench/fuzz_validate.py``
runs the same generator longer.
"""

from __future__ import annotations

import collections
import json
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

import fuzz_cases as fc
from harper_certd import judge as judging
from harper_certd import names, render
from harper_certd.problems import Severity
from harper_certd.validate import (
    MAX_CERT_LIST,
    Inputs,
    Report,
    certificate_message_size,
    summarize,
    validate,
)

SEED = 20261129
COUNT = 2000
TIME_LIMIT = 0.1  # seconds a set, in process (issue 10): the target, reported
# Asserted: generous, because 2 cores shared with other jobs make single timings jitter by
# 5-10x (a 5,000-SAN leaf: ~0.11 s alone, most of it load.py's eager parse, up to 0.6 s here).
# It still catches a quadratic path (load.py's many BEGIN lines: seconds).
TIME_BOUND = 1.5
NODE_SAMPLE = 30
NODE_SCRIPT = Path(__file__).with_name("node_handshake.js")
# Codes that say Node cannot use the set: Node must refuse those sets too.
NODE_REFUSES = ("key_inconsistent", "key_type_unusable", "leaf_not_first", "chain_too_large")
# PEM damage that OpenSSL's line-based reader refuses and load.py (h-pem's part) still
# accepts: left out of the Node comparison until h-pem's reader is merged (the lead removes
# this list then).
NEEDS_PEM_READER = ("pem_indent", "pem_cr_only", "pem_joined", "pem_no_newlines", "pem_flip")
# Families that must be present in the run, so that a generator change cannot hollow it out.
FAMILIES = (
    "pem_flip",
    "truncate",
    "der_flip",
    "pem_",
    "undecodable_name",
    "ca_entry_duplicate_unused",
    "ca_entry_malformed_unused",
    "unknown_spki",
    "unusable_key",
    "damaged_rsa",
    "flood",
    "leaf_last",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    case: fc.FuzzSet
    report: Report | None
    seconds: float
    error: str = ""

    @property
    def label(self) -> str:
        if self.report is None:
            return f"raised {self.error}"
        if self.report.valid:
            return "valid"
        return ",".join(
            sorted({p.code for p in self.report.problems if p.severity is Severity.ERROR})
        )


def judge(case: fc.FuzzSet) -> Outcome:
    t0 = time.perf_counter()
    try:
        report = validate(Inputs(case.cert, case.key, case.ca), at=fc.NOW, judge=judging.MODEL)
        json.dumps(report.as_dict())
        render.report_lines(report)
    except Exception as exc:  # the property under test: nothing may raise
        return Outcome(case, None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
    return Outcome(case, report, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    bases = fc.make_bases()
    results = [judge(case) for case in fc.cases(SEED, COUNT, bases)]
    by_label = collections.Counter(o.label for o in results)
    by_kind = collections.Counter(o.case.kind.split("_")[0] for o in results)
    worst = sorted(results, key=lambda o: o.seconds, reverse=True)[:5]
    print(f"\nfuzz: {len(results)} sets, seed {SEED}")
    for label, count in by_label.most_common():
        print(f"  {count:5d}  {label}")
    print("  by kind: " + ", ".join(f"{k} {c}" for k, c in sorted(by_kind.items())))
    print("  worst: " + ", ".join(f"{o.case.kind} {o.seconds * 1000:.1f} ms" for o in worst))
    return results


def test_every_family_is_exercised(outcomes: list[Outcome]) -> None:
    kinds = {o.case.kind for o in outcomes}
    assert len(outcomes) >= 2000
    for family in FAMILIES:
        assert any(k.startswith(family) for k in kinds), family


def test_nothing_raises(outcomes: list[Outcome]) -> None:
    """validate, as_dict, json.dumps and render never raise; no report is check_failed."""
    raised = [(o.case.kind, o.error) for o in outcomes if o.report is None]
    assert raised == []
    caught = [o.case.kind for o in outcomes if o.report and "check_failed" in o.report.codes]
    assert caught == []


def test_each_set_is_judged_promptly(outcomes: list[Outcome]) -> None:
    worst = max(outcomes, key=lambda o: o.seconds)
    print(f"\nworst: {worst.case.kind} {worst.seconds * 1000:.1f} ms")
    over = [(o.case.kind, round(o.seconds, 3)) for o in outcomes if o.seconds > TIME_LIMIT]
    print(f"over the {TIME_LIMIT} s target: {over}")
    slow = [(o.case.kind, round(o.seconds, 3)) for o in outcomes if o.seconds > TIME_BOUND]
    assert slow == []


def test_hostile_kinds_get_their_codes(outcomes: list[Outcome]) -> None:
    """The re-signed DER edits reach the checks and get the code of their kind."""
    for o in outcomes:
        assert o.report is not None
        codes = set(o.report.codes)
        if o.case.kind == "unknown_spki_leaf":
            # OpenSSL decodes every certificate's public key when Node loads `cert`
            # (ERR_OSSL_EVP_DECODE_ERROR, measured): the file cannot be loaded at all.
            assert codes & {"cert_unreadable"}, (o.case.kind, codes)
        if o.case.kind.startswith("unusable_key"):
            assert codes & {"key_type_unusable"}, (o.case.kind, codes)
        if o.case.kind.startswith("ca_entry_") and o.case.kind.endswith("_unused"):
            # OpenSSL decodes a CA-file entry's extensions only when it uses it; entries not
            # named like an issuer of the chain are not parsed at all (a 1,000-root CA file
            # would spend most of its validation there): valid, without a word about them.
            assert o.report.valid, (o.case.kind, o.report.problems)
        if o.case.kind == "leaf_last":
            assert codes == {"leaf_not_first"}, codes
        if o.case.kind.startswith("undecodable_name"):
            # OpenSSL refuses these names when it loads the certificate (measured: Node
            # says ERR_OSSL_ASN1_INVALID_UTF8STRING / BMPSTRING_IS_WRONG_LENGTH).
            assert codes == {"cert_unreadable"}, codes


def test_names_render_whatever_they_hold() -> None:
    """safe_name renders an undecodable subject instead of raising (rfc4514_string raises)."""
    base = fc.make_bases()[0]
    cert = x509.load_der_x509_certificate(fc.undecodable_name_leaf(base, "utf8"))
    with pytest.raises(ValueError, match="parsing asn1"):
        cert.subject.rfc4514_string()
    assert names.safe_name(lambda: cert.subject) == "(undecodable name)"
    assert summarize(cert).subject == "(undecodable name)"


def _node_verdicts(sample: list[Outcome], folder: Path) -> dict[str, dict[str, object]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    sets = []
    for index, o in enumerate(sample):
        paths = {}
        for role in ("cert", "key", "ca"):
            path = folder / f"{index}.{role}.pem"
            path.write_bytes(getattr(o.case, role))
            paths[role] = str(path)
        sets.append({"id": str(index), **paths})
    done = subprocess.run(
        [node, str(NODE_SCRIPT)],
        input=json.dumps(sets),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return {str(line["id"]): line for line in lines}


def test_node_agrees(outcomes: list[Outcome], tmp_path: Path) -> None:
    """Node accepts a sample of valid verdicts and refuses the sets we say it cannot use."""
    rng = random.Random(SEED)
    valid = [
        o
        for o in outcomes
        if o.report is not None and o.report.valid and not o.case.kind.startswith(NEEDS_PEM_READER)
    ]
    # Every valid hostile kind once, then random valid sets up to the sample size.
    firsts: dict[str, Outcome] = {}
    for o in valid:
        firsts.setdefault(o.case.kind, o)
    sample = list(firsts.values())
    sample += rng.sample(valid, min(len(valid), max(0, NODE_SAMPLE - len(sample))))
    refused = [
        o
        for o in outcomes
        if o.report is not None
        and (set(o.report.codes) & set(NODE_REFUSES) or o.case.kind.startswith("undecodable"))
    ]
    # One refused set per code first, then random ones.
    by_code: dict[str, Outcome] = {}
    for o in refused:
        assert o.report is not None
        for code in set(o.report.codes) & set(NODE_REFUSES) or {o.case.kind}:
            by_code.setdefault(code, o)
    refused_sample = list({id(o): o for o in by_code.values()}.values())
    refused_sample += rng.sample(refused, max(0, min(len(refused), 20 - len(refused_sample))))
    verdicts = _node_verdicts(sample + refused_sample, tmp_path)
    disagree = []
    for index, o in enumerate(sample + refused_sample):
        node = verdicts[str(index)]
        ours = o.report is not None and o.report.valid
        if bool(node["ok"]) != ours:
            assert o.report is not None
            disagree.append((o.case.kind, o.report.codes, node["error"]))
    refused_codes = collections.Counter(
        c for o in refused_sample if o.report for c in set(o.report.codes) & set(NODE_REFUSES)
    )
    print(
        f"\nnode: {len(sample)} valid and {len(refused_sample)} refused sets "
        f"({dict(refused_codes)}), agree on {len(sample) + len(refused_sample) - len(disagree)}"
    )
    assert len(sample) >= NODE_SAMPLE
    assert disagree == []


def test_certificate_message_limit_is_nodes(tmp_path: Path) -> None:
    """chain_too_large starts exactly where Node 20 starts refusing (102,400-byte message)."""
    base = fc.make_bases()[0]
    below = above = None
    for count in range(5100, 5200):
        der = fc.many_san_leaf(base, count)
        size = certificate_message_size([x509.load_der_x509_certificate(der), base.inter.cert])
        if size <= MAX_CERT_LIST:
            below = (size, der)
        elif above is None:
            above = (size, der)
    assert below is not None
    assert above is not None
    sets = []
    for size, der in (below, above):
        files = base.files()
        case = fc.FuzzSet(f"sans_{size}", fc.pem(der) + base.inter.cert_pem, files.key, files.ca)
        report = validate(Inputs(case.cert, case.key, case.ca), at=fc.NOW, judge=judging.MODEL)
        assert ("chain_too_large" in report.codes) is (size > MAX_CERT_LIST), report.codes
        sets.append(Outcome(case, report, 0.0))
    verdicts = _node_verdicts(sets, tmp_path)
    print(f"\nnode: {below[0]} bytes {verdicts['0']}, {above[0]} bytes {verdicts['1']}")
    assert verdicts["0"]["ok"] is True
    assert verdicts["1"]["ok"] is False
    assert "EXCESSIVE_MESSAGE_SIZE" in str(verdicts["1"]["error"])


# Refusals that are ours, not Node's: the policy codes (README), Harper's own replication rule,
# and load.py's (h-pem's part) known differences, each measured with tests/node_handshake.js.
NOT_NODE_REFUSALS = frozenset(
    {"weak_key", "weak_signature", "leaf_is_ca", "eku_any", "key_usage_invalid"}
    | {"ca_file_issuer_not_first"}
)
# The lenient-DER policy (docs/judge.md): a certificate OpenSSL's lenient parser reads but a
# strict one does not, refused with these words (tests/test_node_differential.py's POLICY).
LENIENT_DER = "harper-certd can read"
LOAD_DIFFERENCES = {
    "leaf_duplicate_extension": "load.py parses a leaf's extensions eagerly and refuses two "
    "unknown extensions of one OID; OpenSSL, so Node, accepts the certificate",
}


def test_node_refuses_what_we_refuse(outcomes: list[Outcome], tmp_path: Path) -> None:
    """A sample of 80 sets refused for reasons other than policy: Node refuses them too."""
    refused = [
        o
        for o in outcomes
        if o.report is not None
        and not o.report.valid
        and not o.case.kind.startswith(NEEDS_PEM_READER)
        and o.case.kind not in LOAD_DIFFERENCES
        and not {p.code for p in o.report.problems if p.severity is Severity.ERROR}
        & NOT_NODE_REFUSALS
        and not any(LENIENT_DER in p.message for p in o.report.problems)
    ]
    sample = random.Random(SEED + 1).sample(refused, min(80, len(refused)))
    verdicts = _node_verdicts(sample, tmp_path)
    accepted = [
        (o.case.kind, o.report.codes if o.report else ())
        for index, o in enumerate(sample)
        if verdicts[str(index)]["ok"]
    ]
    print(f"\nnode: {len(sample)} refused sets, Node accepted {len(accepted)}: {accepted}")
    assert len(sample) == 80
    assert accepted == []
