"""Events as records: one frozen record per event, one key set each, one writer.

The catalogue (``logs.EVENTS``, the README's table, ``events.markdown()``) is generated from
the records; every call site either builds a record (mypy checks its keys and types) or,
in the modules not yet converted, passes keys that ``events.build`` turns into the record
(checked here statically for every call site of the package, and at run time by
``logs._as_record``).
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from harper_certd import events, logs
from harper_certd.events import Event, EventShapeError

PACKAGE = Path(logs.__file__).resolve().parent
RECORDS = events.records()
LEVEL_METHODS = ("debug", "info", "warning", "error", "critical")


def _sample(annotation: str) -> object:
    """A value of the field's type, for building every record."""
    for marker, value in (("list", ["x"]), ("dict", {"k": 1}), ("bool", True), ("int", 3)):
        if annotation.startswith(marker) or f"| {marker}" in annotation:
            return value
    return 1.5 if annotation.startswith("float") else "x"


def _instance(record: type[Event]) -> Event:
    return record(**{f.name: _sample(str(f.type)) for f in dataclasses.fields(record)})


@pytest.fixture
def journal() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure(json=True, stream=stream, level="debug")
    yield stream
    logs.configure()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line.split(">", 1)[1]) for line in stream.getvalue().splitlines()]


def test_every_record_is_frozen_slotted_and_documented() -> None:
    """Each record: a frozen, slotted dataclass; a meaning; every field documented, and
    only its fields; no field takes a key the line itself owns."""
    declared = sum(
        path.read_text().count("\n@event(") for path in (Path(events.__file__).parent).glob("*.py")
    )
    assert len(RECORDS) == declared > 60  # every @event record registered, none twice
    for name, record in RECORDS.items():
        assert name.startswith("certd.")
        assert record.name == name
        assert record.level in LEVEL_METHODS
        params = record.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen, name
        assert "__slots__" in record.__dict__, name
        assert events.description(record), name
        assert set(events.field_docs(record)) == set(events.keys(record)), name
        assert all(events.field_docs(record).values()), name
        assert not set(events.keys(record)) & events.RESERVED_KEYS, name
        fields = events.keys(record)
        if fields:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(_instance(record), fields[0], None)


def test_the_catalogue_is_generated_from_the_records() -> None:
    """EVENTS (the README's table) and OPERATIONS (the metrics) come from the records."""
    assert logs.EVENTS is events.EVENTS
    assert list(events.EVENTS) == list(RECORDS)
    for entry in events.catalogue():
        record = RECORDS[entry.name]
        assert events.EVENTS[entry.name] == (record.level, entry.description)
        assert [k for k, _ in entry.keys] == list(events.keys(record))
    assert events.OPERATIONS == {
        "certd.set_installed": ("rotation", "installed"),
        "certd.set_refused": ("refusal", "refused"),
        "certd.rolled_back": ("rollback", "rolled_back"),
        "certd.rollback_failed": ("rollback", "rollback_failed"),
        "certd.operator_rollback": ("rollback", "operator"),
        "certd.renewal_succeeded": ("renewal", "succeeded"),
        "certd.renewal_failed": ("renewal", "failed"),
    }
    text = events.markdown()
    for name, (level, meaning) in events.EVENTS.items():
        assert f"| `{name}` | {level} | {meaning} |" in text


def test_the_writer_writes_every_record_as_its_one_key_set(journal: io.StringIO) -> None:
    """emit(record) for every record: one line at its level, its fields exactly, in order;
    building the record back from the line's keys gives the same record."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def observe(name: str, fields: Mapping[str, Any]) -> None:
        seen.append((name, dict(fields)))

    logs.add_observer(observe)
    try:
        records = [_instance(record) for record in RECORDS.values()]
        for record in records:
            logs.emit(record)
    finally:
        logs.remove_observer(observe)
    lines = _lines(journal)
    assert len(lines) == len(records)
    for record, line, (name, observed) in zip(records, lines, seen, strict=True):
        expected = json.loads(json.dumps(record.fields()))
        assert line == {"ts": line["ts"], "level": record.level, "event": record.name, **expected}
        assert list(line)[3:] == list(events.keys(type(record)))
        assert name == record.name
        assert {k: v for k, v in observed.items() if k != "level"} == {
            "event": record.name,
            **record.fields(),
        }
        assert events.build(record.name, record.fields()) == record


def test_a_key_that_is_not_the_records_is_refused(journal: io.StringIO) -> None:
    """Unknown or missing keys raise EventShapeError naming them; nothing is written."""
    log = logs.get_logger()
    with pytest.raises(EventShapeError, match=r"unknown keys \['watched'\]"):
        log.debug("certd.rescan", incoming="/srv/incoming", watched=3)
    with pytest.raises(EventShapeError, match=r"missing keys \['incoming'\]"):
        log.debug("certd.rescan")
    assert journal.getvalue() == ""


# The old key names of rollback_failed (issue 16: four places, four key sets): refused.
OLD_KEYS = [
    ({"generation": "3", "reason": "no earlier generation to return to"}, "generation"),
    ({"restored_generation": "2", "rollback_failure": "no handshake"}, "rollback_failure"),
]


@pytest.mark.parametrize(("given", "key"), OLD_KEYS)
def test_the_old_key_names_of_rollback_failed_are_refused(
    journal: io.StringIO, given: dict[str, Any], key: str
) -> None:
    with pytest.raises(EventShapeError, match=rf"unknown keys \['{key}'\]"):
        logs.get_logger().critical("certd.rollback_failed", **given)
    assert journal.getvalue() == ""


# The shorter call forms of the events logged with several key sets before (issue 16)
# and the one line each gives: the keys left out are there, null.
OLD_FORMS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "critical",
        "certd.rollback_failed",
        {"reason": "no kept generation is valid to restore"},
        {"failed_generation": None, "restored_generation": None, "failure": None},
    ),
    ("error", "certd.live_invalid", {"codes": ["expired"], "problems": ["p"]}, {"action": None}),
    (
        "error",
        "certd.live_invalid",
        {"codes": ["expired"], "problems": ["p"], "action": "restore"},
        {},
    ),
    ("info", "certd.harper_restarted", {"method": "cli", "detail": "ok"}, {}),
    ("info", "certd.harper_restarted", {"method": "cli"}, {"detail": None}),
]
SERVED = {"fingerprint": "ab", "ports": {"replication": 9933}, "pid": 7, "seconds": 1.5}
OLD_FORMS += [
    (
        "info",
        "certd.served_verified",
        {**SERVED, "failed_handshakes": 0, "method": "watch-only"},
        {"dialled": None},
    ),
    (
        "info",
        "certd.served_verified",
        {**SERVED, "failed_handshakes": 0, "method": "cli", "dialled": ["127.0.0.1:9933"]},
        {},
    ),
]


@pytest.mark.parametrize(("level", "name", "given", "filled"), OLD_FORMS)
def test_the_old_shapes_of_the_four_multi_shape_events_give_one_key_set(
    journal: io.StringIO, level: str, name: str, given: dict[str, Any], filled: dict[str, Any]
) -> None:
    """Every shorter call form of rollback_failed, live_invalid, harper_restarted and
    served_verified is written with the record's one key set."""
    getattr(logs.get_logger(), level)(name, **given)
    [line] = _lines(journal)
    keys = list(events.keys(RECORDS[name]))
    assert list(line)[3:] == keys
    assert {k: line[k] for k in keys} == {**given, **filled}


def _call_sites() -> Iterator[tuple[str, int, str, str, list[str | None]]]:
    """(module, line, method, event, keys) of every old-form call of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and node.args[0].value.startswith("certd.")
            ):
                module = str(path.relative_to(PACKAGE))
                keys = [k.arg for k in node.keywords]
                yield module, node.lineno, node.func.attr, node.args[0].value, keys


def test_every_old_form_call_site_fits_its_record() -> None:
    """Statically, for every ``log.<level>("certd.x", ...)`` in the package: the level is
    the record's, the keys are its fields with every required one, no ``**`` spread; and
    there are none left: every event is written from its record."""
    wrong = []
    sites = [s for s in _call_sites() if s[2] in LEVEL_METHODS]
    for module, line, method, name, keys in sites:
        where = f"{module}:{line} {name}"
        record = RECORDS.get(name)
        if record is None or None in keys:
            wrong.append(f"{where}: not catalogued, or a ** spread")
            continue
        fields = [str(k) for k in keys]
        if method != record.level:
            wrong.append(f"{where}: logged at {method}, catalogued at {record.level}")
        if not events.required(record) <= set(fields) <= set(events.keys(record)):
            wrong.append(f"{where}: keys {sorted(map(str, keys))}")
    assert wrong == []
    assert sites == []  # every event is written from its record (logs.emit)


def test_every_event_has_exactly_one_key_set() -> None:
    """Across every call site (records and old forms), each event has one key set: its
    record's fields (an old form's missing optional keys are filled by the writer)."""
    shapes: dict[str, set[tuple[str, ...]]] = {name: set() for name in RECORDS}
    for _module, _line, method, name, keys in _call_sites():
        if method in LEVEL_METHODS and name in RECORDS:
            built = events.build(name, {str(k): None for k in keys})
            shapes[name].add(tuple(built.fields()))
    shapes = {n: s | {events.keys(RECORDS[n])} for n, s in shapes.items()}
    assert {n: s for n, s in shapes.items() if len(s) != 1} == {}


def test_the_records_module_imports_nothing_of_the_package_but_itself() -> None:
    """events/ is a leaf: any layer may import it without a loop."""
    for path in (PACKAGE / "events").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("harper_certd") or node.module.startswith(
                    "harper_certd.events"
                ), path


def test_record_field_types_resolve() -> None:
    """Every field's annotation is a real type (what mypy checks at the call sites)."""
    for record in RECORDS.values():
        hints = typing.get_type_hints(record)
        assert set(events.keys(record)) <= set(hints)
