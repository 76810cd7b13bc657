"""status: a Nagios-style exit code, and warnings that mean problems."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harper_certd import devca, health
from harper_certd.config import parse_config
from harper_certd.errors import ConfigError
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_certd.schedule import Watched, expiry_marks
from nodefix import Node, make_node, status_json
from tlsfix import LiveTlsServer

NOW = dt.datetime.now(dt.UTC)


def _watched(days: float, age: float = 0.0) -> Watched:
    start = NOW - dt.timedelta(days=age)
    return Watched("leaf", "CN=x", "ab" * 32, start, start + dt.timedelta(days=days))


def test_a_healthy_90_day_certificate_warns_only_once_renewal_is_overdue() -> None:
    config = parse_config({})
    leaf = _watched(90)
    due = health.overdue_at(leaf, config)
    # renewal window: the last third (30 days); overdue half-way through it: 15 days left
    assert (leaf.not_after - due) == dt.timedelta(days=15)
    marks = health.warning_marks(expiry_marks([leaf], (30, 14, 7, 3, 1)), leaf, config)
    warnings = [m for m in marks if m.kind == "warning"]
    assert min(m.at for m in warnings) == due
    assert [m.days for m in warnings] == [15.0, 14, 7, 3, 1]


def test_a_24_hour_certificate_installed_now_is_not_a_warning() -> None:
    config = parse_config({})
    leaf = _watched(1)
    marks = health.warning_marks(expiry_marks([leaf], (30, 14, 7, 3, 1)), leaf, config)
    assert all(m.at > NOW for m in marks), [(m.kind, m.days) for m in marks]
    first = min(m.at for m in marks)
    assert leaf.not_after - first == dt.timedelta(hours=4)  # half of the last 8 hours


def test_the_one_knob_moves_the_first_warning() -> None:
    leaf = _watched(90)
    early = health.overdue_at(leaf, parse_config({"health": {"overdue_after": 0}}))
    assert leaf.not_after - early == dt.timedelta(days=30)  # at the start of the window
    fixed = parse_config({"renew": {"before_days": 20}})
    assert leaf.not_after - health.overdue_at(leaf, fixed) == dt.timedelta(days=10)
    with pytest.raises(ConfigError, match=r"health\.overdue_after"):
        parse_config({"health": {"overdue_after": 1}})


# --- status against a node that serves its live files -------------------------------------


@pytest.fixture
def served_node(tmp_path: Path) -> Iterator[tuple[Node, LiveTlsServer]]:
    node = make_node(tmp_path)
    with LiveTlsServer(node.live.cert, node.live.key) as server:
        tree = yaml.safe_load((node.root / "harperdb-config.yaml").read_text())
        tree["replication"]["securePort"] = server.port
        tree["replication"]["url"] = f"wss://nodea:{server.port}"  # peers send SNI nodea
        (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
        (node.root / "hdb.pid").write_text(f"{os.getpid()}\n")  # "Harper" is this process
        yield node, server


def _status(node: Node) -> tuple[int, dict[str, Any]]:
    return status_json(node)


def test_healthy_node_exits_0_with_the_whole_picture(served_node: tuple[Node, Any]) -> None:
    node, server = served_node
    code, data = _status(node)
    assert (code, data["health"], data["findings"]) == (0, "ok", [])
    assert data["node_name"] == "nodea"
    (s,) = data["sets"]
    assert s["name"] == "replication"
    assert s["role"] == "cluster"
    assert s["served_matches_live"] is True
    assert s["served"][0]["dialled"] == f"127.0.0.1:{server.port} (SNI nodea)"
    assert [c["role"] for c in s["certificates"]] == ["leaf", "ca"]
    assert 89.9 < s["days_left"] <= 90  # devca: 90-day leaves
    assert data["next_renewal"] == s["next_renewal"]
    assert data["next_warning"] == s["renewal_overdue_at"]
    assert (data["waiting"], data["held"], data["refusals"]) == ([], [], [])


def test_served_other_than_live_is_critical(served_node: tuple[Node, Any]) -> None:
    node, server = served_node
    other = devca.write_set(node.tmp / "other", devca.make_leaf(node.ca), [node.ca])
    server.cert, server.key = other.cert, other.key  # Harper restarted on other files
    code, data = _status(node)
    assert code == 2
    assert [f["code"] for f in data["findings"]] == ["served_mismatch"]
    assert data["sets"][0]["served_matches_live"] is False


def test_overdue_renewal_is_a_warning_and_expired_is_critical(
    served_node: tuple[Node, Any],
) -> None:
    node, _ = served_node
    # 90 days, 80 of them gone: past the window's half-way point (15 days left)
    old = devca.make_leaf(
        node.ca,
        "nodea",
        dns=["nodea"],
        ips=["127.0.0.2"],
        not_before=NOW - dt.timedelta(days=80),
        not_after=NOW + dt.timedelta(days=10),
    )
    devca.write_set(node.live.cert.parent, old, [node.ca])
    code, data = _status(node)
    assert code == 1
    assert [f["code"] for f in data["findings"]] == ["renewal_overdue"]
    gone = devca.make_leaf(
        node.ca,
        "nodea",
        dns=["nodea"],
        ips=["127.0.0.2"],
        not_before=NOW - dt.timedelta(days=91),
        not_after=NOW - dt.timedelta(days=1),
    )
    devca.write_set(node.live.cert.parent, gone, [node.ca])
    code, data = _status(node)
    assert code == 2
    assert [f["code"] for f in data["findings"]] == ["live_invalid"]
    assert "expired" in data["findings"][0]["message"]


def test_refusal_and_held_set_are_warnings_until_a_newer_install(
    served_node: tuple[Node, Any],
) -> None:
    node, _ = served_node
    bad = node.source("bad")
    (bad / "certificate.pem").write_bytes(b"junk")
    assert install(build_context(node.config), bad).status == "refused"
    code, data = _status(node)
    assert code == 1
    assert [f["code"] for f in data["findings"]] == ["refused"]
    assert data["refusals"][0]["detail"] == "cert_unreadable"
    assert data["last"]["refusal"]["kind"] == "refusal"
    # where the refused folder is kept, in the JSON and in the text's finding
    kept = data["refusals"][0]["kept_at"]
    assert Path(kept).parent == node.root / "keys" / "rejected"
    assert (Path(kept) / "reason.json").is_file()
    assert data["refusals"][0]["source"] == str(bad)
    assert f"kept in {kept} with its reason.json" in data["findings"][0]["message"]
    # how to clear it, in the finding itself (a newcomer found it only in install.md)
    assert f"remove the folder (rm -r {kept})" in data["findings"][0]["message"]
    waiting = node.root / "keys" / "incoming" / "set-1"
    waiting.mkdir(parents=True)
    old = (NOW - dt.timedelta(hours=1)).timestamp()
    os.utime(waiting, (old, old))
    code, data = _status(node)
    assert [f["code"] for f in data["findings"]] == ["refused", "set_held"]
    assert data["held"] == [str(waiting)]
    waiting.rmdir()
    assert install(build_context(node.config), node.source("good")).status == "installed"
    code, data = _status(node)
    assert (code, data["findings"]) == (0, [])
    assert data["last"]["rotation"]["outcome"] == "installed"
    # a refusal the operator dismisses by removing its folder from rejected/: no finding
    junk = node.source("junk")
    (junk / "certificate.pem").write_bytes(b"junk")
    assert install(build_context(node.config), junk).status == "refused"
    code, data = _status(node)
    assert [f["code"] for f in data["findings"]] == ["refused"]
    shutil.rmtree(data["refusals"][0]["kept_at"])
    code, data = _status(node)
    assert (code, data["findings"]) == (0, [])
    assert str(kept) in [r["kept_at"] for r in data["refusals"]]  # the earlier one is kept


def test_harper_not_running_is_a_warning(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    code, data = _status(node)
    assert code == 1
    assert [f["code"] for f in data["findings"]] == ["harper_not_running"]
    assert data["sets"][0]["served"] is None


def test_every_finding_code_is_documented() -> None:
    # the findings table moved from the README to the status page (issue 22)
    text = (Path(__file__).resolve().parents[1] / "docs" / "monitoring" / "status.md").read_text()
    rows = [f"| `{c}` | {lvl.word} |" for c, (lvl, _) in health.FINDINGS.items()]
    missing = [row for row in rows if row not in text]
    assert missing == []
