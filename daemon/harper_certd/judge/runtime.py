"""Which ``node`` judges: the one running Harper, else the configured one, else PATH's.

The process's choice is set once by the caller that knows Harper (``configure``: the daemon,
``check``, the CLI from its configuration) and read by the validation entry point
(``choose``); a caller can also name a judge per call (``MODEL`` for the model alone).

Harper's node is read from ``/proc/PID/exe`` of Harper's main process (``hdb.pid``): the
binary Harper runs, whatever PATH says (nvm, a vendored Node).  A link that cannot be read
(another user's process without CAP_SYS_PTRACE) or that names a deleted binary (Node
upgraded under a running Harper) is skipped.
"""

import os
from collections.abc import Callable
from typing import NamedTuple

from harper_certd import warmstart


class NodeChoice(NamedTuple):
    """A node binary and where it was found (``source``: words for the judge line)."""

    path: str
    source: str


class _Model:
    """The model alone (no Node): for callers that judge without Harper's runtime on purpose
    (the model's own differential tests) or with Node switched off (``judge.node: none``)."""

    def __repr__(self) -> str:
        return "MODEL"


MODEL = _Model()
Choice = NodeChoice | _Model

# judge.node's value that switches Node off (the model answers, and says so).
OFF = "none"
# The judge line's reason when the configuration switched Node off (``validate``: "--node none").
CONFIG_OFF = f"judge.node: {OFF}"


class Settings(NamedTuple):
    node: str | None = None  # judge.node: a path, "none", or None (look for one)
    harper_pid: Callable[[], int | None] | None = None
    # the words for the setting that switched Node off (``node`` "none"), in the judge line
    off_reason: str = CONFIG_OFF
    # Node with V8's JIT (``node.argv``): only ``validate`` and ``status``, commands run by
    # hand or by a monitor; the daemon's unit kills a JIT (MemoryDenyWriteExecute), so
    # everything else is --jitless
    jit: bool = False
    # the words for the setting that named ``node``, in the judge line (``validate``: --node)
    setting: str = "judge.node"


_settings = Settings()


def configure(
    *,
    node: str | None = None,
    harper_pid: Callable[[], int | None] | None = None,
    off_reason: str = CONFIG_OFF,
    jit: bool = False,
    setting: str = "judge.node",
) -> None:
    """Set the process's judge: ``node`` is ``judge.node`` from the configuration (a path,
    ``none`` for the model alone, or None), ``harper_pid`` returns Harper's main pid now;
    ``off_reason`` names the setting that can switch Node off (``--node none`` for ``validate``);
    ``jit``: Node runs with its JIT (``validate`` and ``status``, see ``Settings``);
    ``setting`` names the setting ``node`` came from in the judge line (``--node`` for
    ``validate``)."""
    global _settings  # noqa: PLW0603 - one process-wide choice, set by the entry points
    _settings = Settings(
        node=node, harper_pid=harper_pid, off_reason=off_reason, jit=jit, setting=setting
    )


def settings() -> Settings:
    """The process's judge settings (``configure``)."""
    return _settings


def executable(path: str) -> bool:
    """Whether ``path`` is a regular file this process may execute."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def harper_node(pid: int) -> str | None:
    """The binary of process ``pid`` (``/proc/PID/exe``), when readable and still there."""
    try:
        target = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    if target.endswith(" (deleted)") or not executable(target):
        return None
    return target


def choose(settings: Settings | None = None) -> Choice | str:
    """The node to judge with, or MODEL, or a sentence saying why there is none."""
    settings = settings or _settings
    if settings.node == OFF:
        return MODEL
    if settings.harper_pid is not None:
        try:
            pid = settings.harper_pid()
        except OSError:
            pid = None
        if pid is not None:
            found = harper_node(pid)
            if found is not None:
                return NodeChoice(found, f"Harper's own node, pid {pid}")
    if settings.node:
        if executable(settings.node):
            return NodeChoice(settings.node, f"from {settings.setting}")
        return f"{settings.setting} {settings.node} is not an executable file"
    found = warmstart.path_node()
    if found is not None:
        return NodeChoice(found, "from PATH")
    return "no node: Harper is not running here and there is no node on PATH"
