"""Harper's process: its main PID, the script it was started from (its command line) and
its version (the ``package.json`` of the harperdb package that script belongs to).

Measured (docs/harper-lines.md):
- 4.4 and later write ``<root>/hdb.pid``, deleted on stop and new on every full restart;
  nodes are told apart by it, never by process name (every node is ``node harperdb.js``).
- Under PM2 (4.0-4.4) Harper rewrites its process title: ``/proc/PID/cmdline`` is one
  string, ``node /…/bin/harperdb.js`` padded with NULs, so the script is found by
  splitting that string too.
- 4.0 writes no ``hdb.pid`` (PM2 keeps its own, under the Harper user's ``~/.pm2``); its
  server is ``launchServiceScripts/launchHarperDB.js``.  Such a node is found among the
  processes whose ``ROOTPATH`` (environment) is the root, or whose user's
  ``~/.harperdb/hdb_boot_properties.file`` names the root's configuration.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from harper_certd import rawio
from harper_certd.harper.lines import version_tuple

__all__ = ["cli_entry", "harper_entry", "harper_pid", "harper_version", "version_tuple"]

# Bytes read at most from Harper's small files (hdb.pid, package.json, the boot file).
_SMALL_FILE = 1 << 20
# The scripts a Harper server process runs, by line (bin/ for 4.3 on, PM2 launchers on 4.0).
SERVER_SCRIPTS = ("harperdb.js", "launchHarperDB.js")
# harperdb (4.x); harper (5.x, HarperFast/harper's package.json, bin dist/bin/harperdb.js).
PACKAGE_NAMES = ("harperdb", "harper")


if TYPE_CHECKING:
    import psutil

# psutil is imported only where /proc does not answer (start-up cost: 20-30 ms, which
# `status` paid for one pidfile read; the daemon's watch reads /proc itself already).


@functools.cache
def _procfs() -> bool:
    """Whether this system has Linux's ``/proc/<pid>/`` files (else psutil answers)."""
    return os.path.isdir("/proc/self")


def _proc_file(pid: int, name: str) -> bytes | None:
    """``/proc/<pid>/<name>`` (at most 64 KiB); None when the process is gone or its file
    cannot be read (another user's, under ``hidepid``), as psutil's errors read."""
    try:
        with open(f"/proc/{int(pid)}/{name}", "rb") as f:
            return f.read(1 << 16)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Running and not a zombie (state ``Z`` in ``/proc/<pid>/stat``, psutil's
    ``STATUS_ZOMBIE``)."""
    if pid <= 0:
        return False
    if not _procfs():
        import psutil  # start-up cost: only without /proc

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    stat = _proc_file(pid, "stat")
    # "<pid> (<comm>) <state> ...": the command name may hold spaces and parentheses
    state = (stat or b"").rpartition(b")")[2].split()[:1]
    return bool(state) and state[0] != b"Z"


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field
    22), which tells it from a process given the same pid later; None when it is gone, a
    zombie, or there is no ``/proc`` to ask (``statefile.read_daemon``)."""
    fields = (_proc_file(pid, "stat") or b"").rpartition(b")")[2].split()
    if len(fields) < 20 or fields[0] == b"Z":  # fields[0]: the state, field 3
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def _cmdline(pid: int) -> list[str] | None:
    """The process' arguments (``/proc/<pid>/cmdline``, NUL-separated; a rewritten title is
    one string, which ``_script_of`` splits); None when it cannot be read."""
    if not _procfs():
        import psutil  # start-up cost: only without /proc

        try:
            return psutil.Process(pid).cmdline()
        except psutil.Error:
            return None
    data = _proc_file(pid, "cmdline")
    if data is None:
        return None
    return data.rstrip(b"\0").decode(errors="surrogateescape").split("\0")


def _cwd(pid: int) -> str | None:
    if not _procfs():
        import psutil  # start-up cost: only without /proc

        try:
            return psutil.Process(pid).cwd()
        except psutil.Error:
            return None
    try:
        return os.readlink(f"/proc/{int(pid)}/cwd")
    except OSError:
        return None


def harper_pid(root: Path) -> int | None:
    """Harper's main PID: ``<root>/hdb.pid`` if that process is alive (not a zombie), else
    (4.0 under PM2, no ``hdb.pid``) the oldest live server process of this root."""
    data = rawio.read_file(root / "hdb.pid", _SMALL_FILE)  # a FIFO there: as no pidfile
    try:
        pid = int((data or b"").strip())
    except ValueError:
        return _server_without_pidfile(root)
    return pid if _alive(pid) else None


def _script_of(cmdline: list[str]) -> str | None:
    """The server script in a command line, also when the title was rewritten (one string
    with spaces, NUL padding split into empty arguments)."""
    words = [w for arg in cmdline for w in arg.split()]
    return next((w for w in words[1:] if w.endswith(SERVER_SCRIPTS)), None)


def _root_of(proc: psutil.Process) -> str | None:
    """The ROOTPATH a Harper process runs for: its environment, else its user's boot file."""
    import psutil  # start-up cost: see _server_without_pidfile

    with contextlib.suppress(psutil.Error):
        env = proc.environ()
        if env.get("ROOTPATH"):
            return env["ROOTPATH"]
        home = env.get("HOME")
        if home:
            boot = Path(home) / ".harperdb" / "hdb_boot_properties.file"
            data = rawio.read_file(boot, _SMALL_FILE) or b""
            for line in data.decode(errors="replace").splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "settings_path":
                    return str(Path(value.strip()).parent)
    return None


def _node_pids() -> list[int] | None:
    """The PIDs whose command name (``/proc/<pid>/comm``: ``node``, or ``node /…`` after a
    title rewrite, cut at 15 bytes) starts with ``node``; None where there is no ``/proc``.

    One small read per process and no psutil object: the daemon's Harper watch scans
    every 5 s while a root has no ``hdb.pid`` (Harper stopped, or 4.0), and psutil's
    ``process_iter`` cost 6.4 ms of CPU a scan for 67 processes (0.14 s a minute idle).
    """
    try:
        entries = os.scandir("/proc")
    except OSError:
        return None
    pids: list[int] = []
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:  # os.open and os.read: no file object per process (5 us each of 70)
                fd = os.open(f"/proc/{entry.name}/comm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if os.read(fd, 16).startswith(b"node"):
                    pids.append(int(entry.name))
            except OSError:
                continue
            finally:
                os.close(fd)
    return pids


def _server_without_pidfile(root: Path) -> int | None:
    wanted = str(root)
    pids = _node_pids()
    if pids is not None:
        # only processes running a server script are looked at closer (with psutil)
        pids = [p for p in pids if _script_of(_cmdline(p) or []) is not None]
        if not pids:
            return None
    import psutil  # start-up cost: only where a Harper server may be running

    found: list[psutil.Process] = []
    candidates = psutil.process_iter() if pids is None else _processes(pids)
    for proc in candidates:
        try:
            if proc.name() != "node" and not proc.name().startswith("node "):
                continue
            if _script_of(proc.cmdline()) is None or proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if _root_of(proc) == wanted:
            found.append(proc)
    if not found:
        return None
    with contextlib.suppress(psutil.Error):
        found.sort(key=lambda p: p.create_time())
    return found[0].pid


def _processes(pids: list[int]) -> list[psutil.Process]:
    import psutil  # start-up cost: see _server_without_pidfile

    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    return procs


def harper_entry(pid: int) -> Path | None:
    """The script a running Harper was started from (``…/bin/harperdb.js``, or 4.0's
    ``…/launchServiceScripts/launchHarperDB.js``), absolute; None when not found."""
    cmdline = _cmdline(pid)
    script = None if cmdline is None else _script_of(cmdline)
    if script is None:
        return None
    path = Path(script)
    if not path.is_absolute():
        cwd = _cwd(pid)
        if cwd is None:
            return None
        path = Path(cwd) / path
    return path


def _package_json(folder: Path) -> dict[str, object] | None:
    """``folder/package.json`` parsed, when it is a readable regular file holding an object."""
    data = rawio.read_file(folder / "package.json", _SMALL_FILE)
    try:
        meta = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _package(entry: Path | None) -> tuple[Path, dict[str, object]] | None:
    """The Harper package directory above ``entry`` and its ``package.json`` (the first named
    ``harperdb`` or ``harper`` (5.x) or ``@harperfast/…`` going up, at most three levels)."""
    if entry is None:
        return None
    for parent in list(entry.parents)[:3]:
        meta = _package_json(parent)
        name = meta.get("name") if meta is not None else None
        if isinstance(name, str) and (name in PACKAGE_NAMES or name.startswith("@harperfast/")):
            assert meta is not None
            return parent, meta
    return None


def package_dir(entry: Path | None) -> Path | None:
    """The Harper package directory above ``entry`` (``_package``)."""
    found = _package(entry)
    return None if found is None else found[0]


def harper_version(entry: Path | None) -> str | None:
    """The ``version`` of the harperdb ``package.json`` above ``entry`` ("4.7.29")."""
    found = _package(entry)
    version = None if found is None else found[1].get("version")
    return version if isinstance(version, str) else None


def cli_entry(entry: Path | None) -> Path | None:
    """The line's own command-line script, ``<package>/bin/harperdb.js`` (5.x:
    ``<package>/dist/bin/harperdb.js``), what ``restart.method: cli`` runs, for a server
    script found by ``harper_entry``."""
    package = package_dir(entry)
    if package is None:
        return None
    for script in (package / "bin" / "harperdb.js", package / "dist" / "bin" / "harperdb.js"):
        if script.is_file():
            return script
    return None
