"""Where the daemon runs: refuse at start what cannot work there, warn about what may not.

Facts this rests on (read off ``systemd/harper-certd.service`` and systemd.exec(5)):
- systemd sets ``INVOCATION_ID`` for every unit it starts, and ``NOTIFY_SOCKET`` for
  ``Type=notify``; a shell or a cron job has neither.  Either one means "under a unit".
- Under the shipped unit, ``harperdb restart`` (the CLI) starts the new Harper as its own
  detached child: Harper would land in this unit's control group and sandbox (read-only
  ``$ROOTPATH``, localhost-only network, ``MemoryDenyWriteExecute`` kills node's JIT) and
  die with harper-certd.  The CLI is also the hot reload's fallback when the Operations
  API has no credentials.  Both are refused at start, with the fix.
- ``renew.command`` (certbot, step) needs the network beyond localhost and writes under
  ``/etc``: under the unit's ``IPAddressAllow=localhost`` and ``ProtectSystem=strict`` it
  cannot work.  A warning: renewal belongs to the tool's own timer, handing over with
  ``harper-certd stage``.
- A Harper root's live files become symlinks into ``<state>/current/``; a second state
  directory would silently adopt the first one's links, so two stores for one root are
  refused.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from harper_certd import discover
from harper_certd.config import Config
from harper_certd.errors import ConfigError
from harper_certd.harper.method import RestartMethod

SYSTEMD_MARKERS = ("INVOCATION_ID", "NOTIFY_SOCKET")
CLI_FIX = (
    "give the daemon Operations API credentials (a drop-in with "
    "LoadCredential=harper-ops:/etc/harper-certd/ops-credentials and "
    "operations_api.credentials_file: /run/credentials/harper-certd.service/harper-ops), "
    "or run Harper as its own unit and set restart.method: systemd with the polkit rule "
    "from the unit's header"
)


def under_systemd(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by systemd (``INVOCATION_ID`` or ``NOTIFY_SOCKET``)."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in SYSTEMD_MARKERS)


class Finding(NamedTuple):
    """Something the environment makes impossible (``fatal``) or unlikely to work."""

    fatal: bool
    key: str  # the configuration key at fault, e.g. "restart.method"
    problem: str
    fix: str

    def sentence(self) -> str:
        return f"{self.key}: {self.problem}; fix: {self.fix}"


def _is_harper_cli(argv: tuple[str, ...]) -> bool:
    names = [Path(a).name for a in argv[:3]]
    return any(n in {"harperdb", "harperdb.js", "harper"} for n in names) and "restart" in argv


def findings(
    config: Config, harper: discover.HarperConfig, env: Mapping[str, str] | None = None
) -> list[Finding]:
    """What cannot work (or may not) for this configuration in this environment.

    Pure but for reading the credentials file the configuration names (ConfigError when
    it is unreadable or readable by others, as at a restart).
    """
    env = os.environ if env is None else env
    if not under_systemd(env):
        return []
    out: list[Finding] = []
    method = config.restart.method
    if method == RestartMethod.CLI:
        out.append(
            Finding(
                True,
                "restart.method",
                "cli (harperdb restart) cannot work under systemd "
                "(Harper would start inside this unit's sandbox and cgroup)",
                CLI_FIX,
            )
        )
    elif method == RestartMethod.COMMAND and _is_harper_cli(config.restart.command):
        out.append(
            Finding(
                True,
                "restart.command",
                f"{' '.join(config.restart.command)} is Harper's "
                "CLI restart, which cannot work under systemd",
                CLI_FIX,
            )
        )
    elif RestartMethod(method).may_hot_reload:
        # start-up cost: Harper's API client (http.client) only for the daemon's start-up check
        from harper_certd.harper.api import operations_api

        api = operations_api(config, harper, env)
        if api is None or api.credentials is None:
            out.append(
                Finding(
                    True,
                    "restart.method",
                    f"{method}: when a hot reload is missed the fallback is the Operations API "
                    "with credentials, else harperdb restart (the CLI), which cannot work "
                    "under systemd; no Operations API credentials are configured",
                    CLI_FIX,
                )
            )
    if config.renew.command:
        out.append(
            Finding(
                False,
                "renew.command",
                f"{' '.join(config.renew.command)} runs inside the unit's sandbox (network "
                "limited to localhost, /etc read-only, Harper's user) where certbot and step "
                "cannot renew",
                "leave renewal to the tool's own timer (certbot.timer, step's renewal unit) "
                "and hand over with --deploy-hook 'harper-certd stage \"$RENEWED_LINEAGE\"' "
                "or --exec 'harper-certd stage ...'; set renew.command: []",
            )
        )
    return out


def require_workable(
    config: Config, harper: discover.HarperConfig, env: Mapping[str, str] | None = None
) -> list[Finding]:
    """ConfigError naming every fatal finding; the warnings otherwise."""
    found = findings(config, harper, env)
    fatal = [f for f in found if f.fatal]
    if fatal:
        raise ConfigError("cannot work under systemd: " + " | ".join(f.sentence() for f in fatal))
    return found


def other_state_dir(live: Mapping[str, Path], state: Path) -> Path | None:
    """The state directory another store manages these live paths from, if any.

    A live path that is a symlink to ``<dir>/current/<file>`` with ``<dir>`` not ``state``
    belongs to another harper-certd store.
    """
    mine = os.path.realpath(state)
    for path in live.values():
        try:
            target = os.readlink(path)
        except OSError:
            continue
        parent = Path(target).parent
        if parent.name != "current":
            continue
        theirs = parent.parent if parent.is_absolute() else path.parent / parent.parent
        if os.path.realpath(theirs) != mine and (theirs / "generations").is_dir():
            return theirs
    return None


def refuse_second_state_dir(live: Mapping[str, Path], state: Path) -> None:
    """ConfigError when Harper's files are already managed from another state directory."""
    theirs = other_state_dir(live, state)
    if theirs is not None:
        raise ConfigError(
            f"Harper's certificate files are managed by the state directory {theirs}, not "
            f"{state}: two state directories for one Harper root would re-adopt each other's "
            f"links. Use --state-dir {theirs} (or state_dir in the configuration), or hand "
            f"the files back first with: harper-certd release --state-dir {theirs}"
        )
