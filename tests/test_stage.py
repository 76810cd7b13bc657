"""harper-certd stage: certbot's and step's real layouts handed to the real daemon."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from daemonfix import DaemonProc
from harper_certd import devca, stage
from nodefix import Node, make_node


def _tree(folder: Path) -> dict[str, tuple[str, str | None, int]]:
    """Every entry under ``folder``: content digest, link target, mode (to prove no change)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        link = os.readlink(path) if path.is_symlink() else None
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        out[str(path.relative_to(folder))] = (digest, link, os.lstat(path).st_mode)
    return out


def certbot_lineage(node: Node, name: str = "nodea", version: int = 2) -> Path:
    """certbot's real layout: live/<name>/*.pem are relative links into archive/<name>/*N.pem."""
    base = node.tmp / "letsencrypt"
    archive = base / "archive" / name
    live = base / "live" / name
    archive.mkdir(parents=True, exist_ok=True)
    live.mkdir(parents=True, exist_ok=True)
    leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    files = {
        "cert": leaf.cert_pem,
        "chain": node.ca.cert_pem,
        "fullchain": leaf.cert_pem + node.ca.cert_pem,
        "privkey": leaf.key_pem,
    }
    for kind, data in files.items():
        target = archive / f"{kind}{version}.pem"
        target.write_bytes(data)
        os.chmod(target, 0o600 if kind == "privkey" else 0o644)
        link = live / f"{kind}.pem"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(f"../../archive/{name}/{kind}{version}.pem")
    for folder in (base, base / "archive", base / "live", archive, live):
        os.chmod(folder, 0o755)  # noqa: S103 - certbot's own modes for live/ (archive is 0700)
    return live


def _stage(node: Node, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "harper_certd",
            "stage",
            *args,
            "--config",
            str(node.write_config()),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@pytest.fixture
def node(tmp_path: Path) -> Node:
    n = make_node(tmp_path)
    n.config_data["watch"] = {"settle_seconds": 0.3}
    (n.root / "keys" / "incoming").mkdir(parents=True)
    n.state.mkdir()
    return n


def test_certbot_deploy_hook_end_to_end(node: Node) -> None:
    """`stage "$RENEWED_LINEAGE" --wait` with certbot's live/ links: installed, exit 0, and
    certbot's files and links are exactly as they were."""
    live = certbot_lineage(node)
    before = _tree(node.tmp / "letsencrypt")
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        done = _stage(node, str(live), "--wait", "--timeout", "60")
        assert done.returncode == 0, done.stdout + done.stderr
        installed = d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert "installed" in done.stdout
    assert _tree(node.tmp / "letsencrypt") == before
    assert node.live_fingerprint() == installed["fingerprint"]
    assert installed["fingerprint"] == devca.fingerprint_of(
        devca.load_cert((live / "cert.pem").read_bytes())
    )


def test_step_renew_in_place_with_explicit_files(node: Node) -> None:
    """step keeps its files in place and needs them next time: --cert/--key/--ca copies."""
    step = node.tmp / "step"
    leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    step.mkdir()
    (step / "node.crt").write_bytes(leaf.cert_pem)
    devca.write_private(step / "node.key", leaf.key_pem)
    (step / "root_ca.crt").write_bytes(node.ca.cert_pem)
    before = _tree(step)
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        done = _stage(
            node,
            "--cert",
            str(step / "node.crt"),
            "--key",
            str(step / "node.key"),
            "--ca",
            str(step / "root_ca.crt"),
            "--wait",
            "--timeout",
            "60",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert d.stop() == 0
    assert _tree(step) == before
    assert node.live_fingerprint() == devca.fingerprint_of(leaf.cert)


def test_refused_set_exits_1_and_a_rollback_exits_3(node: Node) -> None:
    bad = node.source("bad", leaf=devca.make_leaf(node.ca, "elsewhere", dns=["elsewhere"]))
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        refused = _stage(node, str(bad), "--wait", "--timeout", "60")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "refused" in refused.stdout
        node.fail_restarts()
        rolled = _stage(node, str(node.source("good")), "--wait", "--timeout", "60")
        assert rolled.returncode == 3, rolled.stdout + rolled.stderr
        assert d.stop() == 0
    assert bad.is_dir()  # the source is never moved


def test_staged_folder_is_whole_private_and_owned_by_the_state_owner(node: Node) -> None:
    live = certbot_lineage(node)
    if os.geteuid() == 0:
        os.chown(node.state, 65534, 65534)  # the daemon's user (nobody, for the test)
    files = stage.read_folder(live, {0, os.geteuid()})
    staged = stage.stage_files(
        files,
        node.root / "keys" / "incoming",
        stage.owner_of(node.state, node.root / "keys" / "incoming"),
    )
    entries = list((node.root / "keys" / "incoming").iterdir())
    assert entries == [staged.path]  # no dot-folder left behind
    assert sorted(p.name for p in staged.path.iterdir()) == ["fullchain.pem", "privkey.pem"]
    key = os.stat(staged.path / "privkey.pem")
    assert stat.S_IMODE(key.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(staged.path).st_mode) == 0o700
    if os.geteuid() == 0:
        assert (key.st_uid, key.st_gid) == (65534, 65534)
        assert os.stat(staged.path).st_uid == 65534


def test_incomplete_or_unsafe_sources_stage_nothing(node: Node) -> None:
    half = node.tmp / "half"
    half.mkdir()
    (half / "fullchain.pem").write_bytes(node.ca.cert_pem)
    done = _stage(node, str(half))
    assert done.returncode == 1
    assert "source_incomplete" in done.stderr
    os.chmod(half, 0o777)  # noqa: S103 - the unsafe case under test
    (half / "privkey.pem").write_bytes(b"x")
    done = _stage(node, str(half))
    assert done.returncode == 1
    assert "source_unsafe" in done.stderr
    assert list((node.root / "keys" / "incoming").iterdir()) == []
    wrong = _stage(node, "--set", "public", str(half))
    assert wrong.returncode == 2
    assert "no set named 'public'" in wrong.stderr


def test_no_daemon_no_outcome(node: Node) -> None:
    done = _stage(node, str(node.source("x")), "--wait", "--timeout", "1")
    assert done.returncode == 4
    assert "is the daemon running" in done.stdout


def _cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harper_certd", *args, "--config", str(node.write_config())],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_install_dry_run_changes_nothing(node: Node) -> None:
    live_before = _tree(node.root / "keys")
    good = node.source("good")
    done = _cli(node, "install", "--dry-run", str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "would install; nothing was changed" in done.stdout
    bad = node.source("bad", leaf=devca.make_leaf(node.ca, "elsewhere", dns=["elsewhere"]))
    refused = _cli(node, "install", "--dry-run", "--json", str(bad))
    assert refused.returncode == 1
    assert '"would": "refuse"' in refused.stdout
    assert "hostname_mismatch" in refused.stdout or "node_name_not_verbatim" in refused.stdout
    assert _tree(node.root / "keys") == live_before
    assert good.is_dir()
    assert bad.is_dir()
    assert node.restarts() == 0


def test_install_keep_source_leaves_the_folder(node: Node) -> None:
    src = node.source("kept")
    before = _tree(src)
    done = _cli(node, "install", "--keep-source", str(src))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _tree(src) == before
    assert node.live_fingerprint() == devca.fingerprint_of(
        devca.load_cert((src / "certificate.pem").read_bytes())
    )


def test_install_keep_source_refused_hint_names_the_source_given(node: Node) -> None:
    """With --keep-source a refusal's hint names SOURCE, which stays, not the copy filed in
    rejected/ (a newcomer was told to --force-older the rejected copy)."""
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    src = node.source("older", not_after=soon)  # expires before the live set
    done = _cli(node, "install", "--keep-source", str(src))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "older_than_live" in done.stdout
    assert f"harper-certd install --force-older {src}" in done.stdout
    assert src.is_dir()
    # the copy filed in rejected/ is said to be a copy, named after install (not "stage-")
    [(kept, given)] = re.findall(
        r"The copy is kept in (\S+); (\S+) stays as it is\.$", done.stdout, re.M
    )
    assert given == str(src)
    assert Path(kept).parent == node.root / "keys" / "rejected"
    assert "-install-" in Path(kept).name
    assert "The source is kept in" not in done.stdout


def test_the_shipped_certbot_deploy_hook(node: Node) -> None:
    """contrib/certbot/deploy-hook.sh as certbot runs it: RENEWED_LINEAGE set, no arguments."""
    hook = Path(__file__).resolve().parents[1] / "contrib" / "certbot" / "deploy-hook.sh"
    live = certbot_lineage(node, version=3)
    env = {
        **os.environ,
        "RENEWED_LINEAGE": str(live),
        "HARPER_CERTD": str(Path(sys.executable).parent / "harper-certd"),
        "HARPER_CERTD_CONFIG": str(node.write_config()),
    }
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        done = subprocess.run(
            ["/bin/sh", str(hook)], env=env, capture_output=True, text=True, check=False, timeout=90
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert d.stop() == 0
    assert node.live_fingerprint() == devca.fingerprint_of(
        devca.load_cert((live / "cert.pem").read_bytes())
    )
