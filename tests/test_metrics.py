"""The Prometheus textfile (parsed with prometheus_client's own parser) and the served re-check."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from daemonfix import DaemonProc, drop
from harper_certd import devca, events, health, load, metrics
from harper_certd import logs as logs_module
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from nodefix import Node, make_node
from tlsfix import LiveTlsServer

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"


def _samples(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def _fp(path: Path) -> str:
    return devca.fingerprint_of(load.parse_certificates(path.read_bytes(), name="x").certs[0])


@pytest.fixture
def served_node(tmp_path: Path) -> Iterator[tuple[Node, LiveTlsServer]]:
    node = make_node(tmp_path)
    with LiveTlsServer(node.live.cert, node.live.key) as server:
        tree = yaml.safe_load((node.root / "harperdb-config.yaml").read_text())
        tree["replication"]["securePort"] = server.port
        (node.root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
        (node.root / "hdb.pid").write_text(f"{os.getpid()}\n")
        node.config_data["verify"] = {"enabled": True, "timeout": 10, "interval": 0.1}
        node.config_data["metrics"] = {"textfile": str(tmp_path / "prom" / "harper-certd.prom")}
        (tmp_path / "prom").mkdir()
        yield node, server


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_textfile_holds_every_certificate_and_what_is_served(
    served_node: tuple[Node, LiveTlsServer],
) -> None:
    node, _ = served_node
    ctx = build_context(node.config)
    monitor = metrics.Monitor()
    try:
        monitor.tick(ctx)
    finally:
        monitor.close()
    path = node.tmp / "prom" / "harper-certd.prom"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["harper-certd.prom"]  # no temporaries
    got = _samples(path)
    certs = got["harper_certd_certificate_not_after_seconds"]
    roles = {labels["role"]: labels for labels, _ in certs}
    assert set(roles) == {"leaf", "ca"}
    assert roles["leaf"]["sha256"] == _fp(node.live.cert)
    assert roles["leaf"]["set"] == "replication"
    assert roles["leaf"]["subject"] == "CN=nodea"
    assert roles["ca"]["subject"] == "CN=Node Test Root"
    leaf_not_after = load.parse_certificates(node.live.cert.read_bytes(), name="x").certs[0]
    assert {lab["role"]: v for lab, v in certs}["leaf"] == pytest.approx(
        leaf_not_after.not_valid_after_utc.timestamp()
    )
    assert got["harper_certd_served_matches_live"] == [({"set": "replication"}, 1.0)]
    assert got["harper_certd_harper_up"] == [({}, 1.0)]
    assert got["harper_certd_health"] == [({}, 0.0)]
    assert got["harper_certd_renewal_overdue"] == [({"set": "replication"}, 0.0)]
    assert abs(got["harper_certd_textfile_written_seconds"][0][1] - time.time()) < 60


def test_rewritten_on_change_and_served_mismatch_seen(
    served_node: tuple[Node, LiveTlsServer],
) -> None:
    """A rotation rewrites the file at once; Harper serving other files (restarted by its own
    unit) is seen by the periodic re-check, reported once, and its end too."""
    node, server = served_node
    clock = FakeTime()
    monitor = metrics.Monitor(monotonic=clock)
    path = node.tmp / "prom" / "harper-certd.prom"
    try:
        ctx = build_context(node.config)
        monitor.tick(ctx)
        first = path.read_text()
        monitor.tick(ctx)  # nothing changed, not due: not rewritten
        assert path.read_text() == first
        assert install(ctx, node.source("new")).status == "installed"
        monitor.tick(ctx)
        got = _samples(path)
        leaf = [
            lab
            for lab, _ in got["harper_certd_certificate_not_after_seconds"]
            if lab["role"] == "leaf"
        ]
        assert leaf[0]["sha256"] == _fp(node.live.cert)
        ops = got["harper_certd_last_operation_seconds"]
        kinds = {lab["kind"]: lab["outcome"] for lab, _ in ops}
        assert kinds["rotation"] == "installed"
        # probed again for the write: not the pre-swap handshake compared with the new set
        assert got["harper_certd_served_matches_live"] == [({"set": "replication"}, 1.0)]
        other = devca.write_set(node.tmp / "other", devca.make_leaf(node.ca), [node.ca])
        server.cert, server.key = other.cert, other.key
        with capture_logs() as logs:
            clock.now += 61
            monitor.tick(ctx)  # first seen: not yet reported (Harper may be reloading)
            assert logs == []
            assert monitor.next_due == clock.now + metrics.MISMATCH_CONFIRM_SECONDS
            clock.now += metrics.MISMATCH_CONFIRM_SECONDS
            monitor.tick(ctx)  # still wrong 10 s later: reported
            clock.now += 61
            monitor.tick(ctx)  # still wrong: not reported twice
        mismatches = [e for e in logs if e["event"] == "certd.served_mismatch"]
        assert len(mismatches) == 1
        assert mismatches[0]["served"][0]["sha256"] == _fp(other.cert)
        assert _samples(path)["harper_certd_served_matches_live"][0][1] == 0.0
        assert _samples(path)["harper_certd_health"][0][1] == 2.0
        server.cert, server.key = node.live.cert, node.live.key
        with capture_logs() as logs:
            clock.now += 61
            monitor.tick(ctx)
        assert [e["event"] for e in logs] == ["certd.served_matches"]
        assert _samples(path)["harper_certd_served_matches_live"][0][1] == 1.0
    finally:
        monitor.close()


def test_a_write_that_fails_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.config_data["metrics"] = {"textfile": str(tmp_path / "no-such-dir" / "x.prom")}
    monitor = metrics.Monitor()
    try:
        with capture_logs() as logs:
            monitor.tick(build_context(node.config))
    finally:
        monitor.close()
    assert [e["event"] for e in logs] == ["certd.metrics_failed"]
    assert not (tmp_path / "no-such-dir").exists()


def test_the_daemon_writes_and_refreshes_the_textfile(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    prom = tmp_path / "prom"
    prom.mkdir()
    node.config_data["metrics"] = {"textfile": str(prom / "harper-certd.prom")}
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        deadline = time.monotonic() + 20
        while not (prom / "harper-certd.prom").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        before = _samples(prom / "harper-certd.prom")
        drop(node, "next")
        d.wait_for("certd.set_installed")
        new_fp = node.live_fingerprint()
        deadline = time.monotonic() + 20
        leaf: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            got = _samples(prom / "harper-certd.prom")
            leaf = [
                lab
                for lab, _ in got["harper_certd_certificate_not_after_seconds"]
                if lab["role"] == "leaf"
            ]
            if leaf and leaf[0]["sha256"] == new_fp:
                break
            time.sleep(0.1)
        assert d.stop() == 0
    assert before["harper_certd_health"]
    assert leaf[0]["sha256"] == new_fp


# --- promtool, where Debian's prometheus package is installed ------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


def test_alert_rules_parse_and_name_each_alert() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert names == {
        "HarperCertdCertificateExpiresIn14Days",
        "HarperCertdCertificateExpiresIn7Days",
        "HarperCertdRenewalOverdue",
        "HarperCertdServedNotLive",
        "HarperCertdRolledBack",
        "HarperCertdSetHeld",
        "HarperCertdTextfileStale",
        "HarperCertdCritical",
        # issue 17 item 8 (tests/test_alert_rules.py)
        "HarperCertdSetRefused",
        "HarperCertdRestoreUnverified",
        "HarperCertdInstalledUnverified",
        "HarperCertdHarperDown",
        "HarperCertdRenewalFailing",
        "HarperCertdOperatorRollback",
        # issue 18 item 2 (tests/test_peer_hold_harper.py)
        "HarperCertdSetHeldForPeers",
    }
    # every metric the rules use is one the textfile writes
    text = ALERTS.read_text()
    for metric in (
        "certificate_not_after_seconds",
        "renewal_overdue",
        "served_matches_live",
        "last_operation_seconds",
        "set_held",
        "set_held_for_peers",
        "textfile_written_seconds",
        "health",
    ):
        assert f"harper_certd_{metric}" in text
        assert f"harper_certd_{metric}" in Path(metrics.__file__).read_text()


@needs_promtool
def test_promtool_checks_rules_and_the_textfile(
    served_node: tuple[Node, LiveTlsServer],
) -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    node, _ = served_node
    monitor = metrics.Monitor()
    try:
        monitor.tick(build_context(node.config))
    finally:
        monitor.close()
    text = (node.tmp / "prom" / "harper-certd.prom").read_text()
    lint = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


@needs_promtool
def test_promtool_unit_test_of_the_alerts(tmp_path: Path) -> None:
    """The rules fire on the series they are for (promtool's own rule unit tests)."""
    assert PROMTOOL is not None
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    spec: dict[str, Any] = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": "harper_certd_served_matches_live"
                        '{set="replication",instance="n1"}',
                        "values": "1 1 0x10",
                    },
                    {
                        "series": 'harper_certd_textfile_written_seconds{instance="n1"}',
                        "values": "0 60 120 120x10",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "8m",
                        "alertname": "HarperCertdServedNotLive",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "set": "replication",
                                    "instance": "n1",
                                },
                                "exp_annotations": {
                                    "summary": "Harper on n1 serves another "
                                    "certificate than the live set "
                                    "replication"
                                },
                            }
                        ],
                    },
                    {"eval_time": "1m", "alertname": "HarperCertdServedNotLive", "exp_alerts": []},
                    {
                        "eval_time": "9m",
                        "alertname": "HarperCertdTextfileStale",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "instance": "n1"},
                                "exp_annotations": {
                                    "summary": "harper-certd on n1 has not "
                                    "written its metrics for 5 minutes: the "
                                    "daemon is dead or stuck"
                                },
                            }
                        ],
                    },
                    {"eval_time": "3m", "alertname": "HarperCertdTextfileStale", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "t.yml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "t.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_mismatch_gone_within_the_confirmation_is_never_reported(
    served_node: tuple[Node, LiveTlsServer],
) -> None:
    """Harper reloading a hand-changed set (~1.6 s) is not a served_mismatch."""
    node, server = served_node
    clock = FakeTime()
    monitor = metrics.Monitor(monotonic=clock)
    try:
        ctx = build_context(node.config)
        other = devca.write_set(node.tmp / "other", devca.make_leaf(node.ca), [node.ca])
        server.cert, server.key = other.cert, other.key
        with capture_logs() as logs:
            monitor.tick(ctx)
            server.cert, server.key = node.live.cert, node.live.key  # reloaded
            clock.now += metrics.MISMATCH_CONFIRM_SECONDS
            monitor.tick(ctx)
        assert [e["event"] for e in logs] == []
        assert monitor.mismatch is False
    finally:
        monitor.close()


def test_a_failing_probe_never_breaks_the_cycle(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.config_data["verify"] = {"enabled": True}

    def broken(ctx: object) -> None:
        raise RuntimeError("probe exploded")

    monitor = metrics.Monitor(probe=broken)
    try:
        with capture_logs() as logs:
            monitor.tick(build_context(node.config))
    finally:
        monitor.close()
    assert [(e["event"], e["error"]) for e in logs] == [
        (
            "certd.metrics_failed",
            "RuntimeError (message withheld: a library's text may quote its input)",
        )
    ]


def test_the_last_operation_is_timed_by_the_clock_the_monitor_is_given() -> None:
    """An operation's time is the daemon's clock (HARPER_CERTD_CLOCK in tests), not the
    system's; its kind and outcome come from the event's record (events.OPERATIONS)."""
    at = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    monitor = metrics.Monitor(now=lambda: at)
    logs_module.configure(json=True, stream=io.StringIO())
    try:
        logs_module.emit(events.RolledBack("4", "3", "verify failed", "ab" * 32))
        logs_module.emit(events.SetDetected("/srv/incoming/new"))  # not an operation
    finally:
        monitor.close()
        logs_module.configure()
    assert monitor.operations == {
        "rollback": health.Operation("rollback", "rolled_back", at, ""),
    }
    assert monitor.dirty.is_set()
