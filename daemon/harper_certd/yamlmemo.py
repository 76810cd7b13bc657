"""What ``yamlfile.read_yaml`` returned for a file's exact bytes, kept so that a command
reading the same file again parses nothing and imports no PyYAML.

A leaf module (the standard library, ``fsio`` and ``rawio``).  It is the bytecode cache's idea
applied to our two YAML files (the daemon's configuration and Harper's): PyYAML's import was
the largest part of what a ``status`` imports beyond ``validate`` (its 18 modules, about 6 of
28 ms: ``-X importtime``, the fastest of six runs, on the bench machine, 2026-12-08; with the
memo ``status --no-probe`` took 0.924x and 0.975x its time in two runs of 40 alternated
processes, and 1.20x ``validate --node none``'s in the bench, 1.30x without it).

- **Exact.**  An entry is found by the SHA-256 of the bytes read, so a hit is what parsing
  those bytes gives; one changed byte is a miss.  No time, size or path is trusted.
- **Whole.**  The memo is ignored (and rewritten on the next miss) when its ``salt`` differs
  from ``salt()``: the memo's format, ``read_yaml``'s bounds, and PyYAML's installed
  ``__init__.py`` (its size and mtime: an upgrade may parse differently).
- **Only what JSON keeps.**  A value is kept when ``json`` gives it back equal: mappings with
  string keys, lists, strings, numbers, booleans and null, which is what a configuration
  holds.  A date, a set, binary data, a key that is not a string or a NaN is parsed each
  time.  So is a file that holds a private key block: no copy of a key is made.
- **Where.**  ``$CACHE_DIRECTORY`` (systemd's, for a unit with ``CacheDirectory=``; the
  shipped unit has none: its daemon, Harper's user with its home read-only, writes no memo
  and uses the one that user's own commands left, if any), else
  ``$XDG_CACHE_HOME/harper-certd``, else ``/var/cache/harper-certd`` for root and
  ``~/.cache/harper-certd`` for another user (the home of the password database, not
  ``$HOME``: ``sudo`` may keep another user's).  ``HARPER_CERTD_YAML_MEMO=off`` turns it off.
- **Trusted as the configuration is.**  The folder is used only when it is a folder (not a
  link) owned by this user that no one else can write, in a folder that only root or this
  user can change.  The file is replaced whole with ``fsio.write_replace`` (mode 0600, a
  planted link replaced, never written through; without fsync: a memo lost to a crash is a
  miss), and read only as that leaves it: no link followed, a regular file owned by this
  user that no one else can write, with one name, at most ``MEMO_MAX_BYTES``.
- **Never an error.**  A memo that cannot be read, decoded or written is a miss; the file
  is parsed as if there were none.
- **Bounded.**  The ``MEMO_ENTRIES`` most recently added values.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from collections.abc import Mapping
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from harper_certd import fsio
from harper_certd.rawio import read_fd

MEMO_ENV = "HARPER_CERTD_YAML_MEMO"  # "off": no memo read or written
MEMO_NAME = "yaml-memo.json"
MEMO_FORMAT = 1  # raise when what read_yaml returns for the same bytes changes
MEMO_ENTRIES = 32  # a node reads two files; tests and tools read more
MEMO_MAX_BYTES = 1 << 20


class _Missing:
    """``recall``'s answer when the memo has no value (a file's value may be None)."""

    __slots__ = ()


MISSING = _Missing()


def digest(raw: bytes) -> str:
    """The memo's key of a file's bytes: their SHA-256, hex."""
    return hashlib.sha256(raw).hexdigest()


def folder(env: Mapping[str, str] | None = None) -> Path | None:
    """The memo's folder (the module docstring's order), or None when turned off."""
    env = os.environ if env is None else env
    if env.get(MEMO_ENV, "").lower() in ("off", "0", "no", "false"):
        return None
    # A relative path is ignored (the XDG Base Directory specification says so).
    systemd = env.get("CACHE_DIRECTORY", "").split(":")[0]  # the first of several
    if systemd.startswith("/"):
        return Path(systemd)
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg.startswith("/"):
        return Path(xdg) / "harper-certd"
    if os.geteuid() == 0:
        return Path("/var/cache/harper-certd")
    import pwd  # start-up cost: a user's home only when no folder was named

    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return None
    return Path(home) / ".cache" / "harper-certd"


def salt(bounds: tuple[int, ...]) -> str:
    """What a memo must have been written under to be used: the format, ``read_yaml``'s
    ``bounds`` and PyYAML's install (size and mtime of its ``__init__.py``; "none" when not
    found, which turns the memo off: nothing could parse a miss)."""
    module = sys.modules.get("yaml")
    origin = getattr(module, "__file__", None)
    if origin is None:
        spec = PathFinder.find_spec("yaml")
        origin = None if spec is None else spec.origin
    try:
        st = os.stat(origin) if origin else None
    except OSError:
        st = None
    pyyaml = "none" if st is None else f"{st.st_size}:{st.st_mtime_ns}"
    return f"{MEMO_FORMAT}:{':'.join(map(str, bounds))}:{pyyaml}"


def _usable(where: Path) -> bool:
    """``where`` is a folder, not a link, owned by this user, that no one else can write, in
    a folder only root or this user can change (``fsio.others_can_write``: no one else can
    put a link in its place)."""
    try:
        st = os.lstat(where)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and not fsio.others_can_write(where.parent)
    )


def _load(where: Path, wanted: str) -> dict[str, Any]:
    """The memo's values in ``where`` when written under ``wanted``; {} otherwise."""
    if not _usable(where):
        return {}
    try:
        fd = fsio.open_regular(where / MEMO_NAME, owners=frozenset({os.geteuid()}))
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        # as write_replace leaves it: no one else may write it, no second name for it
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_nlink != 1:
            return {}
        raw = read_fd(fd, MEMO_MAX_BYTES, st.st_size)
        memo = None if raw is None else json.loads(raw)
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    if not isinstance(memo, dict) or memo.get("salt") != wanted:
        return {}
    values = memo.get("values")
    return values if isinstance(values, dict) else {}


def recall(key: str, bounds: tuple[int, ...]) -> Any:
    """The value kept for ``key`` (``digest``), or ``MISSING``."""
    where = folder()
    if where is None:
        return MISSING
    return _load(where, salt(bounds)).get(key, MISSING)


def keeps(value: Any) -> bool:
    """Whether JSON gives ``value`` back equal (the module docstring's "only what JSON
    keeps")."""
    try:
        return bool(json.loads(json.dumps(value, allow_nan=False)) == value)
    except (TypeError, ValueError, RecursionError):
        return False


def remember(key: str, raw: bytes, value: Any, bounds: tuple[int, ...]) -> bool:
    """Keep ``value``, parsed from ``raw``, under ``key``; True when written.  The oldest
    entries past ``MEMO_ENTRIES`` go; a value ``keeps`` refuses, bytes holding a private key
    block, or a folder that is not ``_usable`` write nothing."""
    where = folder()
    if where is None or b"PRIVATE KEY" in raw or not keeps(value):
        return False
    with contextlib.suppress(OSError):
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _usable(where):
        return False
    wanted = salt(bounds)
    if wanted.endswith(":none"):
        return False
    values = _load(where, wanted)
    values.pop(key, None)
    values[key] = value
    for old in list(values)[: max(0, len(values) - MEMO_ENTRIES)]:
        del values[old]
    data = json.dumps({"salt": wanted, "values": values}, separators=(",", ":")).encode()
    if len(data) > MEMO_MAX_BYTES:
        return False
    try:
        fsio.write_replace(where, MEMO_NAME, data, mode=0o600, sync=False)
    except OSError:
        return False
    return True
