"""The command line: a thin driver over the stages; exit codes live only here.

Imports are made per command, so that ``validate`` loads neither watchdog nor
psutil (it is timed against a bare cryptography script in ``bench/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
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
    v.add_argument("--ca", required=True, help="CA file (root, and intermediates)")
    v.add_argument("--purpose", choices=["cluster", "server", "client"], default="cluster")
    v.add_argument("--hostname", action="append", default=[], help="name or IP (repeatable)")
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

    d = sub.add_parser("demo", help="show harper-certd at work in a temporary folder")
    d.add_argument("--keep", action="store_true", help="keep the temporary folder")
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
