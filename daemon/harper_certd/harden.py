"""``harper-certd harden``: turn off what development setups leave on, once proven safe.

- 4.4+ replication: ``replication.enableRootCAs: false`` (Harper then trusts only its own
  authority records for replication, not the public root store) when the cluster's trust is
  a private CA: the roots of this node's CA file are not in the system's public store, and
  this CA file alone verifies every peer's served chain and name (the peer probe's (b)).
- Legacy (NATS) clustering: ``clustering.tls.insecure: false`` and ``verify: true`` under the
  same proof (every peer's served certificate validates with its name).

``harperdb-config.yaml`` is edited in place: ruamel.yaml's round-trip parse gives the line and
column of each value, and only that token is rewritten (a dump of the whole document would
turn ``null`` into an empty value and re-indent lists, measured), so every comment, the order
of keys and the formatting stay byte for byte; the unified diff is shown; a backup is written
beside it (``harperdb-config.yaml.harper-certd-<UTC stamp>``, same mode).  Harper is then
restarted (its replication settings are read at start) and replication proven: every peer
connected again (``cluster_status``) and accepting this node (the probe).  If that proof
fails, the backup is put back, Harper restarted again, and the command refuses.
"""

from __future__ import annotations

import difflib
import os
import ssl
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography import x509
from ruamel.yaml import YAML

from harper_certd import peers
from harper_certd.clock import utc_now
from harper_certd.errors import CertdError
from harper_certd.harper.apply import make_harper
from harper_certd.install.context import Context, read_live
from harper_certd.validate import fingerprint

log = structlog.get_logger("harper_certd")
PROOF_TIMEOUT = 60.0  # seconds for every peer to be connected again after the restart


class HardenRefused(CertdError):
    """Not safe (or not proven): nothing was changed, or the change was undone."""


@dataclass(frozen=True, slots=True)
class Hardened:
    diff: str
    backup: Path | None
    notes: tuple[str, ...]


def _yaml() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never re-wrap a long line
    return rt


def _public_roots() -> set[str]:
    """SHA-256 of the certificates in the system's default CA bundle (empty if none)."""
    paths = ssl.get_default_verify_paths()
    found: set[str] = set()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            try:
                with open(candidate, "rb") as f, warnings.catch_warnings():
                    # a public bundle may hold a root with a non-positive serial
                    warnings.simplefilter("ignore")
                    certs = x509.load_pem_x509_certificates(f.read())
            except (OSError, ValueError):
                continue
            found.update(fingerprint(c) for c in certs)
            break
    return found


def planned(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    """The (key path, new value) changes ``tree`` (harperdb-config.yaml) needs."""
    changes: list[tuple[tuple[str, ...], Any]] = []
    if not isinstance(tree, Mapping):
        return changes
    replication = tree.get("replication")
    if isinstance(replication, Mapping) and replication.get("enableRootCAs", True) is not False:
        changes.append((("replication", "enableRootCAs"), False))
    clustering = tree.get("clustering")
    if isinstance(clustering, Mapping) and clustering.get("enabled") is True:
        tls = clustering.get("tls")
        if isinstance(tls, Mapping):
            if tls.get("insecure") is not False:
                changes.append((("clustering", "tls", "insecure"), False))
            if tls.get("verify") is not True:
                changes.append((("clustering", "tls", "verify"), True))
    return changes


def _apply(tree: Any, changes: list[tuple[tuple[str, ...], Any]]) -> None:
    for path, value in changes:
        node = tree
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value


def _scalar(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def edit_text(text: str, changes: list[tuple[tuple[str, ...], Any]]) -> str:
    """``text`` with each change made in place: only the value's token is rewritten (or one
    line inserted for a key that is absent), so every other byte stays as it was.

    The positions come from ruamel.yaml's round-trip parse (``lc``).  Raises
    :class:`HardenRefused` when a value is not a plain one-line scalar it can rewrite.
    """
    tree = _yaml().load(text)
    lines = text.splitlines(keepends=True)
    inserts: list[tuple[int, str]] = []
    for path, value in changes:
        parent = tree
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        if key in parent:
            row, col = parent.lc.value(key)
            line = lines[row]
            end = col
            while end < len(line) and line[end] not in " \t#\r\n":
                end += 1
            token = line[col:end]
            if token.lower() not in ("true", "false", "yes", "no", "on", "off", "null", "~"):
                raise HardenRefused(f"{'.'.join(path)} is not a plain scalar here: {token!r}")
            lines[row] = line[:col] + _scalar(value) + line[end:]
        else:
            first = next(iter(parent))
            row, col = parent.lc.key(first)
            inserts.append((row, " " * col + f"{key}: {_scalar(value)}\n"))
    for row, new in sorted(inserts, reverse=True):
        lines.insert(row, new)
    edited = "".join(lines)
    expected = _yaml().load(text)
    _apply(expected, changes)
    if _plain(_yaml().load(edited)) != _plain(expected):
        raise HardenRefused("the edit would change more than the planned keys")
    return edited


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _proof_of_safety(ctx: Context) -> list[str]:
    """Why it is not safe (empty: safe)."""
    why: list[str] = []
    live = read_live(ctx)
    cas = x509.load_pem_x509_certificates(live.ca)
    public = _public_roots()
    on_public = [c.subject.rfc4514_string() for c in cas if fingerprint(c) in public]
    if on_public:
        why.append(
            "the CA file holds public roots (" + ", ".join(on_public) + "): the cluster's trust "
            "is not a private CA"
        )
    listed = peers.peer_list(ctx.peer_scope())
    if isinstance(listed, str):
        why.append(f"the peers cannot be checked: {listed}")
        return why
    for peer in listed:
        result = peers.probe_peer(
            peer, peers.Candidate(live.cert, live.key, live.ca), ctx.config.peers.timeout
        )
        if result.trusted_by_me.verdict is not peers.Verdict.ACCEPTED:
            why.append(
                f"{peer.name} ({peer.url}): its served certificate does not validate with this "
                f"CA file and its name: {result.trusted_by_me.detail}"
            )
        if result.accepts_me.verdict is not peers.Verdict.ACCEPTED:
            why.append(f"{peer.name} does not accept this node now: {result.accepts_me.detail}")
    return why


def _write_like(path: Path, text: str) -> None:
    """Replace ``path`` by a temp file renamed over it, with its mode and owner."""
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # On the descriptor, never by path: Harper's root is writable by Harper's user,
            # who could swap the temporary name for a link (issue 17).
            if os.geteuid() == 0:
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fchmod(f.fileno(), st.st_mode & 0o7777)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _restart_and_prove(ctx: Context) -> list[str]:
    """Restart Harper (Operations API ``restart``), then wait for every peer to be connected
    and to accept this node; why not (empty: proven)."""
    harper = make_harper(ctx.config, ctx.harper)
    if harper.api is None:
        return ["no Operations API to restart Harper with"]
    expected = fingerprint(x509.load_pem_x509_certificates(read_live(ctx).cert)[0])
    harper.restart_via_api()
    time.sleep(1.0)  # the old process answers for a moment after the call
    served = harper.verify(expected)
    if not served.ok:
        return [f"Harper did not come back serving the live set: {served.describe()}"]
    deadline = time.monotonic() + PROOF_TIMEOUT
    waiting: list[str] = []
    while time.monotonic() < deadline:
        try:
            waiting = peers.disconnected(harper.api)
        except CertdError as exc:
            waiting = [str(exc)]
        if not waiting:
            break
        time.sleep(0.5)
    if waiting:
        return [f"peers not connected {PROOF_TIMEOUT:g} s after the restart: {waiting}"]
    return _proof_of_safety(ctx)


def harden(ctx: Context, *, dry_run: bool = False) -> Hardened:
    """Plan, prove safe, edit (diff, backup), restart, prove replication; or refuse."""
    path = ctx.harper.config_path
    original = path.read_text(encoding="utf-8")
    changes = planned(_yaml().load(original))
    if not changes:
        return Hardened("", None, ("already hardened: nothing to change",))
    why = _proof_of_safety(ctx)
    if why:
        raise HardenRefused("not safe: " + "; ".join(why))
    edited = edit_text(original, changes)
    diff = "".join(
        difflib.unified_diff(
            original.splitlines(keepends=True),
            edited.splitlines(keepends=True),
            str(path),
            f"{path} (hardened)",
        )
    )
    if dry_run:
        return Hardened(diff, None, ("dry run: nothing changed",))
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.harper-certd-{stamp}")
    _write_like_new(backup, original, os.stat(path).st_mode & 0o777)
    _write_like(path, edited)
    failed = _restart_and_prove(ctx)
    if failed:
        _write_like(path, original)
        undone = _restart_and_prove(ctx)
        raise HardenRefused(
            "replication was not proven after the change, so it was undone ("
            + "; ".join(failed)
            + (f"; after undoing: {'; '.join(undone)}" if undone else "")
            + f"); backup kept at {backup}"
        )
    return Hardened(diff, backup, (f"backup: {backup}", "replication proven after the restart"))


def _write_like_new(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
