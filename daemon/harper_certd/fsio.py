"""Durable file operations: complete, fsynced, then renamed; directories fsynced.

Also the crash points used by the fault-injection tests: a real SIGKILL of the
process at a named step, chosen by ``HARPER_CERTD_CRASH_AT``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

CRASH_ENV = "HARPER_CERTD_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here, as a power cut would, when the fault-injection tests ask for it."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)


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
) -> None:
    """Create ``path`` (it must not exist) with ``mode`` from its first byte, write, fsync."""
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
        if sync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)


def replace_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one rename(2): readers see the old or the new, never none."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
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
