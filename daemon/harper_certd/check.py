"""``check``: validate every certificate set Harper's configuration uses."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from harper_certd.discover import HarperConfig, TlsEntry
from harper_certd.problems import Severity
from harper_certd.validate import Report, validate_files


@dataclass(frozen=True, slots=True)
class EntryResult:
    entry: TlsEntry
    report: Report | None  # None: the entry names no files

    @property
    def valid(self) -> bool:
        return self.report is None or self.report.valid


@dataclass(frozen=True, slots=True)
class Process:
    pid: int | None
    version: str | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    config: HarperConfig
    results: tuple[EntryResult, ...]
    process: Process = Process(None, None)

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results)


def _soften_for_insecure(report: Report) -> Report:
    # With clustering.tls.insecure Harper does not check names yet; a mismatch only
    # blocks turning insecure off, so it is a warning until then.
    problems = tuple(
        replace(
            p,
            severity=Severity.WARNING,
            message=p.message + " This must be fixed before 'insecure' can be turned off.",
        )
        if p.code == "hostname_mismatch"
        else p
        for p in report.problems
    )
    return replace(report, problems=problems)


def check_entry(entry: TlsEntry, at: dt.datetime, expiry_warning_days: float) -> EntryResult:
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


def find_process(config: HarperConfig) -> Process:
    from harper_certd.harper import harper_entry, harper_pid, harper_version

    pid = harper_pid(config.root)
    return Process(pid, harper_version(harper_entry(pid)) if pid is not None else None)


def check(config: HarperConfig, at: dt.datetime, expiry_warning_days: float = 30) -> CheckResult:
    return CheckResult(
        config,
        tuple(check_entry(e, at, expiry_warning_days) for e in config.entries),
        find_process(config),
    )
