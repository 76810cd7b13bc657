"""Validation problems as data: a stable code, a severity and a sentence.

The codes are a public interface (the CLI's JSON, ``reason.json`` of a refused
set, log events); the README documents each one from ``CODES`` below.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


# code -> (severity, what it means). Kept in one table so the README and the
# tests can check that every code is documented and produced.
CODES: dict[str, tuple[Severity, str]] = {
    "cert_unreadable": (
        Severity.ERROR,
        "The certificate file is missing, too large, not PEM, truncated or holds no certificate.",
    ),
    "key_unreadable": (
        Severity.ERROR,
        "The private key file is missing, too large, not PEM, encrypted or holds no private key.",
    ),
    "ca_unreadable": (
        Severity.ERROR,
        "The CA file is missing, too large, not PEM, truncated or holds no certificate.",
    ),
    "key_mismatch": (Severity.ERROR, "The private key is not the key of the certificate."),
    "eku_missing": (
        Severity.ERROR,
        "Extended Key Usage lacks TLS Web Server and/or TLS Web Client Authentication "
        "for the purpose asked (cluster needs both, listed explicitly).",
    ),
    "eku_any": (
        Severity.ERROR,
        "Extended Key Usage includes anyExtendedKeyUsage: the node key would be good for any "
        "purpose.",
    ),
    "key_usage_invalid": (
        Severity.ERROR,
        "Key Usage does not allow the TLS handshake (digitalSignature, or for RSA "
        "keyEncipherment).",
    ),
    "chain_incomplete": (
        Severity.ERROR,
        "No path from the certificate to a self-signed root in the CA file "
        "(an intermediate or the root is missing).",
    ),
    "chain_invalid": (
        Severity.ERROR,
        "A path to a root exists but a certificate on it breaks the rules "
        "(signature, CA flags, path length, name constraints...).",
    ),
    "ca_expired": (
        Severity.ERROR,
        "A CA certificate on the chain is expired at the instant asked.",
    ),
    "ca_not_yet_valid": (
        Severity.ERROR,
        "A CA certificate on the chain is not yet valid at the instant asked.",
    ),
    "not_yet_valid": (Severity.ERROR, "The certificate's notBefore is after the instant asked."),
    "expired": (Severity.ERROR, "The certificate's notAfter is before the instant asked."),
    "hostname_mismatch": (
        Severity.ERROR,
        "The certificate is not valid for a host name asked (SAN, or CN when there is no SAN).",
    ),
    "node_name_not_verbatim": (
        Severity.ERROR,
        "Harper 4.7 looks its replication certificate up by the node name exactly as written "
        "among the SAN entries (no wildcard, case-sensitive); it is not there.",
    ),
    "leaf_is_ca": (
        Severity.ERROR,
        "The certificate is a CA certificate (basicConstraints CA:TRUE).",
    ),
    "weak_key": (
        Severity.ERROR,
        "A key on the chain is RSA under 2048 bits, EC under 256 bits, or DSA.",
    ),
    "weak_signature": (
        Severity.ERROR,
        "A certificate on the chain (other than the root's self-signature) is signed with "
        "SHA-1 or MD5.",
    ),
    "expires_soon": (Severity.WARNING, "The certificate expires within the warning window."),
    "ca_expires_soon": (
        Severity.WARNING,
        "A CA certificate in the CA file expires within the warning window.",
    ),
    "ca_file_expired_entry": (
        Severity.WARNING,
        "The CA file holds an expired certificate that the chain does not use.",
    ),
    "key_permissions": (
        Severity.WARNING,
        "The private key file is readable or writable by group or others.",
    ),
    "key_in_cert_file": (
        Severity.WARNING,
        "The certificate or CA file also holds a private key, which should live only in the "
        "key file.",
    ),
    # Installing (harper-certd install and the daemon): the source and what happened after.
    "source_unreadable": (Severity.ERROR, "The source folder or one of its files cannot be read."),
    "source_unsafe": (
        Severity.ERROR,
        "The source folder is writable by others, a file is owned by an untrusted user, or a "
        "symlink points outside the folder.",
    ),
    "source_incomplete": (
        Severity.ERROR,
        "The source folder does not hold a whole set (Harper's or certbot's file names).",
    ),
    "source_unmovable": (
        Severity.ERROR,
        "The source folder cannot be moved out of incoming/ by the daemon's user (handed over "
        "by another user); it is left in place and not judged again until it changes.",
    ),
    "judge_failed": (
        Severity.ERROR,
        "Judging the set raised an unexpected error (a fault in harper-certd); the set is "
        "refused, left in place and not judged again until it changes.",
    ),
    "older_than_live": (
        Severity.ERROR,
        "The new certificate expires before the live one for the same names (--force-older).",
    ),
    "applied_failed": (
        Severity.ERROR,
        "The set was swapped in but Harper did not come back serving it; it was rolled back.",
    ),
    "live_not_managed": (
        Severity.ERROR,
        "The live paths are someone else's links (certbot, a Kubernetes secret volume) or on "
        "a read-only mount: harper-certd only watches them and installs nothing.",
    ),
    # h-peers (issue 12): the cluster's view of a replication set
    "ca_not_trusted_by_peers": (
        Severity.ERROR,
        "(install) A replication peer would refuse this node's candidate certificate (its "
        "CA files do not trust the leaf's CA, or no hdb_nodes record matches its names): "
        "WebSocket close 1008 Unauthorized, measured by a probe; names each peer.",
    ),
    "peer_not_trusted_by_ca": (
        Severity.ERROR,
        "(install) The candidate CA file does not verify a replication peer's served chain "
        "and name (this node would refuse the peer); names each peer.",
    ),
    "peer_unreachable": (
        Severity.ERROR,
        "(install) A replication peer could not be probed within peers.hold_seconds: nothing "
        "is installed without its answer (install --force overrides, loudly).",
    ),

}

INSTALL_CODES = frozenset(
    {
        "source_unreadable",
        "source_unsafe",
        "source_incomplete",
        "source_unmovable",
        "judge_failed",
        "older_than_live",
        "applied_failed",
    }
)
VALIDATION_CODES = frozenset(CODES) - INSTALL_CODES


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    severity: Severity
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity.value, "message": self.message}


def problem(code: str, message: str) -> Problem:
    """A problem with the catalogue's severity for ``code``."""
    severity, _ = CODES[code]
    return Problem(code, severity, message)


def has_errors(problems: tuple[Problem, ...] | list[Problem]) -> bool:
    return any(p.severity is Severity.ERROR for p in problems)
