"""Pristine copies: each generation's files as written, where no live path reaches them.

``<state>/pristine/<id>/`` (0700, files 0600) is written with generation ``<id>``.  A
generation that is not live and was changed in place (acme.sh's ``--install-cert``, ``cp``
and editors write *through* the live links, issue 17 item 5) is put back from that copy
(``repair``) before it is rolled back to or judged, so a plain writer cannot destroy the
history.  The live generation is never repaired: its files are what Harper reads now.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from harper_certd import fsio
from harper_certd.generation import ROLES, Generation, digest_file, read_file, read_only
from harper_certd.roles import KEY_FILES, SetBytes


class Pristine:
    """The pristine copies under ``folder`` (``<state>/pristine``).

    ``owner`` gives the state directory's (uid, gid), ``own`` hands a path to it
    (``swap.Store.owner``/``own``); ``live_id`` is the id ``current`` names, or None.
    """

    def __init__(
        self,
        folder: Path,
        owner: Callable[[], tuple[int, int]],
        own: Callable[[Path], None],
        live_id: Callable[[], str | None],
    ) -> None:
        self.folder = folder
        self._owner = owner
        self._own = own
        self._live_id = live_id

    def write(self, gen_id: str, data: SetBytes, roles: tuple[str, ...]) -> None:
        """``<folder>/<gen_id>/``: the generation's files (``roles``) as written, 0600, in a
        0700 folder no live path leads into (``repair`` reads them back).  OSError as raised.

        Not fsynced (five fsyncs fewer on every install: the generation itself takes seven):
        a copy is used only when its digest is the one the generation's metadata recorded
        (``repairable``), so a copy a power loss cut short is a copy missing, never a wrong
        one; the kernel writes it back within its dirty-page expiry (30 s by default)."""
        if not self.folder.is_dir():
            self.folder.mkdir(mode=0o700)
            self._own(self.folder)
        folder = self.folder / gen_id
        fsio.remove_tree(folder)  # left by a crash before its generation
        uid, gid = self._owner()
        os.mkdir(folder, 0o700)
        self._own(folder)
        for role in roles:
            fsio.write_new(
                folder / KEY_FILES[role], data.role(role), mode=0o600, uid=uid, gid=gid, sync=False
            )

    def write_missing(self, gen: Generation, roles: tuple[str, ...]) -> bool:
        """Write ``gen``'s copy from its own files (``roles``) when it has none and every
        file still has the digest recorded when ``gen`` was written; True when written.

        For a generation an install left ``pending``: an install writes the copy after the
        flip (``swap.Store.keep_pristine``), so a crash in between leaves none.  A file
        changed since (or unreadable) means no copy, never a wrong one."""
        digests = gen.info.digests
        if not digests or (self.folder / gen.id).is_dir():
            return False
        try:
            data = gen.read()
        except OSError:
            return False
        if any(hashlib.sha256(data.role(r)).hexdigest() != digests.get(r) for r in roles):
            return False
        try:
            self.write(gen.id, data, roles)
        except OSError:
            return False
        return True

    def drop(self, gen_id: str) -> None:
        """Forget generation ``gen_id``'s copy (the generation is gone)."""
        fsio.remove_tree(self.folder / gen_id)

    def repairable(self, gen: Generation) -> bool:
        """Whether every file of ``gen`` changed in place has its pristine copy, with the
        digest recorded when ``gen`` was written."""
        digests = gen.info.digests
        if not digests:
            return False
        for role in (r for r in ROLES if r in digests):
            with contextlib.suppress(OSError):
                if digest_file(gen.file(role)) == digests[role]:
                    continue
            try:
                if digest_file(self.folder / gen.id / KEY_FILES[role]) != digests[role]:
                    return False
            except OSError:
                return False
        return True

    def repair(self, gen: Generation) -> bool:
        """Put back, from ``<state>/pristine/<id>``, each file of ``gen`` changed in place;
        True when every file then has its recorded digest.  Never the live generation (its
        files are what Harper reads now): False for it.  Each file is replaced whole (a new
        inode, renamed in), with the mode, owner and group the changed file has."""
        if gen.id == self._live_id() or not self.repairable(gen):
            return False
        digests = gen.info.digests
        for role in (r for r in ROLES if r in digests):
            path = gen.file(role)
            with contextlib.suppress(OSError):
                if digest_file(path) == digests[role]:
                    continue
            data = read_file(self.folder / gen.id / KEY_FILES[role])
            try:
                st = os.lstat(path)
                mode, uid, gid = read_only(st.st_mode, role), st.st_uid, st.st_gid
            except OSError:
                mode, (uid, gid) = (0o400 if role == "key" else 0o444), self._owner()
            tmp = path.with_name(f".{path.name}.{os.urandom(16).hex()}.tmp")
            try:
                fsio.write_new(tmp, data, mode=mode, uid=uid, gid=gid)
                os.rename(tmp, path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                return False
        with contextlib.suppress(OSError):
            fsio.fsync_dir(gen.path)
        return True
