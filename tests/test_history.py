"""history.jsonl: the tail read returns what a whole read would, and the trim keeps the newest."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from harper_certd import history
from harper_certd.history import History


def _history(path: Path) -> History:
    return History(path, lambda: (os.getuid(), os.getgid()), lambda _p: None)


def _whole(path: Path, count: int) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines()[-count:]:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_last_reads_the_tail_as_a_whole_read_would(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    h = _history(path)
    assert h.last(10) == []
    for i in range(600):
        # lines of many sizes, one longer than a read block, and a line that does not parse
        h.record("install", "installed", generation=f"g{i}", pad="x" * (i % 7 * 300))
        if i == 590:
            h.record("install", "installed", pad="y" * 20000)
        if i == 595:
            with path.open("a") as f:
                f.write("not json\n")
    assert h.last(0) == []
    for count in (1, 5, 10, 100, 1000):
        assert h.last(count) == _whole(path, count), count
    assert h.last(1)[0]["generation"] == "g599"


def test_record_trims_to_the_newest_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "TRIM_BYTES", 20_000)
    monkeypatch.setattr(history, "KEEP_BYTES", 8_000)
    path = tmp_path / "history.jsonl"
    h = _history(path)
    sizes = []
    for i in range(1000):
        h.record("install", "installed", generation=f"g{i:04d}")
        sizes.append(path.stat().st_size)
    assert max(sizes) <= 20_000 + 200  # one line past the threshold at most
    assert min(sizes[200:]) >= 8_000 - 200  # trimmed to the keep size, not emptied
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["op"] == "install" for line in lines)  # whole lines only
    generations = [json.loads(line)["generation"] for line in lines]
    assert generations[-1] == "g0999"
    assert generations == sorted(generations)  # newest kept, in order, no gap
    assert len(generations) == int(generations[-1][1:]) - int(generations[0][1:]) + 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".history.jsonl*.trim"))


def test_trim_failure_leaves_the_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "history.jsonl"
    h = _history(path)
    for i in range(50):
        h.record("install", "installed", generation=f"g{i}")
    before = path.read_bytes()
    # the temporary name (random, issue 17: fixed here) taken by a folder: the trim cannot
    # write it (O_EXCL), the history stays
    monkeypatch.setattr("harper_certd.fsio.temp_tag", lambda: "x")
    (tmp_path / ".history.jsonl.x.trim").mkdir()
    h.trim(keep_bytes=100)
    assert path.read_bytes() == before
