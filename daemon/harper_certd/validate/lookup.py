"""Which issuer OpenSSL 3.0 picks at each step of a chain, where that is not the one we found.

OpenSSL builds chains trusted-first (``X509_V_FLAG_TRUSTED_FIRST``, on by default in 3.0):
for each certificate it looks for the issuer in the trust store (the CA file) before the
untrusted certificates (the cert file's).  ``X509_STORE_CTX_get1_issuer`` takes, among the
store's certificates whose subject is the issuer name and whose key identifiers do not
contradict (``X509_check_issued``: no signature check), the first one valid now, else the
most recently expired one.  It does not try another candidate when the one it took fails
its signature check.  So:

- two CAs of one name without key identifiers (a CA rotation: old and new in the CA file),
  the wrong one first: Node fails with "certificate signature failure" (field case 13);
- an expired copy of an intermediate in the CA file is taken over the valid one in the
  cert file: Node fails with "certificate has expired";
- a leaf whose subject equals its issuer, with no key identifiers to tell them apart, is
  taken for a self-signed certificate (``EXFLAG_SS``): Node fails with "self-signed
  certificate" (DEPTH_ZERO_SELF_SIGNED_CERT; field case 12).

Where the trust store has no issuer, OpenSSL takes one from the untrusted certificates (the
certificate file's, after the leaf) the same way (``find_issuer``: the first of that name
valid now), and does not go back when the chain it built that way reaches no CA of the CA
file or fails the name constraints of a CA on it (x509-limbo
``rfc5280::nc::nc-forbids-{alternate,same}-chain-ica``, judged by Node 20: "unable to get
local issuer certificate", "excluded subtree violation"), though another path would pass.

Each finding is a ``chain_invalid`` naming the CA-file positions and the fix.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from harper_certd.problems import Problem, has_errors, problem
from harper_certd.validate import constraints
from harper_certd.validate.certs import (
    explicit_ec_parameters,
    extension,
    key_ids_match,
    name_keys,
    name_of,
    raw_names,
    self_issued,
    signed_by,
    whole_seconds,
)


def _valid_at(cert: x509.Certificate, at: dt.datetime) -> bool:
    # OpenSSL: valid from the notBefore second, expired from the notAfter second on.
    return cert.not_valid_before_utc <= at < cert.not_valid_after_utc


def store_issuer(
    child: x509.Certificate,
    store: Sequence[x509.Certificate],
    at: dt.datetime,
    subjects: Sequence[bytes] | None = None,
) -> x509.Certificate | None:
    """``X509_STORE_CTX_get1_issuer`` over ``store`` in file order (names compared as
    OpenSSL compares them, ``name_keys``; ``subjects``: the store's, computed once)."""
    wanted = name_keys(child)[0]
    if subjects is None:
        subjects = [name_keys(c)[1] for c in store]
    candidates = [
        c
        for c, subject in zip(store, subjects, strict=True)
        if subject == wanted and c is not child and key_ids_match(child, c) and _can_issue(c)
    ]
    for cert in candidates:
        if _valid_at(cert, at):
            return cert
    if not candidates:
        return None
    return max(candidates, key=lambda c: c.not_valid_after_utc)


def _can_issue(cert: x509.Certificate) -> bool:
    """Whether OpenSSL considers ``cert`` as an issuer at all (``ossl_x509_likely_issued``):
    its extensions decode (``ossl_x509v3_cache_extensions``, else EXFLAG_INVALID) and its
    public key loads (else X509_V_ERR_NO_ISSUER_PUBLIC_KEY).  A CA-file copy of an
    intermediate that fails either is passed over for the certificate file's (judged by
    Node 20: the fuzz family ``der_flip_ca_entry``).  A key with explicit EC parameters
    loads in OpenSSL, not in cryptography: it is considered (verification refuses it), as is
    a key type cryptography does not know."""
    try:
        _ = cert.extensions
    except Exception:  # hostile input: any parse failure, DuplicateExtension too
        return False
    try:
        cert.public_key()
    except UnsupportedAlgorithm:  # a key type cryptography lacks (SM2, GOST): OpenSSL may load it
        return True
    except Exception:  # ValueError: an encoding OpenSSL does not load either
        return explicit_ec_parameters(cert)
    return True


def looks_self_signed(cert: x509.Certificate) -> bool:
    """OpenSSL's EXFLAG_SS without the signature: subject equals issuer and the key
    identifiers (when present) name the certificate's own key."""
    return self_issued(cert) and key_ids_match(cert, cert)


def check_leaf_taken_as_self_signed(
    leaf: x509.Certificate, ca_certs: Sequence[x509.Certificate]
) -> list[Problem]:
    """Field case 12: a leaf named like its CA, no key identifiers, not signed by itself."""
    if not looks_self_signed(leaf) or leaf in ca_certs or signed_by(leaf, leaf):
        return []
    return [
        problem(
            "chain_invalid",
            f"The certificate '{name_of(leaf)}' has the same name as its issuer and no key "
            "identifiers tell the two apart, so OpenSSL (Node) takes it for a self-signed "
            "certificate and does not look for its CA (self-signed certificate, "
            "DEPTH_ZERO_SELF_SIGNED_CERT). Reissue it with a subject of its own (for example "
            "CN=<node name>, distinct from the CA's), or with key identifiers (SKI/AKI).",
        )
    ]


def check_issuer_choice(
    path: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    at: dt.datetime,
    ca_name: str,
) -> list[Problem]:
    """Where OpenSSL's trusted-first lookup takes another issuer than ``path``'s, and that
    one fails: a signature failure or an expired CA (``path``: leaf first, verified).

    OpenSSL goes on from the certificate it took: a CA-file copy of an intermediate that
    signs the leaf but is not itself signed by its issuer (a damaged or re-signed copy) fails
    there (certificate signature failure, judged by Node 20:
    ``tests/test_node_differential.py::test_trusted_first_shadows_cert_file_copy``)."""
    at = whole_seconds(at)
    subjects = [name_keys(c)[1] for c in ca_certs]
    taken_copy: x509.Certificate | None = None  # the CA-file copy OpenSSL uses at this step
    for child, issuer in itertools.pairwise(path):
        current = taken_copy if taken_copy is not None else child
        chosen = store_issuer(current, ca_certs, at, subjects)
        taken = issuer if chosen is None or chosen is issuer or chosen == issuer else chosen
        if (
            taken_copy is not None
            and name_keys(taken_copy)[0] == name_keys(taken)[1]
            and not signed_by(taken_copy, taken)
        ):
            return [_copy_not_signed(taken_copy, taken, ca_certs, ca_name)]
        if taken is issuer:
            taken_copy = None
            continue
        found = _issuer_problem(current, taken, ca_certs, at, ca_name)
        if found is not None:
            return [found]
        taken_copy = None if looks_self_signed(taken) else taken
    return []


def _ca_index(cert: x509.Certificate, ca_certs: Sequence[x509.Certificate]) -> int:
    """1-based position of ``cert`` (by identity) in the CA file."""
    return next(i for i, c in enumerate(ca_certs) if c is cert) + 1


def _issuer_problem(
    child: x509.Certificate,
    chosen: x509.Certificate,
    ca_certs: Sequence[x509.Certificate],
    at: dt.datetime,
    ca_name: str,
) -> Problem | None:
    """The CA file's ``chosen`` taken as ``child``'s issuer instead of the chain's: a
    signature failure or an expired CA, else None."""
    index = _ca_index(chosen, ca_certs)
    if not signed_by(child, chosen):
        same = [i + 1 for i, c in enumerate(ca_certs) if name_keys(c)[1] == name_keys(child)[0]]
        listed = " and ".join(f"#{i}" for i in same)
        return problem(
            "chain_invalid",
            f"{ca_name} holds {len(same)} CAs named '{name_of(chosen)}' ({listed}) and "
            "no key identifiers tell them apart; OpenSSL (Node) takes the first one "
            f"valid now, #{index}, which did not sign '{name_of(child)}', and fails "
            "(certificate signature failure) without trying the other. Put the CA that "
            f"issued it first in {ca_name} (in a CA rotation: the new CA first), or "
            "issue CAs with key identifiers (SKI/AKI), or give the new CA a name of "
            "its own.",
        )
    if not _valid_at(chosen, at):
        return problem(
            "ca_expired",
            f"{ca_name} holds '{name_of(chosen)}' (#{index}), expired on "
            f"{chosen.not_valid_after_utc.isoformat()}; OpenSSL (Node) looks in the CA "
            "file first and takes it over the valid copy in the certificate file, so "
            f"the chain is expired. Remove #{index} from {ca_name} or replace it with "
            "the current certificate.",
        )
    return None


def _copy_not_signed(
    copy: x509.Certificate,
    issuer: x509.Certificate,
    ca_certs: Sequence[x509.Certificate],
    ca_name: str,
) -> Problem:
    """The CA file's copy of an intermediate, taken by OpenSSL, not signed by its issuer."""
    index = _ca_index(copy, ca_certs)
    return problem(
        "chain_invalid",
        f"{ca_name} holds a copy of '{name_of(copy)}' (#{index}) that is not the one in the "
        f"certificate file and whose signature '{name_of(issuer)}' did not make (damaged or "
        "signed again); OpenSSL (Node) looks in the CA file first, takes that copy and fails "
        f"(certificate signature failure). Remove #{index} from {ca_name}, or replace it with "
        "the certificate its CA issued.",
    )


def _akid_describes(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """OpenSSL's ``X509_check_akid(issuer, cert's AKI)``: the key id, the serial number and
    the directory name the AKI gives (each when present) are ``issuer``'s."""
    aki = extension(cert, x509.AuthorityKeyIdentifier)
    if aki is None:
        return True
    ski = extension(issuer, x509.SubjectKeyIdentifier)
    if aki.key_identifier is not None and ski is not None and aki.key_identifier != ski.digest:
        return False
    serial = aki.authority_cert_serial_number
    if serial is not None and serial != issuer.serial_number:
        return False
    for general in aki.authority_cert_issuer or ():
        if isinstance(general, x509.DirectoryName):
            return general.value.public_bytes() == raw_names(issuer)[0]
    return True


def check_root_akid(
    path: Sequence[x509.Certificate], ca_certs: Sequence[x509.Certificate], ca_name: str
) -> list[Problem]:
    """A self-issued root whose Authority Key Identifier describes another certificate:
    OpenSSL does not take it as self-signed, looks for its issuer and fails (x509-limbo
    webpki::aki::root-with-aki-*, judged by Node 20: unable to get issuer certificate)."""
    if len(path) < 2:
        return []
    top = path[-1]
    if not self_issued(top) or top not in ca_certs or _akid_describes(top, top):
        return []
    index = next(i for i, c in enumerate(ca_certs) if c == top) + 1
    return [
        problem(
            "chain_invalid",
            f"The root '{name_of(top)}' (#{index} of {ca_name}) has an Authority Key "
            "Identifier that names another certificate (its key id, serial number or issuer "
            "is not the root's own), so OpenSSL (Node) does not take it as self-signed and "
            "looks for its issuer in vain (unable to get issuer certificate). Reissue the "
            "root without an Authority Key Identifier, or with its own key id.",
        )
    ]


# Certificates OpenSSL puts on a chain at most (X509_VERIFY_PARAM's default depth 100, + 2).
_MAX_GREEDY = 102


def openssl_path(
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    at: dt.datetime,
) -> list[x509.Certificate]:
    """The chain OpenSSL 3.0 builds (trusted first, then the untrusted certificates in file
    order; no backtracking), leaf first; it ends where no issuer is found or at a
    certificate OpenSSL takes as self-signed."""
    subjects = [name_keys(c)[1] for c in ca_certs]
    path = [leaf]
    cert = leaf
    while len(path) < _MAX_GREEDY and not looks_self_signed(cert):
        issuer = store_issuer(cert, ca_certs, at, subjects)
        if issuer is None:
            left = [c for c in untrusted if all(c is not p for p in path)]
            issuer = store_issuer(cert, left, at) if left else None
        if issuer is None or any(issuer is p for p in path):
            break
        path.append(issuer)
        cert = issuer
    return path


def check_untrusted_choice(
    path: Sequence[x509.Certificate],
    untrusted: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    at: dt.datetime,
    cert_name: str,
    ca_name: str,
) -> list[Problem]:
    """Where OpenSSL takes another issuer than ``path``'s from the certificate file and the
    chain it builds that way fails (``path``: leaf first, verified, passing)."""
    if not untrusted or len(path) < 2:
        return []
    at = whole_seconds(at)
    theirs = openssl_path(path[0], untrusted, ca_certs, at)
    step = next(
        (i for i, (a, b) in enumerate(zip(theirs, path, strict=False)) if a is not b and a != b),
        None,
    )
    if step is None or theirs[step] in ca_certs:
        return []  # the same chain, or a trusted-first difference (check_issuer_choice)
    taken = theirs[step]
    index = next(i for i, c in enumerate(untrusted) if c is taken) + 2
    lead = (
        f"OpenSSL (Node) takes certificate #{index} of {cert_name}, '{name_of(taken)}', as the "
        f"issuer of '{name_of(theirs[step - 1])}' (the first certificate of that name there) "
        "and does not try another path when the chain it builds fails"
    )
    fix = (
        f"Remove certificate #{index} from {cert_name}, or put the intermediate of the "
        "chain you mean before it."
    )
    if not signed_by(theirs[step - 1], taken):
        return [
            problem(
                "chain_invalid",
                f"{lead}: it did not sign it (certificate signature failure). {fix}",
            )
        ]
    top = theirs[-1]
    if top not in ca_certs or not looks_self_signed(top):
        return [
            problem(
                "chain_invalid",
                f"{lead}: that chain ends at '{name_of(top)}', whose issuer is not in "
                f"{ca_name} (unable to get local issuer certificate). {fix}",
            )
        ]
    found = constraints.check_name_constraints(theirs) or []
    found += constraints.check_path_constraints(theirs)
    if has_errors(found):
        first = next(p for p in found if p.code == "chain_invalid" or p.severity.name == "ERROR")
        return [problem("chain_invalid", f"{lead}: on that chain, {first.message} {fix}")]
    return []
