"""Crash recovery carried out: read what a crash left, ask ``recovery.decide`` (pure) what
to do, and do it on the store.

What is read: the journal (``<state>/journal.json``), the generation ``current`` names,
the generations still ``pending`` (``in_flight`` says whether there is any of these);
temporaries a crash left (``generations/.tmp-*``, ``.*.tmp`` links beside the live paths
and in the state directory) are removed first.
"""

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from harper_certd import fsio, recovery
from harper_certd.adoption import link_or_undo
from harper_certd.errors import StateError, SwapError
from harper_certd.journal import Journal, Op, Outcome
from harper_certd.recovery import Act
from harper_certd.swap import Store


class Recovery(NamedTuple):
    """What ``recover`` did: the operation a crash cut short (``Op``), its outcome, the
    generation live now, and whether Harper must be checked to serve it."""

    op: str
    outcome: str  # "completed" or "undone"
    generation: str | None
    needs_verify: bool


def in_flight(store: Store) -> bool:
    """Whether an operation is under way (or was cut short): a journal, or a pending set."""
    if store.journal.read() is not None:
        return True
    try:
        current = store.current()
    except StateError:
        return False
    return current is not None and current.meta.get("outcome") == Outcome.PENDING


def _pending(store: Store, current: str | None, existing: Iterable[str]) -> list[str]:
    """Ids among ``existing`` (the digit-named folders of ``generations/``), not older
    than ``current``, whose generation still says ``pending``; older ones were settled
    when a newer generation became live."""
    floor = int(current or 0)
    out = []
    for name in existing:
        if int(name) < floor:
            continue
        try:
            gen = store.generation(name)
        except StateError:
            continue
        if gen.meta.get("outcome") == Outcome.PENDING:
            out.append(gen.id)
    return out


def _clean_temporaries(store: Store, names: Iterable[str]) -> None:
    """Remove what a crash left half-made: ``generations/.tmp-*`` (among ``names``, the
    folder's entries) and temporary links."""
    for name in names:
        if name.startswith(".tmp-"):
            fsio.remove_tree(store.generations_dir / name)
    for entry in _temporary_links(store):
        with contextlib.suppress(OSError):
            os.unlink(entry)


def _temporary_links(store: Store) -> Iterable[Path]:
    """Links named ``.*.tmp`` / ``.*.tmp-*`` in the state directory and beside the live
    paths: a link replaced by rename(2) (``fsio.replace_symlink``) cut short."""
    dirs = {store.root, *(p.parent for p in store.live_paths().values())}
    for folder in dirs:
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            # scandir: the names and types from one getdents, no Path or lstat per entry
            for entry in entries:
                name = entry.name
                temporary = ".tmp-" in name or name.endswith(".tmp")
                if name.startswith(".") and temporary and entry.is_symlink():
                    yield folder / name


def recover(store: Store) -> Recovery | None:
    """Complete or undo whatever a crash interrupted; None when nothing was under way.

    The decision is ``recovery.decide`` (pure); this carries it out.
    """
    store.ensure()
    raw = store.journal.read()
    journal = None if raw is None else Journal.from_dict(raw)
    names = os.listdir(store.generations_dir)  # once: ensure() made the folder
    _clean_temporaries(store, names)  # removes only ".tmp-" names: the digit ones stay
    current = store.current_id()
    existing = {n for n in names if n.isdigit()}
    plan = recovery.decide(journal, current, _pending(store, current, existing), existing)
    if plan.op is None:
        return None
    for action in plan.actions:
        gen_id = action.generation
        if action.act is Act.MARK_RECOVERED and gen_id is not None:
            with contextlib.suppress(StateError):
                recovered = store.update_meta(store.generation(gen_id), outcome=Outcome.RECOVERED)
                store.nudge(recovered)  # the crash may have come before Harper was woken
                # An install writes the copy after the flip (Store.keep_pristine): cut short
                # before, the generation has none; written from its files if still intact.
                store.pristine.write_missing(recovered, store.roles)
        elif action.act is Act.DISCARD and gen_id is not None:
            store.discard(gen_id)
        elif action.act is Act.LINK_LIVE and gen_id is not None:
            gen = store.generation(gen_id)
            prev = action.prev or gen.meta.get("replaced")
            try:
                link_or_undo(store, gen, prev)
            except SwapError:
                if store.journal.read() is not None:
                    raise  # not even undone: said, and the next operation tries again
                return Recovery(plan.op, "undone", prev, needs_verify=False)
        elif action.act is Act.FLIP and gen_id is not None:
            store.commit_flip(store.generation(gen_id), op=Op.ROLLBACK)
        elif action.act is Act.CLEAR_JOURNAL:
            store.journal.clear()
        elif action.act is Act.RECORD:
            store.history.record(str(action.op), str(action.outcome), generation=gen_id)
    return Recovery(plan.op, str(plan.outcome), plan.generation, plan.needs_verify)
