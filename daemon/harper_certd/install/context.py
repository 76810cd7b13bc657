"""The node and the set an operation works on: ``Context``, built once per set.

``build_context`` reads the configuration's paths and Harper's configuration, picks the
managed set (``managed_set``: the replication set, else the first, or a named one), opens
its store (``<state>/`` for the primary set, ``<state>/sets/<name>/`` for another) and
builds its applier, with the peers' wait handed to it as the before-restart hook: before
anything changes, so that a configuration the applier refuses (an Operations API credentials
file others can read) stops the command at once.  ``status`` asks for a context that never
applies (``applies=False``): it imports none of ``harper.apply`` (Harper's API client, the
probes, the restart methods; about 15 ms of its start-up).
"""

import datetime as dt
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from harper_certd import discover, environment, judge, load
from harper_certd.clock import utc_now
from harper_certd.config import Config, Paths, resolve_paths
from harper_certd.errors import ConfigError, SwapError
from harper_certd.harper.process import harper_pid
from harper_certd.install.managed import SETS_DIR, Managed, managed_set
from harper_certd.roles import Purpose, SetBytes
from harper_certd.schedule import RestartBudget
from harper_certd.swap import Store
from harper_certd.trust import TrustStore, system_store

if TYPE_CHECKING:
    from harper_certd import peers
    from harper_certd.generation import Generation
    from harper_certd.harper.apply import BeforeRestart
    from harper_certd.harper.probe import Sleep
    from harper_certd.restart import Applied, Applier

Clock = Callable[[], dt.datetime]


class Context(NamedTuple):
    """One managed set's world (``build_context``): every field given, none shared
    mutable but the store and the restart budget, which the daemon keeps across reloads."""

    config: Config
    paths: Paths
    harper: discover.HarperConfig
    managed: Managed
    store: Store
    applier: "Applier"
    clock: Clock
    budget: RestartBudget
    interrupted: threading.Event | None
    set_name: str | None  # the set's name (``discover.CertSet``), as ``check`` shows it

    def trust_store(self) -> TrustStore | None:
        """The roots a set without a CA file must chain to (``harper.trust_store``, else
        OpenSSL's default); None for a set with a CA file."""
        if self.managed.live.ca is not None:
            return None
        return system_store(self.config.harper.trust_store)

    def peer_scope(self) -> "peers.Scope":
        """What the peer guard needs of this node and set (``peers.Scope``)."""
        # start-up cost: status and check never guard (nor import Harper's API client)
        from harper_certd import peers
        from harper_certd.harper.api import operations_api

        not_checked = None
        api = None
        if self.config.peers.check == "off":
            not_checked = "peers.check is off"
        elif self.managed.purpose is not Purpose.CLUSTER:
            not_checked = "not a replication set"
        elif self.harper.nats_routes:
            pass  # NATS clustering: the routes are probed directly (peers.probe_nats_route)
        else:
            api = operations_api(self.config, self.harper)
            if api is None:
                not_checked = "no Operations API is configured to list the peers"
        return peers.Scope(
            self.config.peers,
            api,
            self.harper.node_name,
            not_checked,
            self.clock,
            self.interrupted,
            live=lambda: read_live(self),
            nats_routes=self.harper.nats_routes,
        )

    def trusted_uids(self) -> set[int]:
        uids = {0, os.geteuid()}
        for path in (self.managed.live.key, self.paths.harper_root):
            try:
                uids.add(os.stat(path).st_uid)
            except OSError:
                continue
        return uids


def wait_for_peers(config: Config, harper: discover.HarperConfig) -> "BeforeRestart":
    """The applier's before-restart hook: never take this node down while a peer is not
    connected (it may be restarting itself); bounded by ``peers.restart_wait_seconds``."""
    from harper_certd.harper.api import operations_api  # start-up cost: see the module

    api = operations_api(config, harper)

    def wait(sleep: "Sleep") -> float:
        from harper_certd import peers  # start-up cost: only a restart waits for the peers

        return peers.wait_before_restart(
            api, harper.node_name, config.peers.restart_wait_seconds, sleep=sleep
        )

    return wait


def _configure_judge(config: Config, harper_root: Path) -> None:
    """Every judgement of this process by Harper's own node (read from its process at each
    judgement: a restart may change it), else ``judge.node``, else PATH's."""
    judge.configure(node=config.judge.node, harper_pid=lambda: harper_pid(harper_root))


def build_context(
    config: Config,
    *,
    clock: Clock = utc_now,
    applier: "Applier | None" = None,
    interrupted: threading.Event | None = None,
    set_name: str | None = None,
    applies: bool = True,
    harper: discover.HarperConfig | None = None,
) -> Context:
    """The context of the managed set (``set_name``, else the primary set).  ``applier``:
    the applier to use (tests), else ``restart.method``'s; ``applies`` False: a context that
    reads only (its applier raises RuntimeError if called); ``harper``: Harper's
    configuration, read a moment before by the caller (else read here).  ConfigError,
    SwapError."""
    paths = resolve_paths(config)
    if harper is None:
        harper = discover.load_config(paths.harper_root)
    _configure_judge(config, paths.harper_root)
    try:
        primary: Managed | None = managed_set(harper)
    except ConfigError:
        if set_name is None:
            raise
        primary = None  # a node whose only set has no CA file: that set is named
    managed = managed_set(harper, set_name) if set_name is not None or primary is None else primary
    # The primary set's store stays where it always was (one-set nodes, crash tests); any
    # other set has its own under <state>/sets/<name>/.
    same = primary is not None and managed.live == primary.live
    state = paths.state if same else paths.state / SETS_DIR / str(set_name)
    store = Store(state, managed.live)
    environment.refuse_second_state_dir(store.live_paths(), state)  # h-ops: one store
    store.ensure()
    return Context(
        config,
        paths,
        harper,
        managed,
        store,
        applier
        or (
            _applier(config, harper, store, interrupted, managed.live.cert)
            if applies
            else _reads_only
        ),
        clock,
        RestartBudget(config.restart.restarts_per_hour),
        interrupted,
        next((c.name for c in harper.sets() if c.first.cert_path == managed.live.cert), None),
    )


def _applier(
    config: Config,
    harper: discover.HarperConfig,
    store: Store,
    interrupted: threading.Event | None,
    cert: Path,
) -> "Applier":
    """``restart.method``'s applier for this set, the peers' wait as its before-restart hook."""
    from harper_certd.harper.apply import make_applier  # start-up cost: see the module

    before = wait_for_peers(config, harper)
    return make_applier(config, harper, store, interrupted, cert, before_restart=before)


def _reads_only(previous: "Generation | None", gen: "Generation") -> "Applied":
    """The applier of a context built with ``applies=False``: never called."""
    raise RuntimeError("this context was built to read only (applies=False)")


def store_dir(paths: Paths, harper: discover.HarperConfig, name: str) -> Path:
    """Where set ``name``'s store is: ``<state>/`` for the primary set (the replication set,
    else the first), ``<state>/sets/<name>/`` for any other (``build_context``)."""
    try:
        primary = managed_set(harper).live.cert
    except ConfigError:
        primary = None
    cert = next((c.first.cert_path for c in harper.sets() if c.name == name), None)
    return paths.state if cert is not None and cert == primary else paths.state / SETS_DIR / name


def read_live(ctx: Context) -> SetBytes:
    """The live files' bytes (``ca`` ``b""`` for a set without a CA file)."""
    live = ctx.managed.live
    try:
        return SetBytes(
            load.read_bounded(live.cert),
            load.read_bounded(live.key),
            b"" if live.ca is None else load.read_bounded(live.ca, limit=load.MAX_CA_FILE_BYTES),
        )
    except load.Unreadable as exc:
        raise SwapError(f"the live set cannot be read: {exc}") from None


def live_names(ctx: Context) -> tuple[str, str, str]:
    live = ctx.managed.live
    return str(live.cert), str(live.key), "no CA file" if live.ca is None else str(live.ca)
