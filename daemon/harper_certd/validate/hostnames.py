"""Names: the hostnames, Harper node names and replication URL hosts a leaf must carry."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from harper_certd import names
from harper_certd.problems import Problem, problem


def check_hostnames(leaf: x509.Certificate, hostnames: Sequence[str]) -> list[Problem]:
    ids = names.identities(leaf)
    out = []
    for hostname in hostnames:
        if names.matches_hostname(ids, hostname):
            continue
        partial = names.partial_wildcard(ids, hostname)
        if partial is not None:
            out.append(
                problem(
                    "hostname_partial_wildcard",
                    f"The certificate names '{hostname}' only through the partial wildcard "
                    f"DNS:{partial}; Node accepts it, but RFC 6125 6.4.3 and the CA/Browser "
                    "Forum forbid partial labels (they match names nobody meant). Reissue it "
                    f"with DNS:{hostname} or a whole-label wildcard.",
                )
            )
        else:
            offered = [f"DNS:{d}" for d in ids.dns] + [f"IP:{i}" for i in ids.ips]
            if not offered:
                offered = [f"CN={c}" for c in ids.cns]
            out.append(
                problem(
                    "hostname_mismatch",
                    f"The certificate is not valid for '{hostname}'; it names "
                    f"{', '.join(offered) or 'nothing'}. Fix: have it issued with "
                    f"{_san_entry(hostname)} in its Subject Alternative Name (or name the host "
                    "it was issued for).",
                )
            )
    return out


def check_node_names(leaf: x509.Certificate, node_names: Sequence[str]) -> list[Problem]:
    """Harper 4.7 finds its replication certificate by an exact lookup of the node name.

    The keys are the SAN entries as written (the CN when there is no SAN): a wildcard or
    a different case passes Node's name check but not this lookup, and at its next start
    Harper then serves a self-signed certificate of its own and replication breaks.
    """
    ids = names.identities(leaf)
    written = set(ids.dns) | set(ids.ips) if (ids.dns or ids.ips) else set(ids.cns)
    return [
        problem(
            "node_name_not_verbatim",
            f"The node name '{name}' is not written as such among the certificate's "
            f"{'SAN entries' if ids.dns or ids.ips else 'CN'} "
            f"({', '.join(sorted(written)) or 'none'}); Harper looks its replication "
            "certificate up by that exact name and, at its next restart, would fall back to "
            "a self-signed certificate of its own. Add the name verbatim as a DNS SAN.",
        )
        for name in node_names
        if name not in written
    ]


def check_url_hosts(leaf: x509.Certificate, url_hosts: Sequence[str]) -> list[Problem]:
    """The hosts of ``replication.url`` that peers dial, checked as Node's
    ``checkServerIdentity`` does (an IP address only against IP SANs)."""
    ids = names.identities(leaf)
    out = []
    for host in url_hosts:
        if names.matches_hostname(ids, host):
            continue
        offered = [f"DNS:{d}" for d in ids.dns] + [f"IP:{i}" for i in ids.ips]
        if not offered:
            offered = [f"CN={c}" for c in ids.cns]
        need = _san_entry(host) + (" (an IP SAN)" if names.is_ip_address(host) else "")
        out.append(
            problem(
                "url_host_mismatch",
                f"Peers dial replication.url's host '{host}' and check the certificate against "
                f"it (Node's checkServerIdentity; ERR_TLS_CERT_ALTNAME_INVALID), but it names "
                f"{', '.join(offered) or 'nothing'}; add {need} to its Subject Alternative Name.",
            )
        )
    return out


def _san_entry(host: str) -> str:
    """The Subject Alternative Name entry a host name or address needs: ``DNS:name`` or
    ``IP:address`` (an IPv6 address without its brackets)."""
    return f"IP:{host.strip('[]')}" if names.is_ip_address(host) else f"DNS:{host}"
