"""The store in real operations (issue 9 items 4, 5, 7, 11, 15, 16; issue 10 item 7).

Each test is one situation from those issues, run through the real CLI or the real daemon
subprocess on real files (real users where ownership matters, real tmpfs mounts where the
disk is full or read-only); each fails on the code before the fix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemonfix import DaemonProc, drop
from harper_certd import devca, logs, retention
from harper_certd.config import RetentionSection
from harper_certd.install import pipeline
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from nodefix import Node, make_node
from rootsfix import strangers

FAST = {"watch": {"settle_seconds": 0.3}}


def _python_for(user: str | None) -> tuple[list[str], dict[str, str] | None]:
    """An interpreter ``user`` can run, with this package and its dependencies importable.

    The venv's python may be a link into root's 0700 home (pyenv): then the system python
    of the same minor version runs with the venv's site-packages on PYTHONPATH.
    """
    if user is None:
        return [sys.executable], None
    with contextlib.suppress(PermissionError):
        probe = subprocess.run(
            [sys.executable, "-c", "import harper_certd"],
            user=user,
            capture_output=True,
            check=False,
            cwd="/",
        )
        if probe.returncode == 0:
            return [sys.executable], None
    system = Path(f"/usr/bin/python3.{sys.version_info.minor}")
    if not system.exists():
        pytest.skip(f"no interpreter {user} can run ({sys.executable} is not reachable)")
    import harper_certd

    site = next(p for p in sys.path if p.endswith("site-packages"))
    path = f"{Path(harper_certd.__file__).resolve().parents[1]}:{site}"
    return [str(system)], {"PATH": "/usr/bin:/bin", "PYTHONPATH": path}


def _cli(
    node: Node, *args: str, user: str | None = None, cfg: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cfg = cfg or node.write_config()
    python, env = _python_for(user)
    return subprocess.run(
        [*python, "-m", "harper_certd", *args, "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        user=user,
        env=env,
        cwd="/",
    )


def _fp(pem: bytes) -> str:
    return devca.fingerprint_of(devca.load_cert(pem))


def _meta(node: Node, gen: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((node.state / "generations" / gen / "meta.json").read_text())
    return data


# --- item 5: the adopted generation records its certificate --------------------------------


def test_adopted_generation_records_certificate_and_rolls_back(tmp_path: Path) -> None:
    """Adoption records fingerprint, subject and not_after; status never says "None until
    None"; a rollback to the adopted generation works (real CLI processes)."""
    node = make_node(tmp_path)
    original = node.live_fingerprint()
    first = _cli(node, "install", str(node.source("one")))
    assert first.returncode == 0, first.stderr
    adopted = _meta(node, "000001")
    assert adopted["outcome"] == "adopted"
    assert adopted["fingerprint"] == original
    assert adopted["subject"] == "CN=nodea"
    assert dt.datetime.fromisoformat(adopted["not_after"]) > dt.datetime.now(dt.UTC)
    assert adopted["record_name"] == "nodea"
    # A store adopted by an earlier release has no such keys: they are read from the file.
    meta_path = node.state / "generations" / "000001" / "meta.json"
    legacy = {k: v for k, v in adopted.items() if k not in ("fingerprint", "subject", "not_after")}
    meta_path.write_text(json.dumps(legacy))
    human = _cli(node, "status")
    # Exit 1 (Nagios warning): the only finding is that no Harper runs beside this store.
    assert human.returncode == 1, human.stderr
    assert [
        x.split(":")[1].strip() for x in human.stdout.splitlines() if x.startswith("  warning:")
    ] == ["harper_not_running"], human.stdout
    assert "None" not in human.stdout, human.stdout
    line = next(x for x in human.stdout.splitlines() if "000001" in x)
    assert "CN=nodea" in line
    status = json.loads(_cli(node, "status", "--json").stdout)
    assert status["generations"][0]["fingerprint"] == original
    back = _cli(node, "rollback", "000001")
    assert back.returncode == 0, back.stdout + back.stderr
    assert node.live_fingerprint() == original


def test_restart_method_none_says_not_verified(tmp_path: Path) -> None:
    """With ``restart.method: none`` the daemon's ``certd.set_installed`` says verified: false."""
    node = make_node(tmp_path, method="none", extra=json.loads(json.dumps(FAST)))
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        drop(node, "a")
        installed = d.wait_for("certd.set_installed")
        assert d.stop() == 0
    assert installed["verified"] is False
    assert installed["method"] == "none"


# --- item 7: `cp` over a live path ----------------------------------------------------------


def test_generation_files_are_read_only(tmp_path: Path) -> None:
    """Once written, a generation's certificate and CA file are 0444, its key 0400."""
    node = make_node(tmp_path)
    assert install(build_context(node.config), node.source("a")).status == "installed"
    for gen in ("000001", "000002"):
        folder = node.state / "generations" / gen
        modes = {
            n: stat.S_IMODE(os.stat(folder / n).st_mode)
            for n in ("certificate.pem", "privateKey.pem", "ca.pem")
        }
        assert modes == {"certificate.pem": 0o444, "privateKey.pem": 0o400, "ca.pem": 0o444}


@pytest.mark.parametrize("pristine", [True, False], ids=["pristine-copy", "no-copy"])
def test_cp_over_live_path_is_a_live_change_not_a_changed_generation(
    tmp_path: Path, pristine: bool
) -> None:
    """`cp` (as root, which ignores 0444) through the live links: the daemon takes the new set
    in as a live change.  The overwritten generation is put back from its pristine copy
    (issue 17 item 5) and can be rolled back to; without a copy (a generation written by an
    older release) it is marked and rollback refuses it."""
    node = make_node(tmp_path, extra=json.loads(json.dumps(FAST)))
    original = node.live_fingerprint()
    assert install(build_context(node.config), node.source("a")).status == "installed"
    installed_fp = node.live_fingerprint()
    if not pristine:
        shutil.rmtree(node.state / "pristine" / "000002")
    hand = node.source("by-hand")
    hand_fp = _fp((hand / "certificate.pem").read_bytes())
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        for name in ("privateKey.pem", "ca.pem", "certificate.pem"):
            subprocess.run(
                ["cp", str(hand / name), str(node.root / "keys" / name)], check=True, timeout=10
            )
        changed = d.wait_for("certd.live_changed")
        assert d.stop() == 0
    assert changed["written_through"] == "000002"
    assert changed["fingerprint"] == hand_fp
    assert node.live_fingerprint() == hand_fp
    overwritten = _meta(node, "000002")
    assert "changed in place" in overwritten["damage"]
    taken = _meta(node, changed["generation"])
    status = json.loads(_cli(node, "status", "--json").stdout)
    if pristine:
        assert overwritten["outcome"] != "changed_in_place"
        assert overwritten["repaired"]
        assert taken["replaced"] == "000002"
        assert list(status["damaged"]) == []
        back = _cli(node, "rollback")
        assert back.returncode == 0, back.stdout + back.stderr
        assert node.live_fingerprint() == installed_fp
    else:
        assert overwritten["outcome"] == "changed_in_place"
        assert taken["replaced"] == "000001"  # not the overwritten one
        assert list(status["damaged"]) == ["000002"]
        refused = _cli(node, "rollback", "000002")
        assert refused.returncode == 1
        assert "changed in place" in refused.stdout
        back = _cli(node, "rollback")
        assert back.returncode == 0, back.stdout + back.stderr
        assert node.live_fingerprint() == original


# --- item 4: someone else's links, read-only mounts -----------------------------------------


def _kubernetes_volume(node: Node, leaf: devca.Issued, stamp: str) -> None:
    """Lay the live set out as kubelet's AtomicWriter does: ..<stamp>/, ..data, file links."""
    keys = node.root / "keys"
    payload = keys / f"..{stamp}"
    devca.write_set(payload, leaf, [node.ca])
    tmp_link = keys / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(payload.name)
    os.rename(tmp_link, keys / "..data")


def test_kubernetes_secret_volume_is_watched_never_written(tmp_path: Path) -> None:
    """Live paths that are kubelet's ``..data`` links: the daemon says watch-only at start,
    installs nothing, follows the kubelet's updates and never replaces its links."""
    node = make_node(tmp_path, extra=json.loads(json.dumps(FAST)))
    keys = node.root / "keys"
    for name in ("certificate.pem", "privateKey.pem", "ca.pem"):
        (keys / name).unlink()
    _kubernetes_volume(
        node, devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"]), "2026_11_29_1"
    )
    for name in ("certificate.pem", "privateKey.pem", "ca.pem"):
        (keys / name).symlink_to(f"..data/{name}")
    renewed = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    with DaemonProc(node) as d:
        started = d.wait_for("certd.watch_only")
        assert "did not make" in started["reason"]
        d.wait_for("certd.started")
        drop(node, "dropped")
        refused = d.wait_for("certd.set_refused")
        assert refused["codes"] == ["live_not_managed"]
        time.sleep(1.0)  # the cycle that refused it re-reads the live files last
        _kubernetes_volume(node, renewed, "2026_11_29_2")
        changed = d.wait_for("certd.live_changed")
        assert d.stop() == 0
    assert changed["watch_only"] is True
    assert changed["fingerprint"] == devca.fingerprint_of(renewed.cert)
    for name in ("certificate.pem", "privateKey.pem", "ca.pem"):
        assert os.readlink(keys / name) == f"..data/{name}"
    assert not (node.state / "current").exists()
    assert not list((node.state / "generations").iterdir())
    assert (keys / "incoming" / "dropped").is_dir()  # not moved: nothing is written
    assert not d.named("certd.cycle_failed")


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount_ro(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def test_read_only_live_mount_is_watch_only(tmp_path: Path) -> None:
    """Live files on a read-only mount: install refuses with live_not_managed, writes nothing."""
    node = make_node(tmp_path)
    keys = node.root / "keys"
    saved = {n: (keys / n).read_bytes() for n in ("certificate.pem", "privateKey.pem", "ca.pem")}
    original = node.live_fingerprint()
    with _tmpfs(keys, "1m"):
        for name, data in saved.items():
            devca.write_private(keys / name, data, 0o600 if "Key" in name else 0o644)
        _remount_ro(keys)
        out = _cli(node, "install", str(node.source("a")))
        assert out.returncode == 1, out.stdout + out.stderr
        assert "live_not_managed" in out.stdout
        assert "read-only mount" in out.stdout
        assert node.live_fingerprint() == original
        assert not (node.state / "current").exists()
        assert (node.tmp / "src" / "a").is_dir()
        status = _cli(node, "status")
        # Exit 1 (Nagios warning): no Harper runs beside this store.
        assert status.returncode == 1, status.stderr
        assert "warning: harper_not_running" in status.stdout, status.stdout
        assert "watch-only:" in status.stdout
        assert "read-only mount" in status.stdout


def test_failed_adoption_is_undone_and_blocks_nothing(tmp_path: Path) -> None:
    """An adoption that cannot link the live paths (immutable keys folder) is undone: no
    journal, no ``current``, live files as they were; the next install works."""
    node = make_node(tmp_path)
    original = node.live_fingerprint()
    keys = node.root / "keys"
    if (
        subprocess.run(["chattr", "+i", str(keys)], check=False, capture_output=True).returncode
        != 0
    ):
        pytest.skip("chattr +i is not supported here")
    try:
        out = _cli(node, "install", str(node.source("a")))
    finally:
        subprocess.run(["chattr", "-i", str(keys)], check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "permission denied" in out.stderr
    assert not (node.state / "journal.json").exists()
    assert not os.path.lexists(node.state / "current")
    assert not list((node.state / "generations").iterdir())
    assert not (keys / "certificate.pem").is_symlink()
    assert node.live_fingerprint() == original
    again = _cli(node, "install", str(node.source("a")))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "recovered" not in again.stdout


# --- item 11: a CLI run as another user --------------------------------------------------


@pytest.fixture
def system_user() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a system user (useradd --system)")
    name = f"hcst{uuid.uuid4().hex[:8]}"
    made = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.decode().strip()}")
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder another user can traverse (pytest's is root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="hc-store-", dir="/tmp"))
    os.chmod(base, 0o755)  # noqa: S103 - the other user must reach the node below
    try:
        yield base
    finally:
        subprocess.run(["chattr", "-R", "-i", str(base)], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _give(path: Path, uid: int, gid: int) -> None:
    for folder, dirs, files in os.walk(path):
        os.chown(folder, uid, gid)
        for name in (*dirs, *files):
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def test_cli_as_daemon_user_installs_even_when_source_cannot_move(
    shared_tmp: Path, system_user: str
) -> None:
    """`install` run as the daemon's user on a folder it cannot write: installed, exit 0, a
    warning that names the folder (was: traceback, exit 1 "refused, nothing changed")."""
    pw = pwd.getpwnam(system_user)
    node = make_node(shared_tmp)
    node.state.mkdir(mode=0o711)
    _give(node.root, pw.pw_uid, pw.pw_gid)
    _give(node.state, pw.pw_uid, pw.pw_gid)
    src = node.source("a")
    _give(src, pw.pw_uid, pw.pw_gid)  # readable, owned by the daemon's user
    os.chmod(src.parent, 0o755)  # noqa: S103 - root's folder: the user cannot move src out
    new_fp = _fp((src / "certificate.pem").read_bytes())
    for p in (node.calls.parent,):
        os.chmod(p, 0o777)  # noqa: S103 - the restart recorder writes its call file here
    node.config_data["restart"]["command"][0] = _python_for(system_user)[0][0]
    out = _cli(node, "install", str(src), user=system_user)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "could not be moved" in out.stdout
    assert "certd.source_left" in out.stderr
    assert "Traceback" not in out.stderr
    assert node.live_fingerprint() == new_fp
    assert src.is_dir()


def test_root_cli_leaves_a_store_the_daemon_user_can_prune(
    shared_tmp: Path, system_user: str
) -> None:
    """A root CLI (a certbot deploy hook) writes generations owned by the state directory's
    owner; the daemon's user then prunes them for real, and says so only when it did."""
    pw = pwd.getpwnam(system_user)
    node = make_node(shared_tmp)
    node.config_data["generations_kept"] = 2
    node.state.mkdir(mode=0o711)
    _give(node.root, pw.pw_uid, pw.pw_gid)
    _give(node.state, pw.pw_uid, pw.pw_gid)
    os.chmod(node.calls.parent, 0o777)  # noqa: S103 - the restart recorder's call file
    node.config_data["restart"]["command"][0] = _python_for(system_user)[0][0]
    cfg = node.write_config()
    as_root = _cli(node, "install", str(node.source("by-root")), cfg=cfg)
    assert as_root.returncode == 0, as_root.stderr
    os.chmod(node.calls, 0o666)  # noqa: S103 - the recorder's file, written by root first
    owned = [
        node.state / "generations" / "000001",
        node.state / "generations" / "000002",
        node.state / "generations" / "000002" / "meta.json",
        node.state / "history.jsonl",
        node.state / ".lock",
    ]
    assert {p.name: os.lstat(p).st_uid for p in owned} == {p.name: pw.pw_uid for p in owned}
    assert os.lstat(node.state / "current").st_uid == pw.pw_uid
    src = node.source("by-daemon")
    _give(src, pw.pw_uid, pw.pw_gid)
    os.chmod(src.parent, 0o777)  # noqa: S103 - the user may move its source away
    as_user = _cli(node, "install", str(src), user=system_user, cfg=cfg)
    assert as_user.returncode == 0, as_user.stdout + as_user.stderr
    assert "certd.prune_failed" not in as_user.stderr
    assert "certd.generation_pruned" in as_user.stderr
    assert sorted(p.name for p in (node.state / "generations").iterdir()) == ["000002", "000003"]


def test_cp_over_live_path_fails_for_the_daemon_user(shared_tmp: Path, system_user: str) -> None:
    """For anyone but root the read-only generation files stop the `cp` itself: it fails,
    and the generation keeps the bytes its digests say."""
    pw = pwd.getpwnam(system_user)
    node = make_node(shared_tmp)
    node.state.mkdir(mode=0o711)
    _give(node.root, pw.pw_uid, pw.pw_gid)
    _give(node.state, pw.pw_uid, pw.pw_gid)
    assert install(build_context(node.config), node.source("a")).status == "installed"
    live_file = node.state / "generations" / "000002" / "certificate.pem"
    assert os.stat(live_file).st_uid == pw.pw_uid  # the live files' owner, kept
    before = live_file.read_bytes()
    hand = node.source("by-hand")
    os.chmod(hand / "certificate.pem", 0o644)
    cp = subprocess.run(
        ["cp", str(hand / "certificate.pem"), str(node.root / "keys" / "certificate.pem")],
        capture_output=True,
        text=True,
        check=False,
        user=system_user,
        cwd="/",
    )
    assert cp.returncode != 0
    assert "Permission denied" in cp.stderr
    assert live_file.read_bytes() == before
    store = build_context(node.config).store
    current = store.current()
    assert current is not None
    assert store.intact(current) is None


def test_generation_pruned_only_when_it_was(tmp_path: Path) -> None:
    """A generation that cannot be removed (chattr +i) gives certd.prune_failed, never
    certd.generation_pruned, and stays listed."""
    node = make_node(tmp_path)
    ctx = build_context(node.config)
    for name in ("a", "b"):
        assert install(ctx, node.source(name)).status == "installed"
    stuck = node.state / "generations" / "000001"
    if (
        subprocess.run(["chattr", "+i", str(stuck)], check=False, capture_output=True).returncode
        != 0
    ):
        pytest.skip("chattr +i is not supported here")
    try:
        logs.configure(json=True, stream=sys.stderr)
        node.config_data["generations_kept"] = 2
        with capture_logs() as captured:
            assert install(build_context(node.config), node.source("c")).status == "installed"
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)
    pruned = [e for e in captured if e["event"] == "certd.generation_pruned"]
    failed = [e for e in captured if e["event"] == "certd.prune_failed"]
    assert [e["generation"] for e in failed] == ["000001"]
    assert "000001" not in [e["generation"] for e in pruned]
    assert stuck.is_dir()


# --- item 15: a CN change ----------------------------------------------------------------


def test_cn_change_is_warned(tmp_path: Path) -> None:
    """A new CN (Harper's record name) is a certd.name_changed warning naming both names;
    without verification there is no command to run yet."""
    node = make_node(tmp_path)
    logs.configure(json=True, stream=sys.stderr)
    with capture_logs() as captured:
        out = install(build_context(node.config), node.source("a", cn="nodea.example"))
    assert out.status == "installed"
    changed = [e for e in captured if e["event"] == "certd.name_changed"]
    assert changed == [
        {
            "event": "certd.name_changed",
            "log_level": "warning",
            "generation": out.generation,
            "old_name": "CN=nodea, first SAN=nodea",
            "new_name": "CN=nodea.example, first SAN=nodea",
            "stale_record": "nodea",
            "command": None,
        }
    ]


def test_first_san_change_is_warned_without_a_stale_record(tmp_path: Path) -> None:
    """Same CN, another first SAN: warned; Harper's record (named by the CN) is not stale."""
    node = make_node(tmp_path)
    logs.configure(json=True, stream=sys.stderr)
    leaf = devca.make_leaf(node.ca, "nodea", dns=["other.example", "nodea"], ips=["127.0.0.2"])
    with capture_logs() as captured:
        out = install(build_context(node.config), node.source("a", leaf))
    assert out.status == "installed"
    changed = [e for e in captured if e["event"] == "certd.name_changed"]
    assert [(e["new_name"], e["stale_record"], e["command"]) for e in changed] == [
        ("CN=nodea, first SAN=other.example", None, None)
    ]
    with capture_logs() as again:
        assert install(build_context(node.config), node.source("b", leaf=None)).status == (
            "installed"
        )
    assert [e["new_name"] for e in again if e["event"] == "certd.name_changed"] == [
        "CN=nodea, first SAN=nodea"
    ]


# --- item 16: old private keys in processed/ and rejected/ -------------------------------


def test_retention_of_filed_sets(tmp_path: Path) -> None:
    """processed/ keeps the newest `retention.keep` sets and none older than `retention.days`;
    keys there are 0600; removals are logged."""
    node = make_node(tmp_path)
    node.config_data["retention"] = {"keep": 2, "days": 30}
    processed = node.root / "keys" / "processed"
    processed.mkdir(parents=True)
    old = processed / "20250101T000000000000Z-ancient"
    devca.write_set(old, devca.make_leaf(node.ca), [node.ca])
    os.chmod(old / "privateKey.pem", 0o644)
    not_ours = processed / "notes"
    not_ours.mkdir()
    logs.configure(json=True, stream=sys.stderr)
    with capture_logs() as captured:
        for name in ("a", "b", "c"):
            src = node.source(name)
            os.chmod(src / "privateKey.pem", 0o640)
            assert install(build_context(node.config), src).status == "installed"
    kept = sorted(p.name for p in processed.iterdir())
    assert len(kept) == 3
    assert not_ours.name in kept  # not filed by us: never removed
    assert [k.split("-", 1)[1] for k in kept if k != "notes"] == ["b", "c"]
    for name in kept:
        if name != "notes":
            assert stat.S_IMODE(os.stat(processed / name / "privateKey.pem").st_mode) == 0o600
    removed = [n for e in captured if e["event"] == "certd.sources_pruned" for n in e["removed"]]
    assert sorted(removed) == sorted([old.name, *(p for p in removed if p.endswith("-a"))])
    assert any(n.endswith("-a") for n in removed)


def test_retention_applies_after_refusals_and_superseded_sets(tmp_path: Path) -> None:
    """A refusal applies the retention too (a newcomer's refused sets, each with its key,
    piled up in rejected/ past ``retention.keep`` until the next install), and sets filed as
    superseded count at once (processed/ held keep + 2 after a burst of three)."""
    node = make_node(tmp_path)
    node.config_data["retention"] = {"keep": 2, "days": 30}
    rejected = node.root / "keys" / "rejected"
    processed = node.root / "keys" / "processed"
    logs.configure(json=True, stream=sys.stderr)
    for name in ("bad1", "bad2", "bad3", "bad4"):
        leaf = devca.make_leaf(node.ca, "nodeb", dns=["nodeb"])  # another node's name: refused
        src = node.source(name, leaf)
        ctx = build_context(node.config)
        assert install(ctx, src).status == "refused"
        ours = [p for p in rejected.iterdir() if not p.name.startswith(".")]
        assert len(ours) <= 2, sorted(p.name for p in ours)
    assert sorted(p.name.split("-", 1)[1] for p in rejected.iterdir() if p.name[0] != ".") == [
        "bad3",
        "bad4",
    ]
    ctx = build_context(node.config)
    burst = [node.source(name) for name in ("s1", "s2", "s3")]
    outcome = pipeline.install_newest(ctx, burst)
    assert outcome is not None
    assert outcome.status == "installed"
    assert len(list(processed.iterdir())) == 2


def test_retention_by_age_keeps_the_newest(tmp_path: Path) -> None:
    """By age alone: every folder older than `days` goes, except the newest one."""
    folder = tmp_path / "rejected"
    folder.mkdir()
    for stamp in ("20260101T000000000000Z-x", "20260201T000000000000Z-y"):
        (folder / stamp).mkdir()
    now = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    removed = retention.prune_folder(folder, keep=10, days=30, now=now)
    assert removed == ["20260101T000000000000Z-x"]
    assert [p.name for p in folder.iterdir()] == ["20260201T000000000000Z-y"]
    assert RetentionSection().keep >= 1


# --- issue 10 item 7: full or read-only state directory -----------------------------------


def test_full_state_directory_prunes_and_installs(tmp_path: Path) -> None:
    """A 128 KiB tmpfs state directory and generations_kept 20: before, installs failed with
    ENOSPC once it filled; now old generations are pruned on ENOSPC and every install works."""
    node = make_node(tmp_path)
    node.config_data["generations_kept"] = 20
    with _tmpfs(node.state, "128k"):
        logs.configure(json=True, stream=sys.stderr)
        with capture_logs() as captured:
            for i in range(12):
                out = install(build_context(node.config), node.source(f"s{i}"))
                assert out.status == "installed", (i, out.as_dict())
        pruned = [e["generation"] for e in captured if e["event"] == "certd.generation_pruned"]
        assert pruned  # space was made
        ids = sorted(p.name for p in (node.state / "generations").iterdir())
        current = os.readlink(node.state / "current").split("/")[-1]
        assert current == ids[-1]
        print(f"\nfull tmpfs: 12 installs, {len(pruned)} generations pruned, {len(ids)} kept")


def test_read_only_state_directory_is_swap_failed_with_cause(tmp_path: Path) -> None:
    """The daemon with a state directory remounted read-only: `certd.swap_failed` with the
    cause, no `certd.cycle_failed`, and the sets of the burst stay in incoming/ (none is
    called superseded); a hand change it cannot record is swap_failed too."""
    node = make_node(tmp_path, extra=json.loads(json.dumps(FAST)))
    original = node.live_fingerprint()
    with _tmpfs(node.state, "1m"):
        assert install(build_context(node.config), node.source("first")).status == "installed"
        installed_fp = node.live_fingerprint()
        assert installed_fp != original
        _remount_ro(node.state)
        with DaemonProc(node) as d:
            d.wait_for("certd.started")
            incoming = node.root / "keys" / "incoming"
            incoming.mkdir(exist_ok=True)
            for name in ("x", "y"):
                os.rename(node.source(name), incoming / name)
            failed = d.wait_for("certd.swap_failed")
            time.sleep(1.0)
            hand = node.source("by-hand")
            for name in ("privateKey.pem", "ca.pem", "certificate.pem"):
                subprocess.run(
                    ["cp", "--remove-destination", str(hand / name), str(node.root / "keys")],
                    check=True,
                    timeout=10,
                )
            by_hand = d.wait_for("certd.swap_failed", count=2)
            assert d.stop() == 0
        assert by_hand["source"] == "live files (changed by hand)"
        assert by_hand["cause"] == "read-only file system"
        assert failed["cause"] == "read-only file system"
        assert not d.named("certd.cycle_failed")
        assert not d.named("certd.set_superseded")
        assert sorted(p.name for p in incoming.iterdir()) == ["x", "y"]
        assert node.live_fingerprint() == _fp((hand / "certificate.pem").read_bytes())


def test_a_ca_file_over_1_mib_is_installed_and_rolled_back_to(tmp_path: Path) -> None:
    """A CA file over 1 MiB (the set's root, then 600 stranger roots of about 2.5 KB: names
    well under what a CertificateRequest carries, see ``ca_names_too_large``) passes the
    incoming reader, the store and a rollback, as it passes `validate` (issue 21: only
    `validate` had the 16 MiB limit; install refused it at 1 MiB)."""
    node = make_node(tmp_path, method="none")
    big = node.source("big")
    ca_pem = big / "ca.pem"
    ca_pem.write_bytes(ca_pem.read_bytes() + strangers(600, body=1400))
    wanted = ca_pem.read_bytes()
    assert len(wanted) > 1 << 20
    ctx = build_context(node.config)
    outcome = install(ctx, big)
    assert outcome.status == "installed", outcome.as_dict()
    assert node.live.ca is not None
    assert node.live.ca.read_bytes() == wanted
    generation = outcome.generation
    assert install(build_context(node.config), node.source("small")).status == "installed"
    assert node.live.ca.stat().st_size < 1 << 20
    back = _cli(node, "rollback", str(generation))
    assert back.returncode == 0, back.stdout + back.stderr
    assert node.live.ca.read_bytes() == wanted
