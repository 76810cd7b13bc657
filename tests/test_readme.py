"""The README stays true: its test command is CI's, and every problem code is documented."""

from __future__ import annotations

import re
from pathlib import Path

from harper_certd.problems import CODES

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


def test_every_code_is_documented() -> None:
    """Each code of the catalogue has a row in the README's table."""
    text = (ROOT / "README.md").read_text()
    missing = [code for code in CODES if f"| `{code}` |" not in text]
    assert missing == []


def test_every_log_event_is_documented() -> None:
    """Each event of the log catalogue has a row in the README, with its level."""
    from harper_certd.logs import EVENTS

    text = (ROOT / "README.md").read_text()
    missing = [name for name, (level, _) in EVENTS.items() if f"| `{name}` | {level} |" not in text]
    assert missing == []
