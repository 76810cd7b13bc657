"""Runs x509-limbo cases through harper-certd's validator (data read from ../shared/limbo)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harper_certd import judge
from harper_certd.roles import Purpose
from harper_certd.validate import Inputs, validate

LIMBO_DIR = Path(__file__).resolve().parents[2] / "shared" / "limbo"
LIMBO_FILE = LIMBO_DIR / "limbo-subset.json"


@dataclass(frozen=True, slots=True)
class Outcome:
    id: str
    status: str  # pass, fail, skip
    expected: str
    actual: str | None
    seconds: float
    features: tuple[str, ...]
    codes: tuple[str, ...]


def load_cases(path: Path = LIMBO_FILE) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    cases: list[dict[str, Any]] = data["testcases"]
    return cases


def not_applicable(tc: dict[str, Any]) -> str | None:
    """Why a case cannot be asked of the validator (same rules as the shared harness)."""
    if tc.get("crls"):
        return "needs CRLs"
    if tc.get("signature_algorithms"):
        return "constrains signature algorithms"
    eku = tc.get("extended_key_usage") or []
    if tc["validation_kind"] == "SERVER":
        if eku not in ([], ["serverAuth"]):
            return f"EKU constraint {eku}"
        peer = tc.get("expected_peer_name")
        if peer is None:
            return "SERVER case without a peer name"
        if peer["kind"] not in ("DNS", "IP"):
            return f"peer name of kind {peer['kind']}"
    elif eku not in ([], ["clientAuth"]):
        return f"EKU constraint {eku}"
    return None


def run_case(tc: dict[str, Any], now: dt.datetime) -> Outcome:
    features = tuple(tc.get("features") or ())
    why = not_applicable(tc)
    if why is not None:
        return Outcome(tc["id"], "skip", tc["expected_result"], None, 0.0, features, ())
    server = tc["validation_kind"] == "SERVER"
    if server:
        hostnames = [tc["expected_peer_name"]["value"]]
    else:
        hostnames = [
            p["value"] for p in tc.get("expected_peer_names") or [] if p["kind"] in ("DNS", "IP")
        ]
    when = tc.get("validation_time")
    at = dt.datetime.fromisoformat(when.replace("Z", "+00:00")) if when else now
    cert = (tc["peer_certificate"] + "".join(tc["untrusted_intermediates"])).encode()
    key = tc.get("peer_certificate_key")
    inputs = Inputs(
        cert=cert,
        key=key.encode() if key else None,
        ca="".join(tc["trusted_certs"]).encode(),
    )
    started = time.perf_counter()
    report = validate(
        inputs,
        at=at,
        purpose=Purpose.SERVER if server else Purpose.CLIENT,
        hostnames=hostnames,
        max_chain_depth=tc.get("max_chain_depth"),
        judge=judge.MODEL,  # the model's agreement with limbo; Node's is test_judge_limbo
    )
    seconds = time.perf_counter() - started
    actual = "SUCCESS" if report.valid else "FAILURE"
    status = "pass" if actual == tc["expected_result"] else "fail"
    codes = tuple(p.code for p in report.problems if p.severity.value == "error")
    return Outcome(tc["id"], status, tc["expected_result"], actual, seconds, features, codes)


def run_all(cases: list[dict[str, Any]]) -> list[Outcome]:
    now = dt.datetime.now(dt.UTC)
    return [run_case(tc, now) for tc in cases]


def by_feature(outcomes: list[Outcome]) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in outcomes:
        for feature in outcome.features or ("(none)",):
            table[feature][outcome.status] += 1
    return dict(table)


def format_report(outcomes: list[Outcome]) -> str:
    evaluated = [o for o in outcomes if o.status != "skip"]
    agree = sum(o.status == "pass" for o in evaluated)
    lines = [f"limbo: {agree}/{len(evaluated)} agree, {len(outcomes) - len(evaluated)} skipped"]
    lines.append(f"slowest case: {max(o.seconds for o in evaluated):.3f}s")
    for feature, counts in sorted(by_feature(outcomes).items()):
        lines.append(
            f"  {feature:<40} pass {counts['pass']:>3} fail {counts['fail']:>3}"
            f" skip {counts['skip']:>3}"
        )
    lines.extend(
        f"  DISAGREE {o.id}: expected {o.expected}, got {o.actual} {list(o.codes)}"
        for o in evaluated
        if o.status == "fail"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_report(run_all(load_cases())))
