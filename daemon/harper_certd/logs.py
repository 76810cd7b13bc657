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
from typing import TYPE_CHECKING, Any, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from harper_certd.errors import CertdError

if TYPE_CHECKING:
    from harper_certd import events

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


def _events() -> Any:
    """``harper_certd.events``, imported on first use: building its 67 record classes costs
    about as much as importing structlog, which a command that logs nothing (``status``,
    ``validate``) should not pay."""
    from harper_certd import events  # start-up cost only (see above)

    return events


def __getattr__(name: str) -> Any:
    """``EVENTS``: name -> (level it is logged at, what it means), derived from the event
    records (``harper_certd.events``): the README and the tests check that every event is
    documented and that code logs only these."""
    if name == "EVENTS":
        return _events().EVENTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_event(name: str) -> None:
    """Raise ``ValueError`` unless *name* is in the documented catalogue ``EVENTS``."""
    if name not in _events().EVENTS:
        raise ValueError(
            f"{name!r} is not a documented event: add its record to harper_certd.events "
            "with its level, meaning and keys"
        )


@dataclass(frozen=True, slots=True)
class _Output:
    stream: TextIO
    min_level: int
    console: structlog.dev.ConsoleRenderer | None  # None: JSON lines for journald
    # Events a console does not show (the command prints them itself); JSON lines keep all.
    console_omits: frozenset[str] = frozenset()


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
    if out is not None and out.console is not None and event_dict.get("event") in out.console_omits:
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
    # A person's terminal: keys without a value are left out ("stale_record=None command=None"
    # read as something to act on); the JSON line keeps every key of the record.
    shown = {k: v for k, v in event_dict.items() if v is not None}
    return out.console(logger, method_name, shown)


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


# Set while ``emit`` hands a record's fields to structlog: those keys need no second check.
_emitting = threading.local()


def emit(record: events.Event) -> None:
    """The one writer of events: ``record`` as one line at its level, its fields as the keys
    (and, through the observers, the metrics' last operation and journald's copy)."""
    method = getattr(structlog.get_logger(), record.level)
    _emitting.on = True
    try:
        method(record.name, **record.fields())
    finally:
        _emitting.on = False


def _as_record(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """A catalogued event's keys made its record's (defaults filled): ``EventShapeError``
    when they do not fit.  Lines built by ``emit`` pass unchanged; this guard keeps any
    ``log.<level>(name, **keys)`` (a test, a future call site) to the one key set."""
    if getattr(_emitting, "on", False):
        return event_dict  # built from its record by ``emit``: its keys are the record's
    name = event_dict.get("event")
    if not isinstance(name, str) or not name.startswith("certd."):
        return event_dict
    events = _events()
    if name not in events.records():
        return event_dict
    given = {k: v for k, v in event_dict.items() if k not in events.RESERVED_KEYS}
    kept = {k: v for k, v in event_dict.items() if k in events.RESERVED_KEYS}
    return {**kept, **events.build(name, given).fields()}


_PROCESSORS: list[Processor] = [
    _as_record,
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
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
    level: str = "info",
    console_omits: frozenset[str] = frozenset(),
) -> None:
    """Send events at *level* and above to *stream* (default: ``sys.stdout`` now).

    *json*: True for JSON lines prefixed with the sd-daemon priority, False for
    the console renderer (coloured on a terminal unless NO_COLOR is set), None to
    choose by whether *stream* is a terminal.  *console_omits*: event names the console
    renderer leaves out because the command prints them itself (``install`` prints a
    refusal's problems; ``certd.set_refused`` would say the same sentence again); JSON
    lines and the observers (journald's copy) still get them.
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
        _output = _Output(
            stream=target, min_level=LEVELS[name], console=console, console_omits=console_omits
        )
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
