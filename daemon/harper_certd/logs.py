"""Logging: namespaced structlog events, one JSON line each for journald, or a console.

Event names are a public interface (operators alert on them, the README lists
them): every name the daemon logs is in ``EVENTS`` with its level, and
``check_event`` lets tests hold code to that catalogue.

Under systemd, stdout is a journal stream: each line starts with the
sd-daemon(3) priority (``<6>`` ...) so journald files it at the right level,
then one JSON object. On a terminal, structlog's ConsoleRenderer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json as _json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from harper_certd.errors import CertdError

# Level names are structlog's method names; the numbers order them for filtering.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# sd-daemon(3) / syslog(3) priorities, read by journald from the line's "<N>" prefix.
PRIORITIES: dict[str, int] = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}

REDACTED = "[redacted]"
_KEY_MARKER = "PRIVATE KEY-----"  # ends both "BEGIN ... PRIVATE KEY-----" and "END ..."
_KEY_MARKER_BYTES = _KEY_MARKER.encode()
# Key material without armour (a renewal command printing a key body, a library quoting a
# base64 line): a run of 40+ base64 characters, or a group of base64-only lines with one of
# 40+ characters or three of 16+, is replaced when it mixes upper and lower case letters
# (random base64 of 30 bytes lacks one of them with probability < 1e-8; paths, hex
# fingerprints and words do not mix them in 40 unbroken characters).
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_B64_LINE = re.compile(r"[ \t]*[A-Za-z0-9+/]+={0,2}[ \t\r]*")
_ABS_PATH = re.compile(r"(?<![^\s'\"=(\[])/[^\s'\",;()\[\]]+")
_UPPER = re.compile(r"[A-Z]")
_LOWER = re.compile(r"[a-z]")

# name -> (level it is logged at, what it means). One table, so that the README and
# the tests can check that every event is documented and that code logs only these.
EVENTS: dict[str, tuple[str, str]] = {
    "certd.started": ("info", "The daemon started and told systemd it is ready."),
    "certd.stopping": ("info", "The daemon was asked to stop and is finishing its cycle."),
    "certd.stopped": ("info", "The daemon stopped; no swap was left half done."),
    "certd.config_reloaded": ("info", "The configuration was re-read (SIGHUP) and is in force."),
    "certd.config_refused": (
        "error",
        "A re-read configuration is invalid; the previous one stays in force.",
    ),
    "certd.set_detected": ("info", "A new candidate certificate set appeared and will be checked."),
    "certd.set_refused": (
        "error",
        "A candidate set failed validation and was not installed; the live set is unchanged.",
    ),
    "certd.set_unchanged": (
        "info",
        "A candidate set is the same as the live set; it was filed away, nothing swapped.",
    ),
    "certd.set_superseded": (
        "info",
        "A valid set was not installed because a newer one arrived in the same burst.",
    ),
    "certd.set_installed": ("info", "A validated set replaced the live files (atomic swap)."),
    "certd.swap_failed": (
        "error",
        "Putting a validated set in place failed and was undone; the live set is unchanged "
        "and the swap is retried with backoff (next_attempt).",
    ),
    "certd.swap_recovered": (
        "warning",
        "A swap interrupted by a crash or power loss was completed or undone at start.",
    ),
    "certd.live_adopted": (
        "info",
        "Live files that harper-certd did not write were recorded as a generation.",
    ),
    "certd.live_changed": (
        "warning",
        "The live certificate files were changed by something other than harper-certd.",
    ),
    "certd.live_invalid": ("error", "The live set fails validation (see its problem codes)."),
    "certd.live_restored": (
        "warning",
        "The live set was put back to the last good generation after it went bad or missing.",
    ),
    "certd.expiry_warning": ("warning", "A live certificate expires within the warning window."),
    "certd.expired": ("critical", "A live certificate has expired; peers will refuse it."),
    "certd.renewal_started": ("info", "A renewal command was started for a set."),
    "certd.renewal_succeeded": (
        "info",
        "A renewal command produced a new set and it is installed (the live leaf changed).",
    ),
    "certd.renewal_failed": (
        "error",
        "A renewal command failed, or exited 0 but what it produced was refused or nothing "
        "new arrived; retried with backoff (next_attempt).",
    ),
    "certd.harper_restarted": (
        "info",
        "Harper was told to load the new set (hot reload, Operations API, CLI or systemd).",
    ),
    "certd.served_verified": (
        "info",
        "Harper's TLS ports serve the new certificate and a handshake with it succeeds.",
    ),
    "certd.verify_failed": (
        "error",
        "Harper does not serve the new set, or a handshake with it fails.",
    ),
    "certd.hot_reload_missed": (
        "warning",
        "Harper did not pick up the new set by itself in time; a restart follows.",
    ),
    "certd.harper_not_running": (
        "warning",
        "A set was installed while Harper is stopped; Harper loads it when it starts.",
    ),
    "certd.rolled_back": (
        "error",
        "The previous set was put back after a failed verification, and Harper serves it.",
    ),
    "certd.operator_rollback": (
        "warning",
        "An operator put an earlier generation back (harper-certd rollback).",
    ),
    "certd.rollback_failed": (
        "critical",
        "Putting the previous set back failed; the node needs an operator now.",
    ),
    "certd.restart_held": (
        "error",
        "A Harper restart was held back (rate limit or hold file); a peer not trusting a set "
        "is the peer guard's (ca_not_trusted_by_peers).",
    ),
    "certd.rescan": ("debug", "A full rescan of the watched directories ran."),
    "certd.watch_lost": (
        "warning",
        "A filesystem watch stopped working; rescans on a timer cover for it.",
    ),
    "certd.cycle_failed": (
        "error",
        "A cycle failed on an unexpected error; the daemon goes on with the next one.",
    ),
    "certd.generation_pruned": ("info", "An old generation was deleted from the state directory."),
    "certd.prune_failed": (
        "warning",
        "An old generation could not be deleted (owner, permissions); it is kept and said.",
    ),
    "certd.sources_pruned": (
        "info",
        "Sets filed in processed/ or rejected/ beyond the retention (count, age) were deleted.",
    ),
    "certd.name_changed": (
        "warning",
        "The new certificate's CN or first SAN differs: Harper keeps a stale record of the old "
        "name (the command to remove it is given once the install is verified).",
    ),
    "certd.watch_only": (
        "warning",
        "The live paths are someone else's links or on a read-only mount: the daemon only "
        "watches them (validates, warns), never writes.",
    ),
    "certd.harper_discovered": (
        "info",
        "Harper's configuration was read: root, certificate sets, ports and node name.",
    ),
    "certd.layout_hazard": (
        "error",
        "A hazard of the node's certificate layout (issue 11: record-name collision, "
        "public root in a CA file...), one event per hazard with its problem code, at start "
        "and after each configuration reload.",
    ),
    "certd.set_managed": (
        "info",
        "At start or reload, a certificate set other than the primary one is managed on its "
        "own: its role, incoming folder, store and live generation.",
    ),
    "certd.set_unmanaged": (
        "warning",
        "A certificate set of Harper's configuration is not managed (its name is not usable "
        "as a folder name, or it cannot be read); it is still checked by `harper-certd check`.",
    ),
    "certd.set_routed": (
        "info",
        "A folder placed straight in incoming/ was moved to the incoming folder of the one "
        "set it fits (incoming/<set name>/), where that set's tracker takes it.",
    ),
    "certd.summary": ("info", "Periodic summary: each live set, its expiry and its state."),
    # --- operating it (issue 13) ---
    "certd.environment_warning": (
        "warning",
        "Something configured is unlikely to work where the daemon runs (e.g. renewal "
        "under the unit's sandbox); the event names the fix.",
    ),
    "certd.served_mismatch": (
        "error",
        "The periodic re-check found Harper serving another certificate than the live one.",
    ),
    "certd.served_matches": (
        "info",
        "Harper serves the live certificate again after a mismatch was reported.",
    ),
    "certd.released": (
        "warning",
        "Harper's files were handed back as plain files (harper-certd release); not managed now.",
    ),
    "certd.set_staged": (
        "info",
        "A set was copied into the incoming folder for the daemon (harper-certd stage).",
    ),
    "certd.metrics_failed": (
        "warning",
        "The Prometheus textfile could not be written; the daemon goes on.",
    ),
    "certd.source_left": (
        "warning",
        "A source could not be filed in processed/ or rejected/; it stays in incoming/ and is "
        "not judged again until it changes (the event says what to do).",
    ),
    "certd.incoming_stray": (
        "warning",
        "A file in incoming/ that is not part of a set; left alone, reported once.",
    ),
    "certd.incoming_unsafe": (
        "warning",
        "The incoming folder is writable by group or others (once per change of mode or owner).",
    ),
    "certd.set_incomplete": (
        "warning",
        "Loose set files in incoming/ have waited watch.loose_wait_seconds for the rest of the "
        "set; they are still held.",
    ),
    "certd.watch_rearmed": (
        "info",
        "A watch lost with its folder is in place again; incoming/ was rescanned at once.",
    ),
    "certd.library_message": (
        "warning",
        "A library (watchdog) reported an error, or Python a warning: an event, never a raw line.",
    ),
    "certd.crashed": (
        "critical",
        "An unexpected error outside a cycle; the daemon exits 1 (the traceback is in the event).",
    ),
    "certd.content_failed": (
        "error",
        "Judging the live set's content raised (a fault in harper-certd); the daemon goes on "
        "as if the live set could not be read.",
    ),
    "certd.clock_jumped": (
        "warning",
        "The wall clock was set (NTP step, VM resume) by more than 5 s; expiry and renewal "
        "were planned again from the new time.",
    ),
    "certd.set_held": (
        "warning",
        "A set's notBefore is a little ahead of the clock; it waits in place and is installed "
        "when it becomes valid (schedule.hold_not_yet_valid_seconds).",
    ),
    "certd.certificates_in_database": (
        "warning",
        "A TLS section of harperdb-config.yaml names no files: its certificates are in "
        "Harper's database, which harper-certd cannot manage.",
    ),
    # h-peers (issue 12)
    "certd.peers_checked": (
        "info",
        "Every replication peer was probed with a candidate (before) or the live set (after "
        "a swap): per-peer verdicts.",
    ),
    "certd.peer_unreachable": (
        "warning",
        "A replication peer could not be probed; the probe is retried until retry_until, then "
        "the set is refused (stage before) or the peer only reported (stage after).",
    ),
    "certd.peers_unchecked": (
        "warning",
        "The peers of a replication set could not be listed (no Operations API or it failed): "
        "the swap goes ahead unprobed.",
    ),
    "certd.peers_overridden": (
        "critical",
        "A replication set was installed past the peer guard's refusal (install --force).",
    ),
    "certd.peer_cas_refreshed": (
        "info",
        "The ca remove command had Harper exchange CAs with each peer again (update_node), so "
        "that the CA each node keeps for the other is the new one (peers left alone are named).",
    ),
    "certd.restart_deferred": (
        "warning",
        "A full Harper restart waits (jitter, bounded) for every peer to be connected, or "
        "goes ahead after the wait with proceeding=true.",
    ),
}


def check_event(name: str) -> None:
    """Raise ``ValueError`` unless *name* is in the documented catalogue ``EVENTS``."""
    if name not in EVENTS:
        raise ValueError(
            f"{name!r} is not a documented event: add it to harper_certd.logs.EVENTS "
            "with its level and meaning"
        )


@dataclass(frozen=True, slots=True)
class _Output:
    stream: TextIO
    min_level: int
    console: structlog.dev.ConsoleRenderer | None  # None: JSON lines for journald


# The processors, the logger factory and the wrapper class never change; they read
# this instead.  A logger bound before a SIGHUP (``get_logger().bind(...)`` keeps
# its processors and logger for good) still follows the new level, format and stream.
_output: _Output | None = None
_write_lock = threading.Lock()


def drop_key_material(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace every value holding PEM private key material by ``"[redacted]"``, and
    long base64 runs (unarmoured key bodies) inside any string by the same word.

    Looks into mappings, lists, tuples and sets, and into other objects through
    ``str()`` (which is how they would be rendered anyway), so that an exception or
    a report carrying a key cannot reach the journal.  Runs after tracebacks are
    formatted to text, so they are covered too.
    """
    return {_scrub_key(k): _scrub(v) for k, v in event_dict.items()}


def _scrub_key(key: str) -> str:
    return REDACTED if _KEY_MARKER in key else key


def _random_looking(text: str) -> bool:
    return _UPPER.search(text) is not None and _LOWER.search(text) is not None


def redact_base64(text: str) -> str:
    """``text`` with base64 runs and blocks of base64 lines replaced by ``"[redacted]"``."""
    if len(text) < 40 or (_B64_RUN.search(text) is None and text.count("\n") < 2):
        return text
    lines = text.split("\n")
    redact = [False] * len(lines)
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and lines[j].strip() and _B64_LINE.fullmatch(lines[j]):
            j += 1
        if j == i:
            i += 1
            continue
        sizes = [len(line.strip()) for line in lines[i:j]]
        if (max(sizes) >= 40 or sum(size >= 16 for size in sizes) >= 3) and _random_looking(
            "".join(lines[i:j])
        ):
            redact[i:j] = [True] * (j - i)
        i = j
    out: list[str] = []
    for line, hidden in zip(lines, redact, strict=True):
        if hidden:
            if not out or out[-1] != REDACTED:
                out.append(REDACTED)
            continue
        out.append(_redact_runs(line))
    return "\n".join(out)


def _redact_runs(line: str) -> str:
    kept = _existing_paths(line)
    return _B64_RUN.sub(
        lambda m: REDACTED if _random_looking(m.group()) and not _inside(m, kept) else m.group(),
        line,
    )


def _existing_paths(line: str) -> list[tuple[int, int]]:
    """Spans of absolute paths in ``line`` that exist on this machine: a path such as
    ``/var/lib/.../rejected/20261129T114854123456Z-set`` can hold a 40-character run of
    base64 letters, and no key is ever a path that exists."""
    spans = []
    for m in _ABS_PATH.finditer(line):
        path = m.group().rstrip(".:")
        if len(path) <= 4096 and os.path.lexists(path):
            spans.append((m.start(), m.start() + len(path)))
    return spans


def _inside(run: re.Match[str], spans: list[tuple[int, int]]) -> bool:
    return any(start <= run.start() and run.end() <= end for start, end in spans)


def _scrub(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return REDACTED if _KEY_MARKER in value else redact_base64(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if _KEY_MARKER_BYTES in raw:
            return REDACTED
        text = repr(raw)
        redacted = redact_base64(text)
        return raw if redacted == text else redacted
    if isinstance(value, Mapping):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not turn a log call into a crash
        text = f"<unprintable {type(value).__name__}>"
    return _scrub(text)


def _filter_level(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    out = _output
    level = event_dict.get("level", method_name)
    if out is not None and LEVELS.get(level, logging.INFO) < out.min_level:
        raise structlog.DropEvent
    return event_dict


def _journal_line(event_dict: EventDict) -> str:
    level = str(event_dict.get("level", "info"))
    # ts, level, event first: what a person reading `journalctl -o cat` looks for.
    ordered = {k: event_dict.pop(k) for k in ("ts", "level", "event") if k in event_dict}
    ordered.update(event_dict)
    # ensure_ascii: a file name with undecodable bytes (surrogate escapes) must not
    # make the write fail; "\udcff" in JSON is still valid and tells the truth.
    body = _json.dumps(ordered, default=str)
    return f"<{PRIORITIES.get(level, PRIORITIES['info'])}>{body}"


def _render(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    out = _output
    if out is None or out.console is None:
        return _journal_line(event_dict)
    return out.console(logger, method_name, event_dict)


class _StreamLogger:
    """Writes each rendered line to the stream named by the latest ``configure()``."""

    def msg(self, message: str) -> None:
        out = _output
        stream = out.stream if out is not None else sys.stdout
        line = message + "\n"
        with _write_lock:
            try:
                self._write(stream, line)
            except (ValueError, OSError):
                # A closed or broken stream must not take the caller down with it: a log
                # line is never worth a failed swap. Fall back to the process's stderr.
                with contextlib.suppress(ValueError, OSError, AttributeError):
                    self._write(sys.__stderr__, line)  # type: ignore[arg-type]

    @staticmethod
    def _write(stream: TextIO, line: str) -> None:
        try:
            stream.write(line)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "utf-8"
            stream.write(line.encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()

    log = debug = info = warn = warning = msg
    err = error = exception = critical = fatal = failure = msg


_LOGGER = _StreamLogger()


def _logger_factory(*args: Any) -> _StreamLogger:
    return _LOGGER


# --- observers: in-process listeners to events (the metrics textfile's "write now") ---

Observer = Callable[[str, Mapping[str, Any]], None]
_OBSERVERS: list[Observer] = []


def add_observer(observer: Observer) -> None:
    """Call ``observer(event_name, event_dict)`` for every event, whatever the level filter."""
    _OBSERVERS.append(observer)


def remove_observer(observer: Observer) -> None:
    with contextlib.suppress(ValueError):
        _OBSERVERS.remove(observer)


def _notify_observers(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    name = str(event_dict.get("event", ""))
    for observer in list(_OBSERVERS):
        with contextlib.suppress(Exception):  # an observer never breaks logging
            observer(name, event_dict)
    return event_dict


_PROCESSORS: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _notify_observers,
    _filter_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    structlog.processors.StackInfoRenderer(),
    # Tracebacks become text here, before redaction: a pretty (rich) traceback
    # rendered later would show local variables, key bytes included.
    structlog.processors.format_exc_info,
    drop_key_material,
    _render,
]


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def configure(
    *, json: bool | None = None, stream: TextIO | None = None, level: str = "info"
) -> None:
    """Send events at *level* and above to *stream* (default: ``sys.stdout`` now).

    *json*: True for JSON lines prefixed with the sd-daemon priority, False for
    the console renderer (coloured on a terminal unless NO_COLOR is set), None to
    choose by whether *stream* is a terminal.
    Safe to call again (SIGHUP): loggers obtained or bound before follow the new
    settings.
    """
    name = level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    target = sys.stdout if stream is None else stream
    as_json = not _is_tty(target) if json is None else json
    # Colour only for a person at a terminal who has not asked for none (no-color.org).
    colors = _is_tty(target) and not os.environ.get("NO_COLOR")
    console = None if as_json else structlog.dev.ConsoleRenderer(colors=colors, timestamp_key="ts")

    global _output  # noqa: PLW0603 - one process-wide output, swapped whole on reload
    with _write_lock:
        _output = _Output(stream=target, min_level=LEVELS[name], console=console)
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        context_class=dict,
        logger_factory=_logger_factory,
        # Caching would pin loggers to whatever configuration was in force at their
        # first use, and structlog.testing.capture_logs could not capture them.
        cache_logger_on_first_use=False,
    )


def get_logger(**initial_values: Any) -> FilteringBoundLogger:
    """A logger whose events go through the configuration in force when it logs."""
    return cast(FilteringBoundLogger, structlog.get_logger(**initial_values))


def describe_error(exc: BaseException) -> str:
    """An exception as text that cannot carry input bytes (key material), by construction.

    harper-certd's own exceptions (``CertdError``) are sentences built from our words and
    paths; an ``OSError`` is its errno text and file name.  Any other exception's message may
    be a library's and quote what it parsed, so only its type is given.
    """
    if isinstance(exc, CertdError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{type(exc).__name__}: {exc.strerror or 'error'}{where}"
    return f"{type(exc).__name__} (message withheld: a library's text may quote its input)"


def traceback_text(exc: BaseException) -> str:
    """Where ``exc`` was raised (file, line, function and source line of each frame) and
    ``describe_error``; never the exception's own message or any local variable."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{describe_error(exc)}"
