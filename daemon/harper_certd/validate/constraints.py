"""Name constraints as OpenSSL 3.0 applies them (``NAME_CONSTRAINTS_check``), for the leaf's
DNS and IP names: the messages name the constraint, the CA carrying it and the name.

Used where cryptography's verifier does not give the verdict (its own walk): DNS and IP
subtrees are evaluated here; a constraint of another form (directoryName, email, URI) on
such a path is still refused, saying that harper-certd cannot check that form.

OpenSSL's DNS rule (``nc_dns``): a constraint matches the name itself and every name below
it (``example.net`` covers ``a.example.net``; ``.example.net`` only names below), case
insensitive; an empty constraint matches everything.  IP: address and mask compared.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cryptography import x509

from harper_certd import names
from harper_certd.problems import Problem, problem
from harper_certd.validate.certs import extension, name_of, self_issued

_FORMS = (x509.DNSName, x509.IPAddress)


def _dns_match(name: str, base: str) -> bool:
    name, base = name.lower().rstrip("."), base.lower()
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _ip_match(ip: str, base: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(ip) in base
    except ValueError:
        return False


def _matches(value: str, is_ip: bool, subtree: x509.GeneralName) -> bool | None:
    """Whether ``value`` is in ``subtree``; None when the subtree is of another form."""
    if is_ip and isinstance(subtree, x509.IPAddress):
        network = subtree.value
        if isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return _ip_match(value, network)
        return None
    if not is_ip and isinstance(subtree, x509.DNSName):
        return _dns_match(value, subtree.value)
    return None


def _describe(subtree: x509.GeneralName) -> str:
    if isinstance(subtree, x509.DNSName):
        return f"DNS:{subtree.value}"
    if isinstance(subtree, x509.IPAddress):
        return f"IP:{subtree.value}"
    return type(subtree).__name__


def check_name_constraints(path: Sequence[x509.Certificate]) -> list[Problem] | None:
    """Problems of the leaf's DNS/IP names against each CA's constraints on ``path``;
    None when a constraint of a form evaluated nowhere here is present."""
    ids = names.identities(path[0])
    leaf_names = [(d, False) for d in ids.dns] + [(i, True) for i in ids.ips]
    out: list[Problem] = []
    for cert in path[1:]:
        nc = extension(cert, x509.NameConstraints)
        if nc is None:
            continue
        permitted = list(nc.permitted_subtrees or ())
        excluded = list(nc.excluded_subtrees or ())
        if any(not isinstance(s, _FORMS) for s in (*permitted, *excluded)):
            return None
        for value, is_ip in leaf_names:
            form = x509.IPAddress if is_ip else x509.DNSName
            shown = f"{'IP' if is_ip else 'DNS'}:{value}"
            for subtree in excluded:
                if not is_ip and value.startswith("*.") and isinstance(subtree, x509.DNSName):
                    covered = subtree.value.lower().lstrip(".")
                    if covered.split(".", 1)[-1] == value[2:].lower() and "." in covered:
                        out.append(
                            problem(
                                "name_constraint_wildcard",
                                f"The leaf's wildcard name {shown} covers "
                                f"{_describe(subtree)}, which the name constraints of "
                                f"'{name_of(cert)}' exclude. OpenSSL, so Node, compares the "
                                "wildcard as written and accepts it (CVE-2025-61727's kind); "
                                "harper-certd refuses it: name the hosts in the leaf instead of "
                                "a wildcard, or issue it from a CA without that exclusion.",
                            )
                        )
                if _matches(value, is_ip, subtree):
                    out.append(
                        problem(
                            "chain_invalid",
                            f"The leaf's name {shown} is in the excluded subtree "
                            f"{_describe(subtree)} of the name constraints of "
                            f"'{name_of(cert)}' (OpenSSL: excluded subtree violation).",
                        )
                    )
            of_form = [s for s in permitted if isinstance(s, form)]
            if of_form and not any(_matches(value, is_ip, s) for s in of_form):
                allowed = ", ".join(_describe(s) for s in of_form)
                out.append(
                    problem(
                        "chain_invalid",
                        f"The leaf's name {shown} is outside the permitted subtree(s) {allowed} "
                        f"of the name constraints of '{name_of(cert)}' (OpenSSL, so Node: "
                        "permitted subtree violation). Reissue the leaf with names inside "
                        "them, or issue it from a CA whose constraints allow the name.",
                    )
                )
    return out


# OpenSSL 3.0's NAME_CHECK_MAX (crypto/x509/v3_ncons.c): names times constraints per check.
NAME_CHECK_MAX = 1 << 20


def _name_count(cert: x509.Certificate) -> int:
    try:
        rdns = len(list(cert.subject))
    except Exception:  # an undecodable subject: counted as empty
        rdns = 0
    san = extension(cert, x509.SubjectAlternativeName)
    return rdns + (len(list(san)) if san is not None else 0)


def check_path_constraints(path: Sequence[x509.Certificate]) -> list[Problem]:
    """What OpenSSL checks below each name-constrained CA that the chain builders here do
    not: the work limit (names x constraints over NAME_CHECK_MAX refuses the chain, x509-limbo
    pathological::nc-dos-*) and the DNS/IP SANs of the intermediates below it (OpenSSL
    applies the constraints to every certificate below but self-issued intermediates;
    x509-limbo rfc5280::nc::intermediate-with-san-*).  Refusals only; the leaf's own names
    are the verifiers' to judge."""
    out: list[Problem] = []
    for index in range(1, len(path)):
        ca = path[index]
        nc = extension(ca, x509.NameConstraints)
        if nc is None:
            continue
        constraints = len(nc.permitted_subtrees or ()) + len(nc.excluded_subtrees or ())
        for below in range(index):
            cert = path[below]
            if below > 0 and self_issued(cert):
                continue
            count = _name_count(cert)
            if count and constraints > NAME_CHECK_MAX // count:
                return [
                    problem(
                        "chain_invalid",
                        f"'{name_of(ca)}' has {constraints} name constraints and "
                        f"'{name_of(cert)}' {count} names: more than OpenSSL checks "
                        f"({NAME_CHECK_MAX} name-constraint comparisons), so it refuses the "
                        "chain (unspecified certificate verification error).",
                    )
                ]
            if below == 0:
                continue
            found = check_name_constraints([cert, ca])
            for p in found or ():
                out.append(
                    problem(
                        "chain_invalid",
                        p.message.replace("The leaf's name", f"The CA '{name_of(cert)}' names"),
                    )
                )
    return out
