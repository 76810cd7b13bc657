"""``harper-certd stage``: hand a set from certbot, step or a person to the daemon.

The set is read from SOURCE (Harper's names, certbot's names with its ``live/`` links into
``archive/``, or explicit ``--cert/--key/--ca`` files), never moved or changed there (step
renews in place and needs its files back next time), and written into the incoming folder
the way the daemon expects a set to arrive: a dot-folder (``.stage-…``, ignored while it
is written), each file created with its mode from the first byte (the key 0600), owned
by the state directory's owner when run as root (so the daemon, as Harper's user, trusts
and reads it), fsynced, then renamed into place in one ``rename(2)``.

``wait_outcome`` follows the staged folder: the daemon moves it to ``processed/`` (installed,
unchanged or superseded: exit 0) or to ``rejected/`` with ``reason.json`` (stage
``after_swap``: installed, Harper did not take it, rolled back: exit 3; else refused: 1).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from harper_certd import fsio, hints, load, reasons, statefile
from harper_certd.clock import utc_now
from harper_certd.errors import CertdError
from harper_certd.roles import HARPER_NAMES
from harper_certd.source import SourceRefused, read_members


class StageError(CertdError):
    """The set could not be staged; nothing was written into the incoming folder."""


class Outcome(IntEnum):
    """``stage --wait`` exit statuses (as ``install``'s)."""

    INSTALLED = 0
    REFUSED = 1
    ROLLED_BACK = 3
    NO_OUTCOME = 4  # --timeout passed while the set was still waiting


@dataclass(frozen=True, slots=True)
class Staged:
    name: str  # the folder's name in incoming/
    path: Path
    files: tuple[str, ...]


def _stamp() -> str:
    return utc_now().strftime("%Y%m%dT%H%M%S%fZ")


def read_folder(folder: Path, trusted_uids: set[int]) -> dict[str, bytes]:
    """The set's files from a Harper-named or certbot folder, by the name to stage them under.

    A set without ``ca.pem`` (Harper's names or certbot's) is staged without one: the daemon
    takes its CA file from ``ca_file`` or the live one.  Raises SourceRefused (code and sentence).
    """
    found = read_members(folder, trusted_uids=trusted_uids)
    if not found.certbot_names:
        out = dict(zip(HARPER_NAMES[:2], (found.cert, found.key), strict=True))
        if found.ca is not None:
            out["ca.pem"] = found.ca
        return out
    out = {"fullchain.pem": found.cert, "privkey.pem": found.key}
    if found.ca is not None:
        out["ca.pem"] = found.ca
    return out


def read_files(cert: Path, key: Path, ca: Path | None) -> dict[str, bytes]:
    """Explicit files; each one's folder must not be writable by others."""
    out: dict[str, bytes] = {}
    for path, harper_name, certbot_name in (
        (cert, "certificate.pem", "fullchain.pem"),
        (key, "privateKey.pem", "privkey.pem"),
        (ca, "ca.pem", "ca.pem"),
    ):
        if path is None:
            continue
        try:
            st = os.stat(path.parent)
        except OSError as exc:
            raise SourceRefused("source_unreadable", f"{path}: {exc.strerror}") from None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise SourceRefused(
                "source_unsafe", f"{path.parent} is writable by others: {path} could change"
            )
        try:
            data = load.read_bounded(path)
        except load.Unreadable as exc:
            raise SourceRefused("source_unreadable", str(exc)) from None
        out[harper_name if ca is not None else certbot_name] = data
    return out


def owner_of(state: Path, incoming: Path) -> tuple[int, int]:
    """The state directory's owner (the daemon's user), else the incoming folder's."""
    for path in (state, incoming):
        try:
            st = os.stat(path)
        except OSError:
            continue
        return st.st_uid, st.st_gid
    raise StageError(f"neither {state} nor {incoming} exists: is harper-certd set up here?")


def stage_files(
    files: dict[str, bytes], incoming: Path, owner: tuple[int, int], *, by: str = "stage"
) -> Staged:
    """Write ``files`` as one folder renamed into ``incoming``; StageError leaves nothing.
    ``by``: the command the folder's name starts with (``<by>-<stamp>-<pid>``), so that
    where it is filed later says who made it."""
    if not incoming.is_dir():
        raise StageError(
            f"the incoming folder {incoming} does not exist (the daemon makes it at start)"
        )
    name = f"{by}-{_stamp()}-{os.getpid()}"
    hidden = incoming / f".{name}"
    uid, gid = owner if os.geteuid() == 0 else (None, None)
    try:
        hidden.mkdir(mode=0o700)
        for file_name, data in files.items():
            mode = 0o600 if "key" in file_name.lower() else 0o644
            fsio.write_new(hidden / file_name, data, mode=mode, uid=uid, gid=gid)
        if uid is not None and gid is not None:
            os.chown(hidden, uid, gid)
        fsio.fsync_dir(hidden)
        os.rename(hidden, incoming / name)
        fsio.fsync_dir(incoming)
    except OSError as exc:
        for child in hidden.iterdir() if hidden.is_dir() else ():
            child.unlink()
        if hidden.is_dir():
            hidden.rmdir()
        raise StageError(f"staging into {incoming}: {fsio.describe_os_error(exc)}") from exc
    return Staged(name, incoming / name, tuple(files))


def find_outcome(
    name: str, processed: Path, rejected: Path, *, record: bool = False
) -> tuple[Outcome, Path] | None:
    """Where the daemon filed the staged folder ``name``, and what that means.  ``record``:
    a refused folder counts only once the daemon's record of it is written (it is written
    just after the folder is moved)."""
    for entry in _entries(processed):
        if entry.name.endswith(f"-{name}"):
            return Outcome.INSTALLED, entry
    for entry in _entries(rejected):
        if entry.name.endswith(f"-{name}"):
            # The daemon's own record, never the filed folder's files (issue 17).
            found = reasons.read(rejected, entry.name)
            if found is None and record:
                return None
            reason = found or {}
            if reason.get("stage") == "after_swap":
                return Outcome.ROLLED_BACK, entry
            return Outcome.REFUSED, entry
    return None


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def wait_outcome(
    staged: Staged,
    processed: Path,
    rejected: Path,
    timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> tuple[Outcome, Path | None]:
    """Poll (every 0.2 s) until the daemon files the staged folder, or ``timeout`` seconds."""
    deadline = monotonic() + timeout
    while True:
        found = find_outcome(staged.name, processed, rejected, record=True)
        if found is not None:
            return found
        if monotonic() >= deadline:
            found = find_outcome(staged.name, processed, rejected)  # filed without a record
            return found if found is not None else (Outcome.NO_OUTCOME, None)
        sleep(0.2)


def leaf_sha256(files: dict[str, bytes]) -> str | None:
    """SHA-256 (hex, of the DER) of the first certificate among the staged files' bytes."""
    for data in files.values():
        if b"-----BEGIN CERTIFICATE-----" not in data:
            continue
        try:
            cert = load.parse_certificates(data, name="staged", eager=False).certs[0]
        except (load.Unreadable, IndexError):
            continue
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return None


def explain(
    outcome: Outcome,
    where: Path | None,
    staged: Staged,
    state: Path,
    leaf: str | None = None,
) -> str:
    """Why ``stage --wait`` ended as it did, in one sentence (text from files: the caller
    escapes it for the terminal).

    Refused or rolled back: the problem codes and the first problem's message from the
    daemon's record of the refusal (``reasons.read``: ``rejected/.reasons/<name>.json``).
    Installed: the generation whose ``meta.json`` names the
    staged folder as its source (``<state>/generations/`` and ``<state>/sets/*/generations/``);
    none: the folder was filed without a new generation: the same leaf (``leaf``, SHA-256) was
    live already (a generation ``current`` names has its fingerprint), else a newer set
    arrived with it (superseded).  Files are read with ``statefile.read_json`` (no link
    followed, 1 MiB at most)."""
    if outcome in (Outcome.REFUSED, Outcome.ROLLED_BACK) and where is not None:
        # The daemon's own record (rejected/.reasons), never the filed folder (issue 17).
        reason = reasons.read(where.parent, where.name)
        if not isinstance(reason, dict):
            return "no reason.json was filed with it"
        problems = [p for p in reason.get("problems") or [] if isinstance(p, dict)]
        codes = ", ".join(str(p.get("code")) for p in problems) or "no problem code"
        first = f": {problems[0].get('message')}" if problems else ""
        first = hints.moved(first, str(reason.get("source") or staged.path), where)
        return f"{codes} (at the {reason.get('stage', '?')} step){first}"
    if outcome is Outcome.INSTALLED:
        for meta_path in sorted(
            [*state.glob("generations/*/meta.json"), *state.glob("sets/*/generations/*/meta.json")],
            reverse=True,
        ):
            meta = statefile.read_json(meta_path)
            if isinstance(meta, dict) and meta.get("source") == str(staged.path):
                said = meta.get("outcome")  # "installed" says no more than the sentence
                return f"installed as generation {meta.get('id')}" + (
                    f" ({said})" if said not in (None, "installed") else ""
                )
        for current in (state / "current", *state.glob("sets/*/current")):
            try:  # ``current`` is a link to generations/<id>: read the generation itself
                generation = current.parent / "generations" / Path(os.readlink(current)).name
            except OSError:
                continue
            meta = statefile.read_json(generation / "meta.json")
            if leaf and isinstance(meta, dict) and meta.get("fingerprint") == leaf:
                return (
                    f"unchanged: the same certificate is live already (generation {meta.get('id')})"
                )
        return "filed without a new generation: a newer set arrived with it (superseded)"
    return ""
