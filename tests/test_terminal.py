"""Terminal-safe text output (issue 17 item 4): a certificate whose names hold a newline and a
forged line, ESC sequences (clear screen, an OSC title), a C1 control and a right-to-left
override, shown by the real command line's text outputs (``validate``, ``check``,
``status``, ``fleet``) as subprocesses: the captured bytes hold none of those characters raw
and no forged line starts at column 0."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harper_certd import devca, textsafe
from nodefix import Node, make_node, run_cli

FORGED = "[OK] certd.set_installed fake"
# newline + forged line, CSI clear screen, OSC window title (BEL-ended), C1 CSI, RLO, isolate
# (50 bytes: a CN is at most 64)
HOSTILE = f"e\n{FORGED}\x1b[2J\x1b]0;pw\x07\x9b\u202e\u2066"
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f]")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    """A node whose live set's leaf CN and CA CN are hostile (real certificates)."""
    node = make_node(tmp_path_factory.mktemp("terminal"))
    ca = devca.make_ca(f"R{HOSTILE}")
    leaf = devca.make_leaf(ca, HOSTILE, dns=["nodea"], ips=["127.0.0.2"])
    devca.write_set(node.live.cert.parent, leaf, [ca])
    node.ca = ca
    return node


def _assert_safe(output: bytes, what: str) -> None:
    text = output.decode("utf-8")  # strict: the output is valid UTF-8 too
    assert RAW.search(text) is None, f"{what}: raw control or bidi character in {text!r}"
    for line in text.split("\n"):
        assert not line.startswith(FORGED), f"{what}: forged line at column 0: {line!r}"
    # The hostile name was shown, escaped (not dropped): the reader sees what is there.
    assert "\\x1b[2J" in text, f"{what}: the name is not shown escaped: {text!r}"
    assert "\\u202e" in text, what


def _run(*args: str) -> bytes:
    done = run_cli(*args)
    return (done.stdout + done.stderr).encode()


def test_validate_text_escapes_names(node: Node) -> None:
    out = _run(
        "validate",
        "--cert",
        str(node.live.cert),
        "--key",
        str(node.live.key),
        "--ca",
        str(node.ca_file),
    )
    _assert_safe(out, "validate")


def test_check_text_escapes_names(node: Node) -> None:
    _assert_safe(_run("check", "--harper-root", str(node.root)), "check")


def test_status_and_fleet_text_escape_names(node: Node, tmp_path: Path) -> None:
    config = str(node.write_config())
    _assert_safe(_run("status", "--no-probe", "--config", config), "status")
    done = run_cli("status", "--json", "--no-probe", "--config", config)
    data = json.loads(done.stdout)  # the JSON carries the name as it is (escaped by JSON)
    assert FORGED in data["live"]["subject"]
    (tmp_path / "a.json").write_text(done.stdout)
    _assert_safe(_run("fleet", str(tmp_path / "a.json")), "fleet")


def test_escape_rules() -> None:
    """Printable text (accents, CJK) is kept; each kind of hostile character is escaped."""
    assert textsafe.escape("Zoë 東京 node-a") == "Zoë 東京 node-a"
    assert textsafe.escape("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert textsafe.escape("\x1b[2J\x7f\x9b") == "\\x1b[2J\\x7f\\x9b"
    bidi = "\u202e\u2066\u200f\u2028\u200b"
    assert textsafe.escape(bidi) == "\\u202e\\u2066\\u200f\\u2028\\u200b"
    assert textsafe.escape("\U000e0041") == "\\U000e0041"  # a tag character (format)
    assert textsafe.lines("a\x1b\nb") == "a\\x1b\nb"
    assert textsafe.is_safe(textsafe.escape(HOSTILE))
    assert not textsafe.is_safe(HOSTILE)
