"""harper_certd.logs: the event catalogue, journald JSON lines, the console, redaction."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import structlog
import trustme
from structlog.testing import capture_logs

from harper_certd import logs

# The tests of the logging machinery (rendering, levels, redaction) log names outside the
# catalogue (``test.*``): a catalogued name must carry exactly its record's keys
# (``logs._as_record``; test_events.py), which these tests do not care about.

REQUIRED_EVENTS = (
    "certd.started",
    "certd.stopping",
    "certd.stopped",
    "certd.config_reloaded",
    "certd.config_refused",
    "certd.set_detected",
    "certd.set_refused",
    "certd.set_installed",
    "certd.swap_recovered",
    "certd.live_changed",
    "certd.live_invalid",
    "certd.live_restored",
    "certd.expiry_warning",
    "certd.expired",
    "certd.renewal_started",
    "certd.renewal_succeeded",
    "certd.renewal_failed",
    "certd.harper_restarted",
    "certd.served_verified",
    "certd.verify_failed",
    "certd.rolled_back",
    "certd.rollback_failed",
    "certd.restart_held",
    "certd.rescan",
    "certd.watch_lost",
    "certd.cycle_failed",
    "certd.generation_pruned",
    "certd.harper_discovered",
    "certd.summary",
)

LINE = re.compile(r"<(\d)>(\{.*\})")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="module")
def key_pem() -> str:
    text: str = trustme.CA().private_key_pem.bytes().decode()
    assert "PRIVATE KEY-----" in text
    return text


def _parse(line: str) -> tuple[int, dict[str, Any]]:
    match = LINE.fullmatch(line)
    assert match, f"not a <N>{{json}} line: {line!r}"
    entry: dict[str, Any] = json.loads(match[2])
    return int(match[1]), entry


def _journal(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Each line of *path* as (priority, JSON object); fails on any other line."""
    return [_parse(line) for line in path.read_text().splitlines()]


def _raise(exc: Exception) -> NoReturn:
    raise exc


def test_catalogue_names_levels_and_descriptions() -> None:
    """Every event is certd.<snake_case>, has a structlog level and a one-line sentence."""
    for name, (level, description) in logs.EVENTS.items():
        assert re.fullmatch(r"certd\.[a-z]+(_[a-z]+)*", name), name
        assert level in {"debug", "info", "warning", "error", "critical"}, name
        assert level in logs.LEVELS, name
        assert description.strip() == description, name
        assert "\n" not in description, name
        assert description[:1].isupper(), name
        assert description.endswith("."), name


def test_catalogue_holds_the_required_events() -> None:
    """The events the daemon's design relies on are all in the catalogue."""
    assert [name for name in REQUIRED_EVENTS if name not in logs.EVENTS] == []


def test_check_event_accepts_catalogue_names_only() -> None:
    """check_event passes every documented name and raises ValueError for any other."""
    for name in logs.EVENTS:
        logs.check_event(name)
    for bad in ("certd.nope", "started", "certd.Started", ""):
        with pytest.raises(ValueError, match="not a documented event"):
            logs.check_event(bad)


def test_json_lines_carry_the_sd_daemon_priority(tmp_path: Path) -> None:
    """Each level is one JSON line prefixed <7>, <6>, <4>, <3>, <2>; ts is ISO UTC."""
    out = tmp_path / "journal"
    before = dt.datetime.now(dt.UTC)
    with out.open("w") as stream:
        logs.configure(json=True, stream=stream, level="debug")
        log = logs.get_logger()
        log.debug("test.rescan", watched=3)
        log.info("test.started", version="0.1.0")
        log.warning("test.watch_lost", path="/home/harperdb/hdb/keys")
        log.warn("test.restart_held", reason="hold file")
        log.error("test.verify_failed", port=9933)
        log.critical("test.rollback_failed", generation=7)
    after = dt.datetime.now(dt.UTC)

    entries = _journal(out)
    assert [(prio, e["level"], e["event"]) for prio, e in entries] == [
        (7, "debug", "test.rescan"),
        (6, "info", "test.started"),
        (4, "warning", "test.watch_lost"),
        (4, "warning", "test.restart_held"),
        (3, "error", "test.verify_failed"),
        (2, "critical", "test.rollback_failed"),
    ]
    assert entries[2][1] == {
        "ts": entries[2][1]["ts"],
        "level": "warning",
        "event": "test.watch_lost",
        "path": "/home/harperdb/hdb/keys",
    }
    assert list(entries[4][1]) == ["ts", "level", "event", "port"]
    for _prio, entry in entries:
        assert entry["ts"].endswith("Z")
        ts = dt.datetime.fromisoformat(entry["ts"])
        assert before <= ts <= after


def test_json_is_chosen_when_the_stream_is_not_a_terminal(tmp_path: Path) -> None:
    """json=None on a regular file (as under systemd) gives JSON lines."""
    out = tmp_path / "journal"
    with out.open("w") as stream:
        logs.configure(stream=stream)
        logs.get_logger().info("test.summary", sets=2)
    [(prio, entry)] = _journal(out)
    assert (prio, entry["event"], entry["sets"]) == (6, "test.summary", 2)


def test_stdout_of_a_service_process_gets_json_lines() -> None:
    """A real process whose stdout is a pipe writes <N>JSON lines to sys.stdout by default."""
    code = (
        "from harper_certd import logs\n"
        "logs.configure()\n"
        "logs.get_logger().info('test.started', version='x')\n"
        "logs.get_logger().debug('test.rescan')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stderr == ""
    [line] = proc.stdout.splitlines()
    prio, entry = _parse(line)
    assert (prio, entry["event"], entry["version"]) == (6, "test.started", "x")


def _read_tty(master: int) -> str:
    chunks = []
    while select.select([master], [], [], 0.5)[0]:
        chunk = os.read(master, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_console_renderer_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """json=None on a real TTY gives structlog's coloured console lines, not JSON."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=True) as stream:
            assert stream.isatty()
            logs.configure(stream=stream)
            logs.get_logger().info("test.set_installed", set="tls", generation=4)
            raw = _read_tty(master)
    finally:
        os.close(master)
    assert "\x1b[" in raw
    text = ANSI.sub("", raw)
    [line] = text.splitlines()
    assert not line.startswith("<")
    assert "[info" in line
    assert "test.set_installed" in line
    assert "generation=4" in line
    assert "set=tls" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_json_can_be_forced_on_a_terminal_and_console_off_one(tmp_path: Path) -> None:
    """json=True / json=False override the terminal test both ways."""
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=True) as stream:
            logs.configure(json=True, stream=stream)
            logs.get_logger().info("test.stopped")
            raw = _read_tty(master)
    finally:
        os.close(master)
    assert raw.startswith('<6>{"ts": ')

    out = tmp_path / "console"
    with out.open("w") as stream:
        logs.configure(json=False, stream=stream)
        logs.get_logger().info("test.stopped")
    assert "test.stopped" in out.read_text()
    assert not out.read_text().startswith("<")
    assert "\x1b[" not in out.read_text()


def test_no_color_is_honoured_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR set: the console renderer on a TTY writes no ANSI escapes."""
    monkeypatch.setenv("NO_COLOR", "1")
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=True) as stream:
            logs.configure(stream=stream)
            logs.get_logger().info("test.stopped")
            raw = _read_tty(master)
    finally:
        os.close(master)
    assert "test.stopped" in raw
    assert "\x1b[" not in raw


def test_level_filter(tmp_path: Path) -> None:
    """Events below the configured level are dropped; the level name is case-insensitive."""
    out = tmp_path / "journal"
    with out.open("w") as stream:
        logs.configure(json=True, stream=stream, level="WARNING")
        log = logs.get_logger()
        log.debug("test.rescan")
        log.info("test.summary")
        log.warning("test.expiry_warning", days=9)
        log.error("test.renewal_failed")
    assert [e["event"] for _p, e in _journal(out)] == [
        "test.expiry_warning",
        "test.renewal_failed",
    ]


def test_unknown_level_is_refused() -> None:
    """configure() names the valid levels when given another."""
    with pytest.raises(ValueError, match="debug, info, warning, error, critical"):
        logs.configure(level="verbose")


def test_private_keys_never_reach_the_output(tmp_path: Path, key_pem: str) -> None:
    """A key in a value, in bytes, nested, inside an object or a traceback is redacted."""
    out = tmp_path / "journal"
    with out.open("w") as stream:
        logs.configure(json=True, stream=stream)
        log = logs.get_logger()
        log.error(
            "test.set_refused",
            text=key_pem,
            raw=key_pem.encode(),
            nested={"files": [{"key": key_pem}, "ok"]},
            error=ValueError(f"cannot parse {key_pem}"),
            tail=key_pem.splitlines()[-1],
            path="/home/harperdb/hdb/keys/privateKey.pem",
        )
        try:
            _raise(RuntimeError(f"bad key: {key_pem}"))
        except RuntimeError:
            log.exception("test.cycle_failed")
        log.info(key_pem)

    assert "PRIVATE KEY" not in out.read_text()
    [(_p, refused), (_p2, failed), (_p3, bare)] = _journal(out)
    assert refused == {
        "ts": refused["ts"],
        "level": "error",
        "event": "test.set_refused",
        "text": "[redacted]",
        "raw": "[redacted]",
        "nested": {"files": [{"key": "[redacted]"}, "ok"]},
        "error": "[redacted]",
        "tail": "[redacted]",
        "path": "/home/harperdb/hdb/keys/privateKey.pem",
    }
    assert failed["exception"] == "[redacted]"
    assert bare["event"] == "[redacted]"


def test_private_keys_never_reach_the_console(key_pem: str) -> None:
    """Redaction also holds on a terminal, tracebacks included."""
    master, slave = os.openpty()
    try:
        with open(slave, "w", encoding="utf-8", closefd=True) as stream:
            logs.configure(stream=stream)
            log = logs.get_logger()
            log.warning("test.live_changed", content=key_pem)
            try:
                _raise(RuntimeError(key_pem))
            except RuntimeError:
                log.exception("test.cycle_failed")
            raw = _read_tty(master)
    finally:
        os.close(master)
    assert "test.live_changed" in raw
    assert "test.cycle_failed" in raw
    assert "[redacted]" in raw
    assert "PRIVATE KEY" not in raw


def test_tracebacks_without_keys_are_kept(tmp_path: Path) -> None:
    """log.exception renders the traceback as text when it holds no key material."""
    out = tmp_path / "journal"
    with out.open("w") as stream:
        logs.configure(json=True, stream=stream)
        try:
            (tmp_path / "gone" / "keys").rmdir()
        except FileNotFoundError:
            logs.get_logger().exception("test.cycle_failed", cycle=12)
    [(prio, entry)] = _journal(out)
    assert prio == 3
    assert entry["cycle"] == 12
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert (
        entry["exception"]
        .rstrip()
        .endswith("No such file or directory: " + repr(str(tmp_path / "gone" / "keys")))
    )


def test_drop_key_material_is_a_plain_processor(key_pem: str) -> None:
    """drop_key_material is an ordinary (logger, method, event_dict) callable."""
    event = {"event": "certd.set_detected", "key": key_pem, "n": 3, "ok": True, "none": None}
    assert logs.drop_key_material(None, "info", event) == {
        "event": "certd.set_detected",
        "key": "[redacted]",
        "n": 3,
        "ok": True,
        "none": None,
    }


def test_values_are_rendered_as_text(tmp_path: Path) -> None:
    """Paths, datetimes and sets come out as readable JSON, not Python reprs."""
    out = tmp_path / "journal"
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with out.open("w") as stream:
        logs.configure(json=True, stream=stream)
        logs.get_logger().warning(
            "test.expiry_warning", path=Path("/k/certificate.pem"), not_after=when, ports={9933}
        )
    [(_p, entry)] = _journal(out)
    assert entry["path"] == "/k/certificate.pem"
    assert entry["not_after"] == "2030-01-02T03:04:05+00:00"
    assert entry["ports"] == [9933]


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_a_value_that_cannot_be_printed_does_not_break_logging(tmp_path: Path) -> None:
    """An object whose __str__ raises is logged as a placeholder, not raised to the caller."""
    out = tmp_path / "journal"
    with out.open("w") as stream:
        logs.configure(json=True, stream=stream)
        logs.get_logger().info("test.summary", odd=_Unprintable())
    [(_p, entry)] = _journal(out)
    assert entry["odd"] == "<unprintable _Unprintable>"


def test_reconfigure_moves_loggers_bound_before(tmp_path: Path) -> None:
    """After a second configure() (SIGHUP), a logger bound earlier follows the new settings."""
    first, second = tmp_path / "first", tmp_path / "second"
    with first.open("w") as one, second.open("w") as two:
        logs.configure(json=True, stream=one)
        log = logs.get_logger().bind(node="nodea")
        log.info("test.started")
        logs.configure(json=True, stream=two, level="error")
        log.info("test.config_reloaded")
        log.error("test.cycle_failed")
        logs.configure(json=False, stream=two, level="debug")
        log.debug("test.rescan")
    assert [(e["event"], e["node"]) for _p, e in _journal(first)] == [("test.started", "nodea")]
    json_line, console_line = second.read_text().splitlines()
    assert _parse(json_line)[1]["event"] == "test.cycle_failed"
    assert "test.rescan" in ANSI.sub("", console_line)
    assert "node=nodea" in ANSI.sub("", console_line)


def test_unencodable_text_is_escaped_not_fatal(tmp_path: Path) -> None:
    """A surrogate-escaped file name on an ASCII console is written escaped, not raised."""
    out = tmp_path / "console"
    name = os.fsdecode(b"/keys/\xff-caf\xc3\xa9.pem")
    with out.open("w", encoding="ascii") as stream:
        logs.configure(json=False, stream=stream)
        logs.get_logger().warning("test.live_changed", path=name)
    text = out.read_text(encoding="ascii")
    assert "test.live_changed" in text
    assert "\\udcff" in text


def test_capture_logs_sees_events_as_logged() -> None:
    """structlog's capture_logs works on our loggers, so other tests can assert events."""
    logs.configure(json=True, stream=sys.stderr)
    log = logs.get_logger().bind(node="nodea")
    with capture_logs() as captured:
        log.info("certd.set_installed", set="tls", generation=5)
        log.warning("certd.rolled_back", generation=4)
    assert captured == [
        {
            "node": "nodea",
            "set": "tls",
            "generation": 5,
            "event": "certd.set_installed",
            "log_level": "info",
        },
        {"node": "nodea", "generation": 4, "event": "certd.rolled_back", "log_level": "warning"},
    ]
    for event in captured:
        logs.check_event(event["event"])


def test_a_closed_stream_does_not_break_the_caller() -> None:
    """Logging after the configured stream was closed falls back instead of raising."""
    import io

    stream = io.StringIO()
    logs.configure(json=True, stream=stream)
    stream.close()
    logs.get_logger().warning("certd.watch_lost", change="test")  # must not raise
    logs.configure(json=True)


def test_existing_paths_are_not_taken_for_key_material(tmp_path: Path) -> None:
    """A filing stamp makes a 40-character base64-looking run inside a path (seen by a
    newcomer: ``kept_at=/tmp/...-[redacted]-set``); a path that exists is never a key."""
    from harper_certd.logs import REDACTED, redact_base64

    kept = tmp_path / "hdb" / "keys" / "rejected" / "20261129T114854123456Z-badeku"
    kept.mkdir(parents=True)
    assert redact_base64(f"kept at {kept}.") == f"kept at {kept}."
    assert redact_base64(f"kept_at={kept}") == f"kept_at={kept}"
    gone = tmp_path / "hdb" / "keys" / "rejected" / "20261129T114854999999Z-other"
    assert REDACTED in redact_base64(str(gone))
    body = "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVCHEEb2K0Y9sgzAeoAoGCCqGSM49"
    assert redact_base64(f"{kept} {body}") == f"{kept} {REDACTED}"
    assert redact_base64(f"/{body}") == REDACTED


def test_error_text_never_carries_a_library_message() -> None:
    """By construction: another library's exception is named by its type only, with where
    it was raised; our own errors and OSErrors (errno text and a path) keep their words."""
    from harper_certd.errors import SwapError
    from harper_certd.logs import describe_error, traceback_text

    body = "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVCHEEb2K0Y9sgzAeoAoGCCqGSM49"

    def parse() -> None:  # a library quoting the first base64 line of a key, as cryptography did
        raise ValueError(f"InvalidHeader({body[:20]!r})")

    try:
        parse()
    except ValueError as exc:
        described, trace = describe_error(exc), traceback_text(exc)
    assert described == "ValueError (message withheld: a library's text may quote its input)"
    assert body[:8] not in trace
    assert "test_error_text_never_carries_a_library_message" in trace  # where it was raised
    assert describe_error(SwapError("the swap failed: disk full")) == "the swap failed: disk full"
    missing = FileNotFoundError(2, "No such file or directory", "/x/ca.pem")
    assert describe_error(missing) == "FileNotFoundError: No such file or directory (/x/ca.pem)"


def test_console_lines_leave_out_keys_without_a_value(tmp_path: Path) -> None:
    """On a console a record's keys without a value are not printed (a newcomer read
    certd.name_changed's ``stale_record=None command=None`` as something to act on); the
    JSON line keeps every key."""
    from harper_certd import events

    record = events.NameChanged(
        generation="000002",
        old_name="CN=nodea, first SAN=nodea",
        new_name="CN=nodea, first SAN=other.example",
        stale_record=None,
        command=None,
    )
    console, journal = tmp_path / "console", tmp_path / "journal"
    with console.open("w") as stream:
        logs.configure(json=False, stream=stream)
        logs.emit(record)
    with journal.open("w") as stream:
        logs.configure(json=True, stream=stream)
        logs.emit(record)
    logs.configure(json=True)
    shown = ANSI.sub("", console.read_text())
    assert "certd.name_changed" in shown
    assert "new_name='CN=nodea, first SAN=other.example'" in shown
    assert "None" not in shown
    line = json.loads(journal.read_text().split(">", 1)[1])
    assert line["stale_record"] is None
    assert line["command"] is None
