"""Validate stage: is a certificate set fit for a Harper node, and if not, why.

The reference is what Harper's TLS stack (Node.js 20 on OpenSSL 3.0) accepts
between two nodes, plus what Harper itself needs (measured on real nodes: the
replication CA file starts with the leaf's issuer, the replication URL's host is
in the certificate), plus a short security policy (weak keys and signatures, CA
leaves).  Chain building is pyca/cryptography's verifier, used as a tool: when
its web-PKI profile refuses a chain for a rule OpenSSL does not apply (AKI/SKI
presence, RSASSA-PSS salt length, EdDSA CAs, a BER certificate), the chain is
judged again without that profile or by our own walk (signatures verified as
OpenSSL does) plus the RFC 5280 rules OpenSSL applies.  The rules that differ
from web-PKI (CN-only certificates, per-purpose EKU, self-signed roots only as
anchors) are checked here, so that every refusal has its own code.

``validate`` never raises: every input, however hostile, yields a Report
(names that cannot be decoded are rendered by ``names.safe_name``; a failure of
a check itself is the error ``check_failed``).

The package, by concern: ``entry`` (the entry point: files in, one Report out), ``report``
(the Report and certificate summaries), ``certs`` (facts of one certificate as OpenSSL reads
them), ``leaf`` (the node certificate and its key), ``hostnames`` (names a leaf must carry),
``chain`` (chain building and diagnosis), ``rfc5280`` (the path rules OpenSSL applies),
``cafile_rules`` (the CA file itself), ``ca_memo`` (the parsed CA file kept across
validations, with its certificates' facts), ``public`` (the system trust store).
"""

from harper_certd.validate.certs import fingerprint, required_ekus, undecodable_by_openssl
from harper_certd.validate.chain import check_chain
from harper_certd.validate.entry import (
    DEFAULT_EXPIRY_WARNING_DAYS,
    Inputs,
    read_set,
    validate,
    validate_files,
)
from harper_certd.validate.leaf import (
    MAX_CERT_LIST,
    MIN_EC_BITS,
    MIN_RSA_BITS,
    certificate_message_size,
    check_key_file_mode,
    check_pair,
)
from harper_certd.validate.public import public_root, system_trust_fingerprints
from harper_certd.validate.report import CertSummary, Report, summarize

__all__ = [
    "DEFAULT_EXPIRY_WARNING_DAYS",
    "MAX_CERT_LIST",
    "MIN_EC_BITS",
    "MIN_RSA_BITS",
    "CertSummary",
    "Inputs",
    "Report",
    "certificate_message_size",
    "check_chain",
    "check_key_file_mode",
    "check_pair",
    "fingerprint",
    "public_root",
    "read_set",
    "required_ekus",
    "summarize",
    "system_trust_fingerprints",
    "undecodable_by_openssl",
    "validate",
    "validate_files",
]
