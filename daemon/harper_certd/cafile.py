"""CA rotation across the cluster: ``harper-certd ca add FILE`` and ``ca remove FINGERPRINT``.

Phase 1, ``ca add``: a CA-file-only install on this node (the live certificate and key, the
live CA file plus the new CA), through the same swap, verification and peer guard as any
set.  Run it on every node; Harper reloads the CA file hot and stores each CA as an
authority record in ``system.hdb_certificate``.

Phase 2: leaf rotations; the peer guard (harper_certd.peers) lets a leaf of the new CA through
once every peer trusts it.

Phase 3, ``ca remove``: the CA file without that CA, refused while this node's own leaf or any
peer's served chain still needs it (a peer that cannot be probed counts as needing it).  A CA
gone from the file is still trusted by Harper (its authority record stays, measured on
4.7.29), so the record is removed with the Operations API ``remove_certificate``; but that
operation also deletes ``keys/<private_key_name>`` when no other record names the same key
file (read from 4.7.29's ``removeCertificate``), so ``list_certificates`` is read first and a
record whose key file no other record shares is left in place, with the reason.  Before that,
the CAs the nodes keep for each other (``hdb_nodes.ca``, exchanged at the join) are exchanged
again with ``update_node`` (:func:`refresh_peer_cas`): a restarted Harper may trust only those.

``ca add`` appends to the live CA file's bytes and ``ca remove`` cuts the removed certificate's
block out of them: comments, line ends and the other blocks stay byte for byte.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harper_certd import events, load, logs, peers, sdnotify, stage
from harper_certd.errors import HarperError
from harper_certd.harper.api import Api, hdb_nodes, operations_api
from harper_certd.harper.probe import served
from harper_certd.install.context import Context, read_live
from harper_certd.install.outcomes import InstallOutcome, InstallStatus
from harper_certd.install.pipeline import install
from harper_certd.validate import fingerprint as fingerprint_of


class CaError(Exception):
    """A ``ca`` command refused before anything changed; the message says why."""


def _certs(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CaError(f"{what} holds no readable PEM certificate: {exc}") from None
    return found


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


pem_of = _pem  # the certificates re-encoded as one PEM file, in the order given


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def same_name_conflict(
    live: Sequence[x509.Certificate], adding: Sequence[x509.Certificate]
) -> str | None:
    """Why ``adding`` cannot sit next to ``live`` in one CA file, or None.

    Measured with Node 20 (Harper's runtime; tests/test_ca_rotation_unit.py asks Node each
    run): two CAs with the same subject and no key identifiers in one CA file: OpenSSL looks
    an issuer up by name and takes the first of that name, so only the leaves of the first
    one verify ("certificate signature failure" for the other's), in either order.  There is
    no overlap in which old and new leaves are both accepted, so the rotation is refused.
    With distinct subjectKeyIdentifiers (and leaves carrying authorityKeyIdentifier) Node
    picks the right one in either order.
    """
    for new in adding:
        for old in live:
            if old.subject != new.subject or fingerprint_of(old) == fingerprint_of(new):
                continue
            old_id, new_id = _ski(old), _ski(new)
            if old_id is not None and new_id is not None and old_id != new_id:
                continue
            return (
                f"the new CA has the same subject ({new.subject.rfc4514_string()}) as the CA "
                f"{fingerprint_of(old)[:16]} in the live CA file, and they carry no distinct "
                "subjectKeyIdentifier: Node (OpenSSL) looks an issuer up by name and takes the "
                "first CA of that name, so the leaves of the other one are refused "
                '("certificate signature failure") in either order; old and new leaves cannot '
                "both be accepted during the rotation.  Fix: issue the new CA with another "
                "subject (e.g. the year in its CN), or with a subjectKeyIdentifier (and its "
                "leaves with an authorityKeyIdentifier)"
            )
    return None


# One certificate block of a CA file, with the line end after it (what a removal cuts out).
_CERT_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----[ \t\r]*(?:\n|\Z)", re.DOTALL
)


def _without(ca_pem: bytes, fingerprint: str, remaining: Sequence[x509.Certificate]) -> bytes:
    """``ca_pem`` with the certificate blocks of ``fingerprint`` cut out and every other byte
    (comments, other blocks, line ends) as it was; the re-encoded ``remaining`` when the
    file's blocks cannot be told apart that way."""
    kept, cut = [], 0
    last = 0
    for match in _CERT_BLOCK.finditer(ca_pem):
        try:
            found = fingerprint_of(x509.load_pem_x509_certificate(match.group(0)))
        except ValueError:
            return _pem(remaining)
        if found == fingerprint:
            kept.append(ca_pem[last : match.start()])
            last = match.end()
            cut += 1
    kept.append(ca_pem[last:])
    out = b"".join(kept)
    try:
        left = [fingerprint_of(c) for c in x509.load_pem_x509_certificates(out)]
    except ValueError:
        return _pem(remaining)
    if cut == 0 or left != [fingerprint_of(c) for c in remaining]:
        return _pem(remaining)
    return out


def _with(ca_pem: bytes, adding: Sequence[x509.Certificate]) -> bytes:
    """``ca_pem`` verbatim with ``adding`` appended (on a line of their own)."""
    glue = b"\n" if ca_pem and not ca_pem.endswith(b"\n") else b""
    return ca_pem + glue + _pem(adding)


def normalise(fingerprint: str) -> str:
    """SHA-256 hex, lowercase, without colons or spaces."""
    return fingerprint.replace(":", "").replace(" ", "").strip().lower()


MIN_PREFIX = 16  # hex digits: what ``cluster`` prints


def resolve(given: str, known: Sequence[str]) -> str:
    """The one SHA-256 of ``known`` that ``given`` names: the full 64 hex digits, or a prefix
    of at least 16 (what ``cluster`` prints) that only one of them starts with.

    Raises :class:`CaError` (before anything is exchanged or changed): not hex, too short,
    no match, or more than one.
    """
    wanted = normalise(given)
    if not re.fullmatch(r"[0-9a-f]{1,64}", wanted):
        raise CaError(f"{given!r} is not a SHA-256 fingerprint (hex digits, colons allowed)")
    if len(wanted) < MIN_PREFIX:
        raise CaError(
            f"{given!r} is too short to name one CA: give the full SHA-256 or at least its "
            f"first {MIN_PREFIX} hex digits (as cluster prints them)"
        )
    found = sorted({k for k in known if k.startswith(wanted)})
    if len(wanted) == 64 and not found:
        return wanted  # a CA gone from the file may still have authority records
    if not found:
        raise CaError(
            f"no CA in the live CA file or in Harper's authority records starts with {wanted}"
        )
    if len(found) > 1:
        raise CaError(
            f"{wanted} names more than one CA ({', '.join(f[:24] for f in found)}): give more "
            "hex digits"
        )
    return found[0]


def _install_ca_file(ctx: Context, ca_pem: bytes, force_peers: bool) -> InstallOutcome:
    """Install the live certificate and key with ``ca_pem`` as the CA file (one swap)."""
    live = read_live(ctx)
    files = {"certificate.pem": live.cert, "privateKey.pem": live.key, "ca.pem": ca_pem}
    copies = ctx.paths.processed.parent / ".harper-certd-copies"
    copies.mkdir(mode=0o700, exist_ok=True)
    st = os.stat(copies)
    staged = stage.stage_files(files, copies, (st.st_uid, st.st_gid))
    return install(ctx, staged.path, force_peers=force_peers)


@dataclass(frozen=True, slots=True)
class Added:
    outcome: InstallOutcome | None  # None: every CA was in the live CA file already
    # Harper holds an authority record for each added CA (list_certificates), waited for up
    # to verify.timeout after the install; None: no Operations API to ask.
    authority_loaded: bool | None


def ca_add(ctx: Context, new_ca_pem: bytes, *, force_peers: bool = False) -> Added:
    """Phase 1: the live CA file plus the CA certificates in ``new_ca_pem`` (each once),
    then a wait until Harper has loaded each as an authority record.

    Raises :class:`CaError` when ``new_ca_pem`` holds no certificate or one that is not a CA.
    """
    adding = _certs(new_ca_pem, "the new CA file")
    for cert in adding:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CaError(f"{cert.subject.rfc4514_string()} is not a CA (basicConstraints)")
    live_pem = read_live(ctx).ca
    live = _certs(live_pem, "the live CA file")
    conflict = same_name_conflict(live, adding)
    if conflict is not None:
        raise CaError(conflict)
    have = {fingerprint_of(c) for c in live}
    fresh = list({fingerprint_of(c): c for c in adding if fingerprint_of(c) not in have}.values())
    if not fresh:
        return Added(None, None)
    # The live file's bytes stay as they are (comments, order); the new CAs go last.
    outcome = _install_ca_file(ctx, _with(live_pem, fresh), force_peers)
    api = operations_api(ctx.config, ctx.harper)
    if outcome.status != InstallStatus.INSTALLED or api is None:
        return Added(outcome, None)
    deadline = time.monotonic() + ctx.config.verify.timeout
    loaded = all(
        wait_for_authority(api, fingerprint_of(c), max(0.0, deadline - time.monotonic()))
        for c in fresh
    )
    return Added(outcome, loaded)


@dataclass(frozen=True, slots=True)
class Removal:
    outcome: InstallOutcome | None  # the CA-file install (None: the CA was not in the file)
    records_removed: tuple[str, ...]
    records_kept: tuple[str, ...]  # with the reason, "name: why"
    # Peers whose CA was exchanged again (update_node), "name: Harper's answer", and peers
    # left as they were, "name: why" (refresh_peer_cas).
    peers_refreshed: tuple[str, ...] = ()
    peers_not_refreshed: tuple[str, ...] = ()


def _needed_by(ctx: Context, remaining_pem: bytes) -> list[str]:
    """Peers whose served chain ``remaining_pem`` would not verify (or that gave no answer)."""
    listed = peers.peer_list(ctx.peer_scope())
    if isinstance(listed, str):
        if listed.startswith("peers.check is off") or listed.startswith("not a replication set"):
            return []
        raise CaError(f"cannot tell whether a peer still needs this CA: {listed}")
    needing = []
    for peer in listed:
        answer, sha, _issuer = peers.probe_trusts(peer, remaining_pem, ctx.config.peers.timeout)
        if answer.verdict is not peers.Verdict.ACCEPTED:
            served = (sha or "?")[:16]
            needing.append(f"{peer.name} ({peer.url}, serves {served}…: {answer.detail})")
    return needing


def _record_fingerprints(record: Mapping[str, Any]) -> set[str]:
    """SHA-256 of every certificate in a record's ``certificate`` (Harper stores a whole CA
    file in one record, named after its first certificate's CN: measured on 4.7.29)."""
    text = record.get("certificate")
    if not isinstance(text, str):
        return set()
    try:
        return {fingerprint_of(c) for c in x509.load_pem_x509_certificates(text.encode())}
    except ValueError:
        return set()


def authority_records(api: Api, fingerprint: str) -> list[dict[str, Any]]:
    """``list_certificates`` records holding a certificate with SHA-256 ``fingerprint``."""
    return [dict(r) for r in _all_records(api) if fingerprint in _record_fingerprints(r)]


def _all_records(api: Api) -> list[Mapping[str, Any]]:
    answer = api.call({"operation": "list_certificates"})
    rows = answer.get("result", answer)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def ca_remove(ctx: Context, fingerprint: str, *, force_peers: bool = False) -> Removal:
    """Phase 3: remove the CA with SHA-256 ``fingerprint`` from the CA file and from Harper.

    Raises :class:`CaError` (nothing changed) when it is the last CA, when this node's leaf
    chains to it, or when a peer's served chain needs it or cannot be checked.
    """
    data = read_live(ctx)
    live = _certs(data.ca, "the live CA file")
    api = operations_api(ctx.config, ctx.harper)
    known = [fingerprint_of(c) for c in live]
    if api is not None:
        try:
            records = _all_records(api)
        except HarperError:
            records = []
        known += [fp for r in records for fp in _record_fingerprints(r)]
    wanted = resolve(fingerprint, known)
    if len(normalise(fingerprint)) == 64 and wanted not in known:
        return Removal(None, (), ())  # nothing anywhere: nothing exchanged, nothing changed
    remaining = [c for c in live if fingerprint_of(c) != wanted]
    outcome: InstallOutcome | None = None
    if len(remaining) != len(live):
        if not remaining:
            raise CaError("it is the only CA in the CA file: add the new one first (ca add)")
        leaf = _certs(data.cert, "the live certificate")[0]
        if any(fingerprint_of(c) == wanted and c.subject == leaf.issuer for c in live):
            raise CaError(
                "this node's own certificate is issued by it: rotate this node's leaf first"
            )
        needing = _needed_by(ctx, _pem(remaining))
        if needing:
            raise CaError("peers still serve a chain that needs it: " + "; ".join(needing))
        outcome = _install_ca_file(ctx, _without(data.ca, wanted, remaining), force_peers)
        if outcome.status != InstallStatus.INSTALLED:
            return Removal(outcome, (), ())
    if api is None:
        return Removal(outcome, (), ("*: no Operations API to remove Harper's authority record",))
    remaining_fps = {fingerprint_of(c) for c in remaining}
    deadline = time.monotonic() + ctx.config.verify.timeout
    while True:
        records = _all_records(api)
        clean = set().union(
            *(_record_fingerprints(r) for r in records if wanted not in _record_fingerprints(r))
        )
        if remaining_fps <= clean or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if not remaining_fps <= clean:
        return Removal(
            outcome,
            (),
            (
                "*: Harper has not loaded the new CA file as its own record in time; the "
                "records holding the removed CA are kept (run ca remove again)",
            ),
        )
    refreshed, not_refreshed = refresh_peer_cas(
        ctx, api, _certs(data.cert, "the live certificate")[0], always=True
    )
    removed, kept = [], []
    for record in [r for r in records if wanted in _record_fingerprints(r)]:
        name = str(record.get("name"))
        key_name = record.get("private_key_name")
        sharing = [r for r in records if key_name and r.get("private_key_name") == key_name]
        if key_name and len(sharing) <= 1:
            kept.append(
                f"{name}: remove_certificate would also delete keys/{key_name} (no other "
                "record names it); left in place"
            )
            continue
        api.call({"operation": "remove_certificate", "name": name})
        removed.append(name)
    return Removal(outcome, tuple(removed), tuple(kept), refreshed, not_refreshed)


def _common_name(name: x509.Name) -> str | None:
    found = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(found[0].value) if found else None


def _kept_ca_matches(record: Mapping[str, Any], url: str, timeout: float) -> bool:
    """Whether the CA this node keeps for a peer (``hdb_nodes.ca_info.subject``, Node's
    subject text with its lines joined by spaces) names the issuer of the leaf the peer
    serves now; False when either is unknown."""
    info = record.get("ca_info")
    subject = info.get("subject") if isinstance(info, dict) else None
    peer = peers.Peer(str(record.get("name")), url)
    seen = served(peer.host, peer.port, timeout)
    if not isinstance(subject, str) or not seen.issuer:
        return False
    try:
        issuer_cn = _common_name(x509.Name.from_rfc4514_string(seen.issuer))
    except ValueError:
        return False
    if issuer_cn is None:
        return False
    pattern = r"(?:^| )CN=" + re.escape(issuer_cn) + r"(?:$| [A-Za-z0-9.]+=)"
    return re.search(pattern, subject) is not None


def refresh_peer_cas(
    ctx: Context, api: Api, leaf: x509.Certificate, *, always: bool = False
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Have Harper exchange CAs with each peer again (``update_node``), so that the CA each node
    keeps for the other (``hdb_nodes.ca``) is the one of the leaves served now.

    Why (tests/HARPER-RIG-FINDINGS.md, "Fresh connections after a CA rotation"): with
    ``enableRootCAs: false`` a restarted Harper 4.7.29 can verify replication clients with the
    peers' ``hdb_nodes.ca`` alone, which still hold the CA exchanged at the join; after a CA
    rotation that refuses the peers for good.  ``update_node`` without credentials runs over
    the certificate-authorised replication connection: this node sends the authority record
    named after its leaf issuer's CN (``getReplicationCertAuth``) and stores the one the peer
    answers with.  Done only for peers whose record replicates everything (``replicates:
    true``, no ``subscriptions``): ``update_node`` without subscriptions would turn a
    subscription-based link into full replication.  A peer whose kept CA already names the
    issuer of the leaf it serves is left alone (nothing to do: no event), unless ``always``:
    the kept CA is the peer's whole authority record, which during a rotation still holds
    the old CA after its subject already names the new one (a record exchanged before the
    peer removed the old CA); measured on three nodes: a Harper restarted after every node
    removed CA1 still accepted CA1 leaves.  ``ca remove`` and the rotation's restart step
    exchange with every peer for that reason.  Returns
    (refreshed, not refreshed), each "peer: detail"; nothing with ``peers.check: off``.
    """
    if ctx.config.peers.check == "off":
        return (), ()
    records = hdb_nodes(api, ["name", "url", "replicates", "subscriptions", "ca_info"])
    done: list[str] = []
    left: list[str] = []
    issuer_cn = _common_name(leaf.issuer)
    names = {str(r.get("name")) for r in _all_records(api) if r.get("is_authority")}
    for record in sorted(records, key=lambda r: str(r.get("name"))):
        name, url = record.get("name"), record.get("url")
        if not isinstance(name, str) or not isinstance(url, str) or name == ctx.harper.node_name:
            continue
        if not always and _kept_ca_matches(record, url, ctx.config.peers.timeout):
            continue
        if issuer_cn is None or issuer_cn not in names:
            # update_node would send no CA (Harper finds the record by that name).
            left.append(f"{name}: Harper holds no authority record named {issuer_cn!r} to send")
        elif record.get("subscriptions") or record.get("replicates") is not True:
            left.append(f"{name}: subscriptions of its own (run update_node by hand)")
        else:
            _update_node(api, name, url, done, left)
    if done or left:
        logs.emit(events.PeerCasRefreshed(refreshed=done, not_refreshed=left))
    return tuple(done), tuple(left)


def _update_node(api: Api, name: str, url: str, done: list[str], left: list[str]) -> None:
    """``update_node`` for one peer; Harper's answer goes to ``done``, or to ``left`` when it
    failed or says the peer's side failed ("… but there was an error updating target node")."""
    try:
        answer = api.call({"operation": "update_node", "hostname": name, "url": url})
    except HarperError as exc:
        left.append(f"{name}: update_node failed: {exc}")
        return
    message = str(answer.get("message", answer))
    (left if "error" in message.lower() else done).append(f"{name}: {message}")


def wait_for_authority(api: Api, fingerprint: str, timeout: float, interval: float = 0.2) -> bool:
    """Wait (bounded) until Harper holds an authority record for ``fingerprint``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if authority_records(api, normalise(fingerprint)):
                return True
        except HarperError:
            pass
        if time.monotonic() >= deadline:
            return False
        sdnotify.sleep(interval)


def read_pem_file(path: Path) -> bytes:
    """A CA file named on the command line, whole (at most ``load.MAX_CA_FILE_BYTES``, what
    Node loads; never cut short).  Raises CaError."""
    try:
        return load.read_bounded(path, limit=load.MAX_CA_FILE_BYTES)
    except load.Unreadable as exc:
        raise CaError(str(exc)) from None
