"""The README's install: a venv under /opt/harper-certd (here: a temporary prefix), the unit's
ExecStart layout (<venv>/bin/harper-certd), and the commands the operator path uses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "harper-certd.service"


def test_readme_and_unit_agree_on_the_venv() -> None:
    readme = (ROOT / "README.md").read_text()
    assert (
        "sudo python3 -m venv /opt/harper-certd && sudo /opt/harper-certd/bin/pip install" in readme
    )
    exec_start = re.search(r"^ExecStart=(\S+) run ", UNIT.read_text(), re.MULTILINE)
    assert exec_start is not None
    assert exec_start[1] == "/opt/harper-certd/bin/harper-certd"


@pytest.mark.slow
def test_a_fresh_venv_install_runs_the_commands(tmp_path: Path) -> None:
    """`python3 -m venv PREFIX && PREFIX/bin/pip install .` from this checkout, then the
    installed entry point (what ExecStart runs) answers. About 20 s here."""
    prefix = tmp_path / "opt" / "harper-certd"
    made = subprocess.run(
        [sys.executable, "-m", "venv", str(prefix)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if made.returncode != 0:
        pytest.skip(f"no venv here: {made.stderr.strip()[-200:]}")
    pip = subprocess.run(
        [str(prefix / "bin" / "pip"), "install", "-q", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if pip.returncode != 0 and "No matching distribution" in pip.stderr:
        pytest.skip(f"no package index reachable: {pip.stderr.strip()[-200:]}")
    assert pip.returncode == 0, pip.stderr[-2000:]
    exe = prefix / "bin" / "harper-certd"
    version = subprocess.run(
        [str(exe), "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert version.returncode == 0
    assert version.stdout.startswith("harper-certd ")
    for command in ("run", "stage", "release", "status", "fleet", "check"):
        shown = subprocess.run(
            [str(exe), command, "--help"], capture_output=True, text=True, check=False, timeout=60
        )
        assert shown.returncode == 0, (command, shown.stderr)
    imports = subprocess.run(
        [str(prefix / "bin" / "python"), "-c", "import prometheus_client, harper_certd.metrics"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert imports.returncode == 0, imports.stderr
    # `man harper-certd`: the page generated from the parser is installed with the package
    page = prefix / "share" / "man" / "man1" / "harper-certd.1"
    assert page.read_text() == (ROOT / "man" / "harper-certd.1").read_text()
    if shutil.which("man"):
        # man-db maps <prefix>/bin on PATH to <prefix>/share/man: found with the venv on PATH
        found = subprocess.run(
            ["man", "-w", "harper-certd"],
            env={"PATH": f"{prefix / 'bin'}:/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert found.stdout.strip() == str(page), found.stderr
