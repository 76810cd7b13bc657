"""The README stays true: its test command is CI's, and every page it points at exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if not line.startswith("#")]


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run's command line is the README's second command, to the letter."""
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == [_readme_commands()[1]]


def test_every_file_the_readme_links_exists() -> None:
    """Each relative link of the README names a file of the repository (the site's strict
    build checks the links inside docs/; the README is outside it)."""
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#]+)\)", text) if "://" not in t]
    assert len(targets) > 10
    assert [t for t in targets if not (ROOT / t).is_file()] == []


def test_the_readme_stays_short() -> None:
    """A README an operator reads to the end (issue 22: at most 300 lines); the rest is in
    docs/."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
