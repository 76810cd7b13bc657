"""What an event is: a frozen, slotted record whose fields are the keys of its log line.

Each event of the catalogue is one subclass of ``Event`` (in ``node``, ``intake``,
``install``, ``live``), registered by ``@event(name, level)``.  Its docstring's first
paragraph is the event's meaning (the README's table and ``docs/`` are generated from it),
its ``Attributes:`` section documents every field, and its fields are the one key set the
event is ever logged with.  ``logs.emit(record)`` is the one writer that turns a record into
the line (and, through the observers, into the metrics' last operation: ``operation``).

This module imports nothing from harper_certd at import time (``records()`` imports the
group modules, which import only this one): the records are a leaf that every layer, the
tests and the docs generator can import (the model is stamina's ``instrumentation/_data.py``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

Level = Literal["debug", "info", "warning", "error", "critical"]
# Keys structlog and the journal line own: no record may have a field of these names.
RESERVED_KEYS = frozenset({"event", "level", "ts", "log_level", "exc_info", "stack_info"})


class EventShapeError(TypeError):
    """The keys given for a catalogued event are not its record's fields."""


@dataclass(frozen=True, slots=True)
class Event:
    """An event of the catalogue (abstract: each event is a subclass with its fields).

    Class attributes (set by ``@event``):
        name: the event's name (``certd.<what>``), the line's ``event`` key.
        level: the level it is always logged at.
        operation: ``(kind, outcome)`` for the metrics' ``last_operation_seconds``, or None.
    """

    name: ClassVar[str]
    level: ClassVar[Level]
    operation: ClassVar[tuple[str, str] | None] = None

    def fields(self) -> dict[str, Any]:
        """The line's keys and values, in the record's field order."""
        return {name: getattr(self, name) for name in _field_names(type(self))}


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(record: type[Event]) -> tuple[str, ...]:
    """The record type's field names, in order (asked at every line the daemon logs)."""
    names = _FIELD_NAMES.get(record)
    if names is None:
        names = _FIELD_NAMES[record] = tuple(f.name for f in dataclasses.fields(record))
    return names


# The modules holding the records, in the catalogue's order.
GROUPS = ("node", "intake", "install", "live")
# name -> record type, as the group modules register them (``records()`` for all of them).
_REGISTRY: dict[str, type[Event]] = {}
_ALL: dict[str, type[Event]] = {}


def records() -> dict[str, type[Event]]:
    """Every event's record type by name, in the catalogue's order (the group modules are
    imported on the first call: a process that logs nothing never builds the 67 classes)."""
    if not _ALL:
        for group in GROUPS:
            importlib.import_module(f"harper_certd.events.{group}")
        order = {f"harper_certd.events.{g}": i for i, g in enumerate(GROUPS)}
        ranked = sorted(_REGISTRY.items(), key=lambda item: order[item[1].__module__])
        _ALL.update(ranked)
    return _ALL


R = TypeVar("R", bound=type[Event])


def event(
    name: str,
    level: Level,
    *,
    operation: tuple[str, str] | None = None,
) -> Callable[[R], R]:
    """Register a record type as event ``name`` logged at ``level`` (``ValueError`` when
    the name is taken or a field name is reserved)."""

    def register(cls: R) -> R:
        if name in _REGISTRY:
            raise ValueError(f"{name} is registered twice")
        taken = {f.name for f in dataclasses.fields(cls)} & RESERVED_KEYS
        if taken:
            raise ValueError(f"{name}: reserved key(s) {sorted(taken)}")
        cls.name, cls.level, cls.operation = name, level, operation
        _REGISTRY[name] = cls
        return cls

    return register


def keys(record: type[Event]) -> tuple[str, ...]:
    """The event's one key set: its record's fields, in order."""
    return _field_names(record)


def required(record: type[Event]) -> frozenset[str]:
    """The keys every call site must give (fields without a default)."""
    return frozenset(
        f.name
        for f in dataclasses.fields(record)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )


def build(name: str, given: Mapping[str, Any]) -> Event:
    """The record of event ``name`` from keys given by name (defaults filled);
    ``EventShapeError`` naming the unknown and missing keys when they do not fit,
    ``KeyError`` for a name not in the catalogue."""
    record = records()[name]
    unknown = sorted(set(given) - set(keys(record)))
    missing = sorted(required(record) - set(given))
    if unknown or missing:
        raise EventShapeError(
            f"{name} ({record.__name__}): unknown keys {unknown}, missing keys {missing}"
        )
    return record(**given)


def description(record: type[Event]) -> str:
    """The event's meaning: its docstring's first paragraph, on one line."""
    doc = inspect.cleandoc(record.__doc__ or "")
    return " ".join(doc.split("\n\n", 1)[0].split())


_ATTRIBUTE = re.compile(r" {4}(\w+): (.*)")


def field_docs(record: type[Event]) -> dict[str, str]:
    """Each documented field's text, from the docstring's ``Attributes:`` section."""
    doc = inspect.cleandoc(record.__doc__ or "")
    _, _, section = doc.partition("\nAttributes:\n")
    docs: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        if (m := _ATTRIBUTE.fullmatch(line)) is not None:
            current = m[1]
            docs[current] = m[2]
        elif current is not None and line.startswith(" " * 8):
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the generated catalogue.

    Attributes:
        name: the event's name.
        level: its level.
        description: its meaning (the record's docstring).
        keys: each key with its meaning, in the record's field order.
    """

    name: str
    level: Level
    description: str
    keys: tuple[tuple[str, str], ...]


def catalogue() -> list[Entry]:
    """Every event, from its record: name, level, meaning, keys with their meaning."""
    out = []
    for name, record in records().items():
        docs = field_docs(record)
        out.append(
            Entry(
                name,
                record.level,
                description(record),
                tuple((k, docs.get(k, "")) for k in keys(record)),
            )
        )
    return out


def markdown() -> str:
    """The catalogue as Markdown: the table of events, then each event's keys."""
    rows = ["| Event | Level | Meaning |", "|---|---|---|"]
    sections = []
    for e in catalogue():
        rows.append(f"| `{e.name}` | {e.level} | {e.description} |")
        if e.keys:
            lines = [f"- `{k}`: {doc}" for k, doc in e.keys]
            sections.append(f"### `{e.name}` ({e.level})\n\n" + "\n".join(lines))
    return "\n".join(rows) + "\n\n## Keys\n\n" + "\n\n".join(sections) + "\n"
