"""The generated reference pages and the man page are up to date, and say what the code says.

``tools/gendocs.py --check`` regenerates every page in memory and compares; the catalogue
checks below read the committed pages, so they fail with the missing name even when the
generator itself is what went wrong.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harper_certd import events
from harper_certd.cli import build_parser
from harper_certd.problems import CODES

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"


def test_generated_pages_are_up_to_date() -> None:
    """gendocs --check exits 0: nobody changed a catalogue without regenerating."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gendocs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_every_code_is_documented() -> None:
    """Each code of the catalogue has a row with its severity on the problem-codes page, and
    every longer note belongs to a code that exists."""
    text = html.unescape((REFERENCE / "problem-codes.md").read_text()).replace("\\|", "|")
    missing = [
        c for c, (sev, meaning) in CODES.items() if f"| `{c}` | {sev} | {meaning}" not in text
    ]
    assert missing == []
    details = yaml.safe_load((ROOT / "tools" / "problem_details.yaml").read_text())
    assert set(details) <= set(CODES)
    for code in details:
        assert f"### {code}\n" in text


def test_every_log_event_is_documented() -> None:
    """Each event of the log catalogue has a row and a section with its level and meaning on
    the events page, naming its keys."""
    text = html.unescape((REFERENCE / "events.md").read_text()).replace("\\|", "|")
    missing = [
        name
        for name, (level, meaning) in events.EVENTS.items()
        if f"| {level} | {meaning} |" not in text
        or f"### {name}\n\n**{level}**: {meaning}\n" not in text
    ]
    assert missing == []
    for entry in events.catalogue():
        for key, _ in entry.keys:
            assert f"- `{key}`:" in text, (entry.name, key)


def test_every_configuration_key_is_documented() -> None:
    """Each key of config.example.yaml (dotted) has a row on the configuration page."""
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    text = (REFERENCE / "configuration.md").read_text()
    keys = [
        f"{top}.{sub}" if isinstance(value, dict) else top
        for top, value in example.items()
        for sub in (value if isinstance(value, dict) else [None])
    ]
    assert len(keys) > 50
    assert [k for k in keys if f"| `{k}` |" not in text] == []


def test_the_man_page_names_every_command_and_option() -> None:
    """man/harper-certd.1 covers the whole parser, and man(1) renders it without a warning."""
    text = (ROOT / "man" / "harper-certd.1").read_text()
    assert text.startswith(".TH HARPER\\-CERTD ")
    subparsers = build_parser()._subparsers
    assert subparsers is not None
    for action in subparsers._group_actions:
        for name, sub in action.choices.items():  # type: ignore[union-attr]
            assert f"harper\\-certd {name}" in text, name
            for opt in (o for a in sub._actions for o in a.option_strings):
                if opt in ("-h", "--help"):
                    continue
                assert opt.replace("-", "\\-") in text, (name, opt)
    assert ".SH EXIT STATUS" in text
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed")
    done = subprocess.run(
        [man, "--warnings", "-l", str(ROOT / "man" / "harper-certd.1")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin", "MANPAGER": "cat"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "EXIT STATUS" in done.stdout
