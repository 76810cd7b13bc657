"""What operators read (issue 17 item 8): ``status`` warns from the first failed renewal
with its reason and next attempt; durations under a day in hours/minutes; ``fleet``
critical within the last threshold; ``stage --wait`` says the outcome and why; a hint
names a folder that exists; an operator's rollback told apart from the daemon's own; the
CLI's own log lines in JSON when the configuration asks for JSON.

Real command-line processes and one real daemon subprocess (about 45 s in all, 25 s of it the
daemon's test)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from daemonfix import DaemonProc
from harper_certd import devca, health, hints
from harper_certd.install.context import build_context
from nodefix import make_node, run_cli, status_json


def test_status_warns_from_the_first_failed_renewal_and_stage_wait_says_why(
    tmp_path: Path,
) -> None:
    node = make_node(tmp_path)
    # In the renewal window at once, overdue only ~45 days from now: a failure is the news.
    node.config_data["renew"] = {
        "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
        "before_days": 200,
        "backoff_initial": 3600,
    }
    config = str(node.write_config())
    code, before = status_json(node, "--no-probe")
    assert (code, before["health"]) == (0, "ok"), before["findings"]
    with DaemonProc(node) as d:
        failed = d.wait_for("certd.renewal_failed")
        assert failed["failures"] == 1
        code, data = status_json(node, "--no-probe")
        assert code == 1
        assert data["health"] == "warning"
        [finding] = [f for f in data["findings"] if f["code"] == "renewal_failing"]
        assert "the command exited 3" in finding["message"]
        assert failed["next_attempt"] in finding["message"]
        assert not [f for f in data["findings"] if f["code"] == "renewal_overdue"]
        text = run_cli("status", "--no-probe", "--config", config)
        assert text.returncode == 1
        assert text.stdout.startswith("WARNING: node nodea")
        assert "warning: renewal_failing: renewal failed 1 time(s)" in text.stdout

        # stage --wait: a refused set says its codes and reason, where it is kept
        bad = node.source("bad")
        devca.write_private(bad / "privateKey.pem", devca.make_leaf(node.ca).key_pem)
        refused = run_cli("stage", "--wait", "--timeout", "60", "--config", config, str(bad))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        line = refused.stdout.splitlines()[-1]
        assert line.startswith("refused; nothing changed: key_mismatch (at the "), line
        assert "/keys/rejected/" in line

        # an installed one says its generation
        good = node.source("good")
        done = run_cli("stage", "--wait", "--timeout", "60", "--config", config, str(good))
        assert done.returncode == 0, done.stdout + done.stderr
        generation = build_context(node.config).store.current_id()
        assert f"processed: installed as generation {generation} (kept in " in done.stdout
        # the same set again: filed, no new generation, told apart from an install
        again = run_cli("stage", "--wait", "--timeout", "60", "--config", config, str(good))
        assert again.returncode == 0, again.stdout + again.stderr
        assert (
            f"processed: unchanged: the same certificate is live already (generation "
            f"{generation})" in again.stdout
        ), again.stdout
        # the new leaf is not the one the failed renewal was for: no longer "failing"
        _, after = status_json(node, "--no-probe")
        assert not [f for f in after["findings"] if f["code"] == "renewal_failing"]
        assert d.stop() == 0


def test_minutes_not_days_and_fleet_critical_in_the_last_threshold(tmp_path: Path) -> None:
    """A leaf three minutes from its notAfter: "3 min left" (never "0.0 days"), and fleet
    is critical (within expiry.warn_days' last threshold, 1 day) whatever the node said."""
    node = make_node(tmp_path)
    now = dt.datetime.now(dt.UTC)
    leaf = devca.make_leaf(
        node.ca,
        "nodea",
        dns=["nodea"],
        ips=["127.0.0.2"],
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(minutes=3, seconds=30),
    )
    devca.write_set(node.live.cert.parent, leaf, [node.ca])
    config = str(node.write_config())
    text = run_cli("status", "--no-probe", "--config", config).stdout
    assert re.search(r"(?<![\d.])-?0\.0 days", text) is None, text
    assert "3 min left" in text or "2 min left" in text, text
    done = run_cli("status", "--json", "--no-probe", "--config", config)
    data = json.loads(done.stdout)
    assert data["health"] == "warning"  # renewal overdue; the node does not say critical
    (tmp_path / "n.json").write_text(done.stdout)
    fleet = run_cli("fleet", str(tmp_path / "n.json"))
    assert fleet.returncode == 2, fleet.stdout
    leaf_row = next(line for line in fleet.stdout.splitlines() if " leaf " in line)
    assert " critical " in leaf_row
    assert " min " in leaf_row or leaf_row.split()[4] == "min", leaf_row
    assert re.search(r"(?<![\d.])-?0\.0", leaf_row) is None, leaf_row
    validate = run_cli(
        "validate",
        "--cert",
        str(node.live.cert),
        "--key",
        str(node.live.key),
        "--ca",
        str(node.ca_file),
    ).stdout
    assert "min left)" in validate, validate


def test_hint_names_where_the_source_is_now_and_logs_are_json(tmp_path: Path) -> None:
    """older_than_live's hint names the folder as filed in rejected/ (it exists); with
    log.format: json the CLI's own log lines are JSON."""
    node = make_node(tmp_path)
    node.config_data["log"] = {"format": "json"}
    config = str(node.write_config())
    older = node.source("older", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    done = run_cli("install", "--config", config, str(older))
    assert done.returncode == 1, done.stdout + done.stderr
    [hint] = [line for line in done.stdout.splitlines() if "older_than_live" in line]
    named = hint.rsplit("harper-certd install --force-older ", 1)[1]
    assert not older.exists()
    assert "/keys/rejected/" in named
    assert os.path.isdir(named), hint
    # the events the command logged (certd.set_refused...) are JSON lines on stderr
    logged = [line for line in done.stderr.splitlines() if line.strip()]
    assert logged, done.stderr
    for line in logged:
        assert line.startswith("<"), line
        assert json.loads(line.split(">", 1)[1])["event"], line
    # the daemon's line and reason.json name it there too (a newcomer ran the logged
    # command, naming incoming/, and got source_unreadable)
    [refused] = [
        e
        for e in (json.loads(x.split(">", 1)[1]) for x in logged)
        if e["event"] == "certd.set_refused"
    ]
    assert refused["reason"].rsplit("--force-older ", 1)[1] == named == refused["kept_at"]
    kept = json.loads((Path(named) / "reason.json").read_text())
    [message] = [p["message"] for p in kept["problems"] if p["code"] == "older_than_live"]
    assert message.rsplit("--force-older ", 1)[1] == named


def test_a_refusal_is_said_once_on_the_console(tmp_path: Path) -> None:
    """A newcomer saw install's refusal twice: the certd.set_refused console line carried the
    reason the command prints itself. The console leaves that event out (the journal and
    JSON lines keep it: the test above); the sentence is printed once, the other events stay."""
    node = make_node(tmp_path)
    config = str(node.write_config())
    installed = run_cli("install", "--config", config, str(node.source("new")))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "certd.set_installed" in installed.stderr  # the command's other events stay
    older = node.source("older", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
    done = run_cli("install", "--config", config, str(older))
    assert done.returncode == 1, done.stdout + done.stderr
    [hint] = [line for line in done.stdout.splitlines() if "older_than_live" in line]
    sentence = hint.split("older_than_live: ", 1)[1]
    assert (done.stdout + done.stderr).count(sentence) == 1, done.stdout + done.stderr
    assert "certd.set_refused" not in done.stderr, done.stderr


def test_an_operators_rollback_is_told_apart(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    config = str(node.write_config())
    assert run_cli("install", "--config", config, str(node.source("new"))).returncode == 0
    back = run_cli("rollback", "--config", config)
    assert back.returncode == 0, back.stdout + back.stderr
    snap = health.snapshot(build_context(node.config), served=False)
    assert snap.last["rollback"].outcome == "operator"
    _, data = status_json(node, "--no-probe")
    assert data["last"]["rollback"]["outcome"] == "operator"


def test_a_relative_source_named_like_a_word_leaves_the_sentence_whole(tmp_path: Path) -> None:
    """A newcomer ran `install expired` and `install key` from the folders' parent: the
    refusal's sentence had every "expired" and "key" replaced by the rejected/ folder."""
    node = make_node(tmp_path)
    config = str(node.write_config())
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    made = {
        "expired": node.source("expired", not_before=past - dt.timedelta(days=30), not_after=past),
        "key": node.source("key"),
    }
    made["key"].joinpath("privateKey.pem").write_bytes(devca.make_ca("other key").key_pem)
    outputs = {}
    for name, folder in made.items():
        done = subprocess.run(
            [sys.executable, "-m", "harper_certd", "install", "--config", config, name],
            cwd=folder.parent,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        outputs[name] = done.stdout
    assert "error: expired: The certificate expired on " in outputs["expired"]
    assert "error: key_mismatch: The private key (" in outputs["key"]
    for out in outputs.values():
        [kept] = re.findall(r"The source is kept in (\S+)\.$", out, re.M)
        assert Path(kept).parent == node.root / "keys" / "rejected"
        assert out.count(kept) == 1, out  # named where it is kept, and nowhere else


def test_moved_replaces_the_folder_standing_as_a_path(tmp_path: Path) -> None:
    src, kept = tmp_path / "set", tmp_path / "rejected" / "x-set"
    kept.mkdir(parents=True)
    message = f"{src}/ca.pem is empty; {src}2 and {src}.bak are others; run install {src}."
    assert hints.moved(message, src, kept) == (
        f"{kept}/ca.pem is empty; {src}2 and {src}.bak are others; run install {kept}."
    )
    assert hints.moved("set is a word", "set", kept) == "set is a word"  # relative: left
    assert hints.moved("set is a word", "set", None) == "set is a word"  # nothing appended


def test_refusals_name_the_files_read(tmp_path: Path) -> None:
    """A refusal names the file it is about as read (``.../ca.pem``, certbot's
    ``privkey.pem``), never a role ("<folder>/CA file", which a newcomer was shown)."""
    node = make_node(tmp_path)
    config = str(node.write_config())
    damaged = node.source("damaged-ca")
    (damaged / "ca.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        + (damaged / "ca.pem").read_bytes()
    )
    dry = run_cli("install", "--dry-run", "--config", config, str(damaged))
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert f"ca_unreadable: {damaged}/ca.pem: " in dry.stdout + dry.stderr
    assert "CA file:" not in dry.stdout + dry.stderr
    certbot = node.source("certbot-style")
    (certbot / "certificate.pem").rename(certbot / "fullchain.pem")
    (certbot / "privateKey.pem").unlink()
    devca.write_private(certbot / "privkey.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n")
    done = run_cli("install", "--dry-run", "--config", config, str(certbot))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"key_unreadable: {certbot}/privkey.pem" in done.stdout + done.stderr, done.stdout
    # an empty file says which and how to fix it, for each of the three
    for name, fix in (
        ("certificate.pem", "write the certificate into it"),
        ("privateKey.pem", "write the certificate's private key into it"),
        ("ca.pem", "put the CA certificates into it"),
    ):
        empty = node.source(f"empty-{name}")
        (empty / name).write_bytes(b"")
        said = run_cli("install", "--dry-run", "--config", config, str(empty)).stdout
        assert f"{empty}/{name} is empty; Fix: {fix}" in said, said


def test_a_source_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    """`install` and `stage` given a SOURCE that does not exist exit 2 (usage, as `validate`
    for a missing file; a newcomer got 1, "refused"), saying so; nothing is filed."""
    node = make_node(tmp_path)
    config = str(node.write_config())
    missing = tmp_path / "no-such-set"
    for command in ("install", "stage"):
        done = run_cli(command, "--config", config, str(missing))
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert f"harper-certd {command}: {missing} does not exist" in done.stderr
    assert not list((node.root / "keys").glob("rejected/*"))


def test_harper_names_without_ca_pem_take_the_live_ca_file(tmp_path: Path) -> None:
    """`certificate.pem` + `privateKey.pem` without `ca.pem` go in with the live CA file, as
    certbot's names do (a newcomer's second set from the same CA was refused as "holds no
    set" while the same files named cert.pem + privkey.pem went in); `stage` hands the
    daemon the two files."""
    node = make_node(tmp_path)
    config = str(node.write_config())
    two = node.source("two-files")
    (two / "ca.pem").unlink()
    dry = run_cli("install", "--dry-run", "--config", config, str(two))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    done = run_cli("install", "--config", config, str(two))
    assert done.returncode == 0, done.stdout + done.stderr
    [filed] = (node.root / "keys" / "processed").glob("*-two-files")
    filed_leaf = devca.load_cert((filed / "certificate.pem").read_bytes())
    assert node.live_fingerprint() == devca.fingerprint_of(filed_leaf)
    assert (node.root / "keys" / "ca.pem").read_bytes() == node.ca.cert_pem
    (node.root / "keys" / "incoming").mkdir()  # as the daemon makes it at start
    staged_from = node.source("two-more")
    (staged_from / "ca.pem").unlink()
    staged = run_cli("stage", "--config", config, str(staged_from))
    assert staged.returncode == 0, staged.stdout + staged.stderr
    [folder] = [p for p in (node.root / "keys" / "incoming").iterdir() if p.is_dir()]
    assert sorted(os.listdir(folder)) == ["certificate.pem", "privateKey.pem"]


def test_status_of_a_node_before_its_first_install(tmp_path: Path) -> None:
    """Before the first install `status` says there are no generations yet and that the live
    files are adopted at the first install (a newcomer saw two empty headings); after it,
    generation 000001 is the adopted files and 000002 the set."""
    node = make_node(tmp_path)
    config = str(node.write_config())
    before = run_cli("status", "--no-probe", "--config", config)
    assert before.returncode == 0, before.stdout + before.stderr
    text = before.stdout
    assert "generations:\n   none yet: the live files are adopted as generation 000001" in text
    assert "last operations:\n   none yet" in text
    assert run_cli("install", "--config", config, str(node.source("first"))).returncode == 0
    after = run_cli("status", "--no-probe", "--config", config).stdout
    assert "none yet" not in after
    assert " 000001 " in after
    assert "* 000002 " in after


def test_a_folder_with_another_key_is_warned_about(tmp_path: Path) -> None:
    """A CA's key left in the set's folder (the recipe run in one folder) is named in a
    ``source_other_key`` warning before the folder, key and all, is filed in processed/;
    the set itself goes in."""
    node = make_node(tmp_path)
    config = str(node.write_config())
    folder = node.source("with-root-key")
    devca.write_private(folder / "root.key", devca.key_pem(devca.make_key()))
    (folder / "node.csr").write_text("not a key\n")
    dry = run_cli("install", "--dry-run", "--config", config, str(folder))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "warning: source_other_key: " in dry.stdout
    assert "also holds root.key, named like a private key" in dry.stdout
    assert "node.csr" not in dry.stdout
    done = run_cli("install", "--json", "--config", config, str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    outcome = json.loads(done.stdout)
    assert [p["code"] for p in outcome["problems"]] == ["source_other_key"]
    assert (Path(outcome["kept_at"]) / "root.key").exists()  # filed whole, as it says
    plain = node.source("plain")
    assert "source_other_key" not in run_cli("install", "--config", config, str(plain)).stdout
