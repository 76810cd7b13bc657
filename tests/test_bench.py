"""`python -m bench --quick` still runs and writes a well-formed report with its plots.

Benchmarks are ratios measured side by side by the suite itself; nothing here looks at a
time.  This proves the suite runs (as CI runs it) and that its report holds what it says.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = (
    "## Machine and versions",
    "## Validation vs CA-file size",
    "## Validation against a minimal cryptography script",
    "## Process wall time",
    "## Install path",
    "## Install cost vs history kept",
    "## Drop -> installed vs number of sets",
    "## Soak: RSS, fds and drop -> installed over rotations",
    "## Real Harper: hot reload vs restart",
    "## Three-node rotation timeline",
)


def test_quick_bench_writes_its_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    # A timeline as the rotation test writes it, with its own heading: said once.
    (out / "rotation-timeline.md").write_text(f"{SECTIONS[-1]}\n\nWhole rotation: 1.0 s.\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--tmp-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    text = (out / "report.md").read_text()
    positions = [text.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s in SECTIONS if s not in text]
    assert positions == sorted(positions)
    assert all(text.count(s) == 1 for s in SECTIONS), [s for s in SECTIONS if text.count(s) > 1]
    assert "Whole rotation: 1.0 s." in text
    for key in (
        "CPU",
        "cores",
        "Python",
        "OpenSSL (command)",
        "cryptography",
        "Node",
        "Harper",
        "git commit",
        "date (UTC)",
    ):
        assert re.search(rf"^\| {re.escape(key)} \| \S", text, re.MULTILINE), key
    assert "Skipped: quick mode." in text  # the real-Harper part is not run in --quick
    # every figure row: min / median / max of ratios, each a number
    rows = re.findall(r"\| ([\d,.]+)x / \*\*([\d,.]+)x\*\* / ([\d,.]+)x ", text)
    assert len(rows) >= 7, text
    for lo, mid, hi in rows:
        low, median, high = (float(v.replace(",", "")) for v in (lo, mid, hi))
        assert 0 < low <= median <= high
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(plots) >= 3
    for name in plots:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 5000, name  # drawn, not an empty canvas
