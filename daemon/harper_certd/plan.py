"""``check --plan``: the two-set layout for a node that runs one set for everything.

Since 2026 public CAs issue serverAuth-only certificates, and Harper's replication is
mutual TLS (each node presents its replication certificate as a client), so a node that
serves public HTTPS carries two sets (issue 11, measured on Harper 4.7.29): the public
set for ``server`` and ``operations-api`` with a ``name`` (so its CN cannot overwrite the
replication record) and no CA file (a CA file would widen replication trust), and a
private-CA set for ``replication`` (serverAuth + clientAuth, the node name).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from harper_certd import hazards
from harper_certd.discover import CertSet, HarperConfig
from harper_certd.pyyaml import yaml
from harper_certd.roles import Role

CLUSTER_DIR = "cluster"  # <root>/keys/cluster/: the private replication set


def plan_lines(config: HarperConfig) -> list[str]:
    """Lines for a person: the files, the ``tls`` list, what the private CA must issue."""
    sets = config.sets()
    node = config.node_name or "<node name: set replication.hostname>"
    lines = [f"Two-set plan for node {node} (Harper root {config.root})", ""]
    if not sets:
        return [*lines, "No certificate set with files is configured: nothing to plan from."]
    separate = [s for s in sets if s.role is Role.REPLICATION and Role.SERVER.value not in s.uses]
    served = [s for s in sets if Role.SERVER.value in s.uses]
    if separate and served and separate[0] is not served[0]:
        lines.append(
            f"This node already runs two sets: '{separate[0].name}' for replication and "
            f"'{served[0].name}' for {', '.join(served[0].uses)}. `harper-certd check` judges them."
        )
        return lines
    public = served[0] if served else sets[0]
    if public.first.paths is not None:
        return lines + _private_today(config, public)
    leaf = hazards.read_material(public).leaf
    names = sorted(hazards.names_of(leaf)) if leaf is not None else []
    cert = public.first.cert_path
    key = (
        public.first.paths.key if public.first.paths else (public.first.cert_key or (cert, cert))[1]
    )
    cluster = config.keys_dir / CLUSTER_DIR
    url_host = urlsplit(config.replication_url).hostname if config.replication_url else None
    entries = [
        {
            "certificate": str(cluster / "certificate.pem"),
            "certificateAuthority": str(cluster / "ca.pem"),
            "privateKey": str(cluster / "privateKey.pem"),
            "uses": [Role.REPLICATION.value],
        },
        {
            "certificate": str(cert),
            "privateKey": str(key),
            "name": "public",
            "uses": [Role.SERVER.value, Role.OPERATIONS_API.value],
        },
    ]
    replication = {"hostname": node, "enableRootCAs": False}
    if config.replication_url:
        replication["url"] = config.replication_url
    if "replication" in config.secure_ports:
        replication["securePort"] = config.secure_ports["replication"]
    snippet = yaml.safe_dump(
        {"replication": replication, "tls": entries}, sort_keys=False, default_flow_style=False
    )
    san = [f"DNS:{node}"]
    if url_host and url_host != node:
        try:
            ipaddress.ip_address(url_host)
            san.append(f"IP:{url_host}")
        except ValueError:
            san.append(f"DNS:{url_host}")
    lines += [
        f"Today set '{public.name}' ({public.first.where}) serves {', '.join(public.uses)}"
        + (f" for {', '.join(names)}" if names else "")
        + ". A public CA's certificate is serverAuth only since 2026: peers refuse it for "
        "replication (INVALID_PURPOSE).",
        "",
        "1. Keep the public set where it is, for HTTPS and the Operations API only:",
        f"     {cert}",
        f"     {key}",
        "   with no certificateAuthority (a public root in a CA file would be trusted for "
        "replication too).",
        f"2. Ask your private cluster CA for this node's replication set, into {cluster}/:",
        "     certificate.pem   the node certificate (then any intermediates)",
        "     privateKey.pem    its key (mode 0600)",
        "     ca.pem            the private root: the same file on every node",
        "   The CA must issue:",
        f"     subject       CN={node}",
        f"     SAN           {', '.join(san)}",
        "     EKU           TLS Web Server Authentication, TLS Web Client Authentication",
        "     key usage     digitalSignature (and keyEncipherment for RSA)",
        "3. In harperdb-config.yaml:",
        *("     " + line for line in snippet.splitlines()),
        "   'name: public' keeps the public record from overwriting the replication record "
        f"(its CN would be {names[0] if names else 'the node name'}); "
        "'enableRootCAs: false' stops Node.js's public roots being trusted for replication.",
        "4. Give every peer's CA file the private root before this node switches, then run "
        "`harper-certd check`: both sets must be fit and no hazard listed.",
    ]
    return lines


def _private_today(config: HarperConfig, current: CertSet) -> list[str]:
    """The node runs one set with a CA file (a private CA) for everything: it stays the
    replication set; a public certificate is added for HTTPS and the Operations API."""
    assert current.first.paths is not None
    paths = current.first.paths
    public = config.keys_dir / "public"
    entries = [
        {
            "certificate": str(paths.cert),
            "certificateAuthority": str(paths.ca),
            "privateKey": str(paths.key),
            "uses": [Role.REPLICATION.value],
        },
        {
            "certificate": str(public / "fullchain.pem"),
            "privateKey": str(public / "privkey.pem"),
            "name": "public",
            "uses": [Role.SERVER.value, Role.OPERATIONS_API.value],
        },
    ]
    snippet = yaml.safe_dump({"tls": entries}, sort_keys=False, default_flow_style=False)
    return [
        f"Today set '{current.name}' ({current.first.where}) has a CA file (a private CA) and "
        f"serves {', '.join(current.uses)}. Keep it for replication only; `harper-certd check` "
        "says whether it fits (serverAuth + clientAuth, the node name).",
        "",
        f"1. Get a public certificate for your HTTPS names (ACME) into {public}/:",
        "     fullchain.pem     the certificate, then its intermediates",
        "     privkey.pem       its key (mode 0600); no CA file",
        "2. In harperdb-config.yaml (and replication.enableRootCAs: false):",
        *("     " + line for line in snippet.splitlines()),
        "3. Run `harper-certd check`: both sets fit and no hazard is listed.",
    ]
