"""A longer fuzz of the validator: ``python -m bench.fuzz_validate N [SEED]``.

Runs N seeded hostile sets from ``tests/fuzz_cases.py`` through ``validate`` +
``Report.as_dict`` + ``json.dumps`` + ``render.report_lines`` in process and prints the counts
by outcome (valid, the error-code set, raised, check_failed), the counts by mutation kind and
the worst times.  Reports only; exits 1 when anything raised or a report is ``check_failed``.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import fuzz_cases as fc  # noqa: E402 - needs the tests folder on sys.path
from harper_certd import render  # noqa: E402 - after the path set-up, as above
from harper_certd.problems import Severity  # noqa: E402 - as above
from harper_certd.validate import Inputs, validate  # noqa: E402 - as above


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 10_000
    seed = int(argv[1]) if len(argv) > 1 else 1
    bases = fc.make_bases()
    outcomes: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    times: list[tuple[float, str]] = []
    bad = 0
    started = time.perf_counter()
    for case in fc.cases(seed, count, bases):
        kinds[case.kind] += 1
        t0 = time.perf_counter()
        try:
            report = validate(Inputs(case.cert, case.key, case.ca), at=fc.NOW)
            json.dumps(report.as_dict())
            render.report_lines(report)
        except Exception as exc:  # counted, the point of the run
            outcomes[f"RAISED {type(exc).__name__}"] += 1
            bad += 1
            continue
        times.append((time.perf_counter() - t0, case.kind))
        if "check_failed" in report.codes:
            bad += 1
        errors = sorted({p.code for p in report.problems if p.severity is Severity.ERROR})
        outcomes["valid" if report.valid else ",".join(errors)] += 1
    total = time.perf_counter() - started
    times.sort(reverse=True)
    print(f"fuzz_validate: {count} sets, seed {seed}, {total:.1f} s (generation included)")
    print("outcomes:")
    for label, n in outcomes.most_common():
        print(f"  {n:6d}  {label}")
    print("kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    print("worst: " + ", ".join(f"{kind} {s * 1000:.1f} ms" for s, kind in times[:10]))
    median = times[len(times) // 2][0] if times else 0.0
    print(f"median {median * 1000:.2f} ms; over 0.1 s: {sum(s > 0.1 for s, _ in times)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
