"""The CA file is kept parsed by its bytes' digest; per-certificate facts stay bounded.

The daemon judges the same CA file at every rotation with a new leaf each time: the CA file's
certificates are parsed once and their facts kept beside the file, while the leaves' facts go
to small LRU caches (the cause of the soak's RSS growth was 1,024-entry caches of leaves).
Speed is measured by bench/ (a 1,000-root CA file, before/after in one run), not here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from harper_certd import devca, judge, load
from harper_certd.roles import Purpose
from harper_certd.validate import ca_memo, validate_files


@pytest.fixture(autouse=True)
def _fresh() -> None:
    ca_memo.clear()


def _roots(n: int) -> list[devca.Issued]:
    key = devca.make_key("ec")
    return [devca.make_ca(f"memo root {i}", key=key) for i in range(n)]


def test_same_bytes_same_certificates_and_a_bounded_number_of_files() -> None:
    roots = _roots(ca_memo.MAX_CA_FILES + 1)
    files = [b"".join(r.cert_pem for r in roots[: i + 1]) for i in range(len(roots))]
    first = ca_memo.parse_ca_file(files[0], name="ca.pem")
    assert ca_memo.parse_ca_file(bytes(files[0]), name="other.pem") is first
    for data in files[1:]:
        ca_memo.parse_ca_file(data, name="ca.pem")
    held = ca_memo.held()
    assert held["ca files"] == ca_memo.MAX_CA_FILES
    # the oldest file went, with its certificates' facts
    assert held["ca certificates"] == sum(range(2, ca_memo.MAX_CA_FILES + 2))
    assert ca_memo.parse_ca_file(files[0], name="ca.pem") is not first


def test_unreadable_is_never_kept() -> None:
    bad = b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    for _ in range(2):
        with pytest.raises(load.Unreadable, match=r"ca\.pem"):
            ca_memo.parse_ca_file(bad, name="ca.pem")
    assert ca_memo.held()["ca files"] == 0


def test_many_leaves_under_one_ca_file_hold_few_certificates(tmp_path: Path) -> None:
    root = devca.make_ca("memo rotation root")
    strangers = _roots(100)
    at = dt.datetime.now(dt.UTC)
    key = devca.make_key("ec")
    leaves = ca_memo.SMALL_CACHE + 40
    for i in range(leaves):
        leaf = devca.make_leaf(root, f"node{i}", key=key)
        paths = devca.write_set(tmp_path / f"s{i}", leaf, [*strangers, root])
        report = validate_files(paths, at=at, purpose=Purpose.CLUSTER, judge=judge.MODEL)
        assert report.valid, report.codes
    held = ca_memo.held()
    assert held["ca files"] == 1
    assert held["ca certificates"] == 101
    small = {name: n for name, n in held.items() if name not in ("ca files", "ca certificates")}
    assert small
    assert max(small.values()) <= ca_memo.SMALL_CACHE
    # the leaves did pass through the small caches (each was judged)
    assert max(small.values()) == ca_memo.SMALL_CACHE
