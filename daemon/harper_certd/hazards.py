"""Hazards of a node's certificate layout, refused before they bite (issue 11).

Each is a problem code in ``problems.CODES``; ``find`` judges the layout Harper's
configuration names, ``for_candidate`` the layout as it would be with a candidate set
in place of one live set (the daemon refuses an install that would create a hazard).
Facts, measured on Harper 4.7.29 (issue 11, ``shared/HARPER-NOTES.md``):

* Every entry becomes a record of ``system.hdb_certificate`` named by the entry's
  ``name``, else the certificate's CN, else its first SAN: a public certificate whose
  CN is the node name overwrites the replication record (``record_name_collision``).
* A ``tls`` list without ``uses`` makes the replication certificate the default on
  every port (``tls_uses_missing``).
* Authority records count for every mutual-TLS check whatever their ``uses``: a public
  root in any CA file widens replication trust (``public_root_in_ca_file``).
* ``replication.enableRootCAs`` (default on, ``!== false`` in Harper's code) adds
  Node.js's public roots to replication trust (``enable_root_cas_on``).
* Peers refuse a serverAuth-only replication certificate (``INVALID_PURPOSE``)
  (``replication_server_only``); without a certificate for the node name Harper makes
  itself a self-signed one and both directions break (``replication_name_missing``).
"""

import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harper_certd import load, names
from harper_certd.discover import CertSet, HarperConfig
from harper_certd.problems import Problem, problem
from harper_certd.roles import Role
from harper_certd.trust import TrustStore


class Material(NamedTuple):
    """What a set's files hold: the certificate file's certificates and the CA file's."""

    certs: tuple[x509.Certificate, ...]
    ca: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate | None:
        return self.certs[0] if self.certs else None


# path -> (its stat stamp, its certificates): the live layout's files are read at every
# install (``for_candidate``) and status, and change only when a set is swapped or edited.
# Bounded: a node has a few sets of two files each; the oldest entry goes first.
_PARSED: dict[Path, tuple[tuple[int, ...], tuple[x509.Certificate, ...]]] = {}
_PARSED_MAX = 32
# SHA-256 of a file's bytes -> its certificates: an install's candidate, parsed from its
# bytes, is the live set's files after the swap (new files, new stamps, the same bytes), so
# the next install finds them parsed.  Keyed by digest, not bytes: a CA file can be 1 MiB.
_BY_CONTENT: dict[bytes, tuple[x509.Certificate, ...]] = {}


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when the file behind ``path`` (links followed) does: device, inode, size,
    mtime and ctime (ns); None when it is not a regular file (read it every time)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _remember(cache: dict[Any, Any], key: object, value: object) -> None:
    cache.pop(key, None)
    if len(cache) >= _PARSED_MAX:
        del cache[next(iter(cache))]
    cache[key] = value


def _parsed(data: bytes, what: str) -> tuple[x509.Certificate, ...]:
    """The certificates of PEM ``data`` (none when it holds none it can read: the set's own
    check says why), parsed once per content."""
    digest = hashlib.sha256(data).digest()
    known = _BY_CONTENT.get(digest)
    if known is not None:
        return known
    try:
        certs = load.parse_certificates(data, name=what, eager=False).certs
    except load.Unreadable:
        return ()
    _remember(_BY_CONTENT, digest, certs)
    return certs


def certificates_at(path: Path | None) -> tuple[x509.Certificate, ...]:
    """The certificates of the PEM file at ``path`` (links followed as ``load.read_bounded``
    follows them), parsed once per content and remembered under the file's stamp; none
    when it cannot be read or holds none (the set's own check says why)."""
    if path is None:
        return ()
    stamp = _stamp(path)
    known = _PARSED.get(path)
    if stamp is not None and known is not None and known[0] == stamp:
        return known[1]
    try:
        data = load.read_bounded(path)
    except load.Unreadable:
        return ()  # the set's own check reports it
    certs = _parsed(data, str(path))
    if stamp is not None and _stamp(path) == stamp:  # not changed while it was read
        _remember(_PARSED, path, (stamp, certs))
    return certs


def remember_written(path: Path | None, data: bytes) -> None:
    """``path`` (a live path) holds ``data``, just written by a swap: its certificates (the
    candidate's, parsed when it was judged: ``_BY_CONTENT``) are remembered under the stamp
    the file has now, so the next install and the next status read nothing of it back
    (``certificates_at``).  A file changed later has another stamp and is read again."""
    if path is None:
        return
    stamp = _stamp(path)
    if stamp is not None:
        _remember(_PARSED, path, (stamp, _parsed(data, str(path))))


def read_material(cert_set: CertSet) -> Material:
    entry = cert_set.first
    ca = entry.paths.ca if entry.paths is not None else None
    return Material(certificates_at(entry.cert_path), certificates_at(ca))


def record_name(leaf: x509.Certificate) -> str | None:
    """Harper's record name for an entry without ``name``: CN, else the first SAN (None when
    the certificate's names cannot be decoded: the set's own validation says why)."""
    try:
        return _record_name(leaf)
    except ValueError:  # an undecodable subject or SAN (hostile input)
        return None


def _record_name(leaf: x509.Certificate) -> str | None:
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cn:
        return str(cn[0].value)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    first = next(iter(san), None)
    return None if first is None else str(first.value)


def names_of(leaf: x509.Certificate) -> set[str]:
    """CNs and SAN values; what cannot be decoded reads as no name."""
    ids = names.identities(leaf)
    return {*ids.cns, *ids.dns, *ids.ips}


def _ekus(leaf: x509.Certificate) -> set[x509.ObjectIdentifier] | None:
    try:
        return set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None  # no EKU: any purpose
    except ValueError:  # malformed extensions: the set's own validation refuses it
        return None


def _subject(cert: x509.Certificate) -> str:
    return names.safe_name(lambda: cert.subject, empty="(empty subject)")


def find(
    config: HarperConfig,
    store: TrustStore | Callable[[], TrustStore],
    material: Mapping[str, Material] | None = None,
) -> tuple[Problem, ...]:
    """Every hazard of the layout; ``material``: set name -> its files (read when absent).

    ``store`` may be a callable: the trust store is read only when a hazard needs it.
    """
    sets = config.sets()
    mats = {s.name: (material or {}).get(s.name) or read_material(s) for s in sets}
    node = config.node_name
    out: list[Problem] = []
    replication = [s for s in sets if s.role is Role.REPLICATION]

    for s in sets:
        leaf = mats[s.name].leaf
        # Replication records (hdb_certificate) exist where the line has replication (4.4 on).
        if s.role is Role.REPLICATION or leaf is None or node is None:
            continue
        if not config.has_replication:
            continue
        if any(e.name for e in s.entries):
            continue
        if record_name(leaf) == node:
            out.append(
                problem(
                    "record_name_collision",
                    f"Set '{s.name}' ({s.first.where}, uses {', '.join(s.uses)}) has no 'name' "
                    f"and its certificate's CN/first SAN is the node name '{node}': Harper "
                    "stores it under that name and overwrites the replication record; "
                    "replication breaks at the next reconnect. Fix: add 'name: "
                    f"{s.role.value}' to {s.first.where}.",
                )
            )

    listed = [e for e in config.entries if e.where.startswith("tls[")]
    if len({e.cert_path for e in listed if e.cert_path}) > 1:
        bare = [e.where for e in listed if not e.uses_given]
        if bare:
            out.append(
                problem(
                    "tls_uses_missing",
                    f"tls lists different sets and {', '.join(bare)} has no 'uses': Harper "
                    "then offers the replication certificate on every port. Fix: give every "
                    "entry 'uses' (replication; server, operations-api) and a 'name'.",
                )
            )

    # The first replication set is the one Harper ranks first for the node name (tls order).
    for s in replication[:1]:
        leaf = mats[s.name].leaf
        if leaf is None:
            continue
        ekus = _ekus(leaf)
        if (
            ekus is not None
            and ExtendedKeyUsageOID.SERVER_AUTH in ekus
            and ExtendedKeyUsageOID.CLIENT_AUTH not in ekus
        ):
            out.append(
                problem(
                    "replication_server_only",
                    f"The replication set '{s.name}' is for TLS Web Server Authentication "
                    "only: peers refuse this node's outgoing connections (INVALID_PURPOSE), "
                    "one direction of replication breaks. A public CA's certificate cannot be "
                    "the replication set: see 'check --plan'.",
                )
            )
        # clustering.tls.insecure: Harper does not check names yet (check.py warns).
        if node is not None and node not in names_of(leaf) and not s.first.insecure:
            out.append(
                problem(
                    "replication_name_missing",
                    f"The replication set '{s.name}' does not hold the node name '{node}' "
                    "(CN or SAN): Harper makes itself a self-signed replication certificate "
                    "and both directions of replication break.",
                )
            )

    ca_sets = [s for s in sets if mats[s.name].ca]
    private = [s for s in replication if mats[s.name].ca]
    if private:
        trust = store() if callable(store) else store
        if not all(trust.contains(c) for s in private for c in mats[s.name].ca):
            for s in ca_sets:
                public = [c for c in mats[s.name].ca if trust.contains(c)]
                for c in public:
                    out.append(
                        problem(
                            "public_root_in_ca_file",
                            f"The CA file of set '{s.name}' ({s.first.where}) holds "
                            f"'{_subject(c)}', a root of the system trust store ({trust.where}),"
                            " while replication trusts a private CA: Harper trusts every CA "
                            "file for replication too, so a certificate from that public CA "
                            "for a peer's name would be accepted as that peer. Fix: remove "
                            f"the CA file from {s.first.where} (a public set needs none).",
                        )
                    )
            # enableRootCAs exists from 4.4 on (the replication section); NATS
            # clustering's own switches are clustering.tls.insecure / verify, below.
            if config.enable_root_cas is not False and config.has_replication:
                out.append(
                    problem(
                        "enable_root_cas_on",
                        "replication.enableRootCAs is on (Harper's default) while replication "
                        "uses a private CA: Harper also trusts Node.js's public roots for "
                        "replication. Fix: set replication.enableRootCAs: false in "
                        "harperdb-config.yaml (harper-certd harden does it) and restart Harper.",
                    )
                )
    out.extend(_nats_switches(config, sets))
    return tuple(out)


def _nats_switches(config: HarperConfig, sets: tuple[CertSet, ...]) -> list[Problem]:
    """NATS clustering (4.0-4.3): ``clustering.tls.insecure`` (Harper's default ``true``:
    peers' certificates are not checked) and ``verify`` (client certificates required),
    treated as ``enableRootCAs`` is on 4.4 and later (``harden`` turns them safe)."""
    if not any(e.where == "clustering.tls" for s in sets for e in s.entries):
        return []
    out = []
    if config.clustering_insecure is not False:
        out.append(
            problem(
                "clustering_tls_insecure",
                "clustering.tls.insecure is not false: the NATS servers accept any peer "
                "certificate, whatever CA signed it. Fix: set clustering.tls.insecure: false "
                "(harper-certd harden does it once every peer is proven) and restart Harper.",
            )
        )
    if config.clustering_verify is not True:
        out.append(
            problem(
                "clustering_tls_verify_off",
                "clustering.tls.verify is not true: the NATS servers do not ask peers for a "
                "client certificate. Fix: set clustering.tls.verify: true (harper-certd "
                "harden) and restart Harper.",
            )
        )
    return out


def for_candidate(
    config: HarperConfig,
    store: TrustStore | Callable[[], TrustStore],
    cert_path: Path,
    cert: bytes,
    ca: bytes,
) -> tuple[Problem, ...]:
    """The hazards the layout would have with ``cert``/``ca`` in place of the set whose
    certificate file is ``cert_path``, less those it has already (an install must not
    *create* one; the live ones are reported by ``check`` and ``status``)."""

    sets = config.sets()
    target = next((s for s in sets if s.first.cert_path == cert_path), None)
    if target is None:
        return ()
    trust = _Trust(store)
    # The target's live files are read only when the candidate has a hazard: the usual
    # answer needs the other sets alone (a node with one set reads no file here).
    others = {s.name: read_material(s) for s in sets if s is not target}
    after = {
        **others,
        target.name: Material(_parsed(cert, "candidate"), _parsed(ca, "candidate CA")),
    }
    found = _found(config, trust, after)
    if not found:  # the usual answer: the live layout's own hazards need not be judged
        return ()
    now = {**others, target.name: read_material(target)}
    before_codes = {(p.code, p.message) for p in _found(config, trust, now)}
    return tuple(p for p in found if (p.code, p.message) not in before_codes)


class _Trust:
    """``store`` resolved once, when a hazard first needs it (``used``: it was)."""

    __slots__ = ("_store", "used")

    def __init__(self, store: TrustStore | Callable[[], TrustStore]) -> None:
        self._store = store
        self.used: TrustStore | None = None

    def __call__(self) -> TrustStore:
        if self.used is None:
            self.used = self._store() if callable(self._store) else self._store
        return self.used


# The layouts judged last -> their hazards.  An install judges the layout with its candidate
# in place; the next install's live layout is that very one (the candidate's bytes became the
# live files, parsed once: ``_BY_CONTENT``), and a layout with a standing hazard (Harper's
# default enableRootCAs, say) is judged as it is too.  An entry holds for the same reading of
# Harper's configuration (the object) and the same certificates, and, when its judgement
# asked the trust store, the same store (``trust.system_store``: one object per bundle).
_FOUND: list[tuple[HarperConfig, tuple[Any, ...], TrustStore | None, tuple[Problem, ...]]] = []
_FOUND_MAX = 4


def _found(
    config: HarperConfig, trust: _Trust, material: Mapping[str, Material]
) -> tuple[Problem, ...]:
    key = tuple(sorted((name, m.certs, m.ca) for name, m in material.items()))
    for known, known_key, used, problems in _FOUND:
        if known is config and known_key == key and (used is None or used is trust()):
            return problems
    problems = find(config, trust, material)
    _FOUND.insert(0, (config, key, trust.used, problems))
    del _FOUND[_FOUND_MAX:]
    return problems
