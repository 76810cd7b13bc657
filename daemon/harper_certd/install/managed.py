"""The set a node's operation manages, from Harper's configuration alone: ``Managed`` and
``managed_set`` (the replication set, else the first, or a named one).

Apart from ``context`` so that ``status`` can start Node on the live set before the heavy
imports (``cli.cmd_status``): this module imports only the configuration's readers.
"""

from typing import NamedTuple

from harper_certd import discover
from harper_certd.errors import ConfigError
from harper_certd.roles import Purpose, SetPaths


class Managed(NamedTuple):
    """The certificate set this daemon manages, and what it must be fit for."""

    live: SetPaths
    purpose: Purpose
    hostnames: tuple[str, ...]
    uses: tuple[str, ...]
    verbatim_names: tuple[str, ...] = ()
    url_hosts: tuple[str, ...] = ()


SETS_DIR = "sets"  # <state>/sets/<set name>/: the store of a set other than the primary one


def managed_set(harper: discover.HarperConfig, name: str | None = None) -> Managed:
    """The set to manage: ``name`` (a ``CertSet`` name), else the primary set (the
    replication set, else the first). ConfigError for an unknown name or a set whose
    files are not named (kept in Harper's database).

    A named set without a CA file (a public certificate) is managed as two files
    (``SetPaths.ca`` None): its chain is judged against the system trust store.
    """
    if name is not None:
        by_name = {c.name: c for c in harper.sets()}
        if name not in by_name:
            raise ConfigError(
                f"no certificate set is named '{name}' in {harper.config_path} "
                f"(sets: {', '.join(by_name) or 'none'})"
            )
        chosen = by_name[name]
        if chosen.first.paths is None and chosen.first.cert_key is not None:
            return _without_ca_file(chosen)
        harper = harper._replace(entries=tuple(e for e in harper.entries if e in chosen.entries))
    entries = harper.file_entries()
    if not entries:
        notes = " ".join(e.note for e in harper.entries if e.note)
        raise ConfigError(
            f"{harper.config_path} names no certificate files to manage. {notes}".strip()
        )
    primary = next((e for e in entries if e.purpose is Purpose.CLUSTER), entries[0])
    same = [e for e in entries if e.paths == primary.paths]
    purpose = (
        Purpose.CLUSTER if any(e.purpose is Purpose.CLUSTER for e in same) else primary.purpose
    )
    hostnames = tuple(dict.fromkeys(h for e in same if not e.insecure for h in e.hostnames))
    uses = tuple(dict.fromkeys(u for e in same for u in e.uses))
    verbatim = tuple(dict.fromkeys(n for e in same for n in e.verbatim_names))
    assert primary.paths is not None
    url_hosts = tuple(dict.fromkeys(h for e in same for h in e.url_hosts))
    return Managed(primary.paths, purpose, hostnames, uses, verbatim, url_hosts)


def _without_ca_file(chosen: discover.CertSet) -> Managed:
    """A set naming a certificate and a key, no CA file: its entries' names and uses."""
    entries = tuple(e for e in chosen.entries if e.cert_key == chosen.first.cert_key)
    assert chosen.first.cert_key is not None
    cert, key = chosen.first.cert_key
    purpose = (
        Purpose.CLUSTER
        if any(e.purpose is Purpose.CLUSTER for e in entries)
        else chosen.first.purpose
    )
    return Managed(
        SetPaths(cert, key, None),
        purpose,
        tuple(dict.fromkeys(h for e in entries if not e.insecure for h in e.hostnames)),
        tuple(dict.fromkeys(u for e in entries for u in e.uses)),
        tuple(dict.fromkeys(n for e in entries for n in e.verbatim_names)),
        tuple(dict.fromkeys(h for e in entries for h in e.url_hosts)),
    )
