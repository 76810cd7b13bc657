"""harper-certd release: plain files handed back to Harper, same bytes, same modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from harper_certd.cli import main
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from nodefix import make_node


def test_release_hands_back_plain_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = make_node(tmp_path)
    os.chmod(node.live.cert, 0o640)
    assert install(build_context(node.config), node.source("one")).status == "installed"
    paths = (node.live.cert, node.live.key, node.ca_file)
    assert all(p.is_symlink() for p in paths)
    seen = {p: (p.read_bytes(), stat.S_IMODE(os.stat(p).st_mode)) for p in paths}
    fp = node.live_fingerprint()
    cfg = str(node.write_config())
    assert main(["release", "--config", cfg]) == 0
    assert "are plain files again" in capsys.readouterr().out
    for p in paths:
        st = os.lstat(p)
        assert stat.S_ISREG(st.st_mode), p
        data, mode = seen[p]  # generation files are read-only: the owner may write again
        assert (p.read_bytes(), stat.S_IMODE(st.st_mode)) == (data, mode | stat.S_IWUSR)
    assert stat.S_IMODE(os.stat(node.live.key).st_mode) == 0o600
    assert node.live_fingerprint() == fp
    assert [p.name for p in node.live.cert.parent.iterdir() if ".release-" in p.name] == []
    history = [json.loads(line) for line in (node.state / "history.jsonl").read_text().splitlines()]
    assert history[-1]["op"] == "release"
    assert main(["release", "--config", cfg]) == 0
    assert "nothing to release" in capsys.readouterr().out
    # status says the files are no longer managed (a newcomer could not tell before)
    assert main(["status", "--json", "--no-probe", "--config", cfg]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [f["code"] for f in findings] == ["not_managed"]
    # Released files may be managed from another state directory now (no refusal).
    node.config_data["state_dir"] = str(tmp_path / "new-state")
    assert install(build_context(node.config), node.source("two")).status == "installed"
