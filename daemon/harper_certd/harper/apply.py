"""The applier: make Harper use the set that is now live, and prove it by what is served.

``make_applier`` picks one per ``restart.method`` (``RestartMethod``): none, a bare
command (verification off), or :class:`HarperApplier`: hot reload (Harper 4.4 and later
reload watched files themselves), a restart (Operations API, CLI, systemd, command), and
when a hot reload is missed the re-nudge of every generation, then a restart as the
fallback.  Every applier answers with an ``Applied``.

Before any full restart the applier calls its ``before_restart`` hook (the peers' "wait
until every peer is connected", handed down by whoever builds the applier): Harper's side
never imports the peers.

Facts: see the package docstring (``harper_certd.harper``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from harper_certd import discover, events, load, sdnotify
from harper_certd.config import Config
from harper_certd.errors import HarperError, HarperNoAnswer, Interrupted
from harper_certd.generation import Generation
from harper_certd.harper.api import OperationsApi, operations_api
from harper_certd.harper.lines import line_of
from harper_certd.harper.method import RestartMethod
from harper_certd.harper.probe import (
    LOCAL_ADDRESSES,
    Sleep,
    Verification,
    peer_sni,
    sni_for,
    verify_served,
)
from harper_certd.harper.process import cli_entry, harper_entry, harper_pid, harper_version
from harper_certd.restart import Applied, Applier, command_applier, none_applier, run_command
from harper_certd.roles import Role
from harper_certd.swap import Store

HOT_RELOAD_FIRST_WAIT = 4.0  # seconds; Harper reloads ~1.5 s after its watcher wakes
# Harper 4.4: its first reload runs about 1.5 s after the change and fails in the worker
# (``key values mismatch``, the old pair kept); a second change event after it makes the
# next reload load the new pair (measured on 4.4.18, docs/harper-lines.md).
FIRST_RELOAD_SECONDS = 2.0

# Called before every full restart with the applier's (interruptible) sleep; returns the
# seconds it waited.  The peers' wait_before_restart, bound to this node, in the daemon.
BeforeRestart = Callable[[Sleep], float]


@dataclass(frozen=True, slots=True)
class Harper:
    """What the applier needs to know about the node, resolved once per context."""

    root: Path
    hosts: tuple[str, ...]  # dialled in order to verify: the node itself by default
    server_name: str | None  # SNI sent: what a peer sends (peer_sni)
    ports: Mapping[str, int]
    api: OperationsApi | None
    config: Config
    env: Mapping[str, str]
    interrupted: threading.Event | None = None  # set when the daemon is asked to stop

    threads: int = 1  # threads.count: workers that each hold a pair (fresh connections)

    def version(self) -> str | None:
        """The running Harper's version (its package.json), None when not known."""
        pid = harper_pid(self.root)
        return harper_version(harper_entry(pid)) if pid is not None else None

    def verify(
        self, expected: str, *, timeout: float | None = None, sleep: Sleep = sdnotify.sleep
    ) -> Verification:
        """``verify_served`` on this node's addresses, ports and SNI; ``timeout`` in seconds
        (default ``verify.timeout``), polling every ``verify.interval``; enough fresh
        connections in a row to reach every worker thread (``threads``)."""
        return verify_served(
            self.hosts,
            self.ports,
            expected,
            root=self.root,
            timeout=max(self.config.verify.timeout if timeout is None else timeout, 0.0),
            interval=self.config.verify.interval,
            sleep=sleep,
            server_name=self.server_name,
            connections=self.threads,
        )

    def restart(self, method: RestartMethod) -> str:
        """Restart Harper with ``method`` (one that restarts); the tail of what it said.
        Raises HarperError when the method fails or times out."""
        return _RESTARTS[method](self)

    def restart_via_api(self) -> str:
        if self.api is None:
            raise HarperError(
                "no Operations API is configured (operationsApi.network in harperdb-config.yaml "
                "or operations_api.url)"
            )
        operations: list[dict[str, str]] = []
        if "clusteringRoutes" in self.ports:
            # NATS (4.0-4.3): the hub and leaf servers keep the files they started with
            # until this; measured on 4.3.0: the route port serves the new leaf ~0.5 s on.
            operations.append({"operation": "restart_service", "service": "clustering_config"})
        # "restart", not "restart_service http_workers": workers alone would pair the new
        # key with the main thread's old certificate (see the package docstring).
        operations.append({"operation": "restart"})
        said = []
        for operation in operations:
            try:
                answer = self.api.call(operation)
            except HarperNoAnswer as exc:
                # Sent, but the connection closed unanswered: Harper 4.3 restarts its workers
                # 50 ms after taking a restart, and under load before the reply is flushed
                # (CI, 2026-12-05). Not a failure: the verification that follows tells.
                said.append(f"{operation['operation']}: no answer ({exc}); verifying")
                continue
            said.append(str(answer.get("message", answer)))
        return "; ".join(said)

    def restart_via_cli(self) -> str:
        pid = harper_pid(self.root)
        # The line's own bin/harperdb.js (4.0's server runs launchHarperDB.js instead).
        entry = cli_entry(harper_entry(pid)) if pid is not None else None
        argv = ["node", str(entry), "restart"] if entry is not None else ["harperdb", "restart"]
        env = {**self.env, "ROOTPATH": str(self.root)}
        return _run(argv, self.config.restart.timeout, env, self.interrupted)

    def restart_via_systemd(self) -> str:
        return _run(
            ["systemctl", "restart", self.config.restart.unit],
            self.config.restart.timeout,
            None,
            self.interrupted,
        )

    def restart_via_command(self) -> str:
        return _run(
            list(self.config.restart.command), self.config.restart.timeout, None, self.interrupted
        )


# The methods that restart Harper, each with its way (a test says every such member is here).
_RESTARTS: dict[RestartMethod, Callable[[Harper], str]] = {
    RestartMethod.OPERATIONS_API: Harper.restart_via_api,
    RestartMethod.CLI: Harper.restart_via_cli,
    RestartMethod.SYSTEMD: Harper.restart_via_systemd,
    RestartMethod.COMMAND: Harper.restart_via_command,
}


def _run(
    argv: list[str],
    timeout: float,
    env: Mapping[str, str] | None,
    interrupted: threading.Event | None,
) -> str:
    status, output = run_command(argv, timeout, interrupted, env)
    if status is None:
        raise HarperError(f"{' '.join(argv)} timed out after {timeout:.0f}s")
    if status != 0:
        raise HarperError(f"{' '.join(argv)} exited {status}: {output.strip()[-300:]}")
    return output.strip()[-300:]


def resolve_method(config: Config, harper: Harper) -> RestartMethod:
    """``restart.method``, with ``auto`` resolved from the running Harper's line: hot reload
    where the line has it (4.4 on), else the Operations API (4.0-4.3).  An unknown version
    is said (``certd.harper_version_unknown``) and takes a restart, which every line
    understands: never silently treated as the newest."""
    method = RestartMethod(config.restart.method)
    if method is not RestartMethod.AUTO:
        return method
    version = harper.version()
    line = line_of(version)
    if line is not None and line.hot_reload:
        return RestartMethod.HOT_RELOAD
    fallback = _restart_fallback(harper)
    if line is None:
        # Imported here for start-up cost: `status` loads this module and logs nothing.
        from harper_certd import logs

        logs.emit(
            events.HarperVersionUnknown(
                root=str(harper.root), version=version, method=fallback.value
            )
        )
    return fallback


def _restart_fallback(harper: Harper) -> RestartMethod:
    api = harper.api
    if api is not None and api.credentials:
        return RestartMethod.OPERATIONS_API
    return RestartMethod.CLI


def make_harper(
    config: Config,
    harper_config: discover.HarperConfig,
    env: Mapping[str, str] | None = None,
    interrupted: threading.Event | None = None,
    cert: Path | None = None,
) -> Harper:
    """How to reach, restart and verify the node for one set: ``cert`` is its certificate
    path (default: the primary set). A set other than the replication set is verified with
    its first DNS name as SNI, on its own ports."""
    env = os.environ if env is None else env
    hosts = (config.verify.host,) if config.verify.host else LOCAL_ADDRESSES
    ports = dict(harper_config.secure_ports)
    ops_entry = next((e for e in harper_config.entries if e.where == "operationsApi.tls"), None)
    primary = next(
        (e for e in harper_config.file_entries() if e.where != "operationsApi.tls"), None
    )
    if ops_entry is not None and primary is not None and ops_entry.paths != primary.paths:
        ports.pop("operationsApi", None)  # that port serves another set
    target = cert if cert is not None else primary.cert_path if primary is not None else None
    mine = next((c for c in harper_config.sets() if c.first.cert_path == target), None)
    server_name = peer_sni(harper_config)
    if mine is not None and mine.ports:
        # Verification per role (issue 11): only the ports this set is served on. On the
        # two-set layout the HTTP and MQTT ports serve the public set, not this one.
        pool = harper_config.secure_ports if cert is not None else ports
        ports = {k: v for k, v in pool.items() if k in mine.ports}
    if mine is not None and mine.role is not Role.REPLICATION:
        server_name = _first_dns_name(mine.first.cert_path) or server_name
    api = operations_api(config, harper_config, env)
    return Harper(
        harper_config.root,
        hosts,
        server_name,
        ports,
        api,
        config,
        env,
        interrupted,
        threads=max(1, harper_config.threads),
    )


def _first_dns_name(path: Path | None) -> str | None:
    """The first DNS SAN of the certificate at ``path`` (SNI for a server set)."""
    if path is None:
        return None
    try:
        leaf = load.parse_certificates(load.read_bounded(path), name=str(path)).certs[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (load.Unreadable, x509.ExtensionNotFound):
        return None
    names = san.get_values_for_type(x509.DNSName)
    return sni_for(names[0]) if names else None


@dataclass(slots=True)
class HarperApplier:
    """The applier for a running Harper: an ``Applier`` (``(previous, new) -> Applied``).

    ``store``: for the re-nudge after a missed hot reload; ``before_restart``: called before
    every full restart (None: no wait).  Harper not running: nothing to do, said
    (``certd.harper_not_running``) and reported ok, unverified.
    """

    harper: Harper
    store: Store
    before_restart: BeforeRestart | None = None
    interrupted: threading.Event | None = field(default=None)

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``; Interrupted when the daemon is asked to stop meanwhile."""
        if sdnotify.wait(self.interrupted, seconds):
            raise Interrupted("stopped while waiting for Harper to serve the new certificate")

    def restart(self, method: RestartMethod) -> str:
        if self.before_restart is not None:
            self.before_restart(self.sleep)
        return self.harper.restart(method)

    def verify(self, expected: str, timeout: float) -> Verification:
        return self.harper.verify(expected, timeout=timeout, sleep=self.sleep)

    def __call__(self, previous: Generation | None, new: Generation) -> Applied:
        started = time.monotonic()
        expected = str(new.meta.get("fingerprint", ""))
        method = resolve_method(self.harper.config, self.harper)
        if not self.harper.ports:
            return Applied(
                False, method.value, "harperdb-config.yaml names no secure port to verify on"
            )
        if harper_pid(self.harper.root) is None:
            # Nothing to reload or verify: Harper reads the live set when it starts. A set
            # must not be rolled back because Harper happens to be stopped.
            # Imported here for start-up cost: `status` loads this module and logs nothing.
            from harper_certd import logs

            logs.emit(events.HarperNotRunning(root=str(self.harper.root), generation=new.id))
            return Applied(
                True,
                "none",
                "Harper is not running: it will load this set when it starts (not verified)",
            )
        try:
            result, how, restarted = self._make_it_serve(method, new, expected)
        except HarperError as exc:  # a restart failed (nothing was restarted)
            return Applied(False, method.value, str(exc), time.monotonic() - started)
        return self._verdict(result, how, restarted, expected, time.monotonic() - started)

    def _make_it_serve(
        self, method: RestartMethod, new: Generation, expected: str
    ) -> tuple[Verification, str, bool]:
        """(what was seen last, the method as reported, whether Harper was restarted)."""
        timeout = self.harper.config.verify.timeout
        if method is not RestartMethod.HOT_RELOAD:
            detail = self.restart(method)
            # Imported here for start-up cost: `status` loads this module and logs nothing.
            from harper_certd import logs

            logs.emit(events.HarperRestarted(method=method.value, detail=detail))
            return self.verify(expected, timeout), method.value, True
        line = line_of(self.harper.version())
        second_event = line is not None and line.second_change_event
        first = FIRST_RELOAD_SECONDS if second_event else HOT_RELOAD_FIRST_WAIT
        result = self._nudge_until_served(new, expected, timeout, first)
        if result.ok:
            return result, method.value, False
        fallback = _restart_fallback(self.harper)
        # Harper's self-signed fallback (its pair refused in a reload race): it never
        # retries by itself (HarperFast/harper#2382), so restart at once.
        seen = ("served_self_signed: " if _self_signed(result) else "") + result.describe()
        # Imported here for start-up cost: `status` loads this module and logs nothing.
        from harper_certd import logs

        logs.emit(events.HotReloadMissed(method=method.value, seen=seen, fallback=fallback.value))
        self.restart(fallback)
        # Imported here for start-up cost: `status` loads this module and logs nothing.
        from harper_certd import logs

        logs.emit(events.HarperRestarted(method=fallback.value))
        return self.verify(expected, timeout), f"{method.value}, then {fallback.value}", True

    def _nudge_until_served(
        self, new: Generation, expected: str, timeout: float, first: float
    ) -> Verification:
        """Verify for ``first`` seconds, then wake Harper's watchers again (every generation,
        the live one last) at doubling intervals until the new leaf is served, Harper serves
        its self-signed fallback, or ``timeout`` (seconds) is spent.

        Why more than one change event: Harper's watchers may sit on inodes the flip's nudge
        did not touch (right after live files were adopted, say); Harper 4.4's first reload
        fails in the worker (``key values mismatch``) and only a later event loads the pair,
        and on a loaded host that first reload can start late and swallow the one event sent
        after it (seen once in CI: the old leaf still served 60 s later).  A reload that
        starts after the files are in place loads the new pair, so an extra one is harmless.
        """
        spent = 0.0
        wait = min(first, timeout)
        while True:
            result = self.verify(expected, wait)
            spent += max(result.seconds, wait)  # a verify cut short still uses its turn
            if result.ok or _self_signed(result) or spent >= timeout:
                return result
            self.store.nudge(new, including_live=True)
            wait = min(2 * wait, timeout - spent)

    def _verdict(
        self, result: Verification, method: str, restarted: bool, expected: str, seconds: float
    ) -> Applied:
        if result.ok:
            # Imported here for start-up cost: `status` loads this module and logs nothing.
            from harper_certd import logs

            logs.emit(
                events.ServedVerified(
                    fingerprint=expected,
                    ports=dict(self.harper.ports),
                    dialled=[s.dialled for s in result.last],
                    pid=result.pid,
                    seconds=round(seconds, 2),
                    failed_handshakes=result.failed_handshakes,
                    method=method,
                )
            )
            where = ", ".join(s.dialled for s in result.last)
            return Applied(
                True, method, f"served on {where} after {seconds:.1f}s", seconds, restarted, True
            )
        alive = "Harper is not running" if result.pid is None else f"Harper pid {result.pid}"
        return Applied(
            False, method, f"{alive}; after {seconds:.0f}s: {result.describe()}", seconds, restarted
        )


def _self_signed(result: Verification) -> bool:
    """Whether a port served Harper's own self-signed fallback certificate."""
    return any(s.harper_fallback for s in result.last)


def make_applier(
    config: Config,
    harper_config: discover.HarperConfig,
    store: Store,
    interrupted: threading.Event | None = None,
    cert: Path | None = None,
    before_restart: BeforeRestart | None = None,
) -> Applier:
    """The applier for ``restart.method``; ``cert``: the managed set's certificate path
    (verification on that set's ports); ``before_restart``: see :class:`HarperApplier`."""
    method = RestartMethod(config.restart.method)
    if method is RestartMethod.NONE:
        return none_applier
    if method is RestartMethod.COMMAND and not config.verify.enabled:
        return command_applier(config.restart.command, config.restart.timeout, interrupted)
    harper = make_harper(config, harper_config, interrupted=interrupted, cert=cert)
    return HarperApplier(harper, store, before_restart, interrupted)
