"""Read a replacement set from a folder: Harper's names or another tool's, as hostile input.

Harper's names: ``certificate.pem``, ``privateKey.pem``, ``ca.pem``.
certbot's: ``fullchain.pem`` (or ``cert.pem`` + ``chain.pem``) and ``privkey.pem``; the CA
file then comes from the configuration or the live ``ca.pem``.  The other tools' names
(cert-manager and Vault's ``tls.crt``/``tls.key``/``ca.crt``, acme.sh's ``fullchain.cer`` +
``<domain>.key``, step's ``<name>.crt`` + ``<name>.key`` + ``root_ca.crt``) are one table,
``roles.HANDOVERS``; they are read as certbot's are (a CA file when the tool writes one,
else the configured or live one).
For a set without a CA file (a public certificate, ``ca_file=False``): Harper's
``certificate.pem`` + ``privateKey.pem`` or certbot's names, and no ``ca.pem`` (one is
refused, ``source_has_ca_file``); certbot's ``chain.pem`` holds intermediates, not a CA file.

Every member is opened with ``O_NOFOLLOW`` relative to a descriptor of the folder
(openat(2)), then ``fstat``-ed for type, size and owner: a link swapped in between a
check and the open can never make us read a file outside the set (issue 10 item 5:
16 of 200 timed swaps did before).  The only links followed are a sibling name inside
the folder and, in a certbot ``live/<name>`` folder, certbot's own
``../../archive/<name>/<file>`` shape, walked one ``O_NOFOLLOW`` step at a time.  The
bytes read are kept (``Source.members``): filing copies those, never the folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harper_certd import load, rawio
from harper_certd.roles import HANDOVERS, HARPER_NAMES, SetBytes, handover_names


class SourceRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Identity = tuple[int, int, int]  # st_dev, st_ino, st_mtime_ns of the folder as it was read


@dataclass(frozen=True, slots=True)
class Source:
    folder: Path
    data: SetBytes
    is_certbot_lineage: bool  # a member was read through certbot's live/ -> archive/ link
    members: tuple[tuple[str, bytes], ...] = ()  # (name in the folder, bytes read), in order
    identity: Identity | None = None
    # each role's file as messages name it: (certificate, key, CA file); the CA file may be
    # the configured one a folder without ca.pem is given, and is "" for a set without one
    labels: tuple[str, str, str] = ("certificate", "private key", "CA file")
    # names in the folder not read as the set's, sorted (listed only; never opened)
    others: tuple[str, ...] = ()

    def other_keys(self) -> tuple[str, ...]:
        """The folder's other names that look like a private key's (``*.key``, ``*.p8``,
        ``*key*.pem``): a CA's key made beside the set is moved with it into processed/."""
        return tuple(
            n
            for n in self.others
            if n.lower().endswith((".key", ".p8", ".pk8"))
            or (n.lower().endswith(".pem") and "key" in n.lower())
        )


MEMBER_LIMIT = load.MAX_FILE_BYTES  # bytes per member file

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under a member's name must not hang the daemon.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_ARCHIVE_LINK = re.compile(r"\.\./\.\./archive/([^/]+)/([^/]+)")


def user_name(uid: int) -> str:
    """``name`` for a uid known to the system, else ``uid N``."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _uid_text(uid: int) -> str:
    name = user_name(uid)
    return name if name.startswith("uid ") else f"uid {uid} ({name})"


def _mode_text(st: os.stat_result) -> str:
    return f"owner {user_name(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}"


def identity_of(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino, st.st_mtime_ns


@contextlib.contextmanager
def _fd(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _check_dir(st: os.stat_result, shown: Path | str, trusted_uids: set[int]) -> None:
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SourceRefused(
            "source_unsafe",
            f"{shown} is writable by users other than its owner (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); its files could change under us",
        )
    if st.st_uid not in trusted_uids:
        raise SourceRefused(
            "source_unsafe",
            f"{shown} is owned by {_uid_text(st.st_uid)}, not root or Harper's user",
        )


def open_folder(folder: Path, trusted_uids: set[int]) -> tuple[int, os.stat_result]:
    """A descriptor of ``folder`` (never through a link) and its fstat; checked for safety."""
    try:
        fd = os.open(folder, _DIR_FLAGS)
    except FileNotFoundError:
        raise SourceRefused("source_unreadable", f"{folder} does not exist") from None
    except OSError as exc:
        st = fsio_lstat(folder)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise SourceRefused(
                "source_unsafe",
                f"{folder} is a symlink; hand over a folder holding the set's files",
            ) from None
        if exc.errno == errno.ENOTDIR:
            raise SourceRefused("source_unreadable", f"{folder} is not a folder") from None
        detail = f" ({_mode_text(st)})" if st is not None else ""
        raise SourceRefused(
            "source_unreadable",
            f"{folder}{detail} cannot be opened by {user_name(os.geteuid())}: "
            f"{os.strerror(exc.errno or errno.EIO)}",
        ) from None
    try:
        st = os.fstat(fd)
        _check_dir(st, folder, trusted_uids)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def fsio_lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _read_fd(fd: int, shown: str, trusted_uids: set[int], limit: int = MEMBER_LIMIT) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SourceRefused("source_unreadable", f"{shown} is not a regular file")
    if st.st_uid not in trusted_uids:
        raise SourceRefused(
            "source_unsafe",
            f"{shown} is owned by {_uid_text(st.st_uid)}, not root or Harper's user",
        )
    if st.st_size > limit:
        raise SourceRefused(
            "source_unreadable",
            f"{shown} is {st.st_size} bytes, over the {limit} byte limit for this PEM file",
        )
    data = rawio.read_fd(fd, limit, st.st_size)
    if data is None:
        raise SourceRefused(
            "source_unreadable", f"{shown} grew over the {limit} byte limit while read"
        )
    return data


def _open_error(exc: OSError, dir_fd: int, name: str, shown: str) -> SourceRefused:
    if isinstance(exc, FileNotFoundError):
        return SourceRefused("source_unreadable", f"{shown} does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        try:
            st: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            st = None
        detail = f" ({_mode_text(st)})" if st is not None else ""
        return SourceRefused(
            "source_unreadable",
            f"{shown}{detail} cannot be read by {user_name(os.geteuid())}: permission denied; "
            f"hand sets over readable by {user_name(os.geteuid())}",
        )
    return SourceRefused(
        "source_unreadable", f"{shown} cannot be opened: {os.strerror(exc.errno or errno.EIO)}"
    )


class _Reader:
    """Members of one folder, read through its descriptor."""

    def __init__(self, folder: Path, dir_fd: int, trusted_uids: set[int]) -> None:
        self.folder = folder
        self.dir_fd = dir_fd
        self.trusted = trusted_uids
        self.names = set(os.listdir(dir_fd))
        self.lineage = False
        self.read: list[tuple[str, bytes]] = []

    def has(self, name: str) -> bool:
        return name in self.names

    def member(self, name: str, *, ca: bool = False) -> bytes:
        """The member's bytes; ``ca``: a CA file, read up to ``load.MAX_CA_FILE_BYTES`` (what
        Node loads) instead of ``MEMBER_LIMIT``."""
        limit = load.MAX_CA_FILE_BYTES if ca else MEMBER_LIMIT
        shown = f"{self.folder}/{name}"
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise _open_error(exc, self.dir_fd, name, shown) from None
            data = self._through_link(name, shown, limit)
        else:
            with _fd(fd):
                data = _read_fd(fd, shown, self.trusted, limit)
        self.read.append((name, data))
        return data

    def _through_link(self, name: str, shown: str, limit: int) -> bytes:
        try:
            target = os.readlink(name, dir_fd=self.dir_fd)
        except OSError:  # replaced between the open and here: the folder is being written
            raise SourceRefused(
                "source_unreadable", f"{shown} changed while it was read; hand sets over whole"
            ) from None
        if "/" not in target and target not in (".", ".."):
            # A sibling inside the folder: opened with O_NOFOLLOW too (no chains of links).
            try:
                fd = os.open(target, _FILE_FLAGS, dir_fd=self.dir_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise SourceRefused(
                        "source_unsafe", f"{shown} is a link to a link ({target})"
                    ) from None
                raise _open_error(exc, self.dir_fd, target, f"{self.folder}/{target}") from None
            with _fd(fd):
                return _read_fd(fd, shown, self.trusted, limit)
        shape = _ARCHIVE_LINK.fullmatch(target)
        if shape is None:
            raise SourceRefused(
                "source_unsafe",
                f"{shown} is a symlink pointing outside the source folder ({target})",
            )
        if self.folder.parent.name != "live":
            raise SourceRefused(
                "source_unreadable",
                f"{shown} is a link to {target}, which points nowhere here: this is a copy of a "
                "certbot live/ folder made without following its links; copy it with -L "
                f"(cp -rL /etc/letsencrypt/live/{shape[1]} …)",
            )
        self.lineage = True
        return self._from_archive(shape[1], shape[2], shown, target, limit)

    def _from_archive(self, lineage: str, file: str, shown: str, target: str, limit: int) -> bytes:
        """certbot's ``../../archive/<lineage>/<file>``, one O_NOFOLLOW step at a time."""
        fds: list[int] = []
        try:
            fds.append(os.open("..", _DIR_FLAGS, dir_fd=self.dir_fd))  # live/
            fds.append(os.open("..", _DIR_FLAGS, dir_fd=fds[-1]))  # the certbot config dir
            for part in ("archive", lineage):
                fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                _check_dir(os.fstat(fds[-1]), f"{shown} -> {target}: {part}", self.trusted)
            fd = os.open(file, _FILE_FLAGS, dir_fd=fds[-1])
        except FileNotFoundError:
            raise SourceRefused(
                "source_unreadable",
                f"{shown} is a link to {target}, which points nowhere; if this folder is a copy "
                "of a certbot live/ folder, copy it with -L",
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise SourceRefused(
                    "source_unsafe", f"{shown} -> {target} passes through a symlink"
                ) from None
            raise _open_error(exc, fds[-1] if fds else self.dir_fd, file, shown) from None
        finally:
            for opened in fds:
                os.close(opened)
        with _fd(fd):
            return _read_fd(fd, shown, self.trusted, limit)


def read_source(
    folder: Path, *, trusted_uids: set[int], ca_fallback: Path | None, ca_file: bool = True
) -> Source:
    """The set in ``folder``; raises SourceRefused with a code and a sentence.

    ``ca_file`` False: the target set has no CA file (``SetBytes.ca`` is then ``b""``).
    Reads at most four members of at most ``MEMBER_LIMIT`` bytes each (a CA file:
    ``load.MAX_CA_FILE_BYTES``), each a regular
    file owned by a uid in ``trusted_uids``; never opens anything through a link other
    than the two shapes in the module docstring.
    """
    with _reading(folder, trusted_uids) as (reader, st):
        if ca_file:
            data, names = _read_set(folder, reader, ca_fallback)
        else:
            data, names = _read_without_ca(folder, reader)
    cert, key, ca = names
    labels = (str(folder / cert), str(folder / key), "" if ca is None else ca)
    others = tuple(sorted(reader.names - {n for n, _ in reader.read}))
    return Source(folder, data, reader.lineage, tuple(reader.read), identity_of(st), labels, others)


@contextlib.contextmanager
def _reading(folder: Path, trusted_uids: set[int]) -> Iterator[tuple[_Reader, os.stat_result]]:
    """A reader of ``folder``'s members through its descriptor, and the folder's stat."""
    dir_fd, st = open_folder(folder, trusted_uids)
    with _fd(dir_fd):
        try:
            reader = _Reader(folder, dir_fd, trusted_uids)
        except OSError as exc:
            raise SourceRefused(
                "source_unreadable",
                f"{folder} ({_mode_text(st)}) cannot be listed: "
                f"{os.strerror(exc.errno or errno.EIO)}",
            ) from None
        yield reader, st


@dataclass(frozen=True, slots=True)
class Members:
    """A set folder's files by role; ``ca`` None when a certbot folder has no ``ca.pem``."""

    cert: bytes
    key: bytes
    ca: bytes | None
    certbot_names: bool  # fullchain.pem/cert.pem(+chain.pem) + privkey.pem, not Harper's
    # the members read for each role ("cert.pem (+ chain.pem)" when two make the certificate)
    names: tuple[str, str, str | None] = ("certificate", "private key", None)


def read_members(folder: Path, *, trusted_uids: set[int]) -> Members:
    """The set's files as ``read_source`` reads them (same links, owners, sizes), with no
    CA fallback: for copying a set elsewhere (``harper-certd stage``).  Raises SourceRefused."""
    with _reading(folder, trusted_uids) as (reader, _):
        return _read_members(folder, reader)


Names = tuple[str, str, str | None]  # certificate and key member, the CA file's path


def _read_set(folder: Path, reader: _Reader, ca_fallback: Path | None) -> tuple[SetBytes, Names]:
    found = _read_members(folder, reader)
    cert, key, ca_name = found.names
    if found.ca is not None:
        ca_path = str(folder / ca_name) if ca_name else "CA file"
        return SetBytes(found.cert, found.key, found.ca), (cert, key, ca_path)
    if ca_fallback is None:
        raise SourceRefused(
            "source_incomplete",
            f"{folder} has no ca.pem and no CA file is configured (ca_file)",
        )
    try:
        ca = load.read_bounded(ca_fallback, limit=load.MAX_CA_FILE_BYTES)
    except load.Unreadable as exc:
        raise SourceRefused("source_unreadable", f"CA file {ca_fallback}: {exc}") from None
    return SetBytes(found.cert, found.key, ca), (cert, key, str(ca_fallback))


def _read_without_ca(folder: Path, reader: _Reader) -> tuple[SetBytes, Names]:
    """Certificate (full chain) and key, for a set without a CA file; a CA file refused."""
    if reader.has("ca.pem"):
        raise SourceRefused(
            "source_has_ca_file",
            f"{folder} holds ca.pem, but this set has no CA file: its chain is checked against "
            "the system trust store. Hand over the certificate (full chain) and key only, or "
            "name a certificateAuthority for the set in Harper's configuration first",
        )
    if reader.has("certificate.pem") and reader.has("privateKey.pem"):
        data = SetBytes(reader.member("certificate.pem"), reader.member("privateKey.pem"))
        return data, ("certificate.pem", "privateKey.pem", None)
    found = _read_members(folder, reader)  # another tool's CA file is not used here
    return SetBytes(found.cert, found.key), (found.names[0], found.names[1], None)


def _listing(reader: _Reader) -> str:
    present = sorted(reader.names)
    more = f" and {len(present) - 20} more" if len(present) > 20 else ""
    return (", ".join(present[:20]) + more) or "nothing"


def _read_members(folder: Path, reader: _Reader) -> Members:
    member = reader.member
    if all(reader.has(n) for n in HARPER_NAMES):
        cert, key = (member(n) for n in HARPER_NAMES[:2])
        ca = member(HARPER_NAMES[2], ca=True)
        return Members(cert, key, ca, certbot_names=False, names=HARPER_NAMES)
    if reader.has(HARPER_NAMES[0]) and reader.has(HARPER_NAMES[1]):
        # Harper's names without ca.pem: the CA file comes from ``ca_file`` or the live one,
        # as for certbot's names (a newcomer's second set, made from the same CA, was refused
        # as "holds no set" while the same two files named cert.pem/privkey.pem went in)
        cert, key = (member(n) for n in HARPER_NAMES[:2])
        return Members(cert, key, None, False, (*HARPER_NAMES[:2], None))
    if reader.has("privkey.pem") and (reader.has("fullchain.pem") or reader.has("cert.pem")):
        cert_name = "fullchain.pem"
        if reader.has("fullchain.pem"):
            cert = member("fullchain.pem")
        else:
            cert, cert_name = member("cert.pem"), "cert.pem"
            if reader.has("chain.pem"):
                cert = cert.rstrip(b"\n") + b"\n" + member("chain.pem")
                cert_name = "cert.pem (+ chain.pem)"
        key = member("privkey.pem")
        ca_name = "ca.pem" if reader.has("ca.pem") else None
        certbot_ca = member("ca.pem", ca=True) if ca_name else None
        return Members(cert, key, certbot_ca, True, (cert_name, "privkey.pem", ca_name))
    for handover in HANDOVERS:
        if handover.tool in ("Harper", "certbot"):
            continue  # above: Harper's names and certbot's (read through its links)
        shape = handover_names(handover, reader.names)
        if shape is None:
            continue
        cert_name, key_name, ca_name, _ = shape
        cert, key = member(cert_name), member(key_name)
        handed_ca = member(ca_name, ca=True) if ca_name else None
        return Members(cert, key, handed_ca, True, (cert_name, key_name, ca_name or None))
    raise SourceRefused("source_incomplete", f"{folder} {_not_a_set(reader)}")


def _not_a_set(reader: _Reader) -> str:
    """What a folder in no known shape holds, and the shapes known (``roles.HANDOVERS``)."""
    shapes = "; ".join(
        f"{h.tool}'s {' or '.join(h.cert)} + {h.key}" + (f" (+ {h.ca})" if h.ca else "")
        for h in HANDOVERS
    )
    return f"holds no set in a shape known here ({shapes}); found: {_listing(reader)}"
