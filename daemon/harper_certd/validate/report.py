"""What validation found: the Report and the plain-value summary of a certificate."""

import datetime as dt
import warnings
from typing import NamedTuple

from cryptography import x509

from harper_certd import names
from harper_certd.judge.verdict import JudgeInfo
from harper_certd.problems import Problem, has_errors
from harper_certd.validate import ca_memo
from harper_certd.validate.certs import fingerprint, is_ca, issuer_of, key_description, name_of


class CertSummary(NamedTuple):
    subject: str
    issuer: str
    serial: str
    sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    key_type: str
    key_size: int
    is_ca: bool

    def days_left(self, at: dt.datetime) -> float:
        return (self.not_after - at).total_seconds() / 86400

    def as_dict(self, at: dt.datetime | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "sha256": self.sha256,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "san": {"dns": list(self.dns_names), "ip": list(self.ip_addresses)},
            "key": {"type": self.key_type, "size": self.key_size},
            "is_ca": self.is_ca,
        }
        if at is not None:
            out["days_left"] = round(self.days_left(at), 2)
        return out


class Report(NamedTuple):
    """What validation found at ``at`` (the instant judged, UTC); ``valid`` when no problem
    is an error."""

    problems: tuple[Problem, ...]
    at: dt.datetime
    certificate: CertSummary | None = None
    chain_certs: tuple[x509.Certificate, ...] = ()  # the validated chain, leaf first
    ca_certs: tuple[x509.Certificate, ...] = ()
    # Who judged: Node (Harper's runtime) or the model alone; None for a report made
    # without the validation entry point (a refusal before any judging).
    judge: JudgeInfo | None = None

    @property
    def chain(self) -> tuple[CertSummary, ...]:
        """The validated chain, summarised only when someone looks."""
        return tuple(summarize(c) for c in self.chain_certs)

    @property
    def ca_file(self) -> tuple[CertSummary, ...]:
        """Every certificate of the CA file, summarised only when someone looks."""
        return tuple(summarize(c) for c in self.ca_certs)

    @property
    def valid(self) -> bool:
        return not has_errors(self.problems)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(p.code for p in self.problems)

    def as_dict(self) -> dict[str, object]:
        cert: dict[str, object] | None = None
        if self.certificate is not None:
            cert = self.certificate.as_dict(self.at)
            cert["chain"] = [c.as_dict(self.at) for c in self.chain]
        return {
            "valid": self.valid,
            "at": self.at.isoformat(),
            "problems": [p.as_dict() for p in self.problems],
            "certificate": cert,
            "ca_file": [c.as_dict(self.at) for c in self.ca_file],
            "judge": None if self.judge is None else self.judge.as_dict(),
        }


@ca_memo.per_certificate
def summarize(cert: x509.Certificate) -> CertSummary:
    """The certificate in plain values; never raises, whatever the certificate holds."""
    with warnings.catch_warnings():
        # cryptography warns about names OpenSSL accepts (Harper's own C=USA, for one).
        warnings.simplefilter("ignore")
        return _summarize(cert)


def _summarize(cert: x509.Certificate) -> CertSummary:
    ids = names.identities(cert)
    try:
        key_type, key_size = key_description(cert.public_key())
    except Exception:  # an unknown or malformed SubjectPublicKeyInfo
        key_type, key_size = "unsupported", 0
    return CertSummary(
        subject=name_of(cert),
        issuer=issuer_of(cert),
        serial=_serial(cert),
        sha256=fingerprint(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=ids.dns,
        ip_addresses=ids.ips,
        key_type=key_type,
        key_size=key_size,
        is_ca=is_ca(cert),
    )


def _serial(cert: x509.Certificate) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative serials: OpenSSL takes them too
        return format(cert.serial_number, "x")
