"""``harper-certd release``: hand plain files back to Harper (undo the adoption).

After the first install, Harper's configured paths are symlinks through
``<state>/current``.  Release replaces each link by a regular file holding the live
generation's bytes, with that file's mode, owner and group (the key 0600 from its first
byte: ``fsio.write_new``), written beside the link and renamed over it (one ``rename(2)``:
Harper never sees a missing or partial file).  The content Harper reads does not change,
so its hot reload (it sees a new inode) loads the same pair.  The state directory is left
as it is (history, generations) for the operator to keep or delete.

Run it with the daemon stopped: a running daemon would see the live files change and adopt
them again.  Uses: uninstalling, backups of plain files, moving to another state directory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from harper_certd import events, fsio, logs
from harper_certd.errors import SwapError
from harper_certd.recover import recover
from harper_certd.roles import KEY_FILES
from harper_certd.swap import Store


@dataclass(frozen=True, slots=True)
class Released:
    generation: str | None
    paths: tuple[Path, ...]  # the live paths now plain files
    already_plain: bool


def release(store: Store) -> Released:
    """Replace every managed live path by a plain copy of the live generation's file.

    SwapError when the live generation cannot be read or a path cannot be replaced; paths
    done before stay plain files with the same bytes (nothing Harper reads changes).
    """
    with fsio.locked(store.lock_path):
        recover(store)
        current = store.current_id()
        linked = {
            role: path
            for role, path in store.live_paths().items()
            if fsio.is_link_to(path, store.link_target(role))
        }
        if not linked:
            return Released(current, (), True)
        done: list[Path] = []
        # The key last: Harper reloads on the certificate's change and must then find the
        # same pair either way; the bytes are the same, so any order is safe.
        for role in ("ca", "cert", "key"):
            path = linked.get(role)
            if path is None:
                continue
            source = store.current_link / KEY_FILES[role]
            try:
                data = source.read_bytes()
                st = os.stat(source)
                tmp = path.with_name(f".{path.name}.release-{os.getpid()}")
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                # Generation files are read-only once written (the live file's mode without
                # write bits): the plain file gets its owner's write bit back.
                mode = (st.st_mode & 0o777) | stat.S_IWUSR
                fsio.write_new(tmp, data, mode=mode, uid=st.st_uid, gid=st.st_gid)
                os.rename(tmp, path)
                fsio.fsync_dir(path.parent)
            except OSError as exc:
                raise SwapError(
                    f"releasing {path}: {fsio.describe_os_error(exc)} "
                    f"(already plain: {', '.join(map(str, done)) or 'none'})"
                ) from exc
            done.append(path)
        store.history.record(
            "release", "released", generation=current, paths=[str(p) for p in done]
        )
        logs.emit(events.Released(generation=current, paths=[str(p) for p in done]))
        return Released(current, tuple(done), False)
