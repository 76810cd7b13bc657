"""Discover stage: what Harper's configuration says about its certificates.

Reads ``harperdb-config.yaml`` (never writes it: it keeps its owner's comments)
and answers which certificate sets are in use, for what, on which ports, and
under which node name.  See ``shared/HARPER-NOTES.md`` for the keys.
"""

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from harper_certd.errors import ConfigError
from harper_certd.roles import KEY_FILES, ROLE_PORTS, Purpose, Role, SetPaths, role_of
from harper_certd.yamlfile import read_yaml

CONFIG_NAME = "harperdb-config.yaml"
__all__ = ["KEY_FILES", "CertSet", "HarperConfig", "TlsEntry", "load_config", "parse"]
ROLE_PURPOSE = {
    Role.REPLICATION: Purpose.CLUSTER,
    Role.SERVER: Purpose.SERVER,
    Role.OPERATIONS_API: Purpose.SERVER,
}


class TlsEntry(NamedTuple):
    """One certificate set named in Harper's configuration."""

    where: str  # "tls", "tls[1]", "operationsApi.tls", "clustering.tls", "keys directory"
    paths: SetPaths | None  # None when a file is not named (kept in Harper's database)
    purpose: Purpose
    uses: tuple[str, ...]
    hostnames: tuple[str, ...] = ()
    insecure: bool = False
    note: str = ""
    # Names Harper looks this certificate up by, verbatim (replication without hostname(s)).
    verbatim_names: tuple[str, ...] = ()
    # Host of replication.url, which peers dial and check the certificate against.
    url_hosts: tuple[str, ...] = ()
    name: str | None = None  # the entry's own ``name`` (Harper's record name when given)
    uses_given: bool = True  # False: no ``uses`` in the entry (Harper's defaults apply)
    # Certificate and key named, no CA file: a file set whose chain must reach a root in
    # the system trust store (a public certificate). ``paths`` is None for these.
    cert_key: tuple[Path, Path] | None = None

    @property
    def role(self) -> Role:
        return role_of(self.uses)

    @property
    def cert_path(self) -> Path | None:
        if self.paths is not None:
            return self.paths.cert
        return None if self.cert_key is None else self.cert_key[0]


class CertSet(NamedTuple):
    """One distinct set (entries naming the same certificate file are one set).

    ``name``: an entry's ``name``, else the role (``replication``, ``server``,
    ``operations-api``), else the first entry's position (``tls[1]``) when the role's
    name is taken. ``ports``: secure-port key -> port number where Harper serves it.
    """

    name: str
    entries: tuple[TlsEntry, ...]
    ports: Mapping[str, int]

    @property
    def uses(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u for e in self.entries for u in e.uses))

    @property
    def role(self) -> Role:
        return role_of(self.uses)

    @property
    def purpose(self) -> Purpose:
        return ROLE_PURPOSE[self.role]

    @property
    def first(self) -> TlsEntry:
        return self.entries[0]

    @property
    def hostnames(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(h for e in self.entries if not e.insecure for h in e.hostnames))


class HarperConfig(NamedTuple):
    root: Path
    config_path: Path
    entries: tuple[TlsEntry, ...]
    node_name: str | None
    secure_ports: Mapping[str, int]
    operations_port: int | None
    operations_socket: Path | None
    notes: tuple[str, ...]
    enable_root_cas: bool | None = None  # replication.enableRootCAs as written (None: unset)
    replication_url: str | None = None  # replication.url as written
    threads: int = 1  # threads.count (4.0: http.threads); unset: Harper's default, the CPUs
    # clustering.tls.insecure / .verify as written (NATS clustering, 4.0-4.3; None: unset)
    clustering_insecure: bool | None = None
    clustering_verify: bool | None = None
    has_replication: bool = False  # a ``replication`` section (4.4 on) names this node
    # clustering.hubServer.cluster.network.routes (NATS, 4.0-4.3, clustering enabled)
    nats_routes: tuple[tuple[str, int], ...] = ()

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    def file_entries(self) -> tuple[TlsEntry, ...]:
        return tuple(e for e in self.entries if e.paths is not None)

    def sets(self) -> tuple[CertSet, ...]:
        """Every distinct set with a certificate file, replication first (see CertSet).

        Worked out once per reading (the record is immutable): an install asks for them
        several times (the managed set, the layout's hazards before and after)."""
        for known, found in _SETS:
            if known is self:
                return found
        found = self._sets()
        _SETS.insert(0, (self, found))
        del _SETS[_SETS_MAX:]
        return found

    def _sets(self) -> tuple[CertSet, ...]:
        groups: dict[Path, list[TlsEntry]] = {}
        for e in self.entries:
            if e.cert_path is not None:
                groups.setdefault(e.cert_path, []).append(e)
        ordered = sorted(
            groups.values(),
            key=lambda g: role_of(u for e in g for u in e.uses) is not Role.REPLICATION,
        )
        # Which set a port serves: Harper ranks +3 for a record whose ``uses`` holds the
        # port's use, so a set that names the use outranks one that only has it by
        # default (no ``uses``); among equals, the first in the file.
        owner: dict[str, int] = {}
        for index, group in enumerate(ordered):
            for e in group:
                for key in WHERE_PORTS.get(e.where, ()):
                    owner.setdefault(key, index)
        for explicit in (True, False):
            for index, group in enumerate(ordered):
                for e in group:
                    if e.uses_given is not explicit:
                        continue
                    for use in e.uses:
                        if use in set(Role):
                            for key in ROLE_PORTS[Role(use)]:
                                owner.setdefault(key, index)
        out: list[CertSet] = []
        taken: set[str] = set()
        for index, group in enumerate(ordered):
            uses = [u for e in group for u in e.uses]
            explicit_name = next((e.name for e in group if e.name), None)
            if explicit_name is None and all(e.where == "clustering.tls" for e in group):
                explicit_name = "clustering"  # NATS (4.0-4.3), its own files
            name = explicit_name or role_of(uses).value
            if name in taken:
                name = group[0].where
            taken.add(name)
            ports = {k: p for k, p in self.secure_ports.items() if owner.get(k) == index}
            out.append(CertSet(name, tuple(group), ports))
        return tuple(out)


# The readings of Harper's configuration asked for their sets last -> their sets (by
# identity: a reading holds dicts, and is not hashable); a daemon holds one or two at a time.
_SETS: list[tuple[HarperConfig, tuple[CertSet, ...]]] = []
_SETS_MAX = 4


# Ports served by one section's set whatever its ``uses`` (the older lines' layouts):
# the NATS route port (direct TLS) by clustering.tls; 4.0's custom functions server.
WHERE_PORTS: dict[str, tuple[str, ...]] = {
    "clustering.tls": ("clusteringRoutes",),
    "customFunctions.tls": ("customFunctions",),
}


def _get(tree: Any, dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        # Harper accepts "host:port" strings for ports.
        tail = value.rsplit(":", 1)[-1]
        return int(tail) if tail.isdigit() else None
    return None


def _path(value: Any, keys_dir: Path) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    path = Path(os.path.expandvars(os.path.expanduser(value)))
    # Harper resolves relative certificate paths against <root>/keys.
    return path if path.is_absolute() else keys_dir / path


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def node_name_of(tree: Any) -> str | None:
    # node.hostname: 5.x (HarperFast/harper server/nodeName.ts, documented only)
    for key in ("replication.hostname", "node.hostname", "clustering.nodeName"):
        value = _get(tree, key)
        if isinstance(value, str) and value:
            return value
    url = _get(tree, "replication.url")
    if isinstance(url, str) and url:
        return urlsplit(url).hostname
    return None


def _entry(
    where: str,
    section: Mapping[str, Any],
    keys_dir: Path,
    purpose: Purpose,
    uses: tuple[str, ...],
    hostnames: tuple[str, ...],
    insecure: bool = False,
    *,
    uses_given: bool = True,
) -> TlsEntry:
    name = section.get("name")
    name = str(name) if isinstance(name, str | int) and str(name) else None
    cert = _path(section.get("certificate"), keys_dir)
    key = _path(section.get("privateKey"), keys_dir)
    ca = _path(section.get("certificateAuthority"), keys_dir)
    if cert is not None and key is not None and ca is None:
        for label, path in (("certificate", cert), ("privateKey", key)):
            if path.exists() and not path.is_file():
                raise ConfigError(f"{where}.{label} names {path}, which is not a regular file")
        note = (
            f"{where} names a certificate and a key but no CA file: a file set whose chain "
            "must reach a root in the system trust store (a public certificate)."
        )
        return TlsEntry(
            where,
            None,
            purpose,
            uses,
            hostnames,
            insecure,
            note,
            name=name,
            uses_given=uses_given,
            cert_key=(cert, key),
        )
    if cert is None or key is None or ca is None:
        missing = [
            name
            for name, value in (
                ("certificate", cert),
                ("privateKey", key),
                ("certificateAuthority", ca),
            )
            if value is None
        ]
        note = (
            f"{where} does not name {', '.join(missing)}: Harper keeps those certificates in its "
            "database (system.hdb_certificate), not in files, so harper-certd cannot manage them. "
            "To move to files: put certificate.pem, privateKey.pem and ca.pem in a folder of "
            f"their own ({keys_dir / 'replication'}, say, not over Harper's own "
            f"{keys_dir / 'privateKey.pem'}, which Harper writes again at its restart), set "
            f"{where}.certificate, {where}.privateKey and {where}.certificateAuthority to those "
            "paths in harperdb-config.yaml, then restart Harper."
        )
        return TlsEntry(
            where, None, purpose, uses, hostnames, insecure, note, name=name, uses_given=uses_given
        )
    for label, path in (("certificate", cert), ("privateKey", key), ("certificateAuthority", ca)):
        # A directory (or a device, a FIFO) here was accepted on SIGHUP and failed later
        # outside the swap's error path (issue 10 item 8). Missing files are left to the
        # checks that know what to do with them, and so are files this user cannot stat
        # (a status run by a user who may not pass through the state directory: Path.exists
        # raised PermissionError, a traceback).
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{where}.{label} names {path}, which is not a regular file")
    return TlsEntry(
        where,
        SetPaths(cert, key, ca),
        purpose,
        uses,
        hostnames,
        insecure,
        name=name,
        uses_given=uses_given,
    )


def parse(tree: Any, root: Path, config_path: Path) -> HarperConfig:
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{config_path}: not a YAML mapping")
    keys_dir = root / "keys"
    node = node_name_of(tree)
    node_names = (node,) if node else ()
    replication = bool(
        _get(tree, "replication.url")
        or _get(tree, "replication.hostname")
        or _get(tree, "replication.securePort")
    )
    entries: list[TlsEntry] = []
    tls_sections = _as_list(_get(tree, "tls"))
    for index, section in enumerate(tls_sections):
        if not isinstance(section, Mapping):
            continue
        where = "tls" if len(tls_sections) == 1 else f"tls[{index}]"
        given = tuple(str(u) for u in _as_list(section.get("uses")))
        # Without ``uses`` Harper offers the entry on every port (measured, issue 11).
        uses = given or (
            (Role.REPLICATION.value, Role.SERVER.value, Role.OPERATIONS_API.value)
            if replication
            else (Role.SERVER.value, Role.OPERATIONS_API.value)
        )
        purpose = ROLE_PURPOSE[role_of(uses)]
        names = tuple(str(h) for h in _as_list(section.get("hostname") or section.get("hostnames")))
        # A server / operations-api set answers for its own names (a public certificate need
        # not hold the node name); the replication set is looked up by the node name.
        wanted = names or (node_names if Role.REPLICATION.value in uses else ())
        entry = _entry(where, section, keys_dir, purpose, uses, wanted, uses_given=bool(given))
        if "replication" in uses and not names:
            entry = entry._replace(verbatim_names=node_names)
        entries.append(entry)
    ops = _get(tree, "operationsApi.tls")
    if isinstance(ops, Mapping):
        entries.append(
            _entry(
                "operationsApi.tls",
                ops,
                keys_dir,
                Purpose.SERVER,
                (Role.OPERATIONS_API.value,),
                (),
            )
        )
    repl_section = _get(tree, "replication")
    if isinstance(repl_section, Mapping) and any(
        k in repl_section for k in ("certificate", "privateKey", "certificateAuthority")
    ):
        # 4.4: replication.certificate / certificateAuthority / privateKey name the
        # replication set directly (no ``uses`` needed).
        entry = _entry(
            "replication",
            repl_section,
            keys_dir,
            Purpose.CLUSTER,
            (Role.REPLICATION.value,),
            node_names,
        )
        entries.append(entry._replace(verbatim_names=node_names))
    functions = _get(tree, "customFunctions.tls")
    if isinstance(functions, Mapping) and _get(tree, "customFunctions.enabled") is not False:
        # 4.0: the custom functions server, TLS with customFunctions.network.https.
        entries.append(
            _entry(
                "customFunctions.tls",
                functions,
                keys_dir,
                Purpose.SERVER,
                (Role.SERVER.value,),
                (),
            )
        )
    clustering = _get(tree, "clustering.tls")
    if isinstance(clustering, Mapping) and _get(tree, "clustering.enabled") is not False:
        insecure = clustering.get("insecure") is True
        entries.append(
            _entry(
                "clustering.tls",
                clustering,
                keys_dir,
                Purpose.CLUSTER,
                (Role.REPLICATION.value,),
                node_names,
                insecure,
            )
        )
    notes = []
    if not any(e.cert_path for e in entries):
        found = tuple(keys_dir / KEY_FILES[k] for k in ("cert", "key", "ca"))
        defaults = SetPaths(*found)
        if all(p.exists() for p in found):
            notes.append(
                "No certificate files are named in the configuration; checking the keys "
                f"directory's {', '.join(KEY_FILES.values())}."
            )
            entries.append(
                TlsEntry(
                    "keys directory",
                    defaults,
                    Purpose.CLUSTER if replication else Purpose.SERVER,
                    (Role.REPLICATION.value,)
                    if replication
                    else (Role.SERVER.value, Role.OPERATIONS_API.value),
                    node_names,
                )
            )
    url = _get(tree, "replication.url")
    url_host = urlsplit(url).hostname if isinstance(url, str) and url else None
    if url_host and url_host != node:
        entries = [
            e._replace(url_hosts=(url_host,))
            if e.purpose is Purpose.CLUSTER and not e.insecure
            else e
            for e in entries
        ]
    ports = _secure_ports(tree, replication)
    socket = _get(tree, "operationsApi.network.domainSocket")
    return HarperConfig(
        root=root,
        config_path=config_path,
        entries=tuple(entries),
        node_name=node,
        secure_ports=ports,
        operations_port=_port(_get(tree, "operationsApi.network.port")),
        operations_socket=_path(socket, root) if socket else None,
        notes=tuple(notes),
        replication_url=u if isinstance(u := _get(tree, "replication.url"), str) else None,
        enable_root_cas=v
        if isinstance(v := _get(tree, "replication.enableRootCAs"), bool)
        else None,
        threads=_threads(tree),
        has_replication=replication,
        nats_routes=_nats_routes(tree),
        clustering_insecure=_bool(_get(tree, "clustering.tls.insecure")),
        clustering_verify=_bool(_get(tree, "clustering.tls.verify")),
    )


def _secure_ports(tree: Any, replication: bool) -> dict[str, int]:
    """Secure-port key -> port, every line's layout (docs/harper-lines.md):
    ``*.securePort`` (4.2 on); replication on the Operations API's secure port when
    ``replication.securePort`` is unset (4.4 on); the NATS route port when NATS clustering
    is on (direct TLS, 4.0-4.3); ``*.network.https: true`` on the plain port (4.0-4.1)."""
    ports = {
        name: port
        for name, key in (
            ("replication", "replication.securePort"),
            ("http", "http.securePort"),
            ("operationsApi", "operationsApi.network.securePort"),
            ("mqtt", "mqtt.network.securePort"),
        )
        if (port := _port(_get(tree, key))) is not None
    }
    if replication and "replication" not in ports and "operationsApi" in ports:
        ports["replication"] = ports["operationsApi"]
    if _get(tree, "clustering.enabled") is True:
        route = _port(_get(tree, "clustering.hubServer.cluster.network.port"))
        if route is not None:
            ports["clusteringRoutes"] = route
    for name in ("operationsApi", "customFunctions"):
        if name not in ports and _get(tree, f"{name}.network.https") is True:
            port = _port(_get(tree, f"{name}.network.port"))
            if port is not None:
                ports[name] = port
    return ports


def _nats_routes(tree: Any) -> tuple[tuple[str, int], ...]:
    if _get(tree, "clustering.enabled") is not True:
        return ()
    out = []
    for route in _as_list(_get(tree, "clustering.hubServer.cluster.network.routes")):
        if isinstance(route, Mapping):
            host, port = route.get("host"), _port(route.get("port"))
            if isinstance(host, str) and host and port is not None:
                out.append((host, port))
    return tuple(out)


def _threads(tree: Any) -> int:
    for key in ("threads.count", "threads", "http.threads"):
        value = _get(tree, key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return os.cpu_count() or 1


def load_config(root: Path) -> HarperConfig:

    config_path = root / CONFIG_NAME
    tree = read_yaml(config_path, missing=f"; is {root} Harper's ROOTPATH? (--harper-root)")
    return parse(tree, root, config_path)
