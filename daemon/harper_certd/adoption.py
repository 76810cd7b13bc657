"""Adoption: live files the store did not write become a generation, and the live paths
become links through ``current``.

``adopt`` takes the live files in the first time (the content Harper reads never
changes); ``take_live`` keeps a set changed by hand at the live paths as a generation of
its own (and marks or repairs one written *through* a link); ``foreign`` says when the
live paths belong to someone else (certbot's ``live/``, a Kubernetes secret volume, a
read-only mount) and must only be watched.  An adoption that cannot link the live paths
is undone (``link_or_undo``): it never leaves a journal that blocks later operations.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from typing import Any

from harper_certd import fsio
from harper_certd.errors import SwapError
from harper_certd.generation import Generation, cert_meta, read_file
from harper_certd.history import utc_stamp
from harper_certd.journal import Outcome
from harper_certd.roles import SetBytes
from harper_certd.swap import Store, write_generation


def adopt(
    store: Store, read_live: Callable[[], SetBytes], meta: dict[str, Any]
) -> Generation | None:
    """Copy the live files into a generation and link the live paths to it.

    Returns the new generation, or None when the live paths are already managed and
    match ``current``.  The content seen at Harper's paths never changes here.  The
    generation records the leaf's fingerprint, subject and not_after (``cert_meta``),
    so that a rollback to it can be verified.  An adoption that cannot link the live
    paths (a read-only mount, an immutable folder) is undone before SwapError is raised:
    it never leaves a journal that blocks later operations.
    """
    if store.managed() and store.current_id() is not None:
        return None
    data = read_live()
    previous = store.current_id()
    meta = {**cert_meta(data.cert), **meta, "outcome": Outcome.ADOPTED}
    if previous is not None:
        meta["replaced"] = previous
    store.journal.write(op="adopt", step="writing", prev=previous, started=utc_stamp())
    gen = write_generation(store, data, store.live_attrs(), meta)
    store.journal.write(op="adopt", step="flipping", new=gen.id, prev=previous, started=utc_stamp())
    store.flip(gen.id)
    fsio.crash_point("adopt_flipped")
    link_or_undo(store, gen, previous)
    store.journal.clear()
    store.history.record("adopt", "adopted", generation=gen.id)
    return gen


def take_live(store: Store, data: SetBytes, meta: dict[str, Any]) -> Generation:
    """A set changed by hand at the live paths becomes a generation of its own.

    When the hand change was written *through* a live path's link (``cp`` over it), it
    changed the live generation's files in place: that generation is marked
    ``changed_in_place`` and the new one replaces the one before it, so that a rollback
    never goes to a generation whose content is no longer what it recorded.
    """
    current = store.current()
    replaced = None if current is None else current.id
    damage = None if current is None else store.changed(current)
    repair = current is not None and damage is not None and store.pristine.repairable(current)
    if current is not None and damage is not None and not repair:
        store.update_meta(current, outcome=Outcome.CHANGED_IN_PLACE, damage=damage)
        replaced = current.meta.get("replaced")
    store.journal.write(op="adopt", step="writing", prev=store.current_id(), started=utc_stamp())
    gen = write_generation(
        store,
        data,
        store.live_attrs(),
        {**cert_meta(data.cert), **meta, "outcome": Outcome.ADOPTED, "replaced": replaced},
    )
    previous = store.current_id()
    store.journal.write(op="adopt", step="flipping", new=gen.id, prev=previous, started=utc_stamp())
    store.commit_flip(gen, op="adopt")
    link_or_undo(store, gen, previous)
    store.journal.clear()
    if current is not None and repair and store.pristine.repair(current):
        # No longer live: the bytes it was made with are back, a rollback can go there.
        store.update_meta(current, repaired=utc_stamp(), damage=damage)
    store.history.record("adopt", "adopted", generation=gen.id, source=meta.get("source"))
    return gen


def link_or_undo(store: Store, gen: Generation, previous: str | None) -> None:
    """Link the live paths to ``gen`` (now current), journaled as the adoption's last step;
    when they cannot be linked, undo the adoption (``current`` back to ``previous``) and
    raise the SwapError."""
    store.journal.write(op="adopt", step="linking", new=gen.id, prev=previous, started=utc_stamp())
    try:
        store.link_live()
    except SwapError as exc:
        _undo_adoption(store, gen, previous, str(exc))
        raise


def _undo_adoption(store: Store, gen: Generation, previous: str | None, why: str) -> None:
    """Put the live paths back as they were before ``gen`` was adopted, and forget it.

    Paths already linked become regular files again (the generation's bytes, the live
    files' modes); ``current`` goes back to ``previous`` (or away); the journal is
    cleared.  Raises SwapError, leaving the journal for the next recovery, only when a
    linked path cannot be put back (then ``current`` must keep naming ``gen``).
    """
    for role, path in store.live_paths().items():
        if not fsio.is_link_to(path, store.link_target(role)):
            continue
        tmp = path.with_name(f".{path.name}.{os.urandom(16).hex()}.tmp")
        try:
            st = os.stat(gen.file(role))
            mode = stat.S_IMODE(st.st_mode) | 0o200  # the live file was writable
            fsio.write_new(tmp, read_file(gen.file(role)), mode=mode, uid=st.st_uid, gid=st.st_gid)
            os.rename(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise SwapError(
                f"{why}; undoing the adoption failed too ({path}: {fsio.describe_os_error(exc)})"
            ) from exc
    try:
        if previous is not None and (store.generations_dir / previous).is_dir():
            store.flip(previous)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(store.current_link)
        fsio.remove_tree(gen.path)
        store.pristine.drop(gen.id)
        store.journal.clear()
    except OSError as exc:
        raise SwapError(f"{why}; undoing the adoption failed too: {exc}") from exc
    with contextlib.suppress(OSError):
        store.history.record("adopt", "undone", generation=gen.id, error=why)


def foreign(store: Store) -> str | None:
    """Why harper-certd must only watch the live paths (never write them), or None.

    A live path that is a link harper-certd did not make (certbot's ``live/``, a
    Kubernetes secret volume's ``..data`` links written by AtomicWriter), a path through
    a ``..``-named link (``<mount>/..data/tls.crt``), or a live folder on a read-only
    mount: replacing those files would be undone, or ignored, by their owner.
    """
    for role, path in store.live_paths().items():
        try:
            target: str | None = os.readlink(path)
        except OSError:
            target = None
        if target is not None and target != store.link_target(role):
            return (
                f"{path} is a link harper-certd did not make (-> {target}); its owner "
                "(certbot, a Kubernetes secret volume, ...) replaces it"
            )
        # The folders above it, nearest first (as Path.parents, without a Path for each)
        parts = os.fspath(path.absolute()).split("/")
        for end in range(len(parts) - 1, 1, -1):
            if parts[end - 1].startswith("..") and os.path.islink(parent := "/".join(parts[:end])):
                return f"{path} resolves through {parent}, a link written by its owner"
        try:
            flags = os.statvfs(path.parent).f_flag
        except OSError:
            continue
        if flags & os.ST_RDONLY:
            return f"{path.parent} is on a read-only mount"
    return None
