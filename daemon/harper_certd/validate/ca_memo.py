"""The parsed CA file kept across validations, and the facts of its certificates.

A CA file is judged again at every rotation (the live set, the incoming one, the next), and
it may hold ~1,000 roots.  Instead of certificate-keyed caches large enough to keep every
root (which also kept ~1,000 leaves each: +12 MiB per 1,000 rotations in the soak, see
docs/bench/report.md), the CA file itself is cached by the SHA-256 of its bytes
(:func:`parse_ca_file`, at most :data:`MAX_CA_FILES` files), and the facts of its
certificates are kept beside it (:func:`per_certificate`) for as long as the file is.
Every other certificate (leaves, chain extras) goes to a small LRU cache of
``maxsize`` entries.

The same bytes give the same ``x509.Certificate`` objects, so a fact is looked up by the
object's ``id``: safe because the cached file holds a reference to every certificate whose
``id`` is a key here, and the key is dropped with the file.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography import x509

from harper_certd import load

# CA files kept parsed: the live one, an incoming one, and the two sides of a CA rotation.
MAX_CA_FILES = 4
# Certificates outside a kept CA file (leaves and their chain extras) whose facts are kept.
SMALL_CACHE = 64

_R = TypeVar("_R")

_lock = threading.Lock()  # the lanes validate in threads of their own
_files: OrderedDict[bytes, load.CertFile] = OrderedDict()
# id(certificate of a kept CA file) -> {fact function: value}
_facts: dict[int, dict[Callable[..., Any], Any]] = {}
# The small caches, by fact name (``held``).
_small: dict[str, functools._lru_cache_wrapper[Any]] = {}


def _has_side_facts(certs: tuple[x509.Certificate, ...]) -> bool:
    """Whether reading these certificates left facts in load.py's bounded side tables
    (original BER bytes, OpenSSL trust settings): those tables may forget them, so such a
    file is parsed anew each time rather than kept."""
    return any(
        load.original_der(c) is not None or load.aux_trust(c) is not None or load.lightened(c)
        for c in certs
    )


def parse_ca_file(data: bytes, *, name: str) -> load.CertFile:
    """``load.parse_ca_file``, kept by the SHA-256 of ``data`` (``name`` appears only in the
    errors, which are never kept: ``load.Unreadable`` is raised each time)."""
    key = hashlib.sha256(data).digest()
    with _lock:
        found = _files.get(key)
        if found is not None:
            _files.move_to_end(key)
            return found
    parsed = load.parse_ca_file(data, name=name)
    if _has_side_facts(parsed.certs):
        return parsed
    with _lock:
        found = _files.get(key)
        if found is not None:  # another thread kept the same bytes meanwhile
            return found
        _files[key] = parsed
        for cert in parsed.certs:
            _facts[id(cert)] = {}
        while len(_files) > MAX_CA_FILES:
            _, dropped = _files.popitem(last=False)
            for cert in dropped.certs:
                _facts.pop(id(cert), None)
    return parsed


def per_certificate(fn: Callable[[x509.Certificate], _R]) -> Callable[[x509.Certificate], _R]:
    """Memoise a fact of one certificate: beside its CA file when the certificate is one of
    a kept file's, else in an LRU cache of :data:`SMALL_CACHE` entries."""
    small = functools.lru_cache(maxsize=SMALL_CACHE)(fn)
    _small[f"{fn.__module__}.{fn.__qualname__}"] = small

    @functools.wraps(fn)
    def cached(cert: x509.Certificate) -> _R:
        facts = _facts.get(id(cert))
        if facts is None:
            return small(cert)
        try:
            value: _R = facts[fn]
        except KeyError:
            value = facts[fn] = fn(cert)
        return value

    return cached


def held() -> dict[str, int]:
    """Certificates whose facts are held: per fact function (``module.name``) in its small
    cache, and ``"ca files"`` / ``"ca certificates"`` kept beside their files."""
    out = {name: small.cache_info().currsize for name, small in _small.items()}
    out["ca files"] = len(_files)
    out["ca certificates"] = len(_facts)
    return out


def clear() -> None:
    """Forget every kept CA file (tests; a caller that must re-read from scratch)."""
    with _lock:
        _files.clear()
        _facts.clear()
