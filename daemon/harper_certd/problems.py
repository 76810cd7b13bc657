"""Validation problems as data: a stable code, a severity and a sentence.

The codes are a public interface (the CLI's JSON, ``reason.json`` of a refused
set, log events); the README documents each one from ``CODES`` below.
"""

import enum
from typing import NamedTuple


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
    "ca_trust_rejected": (
        Severity.ERROR,
        "A CA file entry in OpenSSL's TRUSTED CERTIFICATE form carries trust settings that reject "
        "(or do not list) a TLS use the purpose needs; Node (OpenSSL) refuses the chain.",
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
    "hostname_partial_wildcard": (
        Severity.ERROR,
        "(policy) A host name asked is covered only by a partial wildcard label "
        "(ba*.example.com): Node accepts it, RFC 6125 and the CA/Browser Forum forbid it.",
    ),
    "name_constraint_wildcard": (
        Severity.ERROR,
        "(policy) A wildcard name of the leaf covers a name its CA's name constraints exclude; "
        "OpenSSL (Node) compares the wildcard as written and accepts it.",
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
    "url_host_mismatch": (
        Severity.ERROR,
        "The certificate is not valid for the host of replication.url, which peers dial and "
        "check as Node's checkServerIdentity does (an IP address needs an IP SAN).",
    ),
    "leaf_not_first": (
        Severity.ERROR,
        "The key matches a later certificate of the certificate file, not the first: the leaf "
        "must come first, then its chain.",
    ),
    "ca_file_issuer_not_first": (
        Severity.ERROR,
        "Replication set: the CA file does not start with the leaf's issuer (or lacks an "
        "intermediate); Harper's peers then cannot find the node's CA.",
    ),
    "key_inconsistent": (
        Severity.ERROR,
        "The key's public half matches the certificate but its private parts are damaged: "
        "its signatures do not verify.",
    ),
    "key_type_unusable": (
        Severity.ERROR,
        "The certificate's key is of a type no TLS handshake can sign with (X25519, X448, "
        "secp256k1, brainpool curves, unknown algorithms).",
    ),
    "chain_too_large": (
        Severity.ERROR,
        "The certificates the node sends exceed OpenSSL's 100 KiB limit on a Certificate message.",
    ),
    "ca_names_too_large": (
        Severity.ERROR,
        "The CA file's subject names overflow the list of CAs a node sends when it asks a peer "
        "for its certificate (65,491 bytes with OpenSSL 3.0): every mutual-TLS handshake fails.",
    ),
    "node_refused": (
        Severity.ERROR,
        "Harper's Node.js refuses the set (its OpenSSL reason is quoted) where harper-certd's "
        "own analysis found no cause: Harper would refuse these files.",
    ),
    "model_disagrees": (
        Severity.WARNING,
        "harper-certd's model refuses the set for a reason that is not a documented policy, "
        "but Harper's Node.js accepts it and decides: a fault of the model, to report.",
    ),
    "check_failed": (
        Severity.ERROR,
        "harper-certd could not finish checking the set (a bug); the set is refused.",
    ),
    "cert_not_strict_der": (
        Severity.WARNING,
        "A certificate is BER, not strict DER (an explicit DEFAULT value); OpenSSL and Node "
        "accept it.",
    ),
    "ca_file_damaged_entry": (
        Severity.WARNING,
        "A CA-file certificate the chain does not use has a malformed or duplicate extension.",
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
    "source_other_key": (
        Severity.WARNING,
        "The source folder holds another file named like a private key besides the set's key "
        "(a CA's key, say); it is filed with the set.",
    ),
    "source_has_ca_file": (
        Severity.ERROR,
        "The source folder holds a CA file (ca.pem) for a set without one (a public "
        "certificate, judged against the system trust store).",
    ),
    "source_unmovable": (
        Severity.ERROR,
        "The source folder cannot be moved out of incoming/ by the daemon's user (handed over "
        "by another user); it is left in place and not judged again until it changes.",
    ),
    "set_unroutable": (
        Severity.ERROR,
        "A folder placed straight in incoming/ on a node with several certificate sets fits "
        "none of them, or several (role, names, CA file or not): place it under "
        "incoming/<set name>/.",
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
        "(install) A replication peer could not be probed within peers.hold_seconds and may "
        "not trust the set: it is held (held_for_peers) until the peer answers or the live "
        "leaf reaches its last warning threshold (install --force overrides, loudly).",
    ),
}

CODES["peer_refuses_live"] = (
    Severity.ERROR,
    "A replication peer refuses this node's live certificate already, not only the new one: "
    "the cluster is broken now, and adding a CA cannot help.",
)

# Hazards of the node's layout (hazards.py, issue 11): check reports them, the daemon
# refuses an install that would create one.
CODES.update(
    {
        "record_name_collision": (
            Severity.ERROR,
            "A non-replication set without 'name' whose certificate's CN (else first SAN) is the "
            "node name: Harper stores it under that name, overwriting the replication record.",
        ),
        "tls_uses_missing": (
            Severity.ERROR,
            "'tls' lists different sets and an entry has no 'uses': Harper then offers the "
            "replication certificate on every port.",
        ),
        "public_root_in_ca_file": (
            Severity.ERROR,
            "A CA file holds a root of the system trust store while replication uses a private "
            "CA: Harper trusts every CA file for replication, so this widens replication trust.",
        ),
        "enable_root_cas_on": (
            Severity.WARNING,
            "replication.enableRootCAs is on (Harper's default) with a private cluster CA: "
            "Node.js's public roots are trusted for replication too. Set it to false.",
        ),
        "replication_server_only": (
            Severity.ERROR,
            "The replication set is for TLS Web Server Authentication only: peers refuse this "
            "node's outgoing connections (INVALID_PURPOSE).",
        ),
        "replication_name_missing": (
            Severity.ERROR,
            "The replication set does not hold the node name: Harper makes itself a "
            "self-signed replication certificate and replication breaks both ways.",
        ),
        "clustering_tls_insecure": (
            Severity.WARNING,
            "NATS clustering (4.0-4.3): clustering.tls.insecure is not false, so peers' "
            "certificates are not checked. Set it to false.",
        ),
        "clustering_tls_verify_off": (
            Severity.WARNING,
            "NATS clustering (4.0-4.3): clustering.tls.verify is not true, so peers are not "
            "asked for a client certificate. Set it to true.",
        ),
    }
)
HAZARD_CODES = frozenset(
    {
        "record_name_collision",
        "tls_uses_missing",
        "public_root_in_ca_file",
        "enable_root_cas_on",
        "replication_server_only",
        "replication_name_missing",
        "clustering_tls_insecure",
        "clustering_tls_verify_off",
    }
)

INSTALL_CODES = frozenset(
    {
        "source_unreadable",
        "source_unsafe",
        "source_incomplete",
        "source_other_key",
        "source_has_ca_file",
        "source_unmovable",
        "set_unroutable",
        "judge_failed",
        "older_than_live",
        "applied_failed",
        "live_not_managed",
        # the peer guard (peers.py), produced on two real nodes in tests/test_peers_harper.py
        "ca_not_trusted_by_peers",
        "peer_not_trusted_by_ca",
        "peer_unreachable",
        "peer_refuses_live",
    }
)
VALIDATION_CODES = frozenset(CODES) - INSTALL_CODES - HAZARD_CODES


class Problem(NamedTuple):
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
