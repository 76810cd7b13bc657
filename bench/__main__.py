"""``python -m bench``: the benchmark suite in one command, a Markdown report with PNG plots.

``--quick`` (under 2 minutes: small sizes, few rounds, no real Harper) proves the suite
runs; the full run (11-12 minutes on a quiet 2-core machine) is the one to commit.
``--out DIR`` (default ``docs/bench/``) receives ``report.md`` and the plots.  Needs the
``bench`` extra (``pip install -e '.[bench]'``).  What is measured: ``bench/suite.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import report, suite

DEFAULT_OUT = suite.REPO / "docs" / "bench"


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run, under 2 minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where report.md goes")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where the nodes are made")
    args = parser.parse_args(argv)
    quick: bool = args.quick
    started = time.monotonic()
    results = report.Results(quick=quick, machine=suite.machine())
    with tempfile.TemporaryDirectory(prefix="certd-bench-", dir=args.tmp_dir) as tmp_name:
        tmp = Path(tmp_name)
        sizes = [1, 150] if quick else [1, 10, 150, 500, 1000]
        _say(f"validation vs CA-file size {sizes}")
        results.figures += suite.bench_ca_sizes(tmp, sizes, rounds=3 if quick else 7)
        if not quick:
            _say("1,000 RSA roots")
            results.rsa_thousand = suite.rsa_thousand_roots(tmp)
        _say("process wall time")
        results.figures += suite.bench_processes(tmp, rounds=3 if quick else 11, quick=quick)
        _say("the Node judge, in-process")
        results.figures += suite.bench_node_judge(tmp, rounds=3 if quick else 9)
        _say("install path")
        fig, results.install = suite.bench_install(tmp, samples=3 if quick else 31)
        results.figures.append(fig)
        kept = [300] if quick else [1000, 10000]
        _say(f"install vs history kept {kept}")
        results.figures += suite.bench_history(tmp, kept, rounds=3 if quick else 9)
        counts = [4] if quick else [4, 16]
        _say(f"drop -> installed vs sets managed {counts}")
        results.figures += suite.bench_sets(tmp, counts, rounds=2 if quick else 9, settle=0.1)
        idle = 3.0 if quick else 30.0
        _say(f"idle: {idle:g} s")
        results.idle = suite.bench_idle(tmp, idle)
        # 2,000: the second half is past the interpreter's one-off table growth (~840; suite)
        rotations = 30 if quick else 2000
        _say(f"soak: {rotations} rotations")
        results.soak = suite.bench_soak(tmp, rotations, settle=0.1, every=5 if quick else 50)
        if quick:
            results.harper_skipped = "quick mode"
        else:
            _say("real Harper")
            results.harper = suite.bench_real_harper(3, _say)
            if results.harper is None:
                results.harper_skipped = (
                    "harperdb 4.7.29 is not installed (tests/install-harper.sh)"
                )
    load1, load5, _ = os.getloadavg()
    results.machine["load average at end (1 / 5 min)"] = f"{load1:.2f} / {load5:.2f}"
    results.minutes = (time.monotonic() - started) / 60
    path = report.write(results, args.out)
    _say(f"report: {path} ({results.minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
