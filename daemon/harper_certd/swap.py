"""The store: put a set in place as one, keep generations.

Layout (certbot's lineages and Kubernetes' AtomicWriter are the models)::

    <state>/generations/000007/{certificate.pem,privateKey.pem,ca.pem,meta.json}
    (a set without a CA file, ``SetPaths.ca`` None: no ca.pem, two links)
    <state>/current -> generations/000007          (one symlink, flipped by rename(2))
    <live cert path> -> <state>/current/certificate.pem   (each path Harper's config names)

Every path Harper reads resolves through ``current``, so one rename switches all
files at once (three, or two for a set without a CA file): at any instant, and after
a crash at any point, Harper's paths hold one complete set, the old or the new.  A
generation is written complete and fsynced before it can become current.  A journal in the state
directory says what was under way; ``recover.recover`` completes or undoes it.

Generation files are read-only once written (certificate and CA file ``0444``, the key
``0400``: the live files' modes without their write bits), and ``meta.json`` keeps each
file's SHA-256: ``intact()`` is checked before a generation is rolled back to or restored
from, because a ``cp`` over a live path writes *through* the link into the generation
(root ignores the read-only mode).  So each generation is also kept where no live path
reaches it, ``<state>/pristine/<id>/`` (0700, files 0600, written with it): a generation
that is not live and was changed in place (acme.sh's ``--install-cert``, ``cp`` and editors
write *through* the links, issue 17 item 5) is put back from that copy before it is rolled
back to or judged (``Pristine.repair``), so a plain writer cannot destroy the history.  A writer
that follows the links still changes the live generation at once; the daemon sees it
(``certd.live_changed`` with ``written_through``), keeps what was written as a new
generation and puts the old one back.  Better still, hand sets over: acme.sh's
``--reloadcmd 'harper-certd stage <folder>'`` (or ``stage --cert/--key/--ca``) instead of
``--cert-file`` paths in Harper's keys folder.  Everything the store creates belongs to the state
directory's owner, whoever runs the command (a root CLI chowns), so that the daemon's user
can always prune, journal and record.

The parts, each its own module: a generation and what is read from it (``generation``),
the pristine copies (``pristine``), the journal file (``journalfile``), the history
(``history``), taking live files in (``adoption``), and crash recovery, a pure plan
(``recovery``) and its executor (``recover``).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from harper_certd import fsio
from harper_certd.errors import StateError, SwapError
from harper_certd.generation import (
    CERT_KEYS,
    ROLES,
    ROLES_NO_CA,
    FileAttrs,
    Generation,
    cert_meta,
    digest_file,
    read_file,
    read_only,
)
from harper_certd.history import History, utc_stamp
from harper_certd.journal import Op, Outcome
from harper_certd.journalfile import JournalFile
from harper_certd.pristine import Pristine
from harper_certd.roles import KEY_FILES, SetBytes, SetPaths


class Pruned(NamedTuple):
    """What ``Store.prune`` did: ids removed, and ids it could not remove with the cause."""

    removed: list[str]
    failed: list[tuple[str, str]]


def generation_ids(folder: Path) -> list[str]:
    """The ids of the generations in ``folder``, oldest first: sub-folders named by digits
    that hold a ``meta.json`` (not read: ``Store.generations`` reads them and skips the
    unreadable)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(n for n in names if n.isdigit() and os.path.exists(folder / n / "meta.json"))


def next_generation_id(folder: Path) -> str:
    """The id after every digit-named sub-folder of ``folder``, six digits: one left half
    written (no ``meta.json`` yet) counts too, so its id is never given twice."""
    existing = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    return f"{max(existing, default=0) + 1:06d}"


class Store:
    """The state directory: generations, the ``current`` link, the journal, history."""

    def __init__(self, state_dir: Path, live: SetPaths) -> None:
        self.root = state_dir
        self.live = live
        self.generations_dir = state_dir / "generations"
        self.current_link = state_dir / "current"
        self.journal = JournalFile(state_dir, self.owner)
        self.history = History(state_dir / "history.jsonl", self.owner, self.own)
        self.lock_path = state_dir / ".lock"
        self.pristine = Pristine(state_dir / "pristine", self.owner, self.own, self.current_id)

    # --- layout ------------------------------------------------------------------------

    def ensure(self) -> None:
        try:
            for path in (self.root, self.generations_dir):
                if not path.is_dir():
                    # Harper's user must traverse to its files; nobody needs to list them.
                    # An existing directory keeps its mode (systemd's StateDirectoryMode).
                    path.mkdir(parents=True, mode=0o711)
                    os.chmod(path, 0o711)  # noqa: S103 - traverse only, despite the umask
                    if path != self.root:
                        self.own(path)
        except OSError as exc:
            raise StateError(f"state directory {self.root}: {fsio.describe_os_error(exc)}") from exc
        # The lock file exists before anyone locks it, owned by the state directory's owner:
        # a root CLI run first must not leave a lock the daemon's user cannot open.
        if not self.lock_path.exists():
            with contextlib.suppress(OSError):
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.close(fd)
                self.own(self.lock_path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The exclusive lock between the daemon and commands run by hand (``fsio.locked``).

        On a read-only or full state directory the lock file may not be creatable or
        writable: flock(2) needs neither, so the lock is then taken on a read-only
        descriptor, and the operation goes on to the step that fails and says why.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            try:
                fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise SwapError(
                    f"the state directory {self.root} cannot be locked: "
                    f"{fsio.describe_os_error(exc)}; the live set is unchanged"
                ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def owner(self) -> tuple[int, int]:
        """(uid, gid) of the state directory: whose everything the store writes is."""
        try:
            st = os.stat(self.root)
        except OSError:
            return os.geteuid(), os.getegid()
        return st.st_uid, st.st_gid

    def own(self, path: Path) -> None:
        """Give ``path`` (not what a link points to) to the state directory's owner.

        Only root can, and only root needs to: a CLI run by root (a certbot deploy hook)
        must leave nothing the daemon's user cannot prune, journal or append to.
        """
        if os.geteuid() != 0:
            return
        uid, gid = self.owner()
        if (uid, gid) == (0, 0):
            return
        with contextlib.suppress(OSError):
            os.lchown(path, uid, gid)

    @property
    def roles(self) -> tuple[str, ...]:
        """The files of this store's sets, in write order: no CA file when the live set
        names none (``SetPaths.ca`` None)."""
        return ROLES_NO_CA if self.live.ca is None else ROLES

    def digests(self, data: SetBytes) -> dict[str, str]:
        """SHA-256 hex of each of ``data``'s files (this store's roles), as ``meta.json``
        keeps them."""
        return {r: hashlib.sha256(data.role(r)).hexdigest() for r in self.roles}

    def live_paths(self) -> dict[str, Path]:
        paths = {"cert": self.live.cert, "key": self.live.key}
        if self.live.ca is not None:
            paths["ca"] = self.live.ca
        return paths

    def link_target(self, role: str) -> str:
        return str(self.current_link / KEY_FILES[role])

    def managed(self) -> bool:
        """Whether every live path already resolves through ``current``."""
        return all(fsio.is_link_to(p, self.link_target(r)) for r, p in self.live_paths().items())

    # --- generations -------------------------------------------------------------------

    def generation(self, gen_id: str) -> Generation:
        path = self.generations_dir / gen_id
        try:
            meta = json.loads(read_file(path / "meta.json"))
        except OSError as exc:
            why = fsio.describe_os_error(exc)
            raise StateError(f"generation {gen_id} is unreadable: {path}/meta.json: {why}") from exc
        except ValueError as exc:
            raise StateError(
                f"generation {gen_id} is unreadable: {path}/meta.json is not JSON"
            ) from exc
        if not meta.get("fingerprint") or any(meta.get(k) is None for k in CERT_KEYS):
            # Written by a release that recorded fewer certificate details: read them from
            # the file, so that verification and rollback have a fingerprint to expect.
            with contextlib.suppress(OSError):
                found = cert_meta(read_file(path / KEY_FILES["cert"]))
                meta = {**meta, **{k: v for k, v in found.items() if meta.get(k) is None}}
                if not meta.get("fingerprint") and found.get("fingerprint"):
                    meta["fingerprint"] = found["fingerprint"]
        return Generation(gen_id, path, meta)

    def intact(self, gen: Generation) -> str | None:
        """None when every file of ``gen`` still has the digest recorded when it was written;
        otherwise a sentence naming the files changed in place (or missing).  A generation
        that is not live is first put back from its pristine copy (``Pristine.repair``): only the
        live one, or one without a good copy, can be found changed."""
        damage = self.changed(gen)
        if damage is not None and self.pristine.repair(gen):
            return self.changed(gen)
        return damage

    def changed(self, gen: Generation) -> str | None:
        """As ``intact``, without trying the pristine copy first."""
        digests = gen.info.digests
        if not digests:
            return None  # written before digests were kept: nothing to compare
        changed = []
        for role in (r for r in ROLES if r in digests):
            try:
                if digest_file(gen.file(role)) != digests.get(role):
                    changed.append(KEY_FILES[role])
            except FileNotFoundError:
                changed.append(f"{KEY_FILES[role]} (missing)")
            except OSError:
                continue  # not readable by whoever asks (a key, say): cannot tell, not damage
        if not changed:
            return None
        return (
            f"generation {gen.id} was changed in place since it was written "
            f"({', '.join(changed)}): probably written through a live path's link"
        )

    def generations(self) -> list[Generation]:
        out = []
        for gen_id in generation_ids(self.generations_dir):
            with contextlib.suppress(StateError):
                out.append(self.generation(gen_id))
        return out

    def current_id(self) -> str | None:
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return None
        return Path(target).name

    def current(self) -> Generation | None:
        gen_id = self.current_id()
        return None if gen_id is None else self.generation(gen_id)

    def keep_pristine(self, gen: Generation, data: SetBytes) -> None:
        """Write ``gen``'s pristine copy (``Pristine.write``: ``data``, the bytes it was
        written with) once it is live; OSError as raised.

        An install writes it after ``certd.set_installed``, not before the flip: a copy is
        used only to put back a generation that is *not* live (``Pristine.repair``), so the
        live set never needs it, and its four inodes (a folder, three files; no fsync) are
        off the path to installed.  Until it is written the generation has no copy, as a
        copy a power loss cut short (``Pristine.write``): a crash before ``finish`` leaves
        the generation ``pending``, and recovery writes the copy from its files when they
        still have their recorded digests (``Pristine.write_missing``); a crash in the
        instant between ``finish`` and this leaves the live generation without a copy, as
        a power loss within the kernel's write-back delay does after any install."""
        self.pristine.write(gen.id, data, self.roles)

    def update_meta(self, gen: Generation, **changes: Any) -> Generation:
        meta = {**gen.meta, **changes}
        tmp = gen.path / ".meta.json.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # Bookkeeping after the swap, not part of it: renamed whole, but not fsynced (a
        # crash may leave the previous outcome, never a torn file).
        uid, gid = self.owner()
        fsio.write_new(
            tmp, json.dumps(meta, indent=2).encode(), mode=0o644, uid=uid, gid=gid, sync=False
        )
        os.rename(tmp, gen.path / "meta.json")
        return Generation(gen.id, gen.path, meta)

    def flip(self, gen_id: str) -> None:
        """Make ``gen_id`` current: the one atomic step that switches every file."""
        try:
            fsio.replace_symlink(self.current_link, f"generations/{gen_id}")
            self.own(self.current_link)
        except OSError as exc:
            raise SwapError(
                f"switching {self.current_link} to generation {gen_id} failed: "
                f"{fsio.describe_os_error(exc)}; the live set is unchanged"
            ) from exc

    def touch(self, gen: Generation) -> None:
        """Give a generation's files a fresh mtime (key first)."""
        for role in self.roles:
            with contextlib.suppress(OSError):
                os.utime(gen.file(role))

    def prune(self, keep: int) -> Pruned:
        """Remove the oldest generations beyond ``keep``; never the live one or the one before.

        A generation counts as removed only when its directory is gone (a root-owned one
        may not be removable by the daemon's user): the others are in ``failed`` with why.
        """
        gens = self.generations()  # the readable ones: only those count and are removed
        excess = len(gens) - keep
        if excess <= 0:
            return Pruned([], [])
        current = self.current_id()
        protected = {current}
        if current is not None:
            with contextlib.suppress(StateError):
                protected.add(self.generation(current).info.replaced)
        removable = [g for g in gens if g.id not in protected]
        removed: list[str] = []
        failed: list[tuple[str, str]] = []
        for gen in removable[:excess]:
            errors: list[str] = []

            def note(func: object, path: str, info: Any, errors: list[str] = errors) -> None:
                exc = info[1]
                why = fsio.describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
                errors.append(f"{path}: {why}")

            fsio.remove_tree(gen.path, onerror=note)
            if os.path.lexists(gen.path):
                failed.append((gen.id, errors[0] if errors else "still present"))
            else:
                removed.append(gen.id)
                self.pristine.drop(gen.id)
        if removed:
            with contextlib.suppress(OSError):
                fsio.fsync_dir(self.generations_dir)
        return Pruned(removed, failed)

    # --- the live paths: symlinks through ``current`` (adoption.py makes them) ----------

    def live_attrs(self) -> dict[str, FileAttrs]:
        attrs = {}
        for role, path in self.live_paths().items():
            try:
                st = os.stat(path)
            except OSError:
                default = 0o600 if role == "key" else 0o644
                st = os.stat(path.parent) if path.parent.exists() else os.stat(".")
                attrs[role] = FileAttrs(default, st.st_uid, st.st_gid)
                continue
            attrs[role] = FileAttrs(st.st_mode, st.st_uid, st.st_gid)
        return attrs

    def link_live(self) -> None:
        """Each live path not yet a link through ``current`` becomes one; SwapError."""
        for role, path in self.live_paths().items():
            if fsio.is_link_to(path, self.link_target(role)):
                continue
            try:
                fsio.replace_symlink(path, self.link_target(role))
            except OSError as exc:
                raise SwapError(
                    f"replacing {path} by a link to generation files failed: "
                    f"{fsio.describe_os_error(exc)}"
                ) from exc
            fsio.crash_point(f"adopt_linked:{role}")

    def restore(self, target: Generation) -> None:
        """Put ``target`` back at the live paths (the links too, if someone replaced them)."""
        self.begin_rollback(target)
        self.commit_flip(target, op="rollback")
        self.link_live()
        self.finish(target, Outcome.RESTORED, op=Op.RESTORE)

    # --- install and rollback -----------------------------------------------------------

    def stage(self, data: SetBytes, meta: dict[str, Any], source: str) -> Generation:
        """Write the new generation, without its pristine copy (the caller keeps it once
        the set is live: ``keep_pristine``); nothing Harper reads changes yet."""
        current = self.current_id()
        # The generation's own metadata is the install's journal: written and fsynced with
        # it, it says "pending" until the install finishes. After a crash, recover() keeps a
        # pending generation that ``current`` names (the flip happened) and removes one it
        # does not. No separate journal: two fsyncs fewer on every install.
        attrs = self.live_attrs()
        return write_generation(
            self,
            data,
            attrs,
            {**meta, "source": source, "replaced": current, "outcome": Outcome.PENDING},
            pristine=False,  # the caller keeps it once the set is live (keep_pristine)
        )

    def commit_flip(self, gen: Generation, op: str = "install") -> None:
        """The atomic switch; a crash after it is completed at recovery, not undone.

        Harper 4.7 ignores a certificate whose mtime is not newer than the one it loaded
        last (and then pairs the old certificate with the new key), so the target gets a
        fresh mtime first: this matters for rollbacks to an older generation.
        """
        self.touch(gen)
        self.flip(gen.id)
        fsio.crash_point("flipped")
        # Whether the flip happened is read from the link itself at recovery: the journal
        # needs no second write here.
        self.nudge(gen)

    def nudge(self, live: Generation, *, including_live: bool = False) -> None:
        """Wake Harper's file watchers, which sit on the inodes of the generation they loaded.

        A flip alone is invisible to them (inotify follows the link once, at watch time);
        a changed mtime on the watched inode makes chokidar stat the path again, see the
        new file and re-watch it.  Keys first: Harper pairs a certificate with the key it
        holds when the certificate's change is processed.
        """
        # every generation's folder but the live one: the digit names alone (a half-written
        # one is a ".tmp-" name until it is complete; a file missing is skipped), as strings
        # (about 15 paths an install: no stat of each meta.json, no Path per file)
        root = str(self.generations_dir)
        try:
            names = os.listdir(root)
        except OSError:
            names = []
        others = [f"{root}/{g}" for g in sorted(names) if g.isdigit() and g != live.id]
        if including_live:
            others.append(str(live.path))  # last: its fresh mtime must be the newest Harper sees
        for role in self.roles:
            file_name = KEY_FILES[role]
            for folder in others:
                with contextlib.suppress(OSError):
                    os.utime(f"{folder}/{file_name}")

    def finish(self, gen: Generation, outcome: str, op: str = "install", **details: Any) -> None:
        self.update_meta(gen, outcome=outcome, **details)
        self.journal.clear()
        fsio.crash_point("journal_cleared")
        self.history.record(op, outcome, generation=gen.id, **details)

    def begin_rollback(self, target: Generation) -> None:
        self.journal.write(
            op="rollback",
            step="flipping",
            prev=self.current_id(),
            new=target.id,
            started=utc_stamp(),
        )

    def discard(self, gen_id: str) -> None:
        if gen_id == self.current_id():
            raise SwapError(f"generation {gen_id} is live; it cannot be removed")
        fsio.remove_tree(self.generations_dir / gen_id)
        self.pristine.drop(gen_id)
        fsio.fsync_dir(self.generations_dir)


def write_generation(
    store: Store,
    data: SetBytes,
    attrs: dict[str, FileAttrs],
    meta: dict[str, Any],
    *,
    pristine: bool = True,
) -> Generation:
    """A complete, fsynced generation directory of ``store``; never visible half-written.

    ``pristine``: its pristine copy written with it (``Pristine.write``); an install
    writes it after the set is live instead (``keep_pristine``).  SwapError when it
    cannot be written (nothing of it is left)."""
    gen_id = next_generation_id(store.generations_dir)
    tmp = store.generations_dir / f".tmp-{gen_id}"
    fsio.remove_tree(tmp)
    pending: list[int] = []  # the new files, fsynced together once all are written
    try:
        tmp.mkdir(mode=0o711)
        os.chmod(tmp, 0o711)  # noqa: S103 - traverse only
        store.own(tmp)
        for role in store.roles:
            a = attrs[role]
            # Read-only from the first byte: a `cp` through a live path's link then
            # fails for anyone but root (and root's is caught by the digests).
            fsio.write_new(
                tmp / KEY_FILES[role],
                data.role(role),
                mode=read_only(a.mode, role),
                uid=a.uid,
                gid=a.gid,
                pending=pending,
            )
            fsio.crash_point(f"generation_file_written:{role}")
        digests = store.digests(data)
        full_meta = {**meta, "id": gen_id, "created": utc_stamp(), "digests": digests}
        uid, gid = store.owner()
        encoded = json.dumps(full_meta, indent=2).encode()
        fsio.write_new(
            tmp / "meta.json",
            encoded,
            mode=0o644,
            uid=uid,
            gid=gid,
            pending=pending,
        )
        # Every file's bytes on disk before the folder can be renamed in (as each fsynced
        # after its own write, one journal commit instead of four: bench/'s install phases)
        fsio.sync_all(pending)
        fsio.fsync_dir(tmp)
        if pristine:
            store.pristine.write(gen_id, data, store.roles)
        fsio.crash_point("generation_written")
        os.rename(tmp, store.generations_dir / gen_id)
        fsio.fsync_dir(store.generations_dir)
    except OSError as exc:
        fsio.remove_tree(tmp)
        raise SwapError(
            f"writing generation {gen_id} in {store.generations_dir} failed: "
            f"{fsio.describe_os_error(exc)}; the live set is unchanged"
        ) from exc
    finally:
        fsio.close_all(pending)  # those an error left open
    fsio.crash_point("generation_renamed")
    if full_meta.get("fingerprint") and all(full_meta.get(k) is not None for k in CERT_KEYS):
        # What ``generation`` would read back: the bytes just written, parsed (no
        # second open and read of the file).
        return Generation(gen_id, store.generations_dir / gen_id, json.loads(encoded))
    return store.generation(gen_id)  # it fills in what the metadata lacks from the file


def require_no_foreign_files(store: Store) -> None:
    """Refuse to run when a live path is something we would not replace (a directory, say)."""
    for role, path in store.live_paths().items():
        st = fsio.lstat_or_none(path)
        if st is None or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            continue
        raise SwapError(f"live {role} path {path} is neither a file nor a link")
