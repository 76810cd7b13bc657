"""retention.prune_folder reads filing stamps as text (issue 21): same order and ages as times."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from harper_certd import retention


def test_stamps_order_and_age_as_the_times_they_stand_for(tmp_path: Path) -> None:
    names = [
        "20261101T000000000000Z-a",
        # strptime's looser form: still ours (2026-11-01 00:00:00.12)
        "2026111T00000012Z-short-fields",
        "20261102T000000000001Z-b",
        "20261001T235959999999Z-old",
        "20261301T000000000000Z-no-month-13",  # not a stamp: not ours, never removed
        "notes",
    ]
    for n in names:
        (tmp_path / n).mkdir()
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    removed = retention.prune_folder(tmp_path, keep=2, days=30, now=now)
    # newest first: b, short-fields (00:00:00.12 after a's 00:00:00.0), a, old
    assert sorted(removed) == ["20261001T235959999999Z-old", "20261101T000000000000Z-a"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        [
            "20261102T000000000001Z-b",
            "2026111T00000012Z-short-fields",
            "20261301T000000000000Z-no-month-13",
            "notes",
        ]
    )
    assert retention.filed_at(tmp_path / "2026111T00000012Z-short-fields") == dt.datetime(
        2026, 11, 1, 0, 0, 0, 120000, tzinfo=dt.UTC
    )


def test_a_kept_folder_filed_later_has_its_key_protected(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    first = tmp_path / "20261119T000000000000Z-first"
    first.mkdir()
    retention.prune_folder(tmp_path, keep=5, days=30, now=now)
    later = tmp_path / "20261119T010000000000Z-later"
    later.mkdir()
    (later / "privateKey.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    os.chmod(later / "privateKey.pem", 0o644)
    retention.prune_folder(tmp_path, keep=5, days=30, now=now)
    assert stat.S_IMODE((later / "privateKey.pem").stat().st_mode) == 0o600


def test_names_remembered_between_calls_still_age_and_overflow(tmp_path: Path) -> None:
    """The names a folder held at the last call are remembered (a kept folder is read once,
    issue 21); a folder filed since still counts against ``keep``, and a remembered one still
    ages out by ``days``."""
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    for n in ("20261110T000000000000Z-a", "20261111T000000000000Z-b"):
        (tmp_path / n).mkdir()
    assert retention.prune_folder(tmp_path, keep=2, days=30, now=now) == []
    (tmp_path / "20261112T000000000000Z-c").mkdir()
    assert retention.prune_folder(tmp_path, keep=2, days=30, now=now) == [
        "20261110T000000000000Z-a"
    ]
    later = now + dt.timedelta(days=40)  # b and c are now older than 30 days; c is the newest
    assert retention.prune_folder(tmp_path, keep=2, days=30, now=later) == [
        "20261111T000000000000Z-b"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["20261112T000000000000Z-c"]
    assert retention.prune_folder(tmp_path, keep=2, days=30, now=later) == []


def _count_listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The folders ``os.scandir`` lists by name from now on (the OS edge retention reads
    at; ``shutil.rmtree`` lists by descriptor)."""
    listed: list[str] = []
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if not isinstance(path, int):
            listed.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return listed


def _file(where: Path, name: str, key: bytes | None = None) -> None:
    """File a folder as filing.keep does: stamp, rename in, note it."""
    before = retention.folder_stamp(where)
    source = where.parent / f"incoming-{name}"
    source.mkdir()
    if key is not None:
        (source / "privateKey.pem").write_bytes(key)
        os.chmod(source / "privateKey.pem", 0o644)
    os.rename(source, where / name)
    retention.filed(where, name, before)


def test_what_this_process_files_and_prunes_is_not_listed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: an install's cost is flat in the folders kept.  The folder is listed once;
    our own filing and pruning keep that listing current, so the next prune does not list
    it again, and still counts, ages and protects what was filed."""
    where = tmp_path / "processed"
    where.mkdir()
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    for n in ("20261110T000000000000Z-a", "20261111T000000000000Z-b"):
        (where / n).mkdir()
    listed = _count_listings(monkeypatch)
    assert retention.prune_folder(where, keep=2, days=30, now=now) == []
    assert listed == [str(where)]
    _file(where, "20261112T000000000000Z-c", key=b"-----BEGIN PRIVATE KEY-----\n")
    assert retention.prune_folder(where, keep=2, days=30, now=now) == ["20261110T000000000000Z-a"]
    key = where / "20261112T000000000000Z-c" / "privateKey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    _file(where, "20261113T000000000000Z-d")
    assert retention.prune_folder(where, keep=2, days=30, now=now) == ["20261111T000000000000Z-b"]
    assert listed == [str(where)]  # filed twice, pruned twice: listed once
    assert sorted(p.name for p in where.iterdir()) == [
        "20261112T000000000000Z-c",
        "20261113T000000000000Z-d",
    ]


def test_a_folder_someone_else_adds_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone else's change to the folder, even between our stamp and our own rename, makes
    the next prune list the folder again: the folder they added is counted and its key
    protected."""
    where = tmp_path / "processed"
    where.mkdir()
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    (where / "20261110T000000000000Z-a").mkdir()
    listed = _count_listings(monkeypatch)
    assert retention.prune_folder(where, keep=5, days=30, now=now) == []
    before = retention.folder_stamp(where)
    theirs = where / "20261111T000000000000Z-theirs"
    theirs.mkdir()  # someone else's, in the instant before ours
    (theirs / "privateKey.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    os.chmod(theirs / "privateKey.pem", 0o644)
    (where / "20261112T000000000000Z-ours").mkdir()
    retention.filed(where, "20261112T000000000000Z-ours", before)
    assert retention.prune_folder(where, keep=1, days=30, now=now) == [
        "20261110T000000000000Z-a",
        "20261111T000000000000Z-theirs",
    ]
    assert len(listed) == 2
    (where / "20261113T000000000000Z-later").mkdir()  # and after ours, plainly
    assert retention.prune_folder(where, keep=1, days=30, now=now) == [
        "20261112T000000000000Z-ours"
    ]
    assert len(listed) == 3
