"""Rules about the CA file itself: OpenSSL's reading of it, trust settings, Harper's order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from harper_certd import der, load, spans
from harper_certd.problems import Problem, problem
from harper_certd.roles import Purpose
from harper_certd.validate.certs import (
    EKU_NAMES,
    name_keys,
    name_of,
    raw_names,
    required_ekus,
    self_issued,
    undecodable_by_openssl,
)


def _trust_verdict(aux: der.CertAux | None, oid: str, self_signed: bool) -> bool | None:
    """OpenSSL's ``obj_trust`` for the SSL trust ids (``trust_1oidany``: anyEKU counts,
    self-signed compat on): True trusted, False rejected, None no verdict (look higher)."""
    any_eku = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE.dotted_string
    if aux is not None and (oid in aux.reject or any_eku in aux.reject):
        return False
    if aux is not None and aux.trust:
        # Explicit trust uses, none of them this one: rejected (crypto/x509/x509_trust.c).
        return oid in aux.trust or any_eku in aux.trust
    return True if self_signed else None


def check_trust_settings(
    chain: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    purpose: Purpose,
    ca_name: str,
) -> list[Problem]:
    """``ca_trust_rejected``: OpenSSL's trust settings of TRUSTED CERTIFICATE entries.

    Node reads ``ca`` with ``PEM_read_bio_X509_AUX``, so a CA file entry written with
    ``openssl x509 -trustout -addtrust/-addreject`` carries trust and reject uses, which
    ``X509_verify_cert``'s ``check_trust`` applies to the chain's trusted certificates, from
    the first one taken from the CA file up to the root: the first with a verdict decides.
    The uses asked are the purpose's (a replication peer checks serverAuth when it dials and
    clientAuth when it is dialled).
    """
    in_ca = set(ca_certs)  # certificates compare by their DER: no hashing of every root
    trusted = [c for c in chain[1:] if c in in_ca]
    out = []
    for oid in required_ekus(purpose):
        for cert in trusted:
            verdict = _trust_verdict(load.aux_trust(cert), oid.dotted_string, self_issued(cert))
            if verdict is None:
                continue
            if not verdict:
                use = "serverAuth" if oid == ExtendedKeyUsageOID.SERVER_AUTH else "clientAuth"
                out.append(
                    problem(
                        "ca_trust_rejected",
                        f"{ca_name} holds '{name_of(cert)}' as a TRUSTED CERTIFICATE whose OpenSSL "
                        f"trust settings do not allow {EKU_NAMES[oid]}; Node (OpenSSL) refuses "
                        "the chain for that use. Write it as a plain certificate "
                        f"(openssl x509 -in {ca_name} -out ca.plain.pem) or add the use "
                        f"(-addtrust {use}).",
                    )
                )
            break
    return out


def check_ca_file_issuer_first(
    chain: Sequence[x509.Certificate], ca_certs: Sequence[x509.Certificate], ca_name: str
) -> list[Problem]:
    """``ca_file_issuer_not_first``: a replication set's CA file must start with the leaf's
    issuer and hold every intermediate.

    Measured on two fresh Harper 4.7.29 nodes joined with add_node (tests/HARPER-RIG-FINDINGS.md):
    with a root -> intermediate -> leaf chain, replication works with ca.pem = intermediate +
    root and fails (unable to get local issuer certificate) with root only, and mostly with
    root + intermediate.  Harper names a CA record after the first certificate of the CA file
    and, at the join, hands peers the record named like the leaf's issuer
    (``getReplicationCertAuth`` in ``bin/harperdb.js``); joined nodes keep that CA.
    """
    if len(chain) < 2 or not ca_certs:
        return []
    issuer = chain[1]
    in_ca = list(ca_certs)
    missing = [c for c in chain[1:] if not self_issued(c) and c not in in_ca]
    first_ok = name_keys(ca_certs[0])[1] == name_keys(chain[0])[0]
    if first_ok and not missing:
        return []
    fix = (
        "Harper names the CA file after its first certificate and, when a node joins "
        "(add_node), hands its peers the CA named like the leaf's issuer; with another first "
        "certificate the peers get no CA and, in most joins, refuse the node (unable to get "
        "local issuer certificate). Put the issuer first, then the rest of the chain, on "
        "every node: cat intermediate.pem root.pem > ca.pem."
    )
    if issuer not in in_ca:
        where = f"is not in {ca_name} (only in the certificate file)"
    elif not first_ok:
        index = in_ca.index(issuer) + 1
        where = f"is certificate #{index} of {ca_name}, whose first is '{name_of(ca_certs[0])}'"
    else:
        names_ = ", ".join(f"'{name_of(c)}'" for c in missing)
        where = f"is first in {ca_name}, but the intermediate(s) {names_} are not in it"
    return [
        problem(
            "ca_file_issuer_not_first",
            f"The leaf's issuer '{name_of(issuer)}' {where}. {fix}",
        )
    ]


def readable_ca_entries(
    ca_certs: tuple[x509.Certificate, ...], ca_name: str, problems: list[Problem]
) -> tuple[x509.Certificate, ...]:
    """The CA-file entries Node loads: OpenSSL stops reading a CA file at the first entry
    it cannot decode, silently, so that entry and all after it are not trusted."""
    bad = next((i for i, c in enumerate(ca_certs) if undecodable_by_openssl(c)), None)
    if bad is None:
        return ca_certs
    why = (
        f"{ca_name}: certificate #{bad + 1} has a name with an invalid UTF8String; OpenSSL, "
        "so Node, stops reading the CA file there"
    )
    if bad == 0:
        problems.append(problem("ca_unreadable", f"{why}, so it trusts nothing from it."))
    else:
        problems.append(
            problem(
                "ca_file_damaged_entry",
                f"{why}: that entry and the {len(ca_certs) - bad - 1} after it are ignored. "
                "Remove or reissue it.",
            )
        )
    return ca_certs[:bad]


def check_ca_file_damaged(
    ca_certs: Sequence[x509.Certificate], path: Sequence[x509.Certificate], ca_name: str
) -> list[Problem]:
    """Warn about CA-file entries whose extensions cannot be parsed and that the chain does
    not use: OpenSSL parses extensions only when it uses a certificate, so Node loads the
    file and ignores them (a damaged entry on the chain is a chain_invalid).

    Only entries named like an issuer on the path are looked at (the ones OpenSSL's lookup
    could pick): the others cannot matter to this set, and parsing the extensions of every
    root of a 1,000-root CA file cost more than the whole rest of the validation.
    """
    on_path = set(path)
    issuers = {raw_names(c)[0] for c in path}
    out = []
    for index, cert in enumerate(ca_certs):
        if cert in on_path or raw_names(cert)[1] not in issuers:
            continue
        try:
            _ = cert.extensions
        except Exception:  # malformed or duplicate extension
            out.append(
                problem(
                    "ca_file_damaged_entry",
                    f"{ca_name}: certificate #{index + 1} ('{name_of(cert)}') has a malformed or "
                    "duplicate extension; the chain does not use it and OpenSSL ignores it "
                    "there, but it cannot serve as a CA: remove or replace it.",
                )
            )
    return out


def check_ca_file_entries(
    ca_certs: Sequence[x509.Certificate],
    chain: Sequence[x509.Certificate],
    at: dt.datetime,
    warn_days: float,
) -> list[Problem]:
    """Expiry of CA certificates; ``chain`` is the path judged (leaf first)."""
    on_chain = set(chain)
    seen: set[x509.Certificate] = set()
    out = []
    for cert in [*chain[1:], *ca_certs]:
        days = (cert.not_valid_after_utc - at).total_seconds() / 86400
        if days >= warn_days or cert in seen:
            continue  # the common case, decided without hashing the certificate twice
        seen.add(cert)
        if cert in on_chain:
            if days >= 0:
                out.append(
                    problem(
                        "ca_expires_soon",
                        f"The CA certificate '{name_of(cert)}' expires in "
                        f"{spans.span(days * spans.DAY)}.",
                    )
                )
        elif days < 0:
            out.append(
                problem(
                    "ca_file_expired_entry",
                    f"The CA file holds '{name_of(cert)}', expired on "
                    f"{cert.not_valid_after_utc.isoformat()}; the chain does not use it.",
                )
            )
        else:
            out.append(
                problem(
                    "ca_expires_soon",
                    f"The CA certificate '{name_of(cert)}' expires in "
                    f"{spans.span(days * spans.DAY)}.",
                )
            )
    return out


# The certificate_authorities list a node sends when it asks its peer for a certificate
# (the TLS 1.3 CertificateRequest of replication's mutual TLS): Node adds every ``ca``
# certificate with ``SSL_CTX_add_client_CA``, duplicates included, each subject's DER
# behind a 2-byte length.  The request's extensions share one 2-byte length: OpenSSL 3.0's
# signature_algorithms (16 schemes, 38 bytes) and the list's own header (6) leave 65,491
# bytes.  Measured with Node v20.20.2 / OpenSSL 3.0.19 (tests/test_fuzz.py): 65,491
# accepted, 65,492 refused ("tls_construct_extensions: internal error"; from 65,536 on,
# "construct_ca_names: internal error").
MAX_CA_NAMES_BYTES = 65_535 - 38 - 6


def ca_names_size(ca_certs: Sequence[x509.Certificate]) -> int:
    """Bytes of the CA names a node sends for ``ca_certs``: 2 + DER subject each.

    The subject as encoded in the certificate (``certs.raw_names``), which is what OpenSSL
    sends; never raises on a name cryptography cannot decode."""
    return sum(_name_entry_size(c) for c in ca_certs)


def _name_entry_size(cert: x509.Certificate) -> int:
    """Bytes one CA takes in the list: a 2-byte length and its subject's DER."""
    return 2 + len(raw_names(cert)[1])


def check_ca_names_size(
    ca_certs: Sequence[x509.Certificate], purpose: Purpose, ca_name: str
) -> list[Problem]:
    """``ca_names_too_large`` when the CA file's names overflow the CertificateRequest.

    Only where the node asks its peer for a certificate (``cluster`` and ``client``: a
    replication node verifies the peers that dial it); a server-only set sends no list."""
    if purpose is Purpose.SERVER:
        return []
    size = ca_names_size(ca_certs)
    if size <= MAX_CA_NAMES_BYTES:
        return []
    fit, used = 0, 0
    for cert in ca_certs:
        used += _name_entry_size(cert)
        if used > MAX_CA_NAMES_BYTES:
            break
        fit += 1
    return [
        problem(
            "ca_names_too_large",
            f"{ca_name} holds {len(ca_certs)} certificates whose subject names take {size} "
            "bytes in the list of CAs a node sends when it asks a peer for its certificate "
            f"(replication's mutual TLS); OpenSSL fits {MAX_CA_NAMES_BYTES} bytes there, so "
            "Node fails every such handshake (ERR_SSL_INTERNAL_ERROR). Keep in "
            "the CA file only the CAs that issue the peers' certificates (the first "
            f"{fit} of these fit).",
        )
    ]
