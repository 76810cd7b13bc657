"""A lane's view of its live files: what they should be, what they are, and their report.

``LiveFiles`` notices a change made to the live paths by something other than the daemon
(a person, another tool) and acts only on what stayed the same for a whole settle period:
files replaced one by one pass through mixed states.  ``LiveReport`` reads the live set's
validation report and says once (``certd.content_failed``) when judging it raises.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from harper_certd import events, fsio, load, logs
from harper_certd.errors import CertdError
from harper_certd.install import context, verdict
from harper_certd.swap import Store
from harper_certd.validate import Report

# (path, link target or None, SHA-256 of the content or "unreadable: <reason>") per live path
Identity = tuple[Any, ...]


def live_identity(store: Store) -> Identity:
    """What the live paths show now: each path, its link target, its content's digest."""
    out: list[Any] = []
    for path in store.live_paths().values():
        try:
            link = os.readlink(path)
        except OSError:
            link = None
        try:
            # Through our own link (followed), but never a FIFO or device planted in Harper's
            # keys folder, and bounded (issue 17).
            data = fsio.read_regular(path, load.MAX_CA_FILE_BYTES, follow=True)
            digest = hashlib.sha256(data).hexdigest()
        except OSError as exc:
            digest = f"unreadable: {exc.strerror or exc}"
        out.append((str(path), link, digest))
    return tuple(out)


def expected_identity(store: Store) -> Identity:
    """What the live paths should show: links to the current generation, its digests.

    Derived from what we put there, never read back from the paths: a change made by
    a person while we worked must not become "expected".
    """
    try:
        current = store.current()
    except CertdError:
        current = None
    digests = current.meta.get("digests") if current is not None else None
    if current is None or not isinstance(digests, dict):
        return live_identity(store)
    return tuple(
        (str(path), store.link_target(role), digests.get(role))
        for role, path in store.live_paths().items()
    )


@dataclass
class LiveFiles:
    """The live paths' expected identity and a change to them being settled.

    ``dirty``: the monotonic time something under the live folders changed (None: nothing
    to look at); ``seen``: an unexpected identity waiting to stay the same for a settle
    period.
    """

    expected: Identity = ()
    dirty: float | None = None
    seen: Identity | None = None

    def due(self, settle: float) -> float | None:
        """The monotonic instant the pending look is due, None when nothing is pending."""
        return None if self.dirty is None else self.dirty + settle

    def changed(self, store: Store, now: float, settle: float) -> bool:
        """True when the live paths show something unexpected that stayed for ``settle``
        seconds (the caller handles it once); False otherwise."""
        if self.dirty is None or now - self.dirty < settle:
            return False
        self.dirty = None
        identity = live_identity(store)
        if identity == self.expected:
            self.seen = None
            return False
        if identity != self.seen:
            self.seen = identity
            self.dirty = now
            return False
        self.seen = None
        return True


@dataclass
class LiveReport:
    """The live set's validation report; a fault while judging it is said once."""

    failed: str | None = None  # the last judging error said (certd.content_failed)

    def read(self, ctx: context.Context) -> Report | None:
        """The report, or None when the live set cannot be read or judging it raised."""
        try:
            report = verdict.live_report(ctx)
            report.as_dict()  # parts are read lazily: anything raising must raise here
        except CertdError:
            return None
        except Exception as exc:  # a set's content never kills the daemon (issue 10 item 2)
            text = logs.describe_error(exc)[:300]
            if text != self.failed:
                self.failed = text
                logs.emit(events.ContentFailed(live=str(ctx.managed.live.cert), error=text))
            return None
        self.failed = None
        return report
