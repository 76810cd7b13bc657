"""The alert rules of issue 17 item 8 (contrib/prometheus/alerts.yml): refused and
unverified sets, Harper down, renewal failing, and an operator's rollback told apart from
the daemon's own, each proven by ``promtool test rules`` on recorded series
(contrib/prometheus/alerts_test.yml).

promtool: Debian's ``prometheus`` package (``apt-get install -y prometheus``).  Without it
the promtool test is skipped on a workstation but FAILS under CI (``CI`` set): the rules
must be proven where the suite is the gate.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harper_certd import health, metrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "contrib" / "prometheus" / "alerts.yml"
CASES = ROOT / "contrib" / "prometheus" / "alerts_test.yml"
NEW = {
    "HarperCertdSetRefused": "refused",
    "HarperCertdRestoreUnverified": "rollback_failed",
    "HarperCertdInstalledUnverified": None,
    "HarperCertdHarperDown": None,
    "HarperCertdRenewalFailing": "renewal_failing",
    "HarperCertdOperatorRollback": None,
}


def _rules() -> dict[str, dict[str, object]]:
    data = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in data["groups"] for r in g["rules"]}


def test_each_new_alert_has_a_promtool_case_and_real_inputs() -> None:
    rules = _rules()
    cases = yaml.safe_load(CASES.read_text())
    tested = {t["alertname"] for c in cases["tests"] for t in c["alert_rule_test"]}
    for name, finding in NEW.items():
        assert name in rules, name
        assert name in tested, f"{name} has no promtool case"
        if finding is not None:  # a finding code the status and the textfile really have
            assert finding in health.FINDINGS, finding
            assert f'code="{finding}"' in str(rules[name]["expr"])
    # the daemon's own rollback and an operator's are different alerts
    assert 'outcome!="operator"' in str(rules["HarperCertdRolledBack"]["expr"])
    assert 'outcome="operator"' in str(rules["HarperCertdOperatorRollback"]["expr"])
    assert "HarperCertdRolledBack" in tested
    # every metric the rules use is one the textfile writes
    source = Path(metrics.__file__).read_text()
    for metric in set(re.findall(r"harper_certd_\w+", RULES.read_text())):
        assert metric in source, metric


def test_promtool_proves_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing under CI: apt-get install -y prometheus")
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    shutil.copy(RULES, tmp_path / "alerts.yml")
    shutil.copy(CASES, tmp_path / "alerts_test.yml")
    for argv in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            [promtool, *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_expectation_fails(tmp_path: Path) -> None:
    """The cases can fail: an operator's rollback expected under HarperCertdRolledBack is
    refused by promtool (so a rule that stopped telling them apart would be caught)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing under CI: apt-get install -y prometheus")
        pytest.skip("promtool not installed (apt-get install -y prometheus)")
    shutil.copy(RULES, tmp_path / "alerts.yml")
    cases = yaml.safe_load(CASES.read_text())
    for test in cases["tests"][0]["alert_rule_test"]:
        if test["alertname"] == "HarperCertdRolledBack":
            test["exp_alerts"][0]["exp_labels"]["outcome"] = "operator"
            test["exp_alerts"][0]["exp_labels"]["instance"] = "n4"
    (tmp_path / "t.yml").write_text(yaml.safe_dump(cases))
    done = subprocess.run(
        [promtool, "test", "rules", "t.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0, done.stdout
