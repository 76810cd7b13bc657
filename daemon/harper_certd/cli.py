"""The command line: a thin driver over the stages; exit codes live only here.

Imports are made per command, so that ``validate`` loads neither watchdog nor
psutil (it is timed against a bare cryptography script in ``bench/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harper_certd import __version__

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_ROLLED_BACK = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def cmd_validate(args: argparse.Namespace) -> int:
    from harper_certd import render
    from harper_certd.validate import Purpose, SetPaths, validate_files

    paths = SetPaths(Path(args.cert), Path(args.key), Path(args.ca))
    report = validate_files(
        paths,
        at=args.at or _now(),
        purpose=Purpose(args.purpose),
        hostnames=args.hostname,
        expiry_warning_days=args.warn_days,
        url_hosts=args.url_host,
    )
    if args.json:
        _print_json(report.as_dict())
    else:
        print("\n".join(render.report_lines(report, paths)))
    if report.valid:
        return EXIT_OK
    unreadable = {"cert_unreadable", "key_unreadable", "ca_unreadable"}
    # Unreadable arguments are a usage error (exit 2) only when nothing else could be judged.
    if set(report.codes) <= unreadable | {"key_permissions"} and report.certificate is None:
        return EXIT_USAGE
    return EXIT_INVALID


def cmd_check(args: argparse.Namespace) -> int:
    from harper_certd import discover, render
    from harper_certd.check import check
    from harper_certd.errors import ConfigError

    root = Path(args.harper_root) if args.harper_root else discover.default_root()
    try:
        config = discover.load_config(root)
    except ConfigError as exc:
        print(f"harper-certd check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = check(config, args.at or _now(), args.warn_days)
    if args.json:
        _print_json(render.check_dict(result))
    else:
        print("\n".join(render.check_lines(result)))
    return EXIT_OK if result.valid else EXIT_INVALID


def _context(args: argparse.Namespace) -> object:
    """The service context from --config and the flags that override it."""
    from harper_certd import config as cfg
    from harper_certd.service import build_context

    config = cfg.load_config(Path(args.config) if args.config else None)
    harper = cfg.with_overrides(
        config.harper, root=Path(args.harper_root) if args.harper_root else None
    )
    config = cfg.with_overrides(
        config,
        harper=harper,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )
    return build_context(config)


def _configure_cli_logging() -> None:
    from harper_certd import logs

    logs.configure(json=False, stream=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from harper_certd import run
    from harper_certd.schedule import clock_from_env

    overrides = run.Overrides(
        harper_root=Path(args.harper_root) if args.harper_root else None,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )
    return run.main(Path(args.config) if args.config else None, overrides, clock_from_env)


Command = Callable[[argparse.Namespace], int]


def _infrastructure(func: Command) -> Command:
    """Configuration and state failures are exit 2 with a sentence, never a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        from harper_certd.errors import CertdError, SwapError

        _configure_cli_logging()
        try:
            code = func(args)
        except SwapError as exc:
            # A swap that could not be written leaves the live set as it was: "nothing changed".
            print(f"harper-certd {args.command}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        except CertdError as exc:
            print(f"harper-certd {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return code

    return wrapper


@_infrastructure
def cmd_install(args: argparse.Namespace) -> int:
    from harper_certd.service import Context, install

    ctx = _context(args)
    assert isinstance(ctx, Context)
    outcome = install(ctx, Path(args.source), force_older=args.force_older)
    if args.json:
        _print_json(outcome.as_dict())
    else:
        if outcome.recovery is not None:
            print(f"recovered an interrupted {outcome.recovery.op}: {outcome.recovery.outcome}")
        for p in outcome.problems:
            print(f"{p.severity.value}: {p.code}: {p.message}")
        print(_install_sentence(outcome))
    return {
        "installed": EXIT_OK,
        "unchanged": EXIT_OK,
        "refused": EXIT_INVALID,
        "rolled_back": EXIT_ROLLED_BACK,
        "rollback_failed": EXIT_ROLLED_BACK,
    }[outcome.status]


def _install_sentence(outcome: object) -> str:
    from harper_certd.service import InstallOutcome

    assert isinstance(outcome, InstallOutcome)
    kept = f" The source is kept in {outcome.kept_at}." if outcome.kept_at else ""
    if outcome.status == "installed":
        how = outcome.applied.detail if outcome.applied else ""
        return f"Installed as generation {outcome.generation} ({how}).{kept}"
    if outcome.status == "unchanged":
        return f"The set is already live (generation {outcome.generation}).{kept}"
    if outcome.status == "refused":
        return f"Refused; nothing changed.{kept}"
    if outcome.status == "rolled_back":
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
    from harper_certd.service import Context, rollback

    ctx = _context(args)
    assert isinstance(ctx, Context)
    outcome = rollback(ctx, args.generation)
    print(outcome.message)
    return {"rolled_back": EXIT_OK, "nothing": EXIT_INVALID, "refused": EXIT_INVALID}.get(
        outcome.status, EXIT_ROLLED_BACK
    )


@_infrastructure
def cmd_status(args: argparse.Namespace) -> int:
    from harper_certd.service import Context, status

    ctx = _context(args)
    assert isinstance(ctx, Context)
    info = status(ctx)
    data = info.as_dict(ctx.clock())
    if args.json:
        _print_json(data)
        return EXIT_OK
    live = data["live"]
    if live is None:
        print("live set: unreadable")
    else:
        print(f"live set: {live['subject']} issued by {live['issuer']}")
        print(
            f"  sha256 {live['sha256']}, {live['days_left']:.1f} days left,"
            f" {'valid' if live['valid'] else 'INVALID'}"
        )
        for p in live["problems"]:
            print(f"  {p['severity']}: {p['code']}: {p['message']}")
    print("generations:")
    for g in data["generations"]:
        mark = "*" if g["current"] else " "
        print(
            f" {mark} {g['id']}  {g['created']}  {g['outcome']:<18} {g['subject']}"
            f"  until {g['not_after']}"
        )
    print("last operations:")
    for h in data["history"]:
        print(f"   {h['time']}  {h['op']:<9} {h['outcome']}  {h.get('generation') or ''}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from harper_certd.demo import run_demo

    return run_demo(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harper-certd",
        description="Keeps the TLS certificates of a Harper cluster node valid.",
    )
    parser.add_argument("--version", action="version", version=f"harper-certd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    v = sub.add_parser("validate", help="validate a certificate set")
    v.add_argument("--cert", required=True, help="certificate file (leaf, then intermediates)")
    v.add_argument("--key", required=True, help="private key file")
    v.add_argument(
        "--ca",
        required=True,
        help="CA file (replication: the leaf's issuer first, then up to the root)",
    )
    v.add_argument("--purpose", choices=["cluster", "server", "client"], default="cluster")
    v.add_argument("--hostname", action="append", default=[], help="name or IP (repeatable)")
    v.add_argument(
        "--url-host",
        action="append",
        default=[],
        help="host of replication.url that peers dial (repeatable; an IP needs an IP SAN)",
    )
    v.add_argument("--at", type=_instant, help="validate as of this instant (default: now)")
    v.add_argument("--warn-days", type=float, default=30, help="expires_soon window (days)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=cmd_validate)

    c = sub.add_parser("check", help="validate every certificate set Harper uses")
    c.add_argument("--harper-root", help="Harper's ROOTPATH (default $ROOTPATH or ~/hdb)")
    c.add_argument("--at", type=_instant, help="check as of this instant (default: now)")
    c.add_argument("--warn-days", type=float, default=30)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="configuration file (YAML)")
        p.add_argument("--harper-root", help="Harper's ROOTPATH (overrides harper.root)")
        p.add_argument("--state-dir", help="state directory (overrides state_dir)")

    i = sub.add_parser("install", help="validate a set, swap it in, make Harper use it")
    i.add_argument("source", help="folder with the set (Harper's or certbot's file names)")
    i.add_argument(
        "--force-older",
        action="store_true",
        help="install even if it expires before the live certificate",
    )
    i.add_argument("--json", action="store_true")
    common(i)
    i.set_defaults(func=cmd_install)

    r = sub.add_parser("rollback", help="put an earlier generation back")
    r.add_argument("generation", nargs="?", help="generation id (default: the one before)")
    common(r)
    r.set_defaults(func=cmd_rollback)

    s = sub.add_parser("status", help="the live set, the generations kept, the last operations")
    s.add_argument("--json", action="store_true")
    common(s)
    s.set_defaults(func=cmd_status)

    daemon = sub.add_parser("run", help="the daemon: watch, validate, swap, verify, roll back")
    common(daemon)
    daemon.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="show harper-certd at work in a temporary folder")
    d.add_argument("--keep", action="store_true", help="keep the temporary folder")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
