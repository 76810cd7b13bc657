"""Read a replacement set from a folder: Harper's names or certbot's, as hostile input.

Harper's names: ``certificate.pem``, ``privateKey.pem``, ``ca.pem``.
certbot's: ``fullchain.pem`` (or ``cert.pem`` + ``chain.pem``) and ``privkey.pem``; the CA
file then comes from the configuration or the live ``ca.pem``.  A certbot
``live/<name>`` folder of symlinks into ``../../archive/<name>/`` is read as certbot
lays it out; any other symlink must stay inside the folder.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harper_certd import load
from harper_certd.swap import SetBytes


class SourceRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Source:
    folder: Path
    data: SetBytes
    is_certbot_lineage: bool


HARPER_NAMES = ("certificate.pem", "privateKey.pem", "ca.pem")


def _allowed_roots(folder: Path) -> list[Path]:
    real = folder.resolve()
    roots = [real]
    # certbot: live/<name>/x.pem -> ../../archive/<name>/x1.pem
    if real.parent.name == "live":
        roots.append(real.parent.parent / "archive" / real.name)
    return roots


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def check_folder(folder: Path, trusted_uids: set[int]) -> None:
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        raise SourceRefused("source_unreadable", f"{folder} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SourceRefused("source_unreadable", f"{folder} is not a folder")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SourceRefused(
            "source_unsafe",
            f"{folder} is writable by users other than its owner (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); its files could change under us",
        )
    if st.st_uid not in trusted_uids:
        raise SourceRefused(
            "source_unsafe", f"{folder} is owned by uid {st.st_uid}, not root or Harper's user"
        )


def _read_member(folder: Path, name: str, trusted_uids: set[int], roots: list[Path]) -> bytes:
    path = folder / name
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        target = path.resolve()
        if not _inside(target, roots):
            raise SourceRefused(
                "source_unsafe", f"{path} is a symlink pointing outside the source folder"
            )
        st = os.stat(target)
        path = target
    if st.st_uid not in trusted_uids:
        raise SourceRefused(
            "source_unsafe", f"{path} is owned by uid {st.st_uid}, not root or Harper's user"
        )
    try:
        return load.read_bounded(path)
    except load.Unreadable as exc:
        raise SourceRefused("source_unreadable", str(exc)) from None


def _exists(folder: Path, name: str) -> bool:
    return os.path.lexists(folder / name)


def read_source(folder: Path, *, trusted_uids: set[int], ca_fallback: Path | None) -> Source:
    """The set in ``folder``; raises SourceRefused with a code and a sentence."""
    check_folder(folder, trusted_uids)
    roots = _allowed_roots(folder)
    lineage = any((folder / n).is_symlink() for n in ("fullchain.pem", "cert.pem", "privkey.pem"))

    def member(name: str) -> bytes:
        return _read_member(folder, name, trusted_uids, roots)

    if all(_exists(folder, n) for n in HARPER_NAMES):
        cert, key, ca = (member(n) for n in HARPER_NAMES)
        return Source(folder, SetBytes(cert, key, ca), lineage)
    if _exists(folder, "privkey.pem") and (
        _exists(folder, "fullchain.pem") or _exists(folder, "cert.pem")
    ):
        if _exists(folder, "fullchain.pem"):
            cert = member("fullchain.pem")
        else:
            cert = member("cert.pem")
            if _exists(folder, "chain.pem"):
                cert = cert.rstrip(b"\n") + b"\n" + member("chain.pem")
        key = member("privkey.pem")
        if _exists(folder, "ca.pem"):
            return Source(folder, SetBytes(cert, key, member("ca.pem")), lineage)
        if ca_fallback is None:
            raise SourceRefused(
                "source_incomplete",
                f"{folder} has no ca.pem and no CA file is configured (ca_file)",
            )
        try:
            ca = load.read_bounded(ca_fallback)
        except load.Unreadable as exc:
            raise SourceRefused("source_unreadable", f"CA file {ca_fallback}: {exc}") from None
        return Source(folder, SetBytes(cert, key, ca), lineage)
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise SourceRefused(
        "source_incomplete",
        f"{folder} holds neither Harper's {', '.join(HARPER_NAMES)} nor certbot's "
        f"fullchain.pem/cert.pem + privkey.pem (found: {', '.join(present) or 'nothing'})",
    )
