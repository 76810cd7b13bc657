"""Each command's arguments (``cli.COMMANDS`` names the command, its help and its
function): one function per command that adds them to its subparser, and the options many
commands share (``common``, ``per_set``)."""

from __future__ import annotations

import argparse

from harper_certd.cliout import instant

CONFIG_HELP = (
    "configuration file (YAML); default $HARPER_CERTD_CONFIG, else "
    "/etc/harper-certd/config.yaml when it exists"
)


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--harper-root", help="Harper's ROOTPATH (overrides harper.root)")
    p.add_argument("--state-dir", help="state directory (overrides state_dir)")


def per_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="cert_set",
        metavar="NAME",
        help="the certificate set (`check` names them; default: the replication set); "
        "a set other than the primary one has its store in <state>/sets/NAME/",
    )


def validate(v: argparse.ArgumentParser) -> None:
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
        "--replication",
        action="store_true",
        help="judge as a Harper node's replication set: Harper's CA-file rule too "
        "(the leaf's issuer first in the CA file, every intermediate in it)",
    )
    v.add_argument(
        "--node",
        default=None,
        metavar="PATH",
        help="the Node.js that judges the set (default: the node on PATH; a path that is not "
        "an executable file is a usage error); 'none' for harper-certd's model of Node 20 alone",
    )
    v.add_argument(
        "--url-host",
        action="append",
        default=[],
        help="host of replication.url that peers dial (repeatable; an IP needs an IP SAN)",
    )
    v.add_argument(
        "--at",
        type=instant,
        help="validate as of this instant, ISO 8601 (no zone: UTC; default: now)",
    )
    v.add_argument("--warn-days", type=float, default=30, help="expires_soon window (days)")
    v.add_argument("--json", action="store_true", help="print one JSON object")


def check(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--harper-root", help="Harper's ROOTPATH (default harper.root, $ROOTPATH, ~/hdb)"
    )
    c.add_argument("--config", help=CONFIG_HELP)
    c.add_argument(
        "--at", type=instant, help="check as of this instant, ISO 8601 (no zone: UTC; default: now)"
    )
    c.add_argument("--warn-days", type=float, default=30)
    c.add_argument("--json", action="store_true")
    c.add_argument(
        "--plan",
        action="store_true",
        help="print the two-set layout (public HTTPS, private replication) for this node",
    )


def install(i: argparse.ArgumentParser) -> None:
    i.add_argument("source", help="folder with the set (Harper's or certbot's file names)")
    i.add_argument(
        "--force-older",
        action="store_true",
        help="install even if it expires before the live certificate",
    )
    i.add_argument(
        "--force",
        action="store_true",
        help="install past the peer guard (a peer refuses it or cannot be reached): logged as "
        "certd.peers_overridden (critical); the proof after the swap still rolls back a set "
        "a peer refuses",
    )
    i.add_argument(
        "--dry-run", action="store_true", help="read and validate, compare, change nothing"
    )
    i.add_argument(
        "--keep-source", action="store_true", help="install a copy; SOURCE stays where it is"
    )
    i.add_argument("--json", action="store_true")
    common(i)
    per_set(i)


def rollback(r: argparse.ArgumentParser) -> None:
    r.add_argument("generation", nargs="?", help="generation id (default: the one before)")
    r.add_argument(
        "--force",
        action="store_true",
        help="roll back even to a set the peers would refuse: logged as certd.peers_overridden "
        "(critical); the proof after the switch still switches away from a set a peer refuses",
    )
    common(r)
    per_set(r)


def status(s: argparse.ArgumentParser) -> None:
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--no-probe", action="store_true", help="do not dial Harper's ports (served: not checked)"
    )
    common(s)
    per_set(s)


def run(daemon: argparse.ArgumentParser) -> None:
    common(daemon)


def stage(st: argparse.ArgumentParser) -> None:
    st.add_argument("source", nargs="?", help="folder: Harper's or certbot's names (live/<name>)")
    st.add_argument("--set", help="the set it is for (default: the one it fits)")
    st.add_argument("--cert", help="certificate file (leaf, then intermediates)")
    st.add_argument("--key", help="private key file")
    st.add_argument("--ca", help="CA file (default: the daemon's ca_file or the live one)")
    st.add_argument("--wait", action="store_true", help="wait for the daemon's outcome")
    st.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits")
    common(st)


def release(rel: argparse.ArgumentParser) -> None:
    common(rel)


def fleet(fl: argparse.ArgumentParser) -> None:
    fl.add_argument("files", nargs="+", help="status --json files, or folders of *.json")
    fl.add_argument("--json", action="store_true")


def ca(ca: argparse.ArgumentParser) -> None:
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    ca_add = ca_sub.add_parser(
        "add", help="phase 1: add the CA(s) in FILE to this node's CA file (run on every node)"
    )
    ca_add.add_argument("file", help="PEM file with the new CA certificate(s)")
    ca_rm = ca_sub.add_parser(
        "remove",
        help="phase 3: remove a CA from the CA file and Harper's authority records "
        "(refused while a peer's served chain needs it)",
    )
    ca_rm.add_argument("fingerprint", help="SHA-256 of the CA certificate (hex, colons allowed)")
    for p in (ca_add, ca_rm):
        p.add_argument("--force", action="store_true", help="past the peer guard (critical)")
        common(p)
    ca_rot = ca_sub.add_parser(
        "rotate",
        help="rotate the whole cluster to NEW_CA: a plan in Harper that every node's daemon "
        "carries out (docs/cluster.md)",
    )
    ca_rot.add_argument("file", nargs="?", help="PEM file with the new CA certificate")
    rot_mode = ca_rot.add_mutually_exclusive_group()
    for flag, what in (
        ("--status", "every node's phase from the table"),
        ("--pause", "no node takes another step until --resume"),
        ("--resume", "the paused plan goes on"),
        ("--abort", "the plan stops for good (steps taken stay)"),
    ):
        rot_mode.add_argument(flag, action="store_true", help=what)
    rot_mode.add_argument(
        "--leaf", metavar="SOURCE", help="stage this node's new-CA certificate.pem + privateKey.pem"
    )
    ca_rot.add_argument("--json", action="store_true")
    common(ca_rot)


def cluster(cl: argparse.ArgumentParser) -> None:
    cl.add_argument("--json", action="store_true")
    common(cl)


def harden(hd: argparse.ArgumentParser) -> None:
    hd.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    common(hd)


def demo(d: argparse.ArgumentParser) -> None:
    d.add_argument("--keep", action="store_true", help="keep the temporary folder")
