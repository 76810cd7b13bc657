"""Durable file operations: complete, fsynced, then renamed; directories fsynced.

Also the crash points used by the fault-injection tests: a real SIGKILL of the
process at a named step, chosen by ``HARPER_CERTD_CRASH_AT``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pwd
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harper_certd.rawio import read_fd

CRASH_ENV = "HARPER_CERTD_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here, as a power cut would, when the fault-injection tests ask for it."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted == name:
        import signal  # start-up cost: its three enums (1 ms), for the crash tests alone

        os.kill(os.getpid(), signal.SIGKILL)


def remove_tree(path: Path, onerror: Callable[[Any, str, Any], object] | None = None) -> None:
    """``shutil.rmtree(path)``: errors ignored, or each given to ``onerror`` (its signature).
    shutil is imported here, not at the top of the store's modules: with bz2, lzma and zlib
    it cost 2.4 ms of every ``status``, which removes nothing."""
    import shutil  # start-up cost: see the docstring

    if onerror is None:
        shutil.rmtree(path, ignore_errors=True)
    else:
        shutil.rmtree(path, onerror=onerror)  # onexc is Python 3.12


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    uid: int | None = None,
    gid: int | None = None,
    sync: bool = True,
    pending: list[int] | None = None,
) -> None:
    """Create ``path`` (it must not exist) with ``mode`` from its first byte, write, fsync.

    ``pending``: not fsynced here; the open descriptor is appended for ``sync_all``, which
    fsyncs a folder's new files one after the other once all are written: the first fsync's
    journal commit carries every file's inode, and the others find theirs committed."""
    # O_EXCL|O_NOFOLLOW: never write through a link someone planted; the mode given to
    # open() means the file is never wider than ``mode & 0o600`` while it is written.
    fd = os.open(
        path,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode & 0o600,
    )
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if (uid is not None and uid != os.geteuid()) or gid is not None:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.fchmod(fd, mode)
        if pending is not None:
            start_writeback(fd)
            pending.append(fd)
            return
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting: a hint,
    never a substitute for the fsync that follows (``sync_all``).

    ``posix_fadvise(POSIX_FADV_DONTNEED)`` starts the write-back of a file's dirty pages
    on Linux (``mm/fadvise.c``: ``__filemap_fdatawrite_range`` with ``WB_SYNC_NONE``) and
    drops only pages already clean, so what was just written stays cached; PostgreSQL's
    ``pg_flush_data`` falls back to it for the same purpose.  Started for each of a
    folder's new files before the first fsync, the blocks of all of them are allocated by
    the time that fsync commits ext4's journal, which then carries every file: the later
    fsyncs wait for no commit of their own.  On the bench machine (ext4 on a virtual disk,
    2026-12-07): four files and their folder written and fsynced in 1.9-3.0 ms instead of
    2.5-3.5 (three runs of 50); an install 0.4-0.7 ms sooner (three runs of 40 alternated
    installs).  Errors (a file system without it) are ignored: only the speed-up is lost."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no posix_fadvise
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def sync_all(pending: list[int]) -> None:
    """fsync every descriptor ``write_new`` left in ``pending``, then close each (emptying
    the list, also when an fsync fails: OSError, after every one is closed)."""
    try:
        for fd in pending:
            os.fsync(fd)
    finally:
        close_all(pending)


def close_all(pending: list[int]) -> None:
    """Close every descriptor in ``pending`` and empty it (those an error left open)."""
    while pending:
        with contextlib.suppress(OSError):
            os.close(pending.pop())


def temp_tag() -> str:
    """32 hex digits (128 bits) from ``os.urandom``, for a temporary file's name: what
    ``secrets.token_hex(16)`` returns, without importing ``secrets`` (hmac, random), which
    cost every command about 2 ms of its start-up."""
    return os.urandom(16).hex()


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one rename(2): readers see the old or the new, never none."""
    tmp = link.with_name(f".{link.name}.{temp_tag()}.tmp")
    os.symlink(target, tmp)
    try:
        os.rename(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(link.parent)


def is_link_to(path: Path, target: str) -> bool:
    try:
        return os.readlink(path) == target
    except OSError:
        return False


def lstat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock between the daemon and commands run by hand."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    return exc.strerror or str(exc)


def write_folder(path: Path, files: list[tuple[str, bytes]], *, mode: int = 0o600) -> None:
    """Create folder ``path`` (0700) holding ``files`` (name, bytes), each ``mode``, fsynced.

    Writes only the bytes given: nothing is copied from elsewhere, no link is followed.
    A name with a slash or a leading dot is refused (``ValueError``).
    """
    os.mkdir(path, 0o700)
    for name, data in files:
        if "/" in name or name.startswith(".") or not name:
            raise ValueError(f"refusing to write a file named {name!r}")
        write_new(path / name, data, mode=mode)
    fsync_dir(path)


class NotRegular(OSError):
    """``read_regular`` refused a file: a sentence naming the file and why (not a regular
    file, over the byte bound, an owner not trusted); ``errno`` EINVAL, EFBIG or EPERM."""

    def __str__(self) -> str:
        return str(self.strerror)


# O_NONBLOCK: opening a FIFO must not wait for a writer (issue 17: a FIFO ``reason.json``
# hung the daemon's main thread in open() for good); O_NOCTTY: a tty never becomes ours.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def read_regular(
    path: Path | str,
    limit: int,
    *,
    dir_fd: int | None = None,
    owners: frozenset[int] | None = None,
    follow: bool = False,
) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` bytes.

    Opened without following a link (``O_NOFOLLOW``), non-blocking (a FIFO or device never
    waits), ``fstat``-ed on the descriptor: anything but a regular file raises
    ``NotRegular`` (errno EINVAL) before a byte is read; more than ``limit`` bytes, by size
    or while read, raises ``NotRegular`` (EFBIG); ``owners`` given and the file's uid not in
    it raises ``NotRegular`` (EPERM) naming the owner.  ``dir_fd``: ``path`` is a name
    relative to that directory descriptor (openat(2)).  Other errors of open(2) and read(2)
    (a link: ELOOP, missing: ENOENT) are raised as the ``OSError`` they are.  ``follow``:
    as for ``open_regular``.
    """
    fd = open_regular(path, dir_fd=dir_fd, owners=owners, follow=follow)
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise NotRegular(errno.EFBIG, f"{path} is {st.st_size} bytes, over {limit}")
        data = read_fd(fd, limit, st.st_size)
        if data is None:
            raise NotRegular(errno.EFBIG, f"{path} grew over {limit} bytes while read")
        return data
    finally:
        os.close(fd)


def open_regular(
    path: Path | str,
    *,
    dir_fd: int | None = None,
    owners: frozenset[int] | None = None,
    follow: bool = False,
) -> int:
    """A read-only descriptor of the regular file ``path`` (the caller closes it): opened
    as ``read_regular`` opens, refused (``NotRegular``) as it refuses, except for size.
    ``follow``: a link at ``path`` is followed (only for a file in a folder no one else
    can write, ``others_can_write``: a Kubernetes ConfigMap's ``..data`` links)."""
    flags = _READ_FLAGS & ~os.O_NOFOLLOW if follow else _READ_FLAGS
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        _check_regular(path, os.fstat(fd), owners)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(path: Path | str, st: os.stat_result, owners: frozenset[int] | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(errno.EINVAL, f"{path} is not a regular file ({_kind(st)})")
    if owners is not None and st.st_uid not in owners:
        raise NotRegular(
            errno.EPERM, f"{path} is owned by {_owner(st.st_uid)}, not root or the daemon's user"
        )


def others_can_write(folder: Path) -> bool:
    """Whether users other than root and this process's can change what ``folder`` holds
    (group- or world-writable, or owned by another user); True when it cannot be stat-ed."""
    try:
        st = os.stat(folder)
    except OSError:
        return True
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) or st.st_uid not in (0, os.geteuid())


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def write_replace(
    directory: Path,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    sync: bool = True,
) -> None:
    """Replace ``directory/name`` with ``data`` whole: readers see the old or the new bytes.

    Written into a temporary name in ``directory`` that cannot be predicted (``.`` + name +
    128 random bits), created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a link or file planted
    under any name is never opened), ``fchmod``-ed to ``mode`` on the descriptor before the
    rename (never a chmod by path), fsynced, then renamed over ``name``: a link planted at
    ``name`` is replaced, never written through.  ``OSError`` on failure (the temporary
    file removed, ``name`` unchanged).
    """
    if "/" in name or not name or name in (".", ".."):
        raise ValueError(f"not a file name: {name!r}")
    tmp = directory / f".{name}.{temp_tag()}.tmp"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o600
    )
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(directory)
