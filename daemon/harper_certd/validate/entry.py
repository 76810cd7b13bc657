"""The validation entry point: the three files of a set in, one Report out."""

import datetime as dt
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
)

from harper_certd import judge as judging
from harper_certd import load
from harper_certd.problems import Problem, Severity, has_errors, problem
from harper_certd.roles import Purpose, SetPaths
from harper_certd.validate import ca_memo, constraints, lookup
from harper_certd.validate.cafile_rules import (
    check_ca_file_damaged,
    check_ca_file_entries,
    check_ca_file_issuer_first,
    check_ca_names_size,
    check_trust_settings,
    readable_ca_entries,
)
from harper_certd.validate.certs import undecodable_by_openssl
from harper_certd.validate.chain import check_chain
from harper_certd.validate.hostnames import check_hostnames, check_node_names, check_url_hosts
from harper_certd.validate.leaf import (
    check_certificate_message,
    check_eku,
    check_key_consistent,
    check_key_file_mode,
    check_key_strength,
    check_key_type_usable,
    check_key_usage,
    check_leaf_is_ca,
    check_leaf_position,
    check_pair,
    check_signature,
    check_strict_der,
    check_validity,
)
from harper_certd.validate.report import Report, summarize

DEFAULT_EXPIRY_WARNING_DAYS = 30
_T = TypeVar("_T")


class Inputs(NamedTuple):
    """The three files' bytes (``key`` None: chain checks only) and where they came from."""

    cert: bytes | load.Unreadable
    key: bytes | load.Unreadable | None
    ca: bytes | load.Unreadable
    cert_name: str = "certificate file"
    key_name: str = "key file"
    ca_name: str = "CA file"


def _read(path: Path, limit: int = load.MAX_FILE_BYTES) -> bytes | load.Unreadable:
    try:
        return load.read_bounded(path, limit=limit)
    except load.Unreadable as exc:
        return exc


def read_set(paths: SetPaths) -> Inputs:
    """The files' bytes; a set without a CA file is validated against the system trust
    store instead (``check.validate_against_store``): here its CA file is missing."""
    return Inputs(
        cert=_read(paths.cert),
        key=_read(paths.key),
        ca=load.Unreadable("no CA file is named")
        if paths.ca is None
        else _read(paths.ca, load.MAX_CA_FILE_BYTES),
        cert_name=str(paths.cert),
        key_name=str(paths.key),
        ca_name=str(paths.ca),
    )


def validate(
    inputs: Inputs,
    *,
    at: dt.datetime,
    purpose: Purpose = Purpose.CLUSTER,
    hostnames: Sequence[str] = (),
    expiry_warning_days: float = DEFAULT_EXPIRY_WARNING_DAYS,
    max_chain_depth: int | None = None,
    node_names: Sequence[str] = (),
    url_hosts: Sequence[str] = (),
    replication: bool = False,
    judge: judging.Choice | None = None,
    pending: judging.Pending | None = None,
) -> Report:
    """Every problem of a set, at instant ``at``, as Harper's Node judges it; never raises.

    ``node_names``: names Harper looks the certificate up by, verbatim (replication).
    ``url_hosts``: hosts of ``replication.url`` that peers dial (replication); each must
    pass Node's ``checkServerIdentity`` (an IP address needs an IP SAN).
    ``replication``: the set is a Harper node's replication set, so Harper's own CA-file
    rule applies too (``ca_file_issuer_not_first``); implied by ``node_names``.  Without
    it, a cluster-purpose verdict is Node's verdict for these files (a mutual-TLS handshake).
    Whatever the input, the answer is a Report: a failure inside the checks themselves is
    the error ``check_failed`` naming the exception's type (never its text, which could
    quote input), so the set is refused and nothing raises to the caller.

    ``judge``: who decides (``harper_certd.judge``): None for the process's choice (Harper's
    own node, else ``judge.node``, else PATH's), ``judge.MODEL`` for the model alone.  Node
    runs while the model analyses; its verdict decides, the model's problems explain it, and
    ``Report.judge`` says who judged.  ``pending``: Node already started on the files
    (``judge.start_files``); used only when it judges exactly ``inputs``' bytes.
    """
    if pending is not None and pending.judges(inputs.cert, inputs.key, inputs.ca):
        pass
    else:
        pending = judging.start(
            inputs.cert if isinstance(inputs.cert, bytes) else None,
            inputs.key if isinstance(inputs.key, bytes) else None,
            inputs.ca if isinstance(inputs.ca, bytes) else None,
            names=[*hostnames, *url_hosts],
            server=purpose is not Purpose.CLIENT,
            client=purpose is not Purpose.SERVER,
            judge=judge,
        )
    seen: list[x509.Certificate] = []
    report = _analyse(
        inputs,
        at=at,
        purpose=purpose,
        hostnames=hostnames,
        expiry_warning_days=expiry_warning_days,
        max_chain_depth=max_chain_depth,
        node_names=node_names,
        url_hosts=url_hosts,
        replication=replication or bool(node_names),
        seen=seen,
    )
    problems, info = judging.finish(pending, report.problems, seen, at)
    return report._replace(problems=problems, judge=info)


def _analyse(
    inputs: Inputs,
    *,
    at: dt.datetime,
    purpose: Purpose,
    hostnames: Sequence[str],
    expiry_warning_days: float,
    max_chain_depth: int | None,
    node_names: Sequence[str],
    url_hosts: Sequence[str],
    replication: bool,
    seen: list[x509.Certificate],
) -> Report:
    """The model's analysis (``validate`` without Node); never raises."""
    try:
        with warnings.catch_warnings():
            # cryptography warns about oddities OpenSSL accepts (a 3-letter country such as
            # Harper's own 'USA', negative serials); the report speaks for itself.
            warnings.simplefilter("ignore")
            return _validate(
                inputs,
                at=at,
                purpose=purpose,
                hostnames=hostnames,
                expiry_warning_days=expiry_warning_days,
                max_chain_depth=max_chain_depth,
                node_names=node_names,
                url_hosts=url_hosts,
                replication=replication,
                seen=seen,
            )
    except Exception as exc:  # the last resort: any bug or hostile input a check missed
        return Report(
            (
                problem(
                    "check_failed",
                    f"harper-certd could not finish checking this set ({type(exc).__name__}); "
                    "it is refused. Please report this with the files' openssl -text output.",
                ),
            ),
            at=at,
        )


def _guard(parse: Callable[[], _T], sentence: str) -> _T:
    """``parse()`` (a load function), with any failure it did not foresee as Unreadable in
    our own words (never the library's text, which could quote a key)."""
    try:
        return parse()
    except load.Unreadable:
        raise
    except Exception:  # e.g. cryptography's InternalError on a damaged key
        raise load.Unreadable(sentence) from None


def _validate(
    inputs: Inputs,
    *,
    at: dt.datetime,
    purpose: Purpose,
    hostnames: Sequence[str],
    expiry_warning_days: float,
    max_chain_depth: int | None,
    node_names: Sequence[str],
    url_hosts: Sequence[str],
    replication: bool,
    seen: list[x509.Certificate],
) -> Report:
    problems: list[Problem] = []
    cert_file: load.CertFile | None = None
    key: PrivateKeyTypes | None = None
    ca_certs: tuple[x509.Certificate, ...] = ()

    def unreadable(code: str, exc: load.Unreadable) -> None:
        problems.append(problem(code, str(exc)))

    try:
        if isinstance(inputs.cert, load.Unreadable):
            raise inputs.cert
        cert_data = inputs.cert
        cert_file = _guard(
            lambda: load.parse_certificates(cert_data, name=inputs.cert_name),
            f"{inputs.cert_name} cannot be decoded",
        )
    except load.Unreadable as exc:
        unreadable("cert_unreadable", exc)
    try:
        if isinstance(inputs.key, load.Unreadable):
            raise inputs.key
        if inputs.key is not None:
            key_data = inputs.key
            key = _guard(
                lambda: load.parse_private_key(key_data, name=inputs.key_name),
                f"{inputs.key_name}: the private key cannot be decoded",
            )
    except load.Unreadable as exc:
        unreadable("key_unreadable", exc)
    try:
        if isinstance(inputs.ca, load.Unreadable):
            raise inputs.ca
        ca_data = inputs.ca
        ca_file = _guard(
            lambda: ca_memo.parse_ca_file(ca_data, name=inputs.ca_name),
            f"{inputs.ca_name} cannot be decoded",
        )
        ca_certs = ca_file.certs
        if ca_file.holds_private_key:
            problems.append(problem("key_in_cert_file", f"{inputs.ca_name} holds a private key."))
    except load.Unreadable as exc:
        unreadable("ca_unreadable", exc)

    seen += ca_certs
    if ca_certs:
        ca_certs = readable_ca_entries(ca_certs, inputs.ca_name, problems)
        problems += check_ca_names_size(ca_certs, purpose, inputs.ca_name)
    if cert_file is not None:
        seen += cert_file.certs
        bad = next((i for i, c in enumerate(cert_file.certs) if undecodable_by_openssl(c)), None)
        if bad is not None:
            problems.append(
                problem(
                    "cert_unreadable",
                    f"{inputs.cert_name}: certificate #{bad + 1} has a name with an invalid "
                    "UTF8String; OpenSSL, so Node, refuses to load it "
                    "(ERR_OSSL_ASN1_INVALID_UTF8STRING). Reissue it.",
                )
            )
            cert_file = None
    if cert_file is None:
        return Report(tuple(problems), ca_certs=ca_certs, at=at)
    leaf, extras = cert_file.certs[0], cert_file.certs[1:]
    if cert_file.holds_private_key:
        problems.append(problem("key_in_cert_file", f"{inputs.cert_name} holds a private key."))
    if key is not None:
        misplaced = check_leaf_position(cert_file.certs, key, inputs.cert_name)
        if misplaced:
            # Node takes the first certificate as the node's and refuses the pair; the other
            # checks would judge the intermediate as if it were the node certificate.
            matching = next(c for c in cert_file.certs if not check_pair(c, key))
            return Report(
                (*misplaced, *problems), certificate=summarize(matching), ca_certs=ca_certs, at=at
            )
        pair = check_pair(leaf, key)
        problems += pair or check_key_consistent(leaf, key)
    problems += check_leaf_is_ca(leaf)
    problems += check_key_strength(leaf, "certificate")
    problems += check_key_type_usable(leaf)
    problems += check_signature(leaf, "certificate")
    problems += check_key_usage(leaf, purpose)
    problems += check_validity(leaf, at, expiry_warning_days)
    problems += check_hostnames(leaf, hostnames)
    problems += check_node_names(leaf, node_names)
    problems += check_url_hosts(leaf, url_hosts)
    problems += check_strict_der(cert_file.certs, inputs.cert_name)
    chain: tuple[x509.Certificate, ...] = ()
    path: tuple[x509.Certificate, ...] = ()
    taken_as_self_signed = lookup.check_leaf_taken_as_self_signed(leaf, ca_certs)
    problems += taken_as_self_signed
    if ca_certs and not taken_as_self_signed:
        chain, chain_problems, path = check_chain(
            leaf, extras, ca_certs, purpose, at, max_chain_depth
        )
        chain_problems += lookup.check_issuer_choice(path, ca_certs, at, inputs.ca_name)
        chain_problems += lookup.check_root_akid(path, ca_certs, inputs.ca_name)
        if not has_errors(chain_problems):
            chain_problems += lookup.check_untrusted_choice(
                path, extras, ca_certs, at, inputs.cert_name, inputs.ca_name
            )
        if not has_errors(chain_problems):
            chain_problems += constraints.check_path_constraints(path)
        if has_errors(chain_problems):
            chain = ()
        problems += chain_problems
        problems += check_ca_file_entries(ca_certs, path, at, expiry_warning_days)
        problems += check_ca_file_damaged(ca_certs, path, inputs.ca_name)
        if purpose is Purpose.CLUSTER and replication and chain:
            problems += check_ca_file_issuer_first(chain, ca_certs, inputs.ca_name)
        if chain:
            problems += check_trust_settings(chain, ca_certs, purpose, inputs.ca_name)
    problems += check_eku(leaf, purpose, path)
    problems += check_certificate_message(leaf, extras, path)
    problems.sort(key=lambda p: p.severity is not Severity.ERROR)
    return Report(
        tuple(problems),
        certificate=summarize(leaf),
        chain_certs=chain,
        ca_certs=ca_certs,
        at=at,
    )


def validate_files(
    paths: SetPaths,
    *,
    at: dt.datetime,
    purpose: Purpose = Purpose.CLUSTER,
    hostnames: Sequence[str] = (),
    expiry_warning_days: float = DEFAULT_EXPIRY_WARNING_DAYS,
    node_names: Sequence[str] = (),
    url_hosts: Sequence[str] = (),
    replication: bool = False,
    judge: judging.Choice | None = None,
    pending: judging.Pending | None = None,
) -> Report:
    report = validate(
        read_set(paths),
        at=at,
        purpose=purpose,
        hostnames=hostnames,
        expiry_warning_days=expiry_warning_days,
        node_names=node_names,
        url_hosts=url_hosts,
        replication=replication,
        judge=judge,
        pending=pending,
    )
    if "key_unreadable" in report.codes:
        return report
    extra = check_key_file_mode(paths.key)
    if not extra:
        return report
    return report._replace(problems=(*report.problems, *extra))
