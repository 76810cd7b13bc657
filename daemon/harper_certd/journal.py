"""The store's small typed records: generation metadata and outcomes, the journal.

A generation's ``meta.json`` says what became of it (``Outcome``); an install needs no
separate journal (its generation says ``pending`` until it finishes), adoptions and
rollbacks write ``<state>/journal.json`` (``Journal``) before each step.  Both are read
tolerantly: files written by earlier releases lack newer fields, and an unknown value
is kept as text rather than raising at run time.
"""

import enum
from typing import Any, NamedTuple


class Outcome(enum.StrEnum):
    """What became of a generation (``meta.json``'s ``outcome``)."""

    ADOPTED = "adopted"  # the live files before harper-certd, or a hand change taken in
    PENDING = "pending"  # written; an install is under way (or was cut short)
    INSTALLED = "installed"
    RECOVERED = "recovered"  # an install completed at recovery after a crash
    ROLLED_BACK = "rolled_back"  # installed, Harper did not take it, the previous is back
    RESTORED = "restored"  # live again by a rollback or a restore
    RESTORE_UNVERIFIED = "restore_unverified"
    FAILED = "failed"  # installed, not taken, nothing to return to
    CHANGED_IN_PLACE = "changed_in_place"  # written through a live link: never used again


class Op(enum.StrEnum):
    INSTALL = "install"
    ADOPT = "adopt"
    ROLLBACK = "rollback"
    RESTORE = "restore"


class Step(enum.StrEnum):
    WRITING = "writing"  # the new generation is being written
    FLIPPING = "flipping"  # ``current`` is about to name it
    LINKING = "linking"  # the live paths are being linked through ``current``


class Journal(NamedTuple):
    """``journal.json``: the operation under way, its step, the generation it makes live
    (``new``) and the one live before it (``prev``)."""

    op: str  # an Op, or the text of an unknown one
    step: str | None
    new: str | None = None
    prev: str | None = None
    started: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Journal":
        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            str(data.get("op", "?")), text("step"), text("new"), text("prev"), text("started")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("op", self.op),
                ("step", self.step),
                ("new", self.new),
                ("prev", self.prev),
                ("started", self.started),
            )
            if v is not None
        }


class GenerationMeta(NamedTuple):
    """A generation's ``meta.json``, typed: what it holds, where it came from, what became
    of it.  Read from the stored mapping (``Generation.meta``), which stays the storage
    form so that keys written by other releases survive a rewrite."""

    id: str
    created: str | None
    outcome: str | None  # an Outcome, or the text of an unknown one
    source: str | None
    replaced: str | None  # the generation live before this one
    fingerprint: str | None  # the leaf's SHA-256, hex
    subject: str | None  # RFC 4514
    not_after: str | None  # ISO 8601, UTC
    record_name: str | None  # Harper's hdb_certificate record name (CN, or first SAN)
    digests: dict[str, str]  # role ("cert", "key", "ca") -> SHA-256 hex of the file

    @classmethod
    def from_dict(cls, gen_id: str, data: dict[str, Any]) -> "GenerationMeta":
        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None or value == "" else str(value)

        raw = data.get("digests")
        digests = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        return cls(
            gen_id,
            text("created"),
            _outcome(text("outcome")),
            text("source"),
            text("replaced"),
            text("fingerprint"),
            text("subject"),
            text("not_after"),
            text("record_name"),
            digests,
        )


def _outcome(value: str | None) -> str | None:
    """An Outcome when the text is one; the text itself otherwise (a newer release's)."""
    if value is None:
        return None
    try:
        return Outcome(value)
    except ValueError:
        return value
