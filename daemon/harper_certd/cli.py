"""The command line: a thin driver over the stages.

The exit codes are ``exits.Exit`` (and ``install.outcomes``' tables keyed by the install and
rollback statuses).  Imports are made per command, so that ``validate`` loads neither
watchdog nor psutil (it is timed against a bare cryptography script in ``bench/``): every
function-level import here is there for start-up cost, and only here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harper_certd import __version__, cliargs
from harper_certd.cliout import Parser as _Parser
from harper_certd.cliout import emit as _emit
from harper_certd.cliout import print_json as _print_json
from harper_certd.cliout import quiet_stdout, say
from harper_certd.clock import utc_now
from harper_certd.exits import Exit

if TYPE_CHECKING:
    from harper_certd.config import Config
    from harper_certd.discover import HarperConfig
    from harper_certd.install.context import Context

EXIT_OK = Exit.OK
EXIT_INVALID = Exit.INVALID
EXIT_USAGE = Exit.USAGE
EXIT_ROLLED_BACK = Exit.ROLLED_BACK


def cmd_validate(args: argparse.Namespace) -> int:
    from harper_certd import judge
    from harper_certd.judge import runtime

    # A Node asked for by name that cannot run is the operator's mistake, not a reason to
    # answer with the model: a usage error (the daemon's judge.node falls back, and says so).
    if args.node not in (None, runtime.OFF) and not runtime.executable(args.node):
        say(f"harper-certd validate: --node {args.node} is not an executable file", file=sys.stderr)
        return EXIT_USAGE
    # Node first: its start-up runs while Python imports the analysis below.
    judge.configure(node=args.node, off_reason="--node none", jit=True, setting="--node")
    pending = judge.start_files(
        Path(args.cert),
        Path(args.key),
        Path(args.ca),
        names=[*args.hostname, *args.url_host],
        server=args.purpose != "client",
        client=args.purpose != "server",
        limit=judge.EARLY_LIMIT,
    )

    from harper_certd import render
    from harper_certd.roles import Purpose, SetPaths
    from harper_certd.validate import validate_files

    paths = SetPaths(Path(args.cert), Path(args.key), Path(args.ca))
    report = validate_files(
        paths,
        at=args.at or utc_now(),
        purpose=Purpose(args.purpose),
        hostnames=args.hostname,
        expiry_warning_days=args.warn_days,
        url_hosts=args.url_host,
        replication=args.replication,
        pending=pending,
    )
    if args.json:
        _print_json(report.as_dict())
    else:
        say(render.report_lines(report, paths))
    if report.valid:
        return EXIT_OK
    # A file that cannot be read at all (missing, not a regular file, no permission) is a
    # usage error (exit 2); a file that can be read but is not a usable set is invalid (1).
    files = (paths.cert, paths.key, Path(args.ca))
    if any(not (p.is_file() and os.access(p, os.R_OK)) for p in files):
        return EXIT_USAGE
    return EXIT_INVALID


def _config_path(args: argparse.Namespace) -> Path | None:
    """--config, else $HARPER_CERTD_CONFIG, else /etc/harper-certd/config.yaml if it exists."""
    from harper_certd.config import default_config_path

    return Path(args.config) if args.config else default_config_path()


def cmd_check(args: argparse.Namespace) -> int:
    from harper_certd import discover, render_check, roles
    from harper_certd.check import check
    from harper_certd.config import load_config
    from harper_certd.errors import ConfigError

    try:
        certd_config = load_config(_config_path(args))
        root = (
            Path(args.harper_root)
            if args.harper_root
            else certd_config.harper.root or roles.default_root()
        )
        config = discover.load_config(root)
    except ConfigError as exc:
        say(f"harper-certd check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_judge(certd_config.judge.node, config.root)
    if args.plan:
        from harper_certd.plan import plan_lines

        say(plan_lines(config))
        return EXIT_OK
    result = check(config, args.at or utc_now(), args.warn_days, certd_config.harper.trust_store)
    if args.json:
        _print_json(render_check.check_dict(result))
    else:
        say(render_check.check_lines(result))
    # Nothing checked is not "all fine": exit 1, as for an error (the notes say why).
    return EXIT_OK if result.valid and result.checked else EXIT_INVALID


def _configure_judge(node: str | None, harper_root: Path) -> None:
    """Harper's own node judges sets (its process, found now and at each judgement), else
    ``judge.node``, else PATH's."""
    from harper_certd import judge
    from harper_certd.harper.process import harper_pid

    judge.configure(node=node, harper_pid=lambda: harper_pid(harper_root))


def _context(
    args: argparse.Namespace,
    *,
    applies: bool = True,
    loaded: tuple[Config, HarperConfig] | None = None,
) -> Context:
    """The set's context from --config and the flags that override it (``applies`` False:
    a command that reads only, ``install.context.build_context``); ``loaded``: the
    configuration and Harper's, as ``_configured`` read them a moment before (not again)."""
    from harper_certd.install.context import build_context

    config, harper = loaded if loaded is not None else (_configured(args), None)
    return build_context(
        config, set_name=getattr(args, "cert_set", None), applies=applies, harper=harper
    )


def _configured(args: argparse.Namespace) -> Config:
    """The configuration of --config (else the default's), with --harper-root and
    --state-dir in place of its own; ConfigError."""
    from harper_certd import config as cfg

    config = cfg.load_config(_config_path(args))
    harper = cfg.with_overrides(
        config.harper, root=Path(args.harper_root) if args.harper_root else None
    )
    return cfg.with_overrides(
        config,
        harper=harper,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )


def _configure_cli_logging(args: argparse.Namespace) -> None:
    """The command's events on stderr: console lines, or JSON lines when the configuration
    says ``log.format: json`` (a configuration that cannot be read is the command's to
    report: console until then)."""
    from harper_certd import journald, logs
    from harper_certd.config import load_config

    try:
        as_json = load_config(_config_path(args)).log.format == "json"
    except Exception:  # the command reads it again and says what is wrong with it
        as_json = False
    omits = _CONSOLE_OMITS.get(args.command, frozenset())
    logs.configure(json=as_json, stream=sys.stderr, console_omits=omits)
    journald.attach()  # the same JSON events in the journal, identifier harper-certd


# Events a command prints itself, left off its console log (the journal keeps them): a
# refusal's reason is the problems ``install`` prints, sentence for sentence.
_CONSOLE_OMITS = {"install": frozenset({"certd.set_refused"})}


def keep_running() -> None:
    """A command that keeps running turns Python's cyclic collector back on (the console
    script starts every command with it off: ``entry``)."""
    gc.enable()


def cmd_run(args: argparse.Namespace) -> int:
    keep_running()
    from harper_certd import run
    from harper_certd.clock import clock_from_env

    overrides = run.Overrides(
        harper_root=Path(args.harper_root) if args.harper_root else None,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )
    return run.main(_config_path(args), overrides, clock_from_env)


Command = Callable[[argparse.Namespace], int]


# Commands that emit no event (reading files only): logging, structlog's import (~35 % of
# `status --no-probe`'s time, measured in bench/), is not set up.  The modules they load
# import harper_certd.logs where they emit, and tests/test_status_imports.py checks it stays
# unloaded; the validation's judge logs a disagreement only when logging is configured.
_LOGS_UNUSED = frozenset({"status"})


def _infrastructure(func: Command) -> Command:
    """Configuration and state failures are exit 2 with a sentence, never a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        from harper_certd.errors import CertdError, SwapError

        if args.command not in _LOGS_UNUSED:
            _configure_cli_logging(args)
        try:
            code = func(args)
        except SwapError as exc:
            if args.command == "status":  # a store it cannot lock: as any state it cannot read
                return _status_failed(args, exc)
            # A swap that could not be written leaves the live set as it was: "nothing changed".
            say(f"harper-certd {args.command}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        except CertdError as exc:
            if args.command == "status":
                return _status_failed(args, exc)
            say(f"harper-certd {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return code

    return wrapper


def _status_failed(args: argparse.Namespace, exc: Exception) -> int:
    """A status that could not read the configuration, the node or its state: exit 2 with the
    sentence, and with --json the JSON a monitoring check reads (critical, and why)."""
    say(f"harper-certd {args.command}: {exc}", file=sys.stderr)
    if args.json:
        # A monitoring check reads JSON, always: the node is critical, and why.
        _print_json(
            {
                "health": "critical",
                "exit_status": EXIT_USAGE,
                "error": str(exc),
                "checked_at": utc_now().isoformat(),
                "sets": [],
            }
        )
    return EXIT_USAGE


@_infrastructure
def cmd_install(args: argparse.Namespace) -> int:
    from harper_certd import hints
    from harper_certd.install.pipeline import install

    ctx = _context(args)
    if _missing_source(args.source, "install"):
        return EXIT_USAGE
    # SOURCE by its absolute path from here on: messages name it so, and where the folder is
    # filed replaces that path in them (hints.moved); a relative "expired" would have
    # replaced the word in "The certificate expired on ..."
    source = Path(args.source).absolute()
    note = None if args.cert_set is not None else _other_set_hint(ctx, source)
    if args.dry_run:
        if note:
            say(note, file=sys.stderr)
        return _install_dry_run(ctx, source, args)
    folder: Path | None = source
    if args.keep_source:
        folder = _private_copy(ctx, source)
    if folder is None:
        return EXIT_INVALID
    outcome = install(ctx, folder, force_older=args.force_older, force_peers=args.force)
    if note:  # said after the install: it names SOURCE where the install left it
        say(hints.moved(note, source, outcome.kept_at), file=sys.stderr)
    if args.json:
        _print_json(outcome.as_dict())
    else:
        if outcome.recovery is not None:
            say(f"recovered an interrupted {outcome.recovery.op}: {outcome.recovery.outcome}")
        # A hint naming the source names it where it is now: the filed folder, or with
        # --keep-source the SOURCE given (its copy was judged and filed; SOURCE stays).
        now_at = source if args.keep_source else outcome.kept_at
        for p in outcome.problems:
            message = hints.moved(p.message, folder, now_at)
            say(f"{p.severity.value}: {p.code}: {message}")
        if outcome.trust_store is not None:
            say(f"chain checked against the system trust store: {outcome.trust_store}")
        say(_install_sentence(outcome, copy_of=source if args.keep_source else None))
    return outcome.exit_code


def _missing_source(source: str | None, command: str) -> bool:
    """SOURCE named on the command line does not exist: a usage error (exit 2, as
    ``validate`` for a missing file), said on stderr; nothing is judged or filed."""
    if source is None or os.path.lexists(source):
        return False
    say(f"harper-certd {command}: {source} does not exist", file=sys.stderr)
    return True


def _other_set_hint(ctx: Context, source: Path) -> str | None:
    """On a node with several sets, a note when SOURCE fits another set than the default."""
    from harper_certd.node import router

    sets = ctx.harper.sets()
    if len(sets) < 2 or ctx.set_name is None:
        return None
    routed = router.decide(
        source,
        sets,
        ctx.set_name,
        trusted_uids=ctx.trusted_uids(),
        ca_fallback=ctx.managed.live.ca,
        node_name=ctx.harper.node_name,
    )
    if routed.set_name is not None and routed.set_name != ctx.set_name:
        return (
            f"note: {source} fits set {routed.set_name!r}, not {ctx.set_name!r}: "
            f"harper-certd install --set {routed.set_name} {source}"
        )
    return None


def _private_copy(ctx: Context, source: Path) -> Path | None:
    """--keep-source: the set copied (stage's reader and writer) to a private folder beside
    processed/, which install then files away instead of SOURCE."""
    from harper_certd import stage
    from harper_certd.source import SourceRefused

    try:
        files = stage.read_folder(source, ctx.trusted_uids())
    except SourceRefused as exc:
        say(f"refused: {exc.code}: {exc} (nothing changed)")
        return None
    copies = ctx.paths.processed.parent / ".harper-certd-copies"
    copies.mkdir(mode=0o700, exist_ok=True)
    st = os.stat(copies)
    staged = stage.stage_files(files, copies, (st.st_uid, st.st_gid), by="install")
    say(f"{source} copied to {staged.path}; {source} stays as it is.")
    return staged.path


def _install_dry_run(ctx: Context, folder: Path, args: argparse.Namespace) -> int:
    """Everything install does before the swap: read, validate, compare with the live set."""
    from harper_certd.install import judge, verdict
    from harper_certd.problems import Problem, problem
    from harper_certd.source import SourceRefused, read_source

    certificate: object = None
    try:
        source = read_source(
            folder,
            trusted_uids=ctx.trusted_uids(),
            ca_fallback=ctx.config.ca_file or ctx.managed.live.ca,
            ca_file=ctx.managed.live.ca is not None,
        )
    except SourceRefused as exc:
        problems: list[Problem] = [problem(exc.code, str(exc))]
        would = "refuse"
    else:
        names = source.labels  # the files read: messages name them
        report = verdict.validate_set(ctx, source.data, (names[0], names[1], names[2]))
        certificate = report.as_dict()["certificate"]
        problems = [*report.problems, *judge.other_keys(source)]
        if report.valid and not args.force_older:
            older = judge.older_than_live(ctx, report, folder)
            if older is not None:
                problems.append(older)
        if any(p.severity.value == "error" for p in problems):
            would = "refuse"
        elif judge.same_as_live(ctx, source.data):
            would = "leave as is (already live)"
        else:
            would = "install"
    trust = ctx.trust_store()
    if args.json:
        _print_json(
            {
                "dry_run": True,
                "would": would,
                "problems": [p.as_dict() for p in problems],
                "certificate": certificate,
                "trust_store": None if trust is None else trust.where,
            }
        )
    else:
        for p in problems:
            say(f"{p.severity.value}: {p.code}: {p.message}")
        if trust is not None:
            say(f"chain checked against the system trust store: {trust.where}")
        say(f"Dry run: harper-certd would {would}; nothing was changed.")
    return EXIT_INVALID if would == "refuse" else EXIT_OK


def _install_sentence(outcome: object, copy_of: Path | None = None) -> str:
    """The outcome in one sentence; ``copy_of``: the SOURCE of ``install --keep-source``,
    whose copy was judged and filed (the filed folder is then said to be a copy)."""
    from harper_certd.install.outcomes import InstallOutcome, InstallStatus

    assert isinstance(outcome, InstallOutcome)
    if not outcome.kept_at:
        kept = ""
    elif copy_of is not None:
        kept = f" The copy is kept in {outcome.kept_at}; {copy_of} stays as it is."
    else:
        kept = f" The source is kept in {outcome.kept_at}."
    if outcome.status == InstallStatus.INSTALLED:
        how = f" ({outcome.applied.detail})" if outcome.applied and outcome.applied.detail else ""
        if outcome.error:  # installed and live; only filing the source failed
            gen = outcome.generation
            return f"Installed as generation {gen}{how}. Warning: {outcome.error}."
        return f"Installed as generation {outcome.generation}{how}.{kept}"
    if outcome.status == InstallStatus.UNCHANGED:
        warning = f" Warning: {outcome.error}." if outcome.error else ""
        return f"The set is already live (generation {outcome.generation}).{kept}{warning}"
    if outcome.status == InstallStatus.REFUSED:
        return f"Refused; nothing changed.{kept}"
    if outcome.status == InstallStatus.HELD_FOR_PEERS:
        peers = ", ".join(outcome.held_for)
        return (
            f"Held for {peers} (no answer); nothing changed and the source stays where it is. "
            f"Run install again once they answer (the daemon re-tries what is in its incoming "
            f"folder), until {outcome.held_until}; then it goes ahead past them."
        )
    if outcome.status == InstallStatus.ROLLED_BACK:
        return (
            f"Installed as generation {outcome.generation}, but Harper did not take it; "
            f"generation {outcome.previous} is back in place.{kept}"
        )
    return (
        f"Installed as generation {outcome.generation}, Harper did not take it, and the "
        f"rollback to {outcome.previous} could not be confirmed: look at Harper now.{kept}"
    )


@_infrastructure
def cmd_rollback(args: argparse.Namespace) -> int:
    from harper_certd.install.rollback import rollback

    ctx = _context(args)
    outcome = rollback(ctx, args.generation, force=args.force)
    if outcome.trust_store is not None:
        say(f"chain checked against the system trust store: {outcome.trust_store}")
    for p in outcome.problems:
        say(f"{p.severity.value}: {p.code}: {p.message}")
    say(outcome.message)
    return outcome.exit_code


def _start_live_judge(
    args: argparse.Namespace, pid_of: Callable[[Path], int | None]
) -> tuple[Config, HarperConfig] | None:
    """Node started on the live set before ``status`` imports the analysis, as ``validate``
    does: the status' own judgement of the same bytes, names and direction shares this run
    (``judge.REUSE_SECONDS``).  ``pid_of``: Harper's pid for a root (``harper_pid``).
    Returns the configuration and Harper's it read (the status' context is built from them),
    or None when either cannot be read.  Best effort: whatever fails here, the status
    reports it when it builds its context; a set without a CA file is judged without this
    run."""
    # start-up cost: only the configuration's readers, before cryptography and the rest.
    from harper_certd import config as cfg
    from harper_certd import discover, judge
    from harper_certd.install.managed import managed_set
    from harper_certd.roles import Purpose

    try:
        config = _configured(args)
        root = cfg.resolve_paths(config).harper_root
        loaded = (config, discover.load_config(root))
    except Exception:  # the status' own reading says what is wrong, with its exit code
        return None
    try:
        managed = managed_set(loaded[1], getattr(args, "cert_set", None))
        if managed.live.ca is None:
            return loaded
        # The choice build_context makes (install.context._configure_judge), with the JIT
        # (judge.runtime.Settings): the command warmstart.prestart started for a status.
        judge.configure(node=config.judge.node, harper_pid=lambda: pid_of(root), jit=True)
        judge.start_files(
            managed.live.cert,
            managed.live.key,
            managed.live.ca,
            names=[*managed.hostnames, *managed.url_hosts],
            server=managed.purpose is not Purpose.CLIENT,
            client=managed.purpose is not Purpose.SERVER,
            limit=judge.EARLY_LIMIT,
        )
    except Exception:  # the status' own judgement says what is wrong, with its exit code
        return loaded
    return loaded


@_infrastructure
def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 ok, 1 warning, 2 critical (Nagios plugin convention; health.Level)."""
    import functools

    from harper_certd.harper.process import harper_pid

    # Harper's pid looked up once per root for the whole command (a status is one instant):
    # without a pidfile each lookup scans every process, and each judgement asks.
    pid_of = functools.cache(harper_pid)
    loaded = _start_live_judge(args, pid_of)  # Node starts while Python imports the rest
    from harper_certd import health, judge
    from harper_certd.status import status

    ctx = _context(args, applies=False, loaded=loaded)
    root = ctx.paths.harper_root
    judge.configure(node=ctx.config.judge.node, harper_pid=lambda: pid_of(root), jit=True)
    info = status(ctx)
    now = ctx.clock()
    snap = health.snapshot(ctx, now, served=not args.no_probe, live=info.live)
    data = {
        **info.as_dict(now),
        **snap.as_dict(),
        "expiry_warn_days": list(ctx.config.expiry.warn_days),  # fleet's last threshold
    }
    # start-up cost: the process scan and the lines table only for this command
    from harper_certd.check import find_process
    from harper_certd.harper.lines import line_of, support

    process = find_process(ctx.harper, pid_of)
    line = line_of(process.version)
    data["harper"] = {
        "pid": process.pid,
        "version": process.version,
        "line": None if line is None else line.name,
        "support": support(process.version, process.pid),
    }
    from harper_certd import statefile  # start-up cost: only status reads the daemon's record

    data["daemon"] = statefile.read_daemon(ctx.paths.state)
    if args.json:
        _emit(lambda: _print_json(data))
        return int(snap.level)
    lines: list[str] = []
    out = lines.append  # the report is written at once by _emit, below
    out(f"{snap.level.word.upper()}: node {snap.node_name or '?'} ({snap.harper_root})")
    running = "not running" if process.pid is None else f"pid {process.pid}"
    out(f"harper: {running}; {support(process.version, process.pid)}")
    daemon = data["daemon"]
    if daemon["running"]:
        out(f"daemon: pid {daemon['pid']}, since {daemon['since']}")
    elif daemon["running"] is None:
        out(f"daemon: unknown ({ctx.paths.state} cannot be read by this user)")
    else:
        out(f"daemon: not running for {ctx.paths.state} (harper-certd run)")
    for f in snap.findings:
        out(f"  {f.level.word}: {f.code}: {f.message}")
    live = data["live"]
    if live is None:
        out("live set: unreadable")
    else:
        out(f"live set: {live['subject']} issued by {live['issuer']}")
        out(
            f"  sha256 {live['sha256']}, {_left(live, now)},"
            f" {'valid' if live['valid'] else 'INVALID'}"
        )
        if live.get("judge"):
            out(f"  {live['judge']}")
        if data["trust_store"] is not None:
            out(f"  chain checked against the system trust store: {data['trust_store']}")
        for p in live["problems"]:
            out(f"  {p['severity']}: {p['code']}: {p['message']}")
    match = {True: "serves the live set", False: "serves ANOTHER certificate", None: "not checked"}
    for s in data["sets"]:
        role = s["harper_role"] or s["role"]
        ports = ", ".join(f"{k} {v}" for k, v in s["ports"].items())
        managed = "" if s["managed"] else ", not installed by harper-certd"
        out(
            f"set {s['name']} ({role}{'; ' + ports if ports else ''}{managed}): "
            f"Harper {match[s['served_matches_live']]}"
        )
        for v in s["served"] or ():
            out(f"  {v['dialled']}: {v['sha256'] or v['error']}")
        for c in s["certificates"]:
            out(f"  {c['role']:<12} {_left(c, now):>16}  {c['subject']}")
        if s["next_renewal"] is not None:
            out(f"  next renewal {s['next_renewal']}, overdue from {s['renewal_overdue_at']}")
        if s["generation"] is not None:
            out(f"  generation {s['generation']}")
    for w in data["waiting"]:
        held = f" (HELD: {w['reason'] or 'waiting too long'})" if w["held"] else ""
        idle = "; no daemon runs to take it" if daemon["running"] is False else ""
        out(f"waiting: {w['path']} since {w['since']}{held}{idle}")
    if data["watch_only"]:
        out(f"watch-only: {data['watch_only']}")
    out("generations:")
    if not data["generations"] and not data["watch_only"]:
        out("   none yet: the live files are adopted as generation 000001 at the first install")
    for g in data["generations"]:
        mark = "*" if g["current"] else " "
        subject = g["subject"] or "(certificate unreadable)"
        until = f"  until {g['not_after']}" if g["not_after"] else ""
        out(f" {mark} {g['id']}  {g['created']}  {g['outcome']:<18} {subject}{until}")
        if g["id"] in data["damaged"]:
            out(f"     {data['damaged'][g['id']]}")
    out("last operations:")
    if not data["history"]:
        out("   none yet")
    for h in data["history"]:
        out(f"   {h['time']}  {h['op']:<9} {h['outcome']}  {h.get('generation') or ''}")
    _emit(lambda: say(lines))
    return int(snap.level)


def _left(cert: dict[str, object], now: dt.datetime) -> str:
    """Time left before a certificate's notAfter, from the instant itself (``days_left`` is
    rounded to 0.01 day: 14 minutes)."""
    from harper_certd import spans

    not_after = dt.datetime.fromisoformat(str(cert["not_after"]))
    return spans.left((not_after - now).total_seconds())


def _loaded_config(args: argparse.Namespace) -> object:
    """The configuration with the command-line overrides, without building a context."""
    from harper_certd import config as cfg

    config = cfg.load_config(_config_path(args))
    harper = cfg.with_overrides(
        config.harper, root=Path(args.harper_root) if args.harper_root else None
    )
    return cfg.with_overrides(
        config, harper=harper, state_dir=Path(args.state_dir) if args.state_dir else None
    )


@_infrastructure
def cmd_stage(args: argparse.Namespace) -> int:
    """0 staged (or, with --wait, installed), 1 refused, 3 rolled back, 4 no outcome in time."""
    from harper_certd import discover, events, logs, stage
    from harper_certd.config import Config, resolve_paths
    from harper_certd.source import SourceRefused

    config = _loaded_config(args)
    assert isinstance(config, Config)
    paths = resolve_paths(config)
    target = paths.incoming
    if args.set is not None:
        names = [c.name for c in discover.load_config(paths.harper_root).sets()]
        if args.set not in names:
            why = f"no set named {args.set!r} here (sets: {', '.join(names)})"
            say(f"harper-certd stage: {why}", file=sys.stderr)
            return EXIT_USAGE
        if len(names) > 1:  # each set has its folder, incoming/<set name>/ (the daemon's lanes)
            target = paths.incoming / args.set
    if (args.source is None) == (args.cert is None):
        say("harper-certd stage: give SOURCE, or --cert and --key (and --ca)", file=sys.stderr)
        return EXIT_USAGE
    if _missing_source(args.source, "stage"):
        return EXIT_USAGE
    owner = stage.owner_of(paths.state, paths.incoming)
    trusted = {0, os.geteuid(), owner[0]}
    if target != paths.incoming and paths.incoming.is_dir() and not target.exists():
        target.mkdir(mode=0o750)  # the daemon makes it at start too; owned as the daemon's
        if os.geteuid() == 0:
            os.chown(target, *owner)
    try:
        if args.source is not None:
            files = stage.read_folder(Path(args.source), trusted)
        else:
            if args.key is None:
                say("harper-certd stage: --cert needs --key", file=sys.stderr)
                return EXIT_USAGE
            files = stage.read_files(
                Path(args.cert), Path(args.key), Path(args.ca) if args.ca else None
            )
    except SourceRefused as exc:
        say(f"harper-certd stage: {exc.code}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    staged = stage.stage_files(files, target, owner)
    logs.emit(
        events.SetStaged(
            source=args.source or args.cert,
            staged=str(staged.path),
            files=list(staged.files),
        )
    )
    say(f"Staged as {staged.path}; the daemon takes it from there.")
    if not args.wait:
        return EXIT_OK
    outcome, where = stage.wait_outcome(staged, paths.processed, paths.rejected, args.timeout)
    words = {
        stage.Outcome.INSTALLED: "processed",
        stage.Outcome.REFUSED: "refused; nothing changed",
        stage.Outcome.ROLLED_BACK: "installed, Harper did not take it, rolled back",
        stage.Outcome.NO_OUTCOME: f"no outcome after {args.timeout:.0f}s: is the daemon running?",
    }
    why = stage.explain(outcome, where, staged, paths.state, stage.leaf_sha256(files))
    say(f"{words[outcome]}{f': {why}' if why else ''}{f' (kept in {where})' if where else ''}")
    return int(outcome)


@_infrastructure
def cmd_release(args: argparse.Namespace) -> int:
    """0 released (or nothing to release); 1 a path could not be replaced (SwapError)."""
    from harper_certd.release import release

    ctx = _context(args)
    done = release(ctx.store)
    if done.already_plain:
        say("Harper's certificate files are plain files already; nothing to release.")
    else:
        say(
            f"Released generation {done.generation}: "
            + ", ".join(str(p) for p in done.paths)
            + f" are plain files again. {ctx.paths.state} is no longer used"
            " (keep it for its history, or delete it)."
        )
    return EXIT_OK


def cmd_fleet(args: argparse.Namespace) -> int:
    """The worst node's health (0/1/2); 2 also for a file that is not status --json."""
    from harper_certd import fleet

    try:
        found, worst = fleet.rows([Path(p) for p in args.files])
    except fleet.FleetError as exc:
        say(f"harper-certd fleet: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        _print_json({"worst": worst, "rows": [r.as_dict() for r in found]})
    else:
        say(fleet.table(found))
    return worst


def cmd_demo(args: argparse.Namespace) -> int:
    keep_running()
    from harper_certd.demo import run_demo

    return run_demo(keep=args.keep)


# --- h-peers (issue 12): ca add/remove, cluster, harden ------------------------------------


@_infrastructure
def cmd_ca(args: argparse.Namespace) -> int:
    from harper_certd import cafile
    from harper_certd.install.outcomes import InstallStatus

    ctx = _context(args)
    if args.ca_command == "rotate":
        return _ca_rotate(ctx, args)
    try:
        if args.ca_command == "add":
            added = cafile.ca_add(
                ctx, cafile.read_pem_file(Path(args.file)), force_peers=args.force
            )
            outcome = added.outcome
            if outcome is None:
                say("every CA in that file is in the live CA file already: nothing changed")
                return EXIT_OK
            if added.authority_loaded is False:
                say("warning: Harper has not loaded the new CA (list_certificates) in time")
        else:
            removal = cafile.ca_remove(ctx, args.fingerprint, force_peers=args.force)
            for name in removal.records_removed:
                say(f"Harper's authority record {name} removed (remove_certificate)")
            for why in removal.records_kept:
                say(f"kept: {why}")
            for peer in removal.peers_refreshed:
                say(f"CAs exchanged again with {peer}")
            for why in removal.peers_not_refreshed:
                say(f"CAs not exchanged again: {why}")
            outcome = removal.outcome
            if outcome is None:
                say("that CA is not in the live CA file")
                return EXIT_OK
    except cafile.CaError as exc:
        say(f"refused: {exc} (nothing changed)")
        return EXIT_INVALID
    for p in outcome.problems:
        say(f"{p.severity.value}: {p.code}: {p.message}")
    say(_install_sentence(outcome))
    done = outcome.status in (InstallStatus.INSTALLED, InstallStatus.UNCHANGED)
    return EXIT_OK if done else EXIT_INVALID


# --- h-clusterB (issue 18): ca rotate -------------------------------------------------------


def _ca_rotate(ctx: Context, args: argparse.Namespace) -> int:
    from harper_certd import cafile
    from harper_certd.rotation import command
    from harper_certd.rotation.phases import State

    try:
        if args.leaf:
            where = command.stage_leaf(ctx, Path(args.leaf))
            say(f"new-CA leaf staged for this node's switch_leaf step: {where}")
            return EXIT_OK
        for flag, state in (("pause", State.PAUSED), ("resume", State.ACTIVE)):
            if getattr(args, flag):
                plan = command.set_state(ctx, state)
                say(f"plan {plan.plan_id} is {plan.state.value}")
                return EXIT_OK
        if args.abort:
            plan = command.set_state(ctx, State.ABORTED)
            say(
                f"plan {plan.plan_id} aborted: no node takes another step; every step already "
                "taken stays (a CA added is harmless; ca remove takes it out again)"
            )
            return EXIT_OK
        if args.status or not args.file:
            data = command.status(ctx)
            if args.json:
                _print_json(data)
            else:
                say(command.render(data))
            return EXIT_OK
        plan = command.start(ctx, cafile.read_pem_file(Path(args.file)))
    except cafile.CaError as exc:
        say(f"refused: {exc} (nothing changed)")
        return EXIT_INVALID
    say(
        f"plan {plan.plan_id} written to Harper (harper_certd.ca_rotation): rotating "
        f"{', '.join(plan.nodes)} to {plan.new_sha256[:16]}; every node's daemon takes its "
        "own steps (ca rotate --status)"
    )
    return EXIT_OK


@_infrastructure
def cmd_cluster(args: argparse.Namespace) -> int:
    from harper_certd import cafile, cluster
    from harper_certd.errors import CertdError
    from harper_certd.rotation import command as rotation

    ctx = _context(args)
    data = cluster.view(ctx)
    try:
        data["rotation"] = rotation.status(ctx)
    except (cafile.CaError, CertdError) as exc:  # the view stands without it
        data["rotation"] = {"error": str(exc)}
    if args.json:
        _print_json(data)
    else:
        say(cluster.render(data).split("\n"))
        if "error" not in data["rotation"]:
            say(rotation.render(data["rotation"]))
    return EXIT_OK if data["phase"] != "unknown" else EXIT_INVALID


@_infrastructure
def cmd_harden(args: argparse.Namespace) -> int:
    from harper_certd import harden

    ctx = _context(args)
    try:
        result = harden.harden(ctx, dry_run=args.dry_run)
    except harden.HardenRefused as exc:
        say(f"refused: {exc} (nothing changed)")
        return EXIT_INVALID
    say((result.diff or "nothing to change").split("\n"))
    for line in result.notes:
        say(line)
    return EXIT_OK


# --- end of h-peers' commands ----------------------------------------------------------------


# The subcommands in the order of ``--help``: (name, help, the function that adds its
# arguments, the command).
COMMANDS: tuple[
    tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]],
    ...,
] = (
    ("validate", "validate a certificate set", cliargs.validate, cmd_validate),
    ("check", "validate every certificate set Harper uses", cliargs.check, cmd_check),
    ("install", "validate a set, swap it in, make Harper use it", cliargs.install, cmd_install),
    ("rollback", "put an earlier generation back", cliargs.rollback, cmd_rollback),
    (
        "status",
        "health (exit 0 ok, 1 warning, 2 critical), sets, served vs live, operations",
        cliargs.status,
        cmd_status,
    ),
    ("run", "the daemon: watch, validate, swap, verify, roll back", cliargs.run, cmd_run),
    (
        "stage",
        "copy a set into the incoming folder for the daemon (SOURCE is never changed)",
        cliargs.stage,
        cmd_stage,
    ),
    (
        "release",
        "hand plain files back to Harper (undo the adoption; daemon stopped)",
        cliargs.release,
        cmd_release,
    ),
    ("fleet", "many nodes' status --json side by side", cliargs.fleet, cmd_fleet),
    ("ca", "CA rotation across the cluster: add a CA, remove one", cliargs.ca, cmd_ca),
    ("cluster", "this node and each peer: served leaf, trust, phase", cliargs.cluster, cmd_cluster),
    (
        "harden",
        "turn off what development setups leave on, once proven safe",
        cliargs.harden,
        cmd_harden,
    ),
    ("demo", "show harper-certd at work in a temporary folder", cliargs.demo, cmd_demo),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser.  With ``command`` (one of ``COMMANDS``' names) only that
    subcommand is built: its usage, help and errors are the same, and ``validate`` does not
    pay for fourteen other parsers (about 6 ms of its start-up, bench/'s process rows).
    Without it (``-h``, ``--version``, a name that is not a command), every subcommand."""
    parser = _Parser(
        prog="harper-certd",
        description="Keeps the TLS certificates of a Harper cluster node valid.",
    )
    parser.add_argument("--version", action="version", version=f"harper-certd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text, add_arguments, func in COMMANDS:
        if command is None or command == name:
            subparser = sub.add_parser(name, help=help_text)
            add_arguments(subparser)
            subparser.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    named = given[0] if given and any(given[0] == name for name, *_ in COMMANDS) else None
    args = build_parser(named).parse_args(given)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # `harper-certd validate --json | head`: the reader went away
        quiet_stdout()
        return EXIT_OK
    return code
