"""``check``: validate every certificate set Harper's configuration uses, in its role.

Each entry is validated for its role's purpose (replication: cluster, with the node
name verbatim; server and operations-api: server, with their host names). An entry
with a certificate and key but no CA file is checked against the system trust store
(``trust.py``); the output names the store. The layout's hazards (``hazards.py``)
follow the sets.
"""

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from harper_certd import hazards, load
from harper_certd.discover import HarperConfig, TlsEntry
from harper_certd.harper.process import harper_entry, harper_pid, harper_version
from harper_certd.problems import Problem, Severity, has_errors
from harper_certd.trust import TrustStore, system_store
from harper_certd.validate import (
    Inputs,
    Report,
    check_key_file_mode,
    validate,
    validate_files,
)


class EntryResult(NamedTuple):
    entry: TlsEntry
    report: Report | None  # None: the entry names no files
    set_name: str = ""  # CertSet.name of the set the entry belongs to ("" when no files)
    ports: Mapping[str, int] = MappingProxyType({})  # where the set is served
    trust_store: str | None = None  # the system store's paths, for a set without a CA file

    @property
    def valid(self) -> bool:
        return self.report is None or self.report.valid

    @property
    def days_left(self) -> float | None:
        if self.report is None or self.report.certificate is None:
            return None
        return round(self.report.certificate.days_left(self.report.at), 2)


class Process(NamedTuple):
    pid: int | None
    version: str | None


class CheckResult(NamedTuple):
    config: HarperConfig
    results: tuple[EntryResult, ...]
    process: Process = Process(None, None)
    hazards: tuple[Problem, ...] = ()

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results) and not has_errors(self.hazards)

    @property
    def checked(self) -> bool:
        """Whether any set was validated (a fresh Harper 4.7 keeps all in its database)."""
        return any(r.report is not None for r in self.results)


def _soften_for_insecure(report: Report) -> Report:
    # With clustering.tls.insecure Harper does not check names yet; a mismatch only
    # blocks turning insecure off, so it is a warning until then.
    problems = tuple(
        p._replace(
            severity=Severity.WARNING,
            message=p.message + " This must be fixed before 'insecure' can be turned off.",
        )
        if p.code == "hostname_mismatch"
        else p
        for p in report.problems
    )
    return report._replace(problems=problems)


# Problems about the CA file's other entries: for the system store they would be about
# the machine's roots, not the set.
_STORE_NOISE = frozenset({"ca_file_expired_entry", "ca_expires_soon"})


def validate_against_store(cert: Path, key: Path, store: TrustStore, **kwargs: object) -> Report:
    """Validate a set without a CA file: its chain must reach a root of ``store``.

    The files are read, then judged by ``validate_data_against_store``; the key file's
    mode is checked too. Keyword arguments go to ``validate``.
    """
    key_data = _read(key)
    report = validate_data_against_store(
        _read(cert), key_data, store, cert_name=str(cert), key_name=str(key), **kwargs
    )
    if "key_unreadable" in report.codes:
        return report
    return report._replace(problems=(*report.problems, *check_key_file_mode(key)))


def validate_data_against_store(
    cert: bytes | load.Unreadable,
    key: bytes | load.Unreadable,
    store: TrustStore,
    *,
    cert_name: str,
    key_name: str,
    **kwargs: object,
) -> Report:
    """The bytes of a set without a CA file, judged: its chain must reach a root of
    ``store`` (an install's candidate, a kept generation, the live files alike).

    Only the store's roots that issued a certificate of the file are given to the chain
    check (and shown as the set's "CA file"); with none, the whole store is, so the
    chain check says why no path exists. Keyword arguments go to ``validate``.
    """
    try:
        data = cert if isinstance(cert, bytes) else b""
        certs = load.parse_certificates(data, name=cert_name, eager=False).certs
    except load.Unreadable:
        certs = ()
    roots = store.issuers_of(certs)
    ca = store.pem(roots or store.every_cert())
    inputs = Inputs(
        cert=cert,
        key=key,
        ca=ca if ca else load.Unreadable(f"the system trust store {store.where} is empty"),
        cert_name=cert_name,
        key_name=key_name,
        ca_name=f"system trust store ({store.where})",
    )
    report = validate(inputs, **kwargs)  # type: ignore[arg-type]  # validate's own keywords
    problems = tuple(p for p in report.problems if p.code not in _STORE_NOISE or roots)
    return report._replace(problems=problems, ca_certs=tuple(roots))


def _read(path: Path) -> bytes | load.Unreadable:
    try:
        return load.read_bounded(path)
    except load.Unreadable as exc:
        return exc


def check_entry(
    entry: TlsEntry,
    at: dt.datetime,
    expiry_warning_days: float,
    store: Callable[[], TrustStore] | None = None,
) -> EntryResult:
    if entry.cert_key is not None:
        trust = (store or system_store)()
        report = validate_against_store(
            *entry.cert_key,
            trust,
            at=at,
            purpose=entry.purpose,
            hostnames=entry.hostnames,
            expiry_warning_days=expiry_warning_days,
            node_names=entry.verbatim_names,
        )
        return EntryResult(entry, report, trust_store=trust.where)
    if entry.paths is None:
        return EntryResult(entry, None)
    report = validate_files(
        entry.paths,
        at=at,
        purpose=entry.purpose,
        hostnames=entry.hostnames,
        expiry_warning_days=expiry_warning_days,
        node_names=() if entry.insecure else entry.verbatim_names,
        url_hosts=entry.url_hosts,
    )
    if entry.insecure:
        report = _soften_for_insecure(report)
    return EntryResult(entry, report)


def find_process(
    config: HarperConfig, pid_of: Callable[[Path], int | None] = harper_pid
) -> Process:
    """Harper's main process for ``config``'s root and its version; ``pid_of``: how its pid
    is found (``harper_pid``, or a caller's cached lookup of it: without ``hdb.pid`` each
    lookup scans every process)."""
    pid = pid_of(config.root)
    return Process(pid, harper_version(harper_entry(pid)) if pid is not None else None)


def check(
    config: HarperConfig,
    at: dt.datetime,
    expiry_warning_days: float = 30,
    trust_store: Path | None = None,
) -> CheckResult:
    """Every entry checked in its role, then the layout's hazards.

    ``trust_store``: the config key ``harper.trust_store`` (None: OpenSSL's default).
    """

    def store() -> TrustStore:
        return system_store(trust_store)

    by_entry = {id(e): s for s in config.sets() for e in s.entries}
    results = []
    for e in config.entries:
        r = check_entry(e, at, expiry_warning_days, store)
        cert_set = by_entry.get(id(e))
        if cert_set is not None:
            r = r._replace(set_name=cert_set.name, ports=dict(cert_set.ports))
        results.append(r)
    return CheckResult(config, tuple(results), find_process(config), hazards.find(config, store))


def set_facts(config: HarperConfig, at: dt.datetime) -> dict[str, dict[str, Any]]:
    """Per set name: role, uses, ports, days left (certificate file only, no validation).

    For the daemon's discovery and start events; ``check`` and ``status`` validate.
    """
    out: dict[str, dict[str, Any]] = {}
    for s in config.sets():
        leaf = hazards.read_material(s).leaf
        out[s.name] = {
            "set": s.name,
            "role": s.role.value,
            "uses": list(s.uses),
            "ports": dict(s.ports),
            "where": [e.where for e in s.entries],
            "ca_file": s.first.paths is not None,
            "days_left": None
            if leaf is None
            else round((leaf.not_valid_after_utc - at).total_seconds() / 86400, 1),
        }
    return out
