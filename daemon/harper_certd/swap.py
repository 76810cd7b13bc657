"""Install stage: put a set in place as one, keep generations, recover from crashes.

Layout (certbot's lineages and Kubernetes' AtomicWriter are the models)::

    <state>/generations/000007/{certificate.pem,privateKey.pem,ca.pem,meta.json}
    (a set without a CA file, ``SetPaths.ca`` None: no ca.pem, two links)
    <state>/current -> generations/000007          (one symlink, flipped by rename(2))
    <live cert path> -> <state>/current/certificate.pem   (each path Harper's config names)

Every path Harper reads resolves through ``current``, so one rename switches all
files at once (three, or two for a set without a CA file): at any instant, and after
a crash at any point, Harper's paths hold one complete set, the old or the new.  A
generation is written complete and fsynced before it can become current.  A journal in the state
directory says what was under way; ``recover()`` completes or undoes it.

Generation files are read-only once written (certificate and CA file ``0444``, the key
``0400``: the live files' modes without their write bits), and ``meta.json`` keeps each
file's SHA-256: ``intact()`` is checked before a generation is rolled back to or restored
from, because a ``cp`` over a live path writes *through* the link into the generation
(root ignores the read-only mode).  Everything the store creates belongs to the state
directory's owner, whoever runs the command (a root CLI chowns), so that the daemon's user
can always prune, journal and record.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harper_certd import fsio, load, names, recovery
from harper_certd.errors import StateError, SwapError
from harper_certd.history import History, utc_stamp
from harper_certd.journal import GenerationMeta, Journal, Op, Outcome
from harper_certd.recovery import Act
from harper_certd.roles import KEY_FILES, SetBytes, SetPaths
from harper_certd.validate import summarize

_ROLES = ("key", "ca", "cert")  # write order inside a generation; the key first
_ROLES_NO_CA = ("key", "cert")  # a set without a CA file (a public certificate)


@dataclass(frozen=True, slots=True)
class FileAttrs:
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class Generation:
    id: str
    path: Path
    meta: dict[str, Any]

    def file(self, role: str) -> Path:
        return self.path / KEY_FILES[role]

    @property
    def info(self) -> GenerationMeta:
        """``meta``, typed."""
        return GenerationMeta.from_dict(self.id, self.meta)

    def read(self) -> SetBytes:
        """The files' bytes; ``ca`` ``b""`` when the generation has no CA file."""
        ca = self.file("ca")
        with_ca = os.path.lexists(ca) or "ca" in (self.meta.get("digests") or {})
        return SetBytes(
            self.file("cert").read_bytes(),
            self.file("key").read_bytes(),
            ca.read_bytes() if with_ca else b"",
        )


@dataclass(frozen=True, slots=True)
class Recovery:
    op: str
    outcome: str  # "completed" or "undone"
    generation: str | None
    needs_verify: bool


def cert_meta(cert_pem: bytes) -> dict[str, str]:
    """The leaf's ``fingerprint`` (SHA-256 hex), ``subject`` (RFC 4514), ``not_after``
    (ISO 8601, UTC) and ``record_name``: what verification, rollback and ``status`` need
    from a generation.

    ``record_name`` is the name Harper 4.7 files the certificate under in
    ``system.hdb_certificate``: its CN, or its first SAN (tests/HARPER-RIG-FINDINGS.md);
    ``cn`` and ``first_san`` (DNS names before IP addresses) are kept beside it.
    Empty when the certificate cannot be parsed (an adopted set may be broken).
    """
    try:
        cert = load.parse_certificates(cert_pem, name="certificate").certs[0]
        leaf = summarize(cert)
        ids = names.identities(cert)
    except (load.Unreadable, IndexError, ValueError):
        return {}
    record = next(iter((*ids.cns, *ids.dns, *ids.ips)), "")
    return {
        "fingerprint": leaf.sha256,
        "subject": leaf.subject,
        "not_after": leaf.not_after.isoformat(),
        "record_name": record,
        "cn": next(iter(ids.cns), ""),
        "first_san": next(iter((*ids.dns, *ids.ips)), ""),
    }


_CERT_KEYS = ("fingerprint", "subject", "not_after", "record_name", "cn", "first_san")


def read_only(mode: int, role: str) -> int:
    """A generation file's mode: the live file's, without write bits; a key never for others."""
    mode = stat.S_IMODE(mode) & ~0o222
    return mode & 0o770 if role == "key" else mode


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class Pruned:
    """What ``Store.prune`` did: ids removed, and ids it could not remove with the cause."""

    removed: list[str]
    failed: list[tuple[str, str]]


class Store:
    """The state directory: generations, the ``current`` link, the journal, history."""

    def __init__(self, state_dir: Path, live: SetPaths) -> None:
        self.root = state_dir
        self.live = live
        self.generations_dir = state_dir / "generations"
        self.current_link = state_dir / "current"
        self.journal_path = state_dir / "journal.json"
        self.history = History(state_dir / "history.jsonl", self.owner, self.own)
        self.lock_path = state_dir / ".lock"

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
        return _ROLES_NO_CA if self.live.ca is None else _ROLES

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
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise StateError(f"generation {gen_id} is unreadable: {exc}") from exc
        if not meta.get("fingerprint") or any(meta.get(k) is None for k in _CERT_KEYS):
            # Written by a release that recorded fewer certificate details: read them from
            # the file, so that verification and rollback have a fingerprint to expect.
            with contextlib.suppress(OSError):
                found = cert_meta((path / KEY_FILES["cert"]).read_bytes())
                meta = {**meta, **{k: v for k, v in found.items() if meta.get(k) is None}}
                if not meta.get("fingerprint") and found.get("fingerprint"):
                    meta["fingerprint"] = found["fingerprint"]
        return Generation(gen_id, path, meta)

    def intact(self, gen: Generation) -> str | None:
        """None when every file of ``gen`` still has the digest recorded when it was written;
        otherwise a sentence naming the files changed in place (or missing)."""
        digests = gen.info.digests
        if not digests:
            return None  # written before digests were kept: nothing to compare
        changed = []
        for role in (r for r in _ROLES if r in digests):
            try:
                if _digest_file(gen.file(role)) != digests.get(role):
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
        if not self.generations_dir.is_dir():
            return []
        out = []
        for entry in sorted(self.generations_dir.iterdir()):
            if entry.name.isdigit() and (entry / "meta.json").exists():
                with contextlib.suppress(StateError):
                    out.append(self.generation(entry.name))
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

    def _next_id(self) -> str:
        existing = [int(p.name) for p in self.generations_dir.iterdir() if p.name.isdigit()]
        return f"{max(existing, default=0) + 1:06d}"

    def write_generation(
        self, data: SetBytes, attrs: dict[str, FileAttrs], meta: dict[str, Any]
    ) -> Generation:
        """A complete, fsynced generation directory; never visible half-written."""
        gen_id = self._next_id()
        tmp = self.generations_dir / f".tmp-{gen_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(mode=0o711)
            os.chmod(tmp, 0o711)  # noqa: S103 - traverse only
            self.own(tmp)
            for role in self.roles:
                a = attrs[role]
                # Read-only from the first byte: a `cp` through a live path's link then
                # fails for anyone but root (and root's is caught by the digests).
                fsio.write_new(
                    tmp / KEY_FILES[role],
                    data.role(role),
                    mode=read_only(a.mode, role),
                    uid=a.uid,
                    gid=a.gid,
                )
                fsio.crash_point(f"generation_file_written:{role}")
            digests = self.digests(data)
            full_meta = {**meta, "id": gen_id, "created": utc_stamp(), "digests": digests}
            uid, gid = self.owner()
            fsio.write_new(
                tmp / "meta.json",
                json.dumps(full_meta, indent=2).encode(),
                mode=0o644,
                uid=uid,
                gid=gid,
            )
            fsio.fsync_dir(tmp)
            fsio.crash_point("generation_written")
            os.rename(tmp, self.generations_dir / gen_id)
            fsio.fsync_dir(self.generations_dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SwapError(
                f"writing generation {gen_id} in {self.generations_dir} failed: "
                f"{fsio.describe_os_error(exc)}; the live set is unchanged"
            ) from exc
        fsio.crash_point("generation_renamed")
        return self.generation(gen_id)

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
        gens = self.generations()
        current = self.current_id()
        protected = {current}
        if current is not None:
            with contextlib.suppress(StateError):
                protected.add(self.generation(current).info.replaced)
        removable = [g for g in gens if g.id not in protected]
        excess = len(gens) - keep
        removed: list[str] = []
        failed: list[tuple[str, str]] = []
        for gen in removable[: max(excess, 0)]:
            errors: list[str] = []

            def note(func: object, path: str, info: Any, errors: list[str] = errors) -> None:
                exc = info[1]
                why = fsio.describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
                errors.append(f"{path}: {why}")

            shutil.rmtree(gen.path, onerror=note)  # onexc is Python 3.12
            if os.path.lexists(gen.path):
                failed.append((gen.id, errors[0] if errors else "still present"))
            else:
                removed.append(gen.id)
        if removed:
            with contextlib.suppress(OSError):
                fsio.fsync_dir(self.generations_dir)
        return Pruned(removed, failed)

    # --- journal and history ------------------------------------------------------------

    def journal(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.journal_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            # A torn journal cannot be: it is written whole and renamed. Treat as absent.
            return None
        return data

    def write_journal(self, **entry: Any) -> None:
        tmp = self.root / ".journal.json.tmp"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            uid, gid = self.owner()
            fsio.write_new(tmp, json.dumps(entry).encode(), mode=0o600, uid=uid, gid=gid)
            os.rename(tmp, self.journal_path)
            fsio.fsync_dir(self.root)
        except OSError as exc:
            raise SwapError(
                f"writing the journal in {self.root} failed: {fsio.describe_os_error(exc)}; "
                "the live set is unchanged"
            ) from exc

    def in_flight(self) -> bool:
        """Whether an operation is under way (or was cut short): a journal, or a pending set."""
        if self.journal() is not None:
            return True
        try:
            current = self.current()
        except StateError:
            return False
        return current is not None and current.meta.get("outcome") == Outcome.PENDING

    def clear_journal(self) -> None:
        # Not fsynced: a journal that comes back after a crash names a generation that is
        # already current, which recovery completes (and verifies) again, harmlessly.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)

    # --- adoption: the live files become symlinks through ``current`` ------------------

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

    def _link_live(self) -> None:
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

    def adopt(self, read_live: Callable[[], SetBytes], meta: dict[str, Any]) -> Generation | None:
        """Copy the live files into a generation and link the live paths to it.

        Returns the new generation, or None when the live paths are already managed and
        match ``current``.  The content seen at Harper's paths never changes here.  The
        generation records the leaf's fingerprint, subject and not_after (``cert_meta``),
        so that a rollback to it can be verified.  An adoption that cannot link the live
        paths (a read-only mount, an immutable folder) is undone before SwapError is raised:
        it never leaves a journal that blocks later operations.
        """
        if self.managed() and self.current_id() is not None:
            return None
        data = read_live()
        previous = self.current_id()
        meta = {**cert_meta(data.cert), **meta, "outcome": Outcome.ADOPTED}
        if previous is not None:
            meta["replaced"] = previous
        self.write_journal(op="adopt", step="writing", prev=previous, started=utc_stamp())
        gen = self.write_generation(data, self.live_attrs(), meta)
        self.write_journal(
            op="adopt", step="flipping", new=gen.id, prev=previous, started=utc_stamp()
        )
        self.flip(gen.id)
        fsio.crash_point("adopt_flipped")
        self._link_or_undo(gen, previous)
        self.clear_journal()
        self.history.record("adopt", "adopted", generation=gen.id)
        return gen

    def take_live(self, data: SetBytes, meta: dict[str, Any]) -> Generation:
        """A set changed by hand at the live paths becomes a generation of its own.

        When the hand change was written *through* a live path's link (``cp`` over it), it
        changed the live generation's files in place: that generation is marked
        ``changed_in_place`` and the new one replaces the one before it, so that a rollback
        never goes to a generation whose content is no longer what it recorded.
        """
        current = self.current()
        replaced = None if current is None else current.id
        if current is not None and (damage := self.intact(current)) is not None:
            self.update_meta(current, outcome=Outcome.CHANGED_IN_PLACE, damage=damage)
            replaced = current.meta.get("replaced")
        self.write_journal(op="adopt", step="writing", prev=self.current_id(), started=utc_stamp())
        gen = self.write_generation(
            data,
            self.live_attrs(),
            {**cert_meta(data.cert), **meta, "outcome": Outcome.ADOPTED, "replaced": replaced},
        )
        previous = self.current_id()
        self.write_journal(
            op="adopt", step="flipping", new=gen.id, prev=previous, started=utc_stamp()
        )
        self.commit_flip(gen, op="adopt")
        self._link_or_undo(gen, previous)
        self.clear_journal()
        self.history.record("adopt", "adopted", generation=gen.id, source=meta.get("source"))
        return gen

    def _link_or_undo(self, gen: Generation, previous: str | None) -> None:
        self.write_journal(
            op="adopt", step="linking", new=gen.id, prev=previous, started=utc_stamp()
        )
        try:
            self._link_live()
        except SwapError as exc:
            self._undo_adoption(gen, previous, str(exc))
            raise

    def _undo_adoption(self, gen: Generation, previous: str | None, why: str) -> None:
        """Put the live paths back as they were before ``gen`` was adopted, and forget it.

        Paths already linked become regular files again (the generation's bytes, the live
        files' modes); ``current`` goes back to ``previous`` (or away); the journal is
        cleared.  Raises SwapError, leaving the journal for the next recovery, only when a
        linked path cannot be put back (then ``current`` must keep naming ``gen``).
        """
        for role, path in self.live_paths().items():
            if not fsio.is_link_to(path, self.link_target(role)):
                continue
            tmp = path.with_name(f".{path.name}.tmp-undo-{os.getpid()}")
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                st = os.stat(gen.file(role))
                mode = stat.S_IMODE(st.st_mode) | 0o200  # the live file was writable
                fsio.write_new(
                    tmp, gen.file(role).read_bytes(), mode=mode, uid=st.st_uid, gid=st.st_gid
                )
                os.rename(tmp, path)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise SwapError(
                    f"{why}; undoing the adoption failed too ({path}: "
                    f"{fsio.describe_os_error(exc)})"
                ) from exc
        try:
            if previous is not None and (self.generations_dir / previous).is_dir():
                self.flip(previous)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.current_link)
            shutil.rmtree(gen.path, ignore_errors=True)
            self.clear_journal()
        except OSError as exc:
            raise SwapError(f"{why}; undoing the adoption failed too: {exc}") from exc
        with contextlib.suppress(OSError):
            self.history.record("adopt", "undone", generation=gen.id, error=why)

    def foreign(self) -> str | None:
        """Why harper-certd must only watch the live paths (never write them), or None.

        A live path that is a link harper-certd did not make (certbot's ``live/``, a
        Kubernetes secret volume's ``..data`` links written by AtomicWriter), a path through
        a ``..``-named link (``<mount>/..data/tls.crt``), or a live folder on a read-only
        mount: replacing those files would be undone, or ignored, by their owner.
        """
        for role, path in self.live_paths().items():
            try:
                target: str | None = os.readlink(path)
            except OSError:
                target = None
            if target is not None and target != self.link_target(role):
                return (
                    f"{path} is a link harper-certd did not make (-> {target}); its owner "
                    "(certbot, a Kubernetes secret volume, ...) replaces it"
                )
            absolute = path.absolute()
            for parent in absolute.parents:
                if parent.name.startswith("..") and parent.is_symlink():
                    return f"{path} resolves through {parent}, a link written by its owner"
            try:
                flags = os.statvfs(path.parent).f_flag
            except OSError:
                continue
            if flags & os.ST_RDONLY:
                return f"{path.parent} is on a read-only mount"
        return None

    def restore(self, target: Generation) -> None:
        """Put ``target`` back at the live paths (the links too, if someone replaced them)."""
        self.begin_rollback(target)
        self.commit_flip(target, op="rollback")
        self._link_live()
        self.finish(target, Outcome.RESTORED, op=Op.RESTORE)

    # --- install and rollback -----------------------------------------------------------

    def stage(self, data: SetBytes, meta: dict[str, Any], source: str) -> Generation:
        """Write the new generation; nothing Harper reads changes yet."""
        current = self.current_id()
        # The generation's own metadata is the install's journal: written and fsynced with
        # it, it says "pending" until the install finishes. After a crash, recover() keeps a
        # pending generation that ``current`` names (the flip happened) and removes one it
        # does not. No separate journal: two fsyncs fewer on every install.
        attrs = self.live_attrs()
        return self.write_generation(
            data,
            attrs,
            {**meta, "source": source, "replaced": current, "outcome": Outcome.PENDING},
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
        others = [g for g in self.generations() if g.id != live.id]
        if including_live:
            others.append(live)  # last: its fresh mtime must be the newest Harper sees
        for role in self.roles:
            for gen in others:
                with contextlib.suppress(OSError):
                    os.utime(gen.file(role))

    def finish(self, gen: Generation, outcome: str, op: str = "install", **details: Any) -> None:
        self.update_meta(gen, outcome=outcome, **details)
        self.clear_journal()
        fsio.crash_point("journal_cleared")
        self.history.record(op, outcome, generation=gen.id, **details)

    def begin_rollback(self, target: Generation) -> None:
        self.write_journal(
            op="rollback",
            step="flipping",
            prev=self.current_id(),
            new=target.id,
            started=utc_stamp(),
        )

    def discard(self, gen_id: str) -> None:
        if gen_id == self.current_id():
            raise SwapError(f"generation {gen_id} is live; it cannot be removed")
        shutil.rmtree(self.generations_dir / gen_id, ignore_errors=True)
        fsio.fsync_dir(self.generations_dir)

    # --- recovery ---------------------------------------------------------------------

    def _pending(self, current: str | None) -> list[str]:
        """Ids, not older than ``current``, whose generation still says ``pending``; older
        ones were settled when a newer generation became live."""
        floor = int(current or 0)
        out = []
        for entry in self.generations_dir.iterdir():
            if not entry.name.isdigit() or int(entry.name) < floor:
                continue
            try:
                gen = self.generation(entry.name)
            except StateError:
                continue
            if gen.meta.get("outcome") == Outcome.PENDING:
                out.append(gen.id)
        return out

    def _clean_temporaries(self) -> None:
        if self.generations_dir.is_dir():
            for entry in self.generations_dir.iterdir():
                if entry.name.startswith(".tmp-"):
                    shutil.rmtree(entry, ignore_errors=True)
        for entry in self._temporary_links():
            with contextlib.suppress(OSError):
                os.unlink(entry)

    def _temporary_links(self) -> Iterable[Path]:
        dirs = {self.root, *(p.parent for p in self.live_paths().values())}
        for folder in dirs:
            with contextlib.suppress(OSError):
                for entry in folder.iterdir():
                    if entry.name.startswith(".") and ".tmp-" in entry.name and entry.is_symlink():
                        yield entry

    def recover(self) -> Recovery | None:
        """Complete or undo whatever a crash interrupted; None when nothing was under way.

        The decision is ``recovery.decide`` (pure); this carries it out.
        """
        self.ensure()
        raw = self.journal()
        journal = None if raw is None else Journal.from_dict(raw)
        self._clean_temporaries()
        current = self.current_id()
        existing = {p.name for p in self.generations_dir.iterdir() if p.name.isdigit()}
        plan = recovery.decide(journal, current, self._pending(current), existing)
        if plan.op is None:
            return None
        for action in plan.actions:
            gen_id = action.generation
            if action.act is Act.MARK_RECOVERED and gen_id is not None:
                with contextlib.suppress(StateError):
                    recovered = self.update_meta(self.generation(gen_id), outcome=Outcome.RECOVERED)
                    self.nudge(recovered)  # the crash may have come before Harper was woken
            elif action.act is Act.DISCARD and gen_id is not None:
                self.discard(gen_id)
            elif action.act is Act.LINK_LIVE and gen_id is not None:
                gen = self.generation(gen_id)
                prev = action.prev or gen.meta.get("replaced")
                try:
                    self._link_or_undo(gen, prev)
                except SwapError:
                    if self.journal() is not None:
                        raise  # not even undone: said, and the next operation tries again
                    return Recovery(plan.op, "undone", prev, needs_verify=False)
            elif action.act is Act.FLIP and gen_id is not None:
                self.commit_flip(self.generation(gen_id), op=Op.ROLLBACK)
            elif action.act is Act.CLEAR_JOURNAL:
                self.clear_journal()
            elif action.act is Act.RECORD:
                self.history.record(str(action.op), str(action.outcome), generation=gen_id)
        return Recovery(plan.op, str(plan.outcome), plan.generation, plan.needs_verify)


def require_no_foreign_files(store: Store) -> None:
    """Refuse to run when a live path is something we would not replace (a directory, say)."""
    for role, path in store.live_paths().items():
        st = fsio.lstat_or_none(path)
        if st is None or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            continue
        raise SwapError(f"live {role} path {path} is neither a file nor a link")
