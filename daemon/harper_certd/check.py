"""``check``: validate every certificate set Harper's configuration uses."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from harper_certd.discover import HarperConfig, TlsEntry
from harper_certd.problems import Problem, Severity
from harper_certd.validate import Report, SetPaths, validate_files


@dataclass(frozen=True, slots=True)
class EntryResult:
    entry: TlsEntry
    report: Report | None  # None: the entry names no files

    @property
    def valid(self) -> bool:
        return self.report is None or self.report.valid


@dataclass(frozen=True, slots=True)
class CheckResult:
    config: HarperConfig
    results: tuple[EntryResult, ...]

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
    )
    if entry.insecure:
        report = _soften_for_insecure(report)
    return EntryResult(entry, report)


def check(config: HarperConfig, at: dt.datetime, expiry_warning_days: float = 30) -> CheckResult:
    return CheckResult(
        config, tuple(check_entry(e, at, expiry_warning_days) for e in config.entries)
    )


def openssl_commands(problem: Problem, paths: SetPaths) -> list[str]:
    """Commands a person can run to see a problem for themselves (Harper's troubleshooting)."""
    cert, key, ca = paths.cert, paths.key, paths.ca
    text = f"openssl x509 -in {cert} -noout -text"
    verify = f"openssl verify -CAfile {ca} -untrusted {cert} {cert}"
    by_code = {
        "cert_unreadable": [text],
        "key_unreadable": [f"openssl pkey -in {key} -noout -text"],
        "ca_unreadable": [f"openssl storeutl -noout -text -certs {ca}"],
        "key_mismatch": [
            f"openssl x509 -in {cert} -noout -pubkey | openssl sha256",
            f"openssl pkey -in {key} -pubout | openssl sha256",
            f"openssl x509 -noout -modulus -in {cert} | openssl md5   # RSA",
            f"openssl rsa -noout -modulus -in {key} | openssl md5   # RSA",
        ],
        "chain_incomplete": [verify, f"openssl storeutl -noout -text -certs {ca}"],
        "chain_invalid": [verify],
        "ca_expired": [verify, f"openssl storeutl -noout -text -certs {ca}"],
        "ca_not_yet_valid": [verify],
        "weak_key": [text],
        "weak_signature": [text],
    }
    return by_code.get(problem.code, [text])
