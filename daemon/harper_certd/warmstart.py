"""Node's start-up begun before the command line's own imports (issue 19 item 5).

``harper-certd validate`` is judged by Node: one short ``node --jitless node_judge.js``
process that reads its request on stdin.  Node's start-up (about 55 ms for ``node --jitless
-e 0``, Node 20 on 2 cores) and the CLI's imports before it knows the set (about 35 ms: the
CLI, its parser, the judge package) used to run one after the other.  ``prestart`` starts the
judge process first, before anything else of the package is imported; it waits on stdin
while Python imports, and ``take`` hands it to the judge (``judge.node.Run``) when the judge
chose exactly the same command.  A process nobody took is killed at exit (``_discard``).

Started only where the choice is known from the command line alone: ``validate`` without a
``--node`` option (any abbreviation), which judges with the ``node`` on PATH, found as
``shutil.which`` finds it.  Any other command, or a judge chosen differently, starts cold as
before; the worst case is one Node process started for nothing.

A leaf: imports only the standard library (the point is to run first); the console script
(``entry``) calls ``prestart`` before it imports the CLI.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
from collections.abc import Sequence

# The shipped judge script (judge/node.py's script_path(): the package is a directory).
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "judge", "node_judge.js")

_warm: tuple[list[str], subprocess.Popen[bytes]] | None = None


def path_node() -> str | None:
    """``node`` on PATH, as ``shutil.which("node")`` finds it (without importing shutil)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not folder:
            continue
        candidate = os.path.join(folder, "node")
        if (
            os.path.exists(candidate)
            and os.access(candidate, os.X_OK)
            and not os.path.isdir(candidate)
        ):
            return candidate
    return None


def wants_warm(args: Sequence[str]) -> bool:
    """Whether ``args`` (the command line after the program name) is a ``validate`` judged
    by PATH's node: the command first, and no option that argparse would read as ``--node``."""
    if not args or args[0] != "validate":
        return False
    return not any(a.startswith("--n") for a in args[1:])


def prestart(args: Sequence[str]) -> None:
    """Start the judge process for ``args`` when the choice is known now (see module)."""
    global _warm  # noqa: PLW0603 - one process per CLI run
    if _warm is not None or not wants_warm(args):
        return
    node = path_node()
    if node is None:
        return
    argv = [node, "--jitless", SCRIPT]
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError:
        return  # the judge starts it again and says why it could not
    _warm = (argv, proc)
    atexit.register(_discard)


def take(argv: Sequence[str]) -> subprocess.Popen[bytes] | None:
    """The started process when it runs exactly ``argv`` (it is then the caller's), else None."""
    global _warm  # noqa: PLW0603 - one process per CLI run
    if _warm is None or _warm[0] != list(argv) or _warm[1].poll() is not None:
        return None
    proc = _warm[1]
    _warm = None
    return proc


def _discard() -> None:
    """Kill a process nobody took (its stdin never got a request)."""
    global _warm  # noqa: PLW0603 - one process per CLI run
    if _warm is None:
        return
    proc = _warm[1]
    _warm = None
    proc.kill()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)

