"""retention.prune_folder reads filing stamps as text (issue 21): same order and ages as times."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

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
