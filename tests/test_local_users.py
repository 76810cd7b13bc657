"""What a second local user can drop or plant (issue 17 items 1-3), against real OS objects.

A real second user (created here with useradd, removed after; the tests run as root, as CI
does), real FIFOs, a link to ``/dev/zero``, links planted where the daemon writes.  The
daemon is a real subprocess: after the hostile input it must still install the next valid
set, answer ``status`` and SIGTERM.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemonfix import DaemonProc, drop
from harper_certd import fsio, health, metrics, reasons, statefile
from harper_certd.config import parse_config, resolve_paths, with_overrides
from harper_certd.errors import ConfigError
from harper_certd.harper.api import _credentials
from harper_certd.install.context import build_context
from harper_certd.yamlfile import read_yaml
from nodefix import make_node

FAST = {"watch": {"settle_seconds": 0.3}}


@pytest.fixture(scope="module")
def second_user() -> Iterator[pwd.struct_passwd]:
    """A real system user for this module's length (root only; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("a second local user needs root (useradd)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed")
    name = f"hcd{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def _give(path: Path, user: pwd.struct_passwd) -> None:
    os.lchown(path, user.pw_uid, user.pw_gid)


# --- read_regular: FIFOs, devices, links never waited on, followed or read without bound ---


def test_read_regular_refuses_fifo_device_link_and_dir_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "dir").mkdir()
    (tmp_path / "big").write_bytes(b"x" * 2000)
    done = threading.Event()

    def read_fifo() -> None:
        with pytest.raises(fsio.NotRegular, match="not a regular file \\(a FIFO\\)"):
            fsio.read_regular(fifo, 1000)
        done.set()

    reader = threading.Thread(target=read_fifo, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert done.is_set(), "open() of a FIFO blocked"
    with pytest.raises(OSError, match="Too many levels"):
        fsio.read_regular(tmp_path / "zero", 1000)  # O_NOFOLLOW: ELOOP, /dev/zero unread
    with pytest.raises(fsio.NotRegular, match="character device"):
        fsio.read_regular("/dev/zero", 1000)
    with pytest.raises(fsio.NotRegular, match="directory"):
        fsio.read_regular(tmp_path / "dir", 1000)
    with pytest.raises(fsio.NotRegular, match="2000 bytes, over 1000"):
        fsio.read_regular(tmp_path / "big", 1000)
    assert fsio.read_regular(tmp_path / "big", 2000) == b"x" * 2000


def test_files_others_place_are_read_without_waiting(tmp_path: Path) -> None:
    """Every reader of a file that Harper's user or a configuration names, and that links
    may lead to (``rawio.read_file``), meets a FIFO, ``/dev/zero`` through a link and a
    directory without waiting: Harper's ``hdb.pid`` (read by the daemon's Harper watch,
    ``status`` and the judge's choice of node: a FIFO there hung them), its
    ``package.json``, a trust bundle and the set files Node is given.  Each counts as
    absent; a regular file through a link is read."""
    from harper_certd import rawio, trust
    from harper_certd.harper.process import harper_pid, harper_version

    root = tmp_path / "hdb"
    root.mkdir()
    os.mkfifo(root / "hdb.pid")
    package = tmp_path / "harperdb"
    (package / "bin").mkdir(parents=True)
    os.mkfifo(package / "package.json")
    bundle = tmp_path / "bundle.pem"
    os.mkfifo(bundle)
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "dir").mkdir()
    (tmp_path / "real").write_bytes(b"1234")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    got: dict[str, object] = {}

    def read_all() -> None:
        got["pid"] = harper_pid(root)
        got["version"] = harper_version(package / "bin" / "harperdb.js")
        got["store"] = trust.system_store(bundle).certs
        got["files"] = [rawio.read_file(tmp_path / n, 100) for n in ("zero", "dir", "link")]

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert not reader.is_alive(), f"a read waited on a FIFO (done: {sorted(got)})"
    assert got == {"pid": None, "version": None, "store": (), "files": [None, None, b"1234"]}


# --- the daemon against a FIFO and /dev/zero as reason.json, from another user -------------


def test_fifo_and_dev_zero_reason_json_never_stop_the_daemon(
    tmp_path: Path, second_user: pwd.struct_passwd
) -> None:
    """Issue 17: a FIFO ``reason.json`` hung the daemon (metrics) and ``status`` for good; a
    link to /dev/zero read without bound.  Dropped by another user, as a folder and through
    a symlinked folder, refused and filed; then a valid set is installed, ``status``
    answers, the metrics list the refusals, SIGTERM is answered."""
    node = make_node(tmp_path, extra=FAST)
    prom = tmp_path / "prom"
    prom.mkdir()
    node.config_data["metrics"] = {"textfile": str(prom / "harper-certd.prom"), "interval": 5}
    incoming = node.root / "keys" / "incoming"
    incoming.mkdir(parents=True)
    staging = tmp_path / "staging"
    staging.mkdir()
    fifo_folder = staging / "fifo-set"
    fifo_folder.mkdir()
    os.mkfifo(fifo_folder / "reason.json")
    zero_folder = staging / "zero-set"
    zero_folder.mkdir()
    (zero_folder / "reason.json").symlink_to("/dev/zero")
    linked_target = staging / "linked-target"
    linked_target.mkdir()
    os.mkfifo(linked_target / "reason.json")
    for path in (fifo_folder, zero_folder, linked_target):
        for child in (path, *path.iterdir()):
            _give(child, second_user)
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        os.rename(fifo_folder, incoming / "fifo-set")
        os.rename(zero_folder, incoming / "zero-set")
        (incoming / "linked-set").symlink_to(linked_target)
        d.wait_for("certd.set_refused", timeout=60, count=3)
        refused = {Path(e["source"]).name: e for e in d.named("certd.set_refused")}
        assert set(refused) == {"fifo-set", "zero-set", "linked-set"}
        assert refused["linked-set"]["codes"] == ["source_unsafe"]
        drop(node, "good")
        installed = d.wait_for("certd.set_installed", timeout=60)
        assert installed["source"].endswith("/incoming/good")
        # status reads only the daemon's own records: it answers, and lists all three
        config = node.write_config()
        done = subprocess.run(
            [sys.executable, "-m", "harper_certd", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        data = json.loads(done.stdout)
        assert len(data["refusals"]) == 3, data["refusals"]
        rejected = node.root / "keys" / "rejected"
        records = dict(reasons.read_all(rejected))
        assert {r["source"].rsplit("/", 1)[-1] for r in records.values()} == set(refused)
        # the filed folders are as they came: the FIFO still a FIFO, the link still a link
        filed = {p.name.split("-", 1)[1]: p for p in rejected.iterdir() if p.name[0] != "."}
        assert stat.S_ISFIFO(os.lstat(filed["fifo-set"] / "reason.json").st_mode)
        assert os.readlink(filed["zero-set"] / "reason.json") == "/dev/zero"
        # the metrics textfile is rewritten after the refusals (the main thread lives)
        deadline = time.monotonic() + 60
        while "refusal" not in (prom / "harper-certd.prom").read_text():
            assert time.monotonic() < deadline, "no refusal in the metrics"
            time.sleep(0.2)
        started = time.monotonic()
        assert d.stop(timeout=30) == 0
        assert time.monotonic() - started < 30


def test_refusal_records_are_pruned_with_their_folders(tmp_path: Path) -> None:
    """``status`` reads ``rejected/.reasons``; retention removes a record with its folder."""
    from harper_certd import retention

    rejected = tmp_path / "rejected"
    rejected.mkdir()
    names = [f"2026010{i}T000000000000Z-set{i}" for i in range(1, 4)]
    for i, name in enumerate(names, 1):
        (rejected / name).mkdir()
        record = {"time": f"2026-01-0{i}T00:00:00+00:00", "stage": "validate", "problems": []}
        reasons.record(rejected, name, json.dumps(record).encode())
    assert stat.S_IMODE(os.stat(rejected / reasons.FOLDER).st_mode) == 0o700
    assert len(health.refusals(rejected)) == 3
    import datetime as dt

    now = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    removed = retention.prune_folder(rejected, keep=1, days=None, now=now)
    assert sorted(removed) == names[:2]
    assert [n for n, _ in reasons.read_all(rejected)] == [names[2]]
    assert [o.time.day for o in health.refusals(rejected)] == [3]


# --- writing where others can write: never through a planted link -------------------------


def test_metrics_textfile_never_written_through_a_planted_link(
    tmp_path: Path, second_user: pwd.struct_passwd
) -> None:
    """Issue 17: prometheus_client's writer opened ``<path>.<pid>.<thread id>`` following
    links, and we then chmod-ed the final path: a link planted at that name, in a
    group-writable node_exporter folder, made root overwrite a 0600 file and make it 0644."""
    node = make_node(tmp_path)
    prom = tmp_path / "node_exporter"
    prom.mkdir(mode=0o775)
    os.chown(prom, 0, second_user.pw_gid)
    os.chmod(prom, 0o775)  # noqa: S103 - group-writable, as node_exporter folders often are
    secret = tmp_path / "secret"
    secret.write_bytes(b"root's own bytes\n")
    os.chmod(secret, 0o600)
    target = prom / "harper-certd.prom"
    # the names the library's writer and our old code would use, planted by the other user
    for planted in (
        Path(f"{target}.{os.getpid()}.{threading.get_ident()}"),
        prom / ".harper-certd.prom.tmp",
    ):
        planted.symlink_to(secret)
        _give(planted, second_user)
    node.config_data["metrics"] = {"textfile": str(target)}
    ctx = build_context(node.config)
    snap = health.snapshot(ctx, served=False)
    metrics.write_textfile(target, snap, {})
    assert secret.read_bytes() == b"root's own bytes\n"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    st = os.lstat(target)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == metrics.TEXTFILE_MODE
    assert "harper_certd_health" in target.read_text()
    # a link planted at the final name is replaced, never written through
    target.unlink()
    target.symlink_to(secret)
    metrics.write_textfile(target, snap, {})
    assert secret.read_bytes() == b"root's own bytes\n"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_ISREG(os.lstat(target).st_mode)
    leftovers = [
        p.name
        for p in prom.iterdir()
        if p.name.endswith(".tmp") and stat.S_ISREG(p.lstat().st_mode)
    ]
    assert leftovers == []


def test_state_files_replaced_never_written_through(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"keep")
    os.chmod(secret, 0o600)
    (tmp_path / "waiting.json").symlink_to(secret)
    assert statefile.write_json(tmp_path / "waiting.json", {"waiting": []})
    assert secret.read_bytes() == b"keep"
    assert not (tmp_path / "waiting.json").is_symlink()
    os.unlink(tmp_path / "waiting.json")
    os.mkfifo(tmp_path / "waiting.json")
    assert statefile.read_waiting(tmp_path) == []  # a FIFO: never waited on


# --- configuration and credentials --------------------------------------------------------


def test_credentials_file_of_another_user_is_refused(
    tmp_path: Path, second_user: pwd.struct_passwd
) -> None:
    """Issue 17: a 0600 credentials file owned by another user was accepted by the root
    daemon: that user chose the credentials sent to Harper."""
    creds = tmp_path / "credentials"
    creds.write_text("admin:theirs\n")
    os.chmod(creds, 0o600)
    _give(creds, second_user)
    config = parse_config({"operations_api": {"credentials_file": str(creds)}})
    with pytest.raises(ConfigError, match=f"owned by {second_user.pw_name}"):
        _credentials(config, {})
    os.chown(creds, 0, 0)
    assert _credentials(config, {}) == ("admin", "theirs")
    os.unlink(creds)
    os.mkfifo(creds, 0o600)
    with pytest.raises(ConfigError, match="FIFO"):
        _credentials(config, {})


def test_config_link_followed_only_in_a_folder_no_one_else_can_write(
    tmp_path: Path, second_user: pwd.struct_passwd
) -> None:
    real = tmp_path / "real.yaml"
    real.write_text("generations_kept: 3\n")
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    (private / "config.yaml").symlink_to(real)
    assert read_yaml(private / "config.yaml") == {"generations_kept": 3}  # a ConfigMap's links
    shared = Path(tempfile.mkdtemp(prefix="hcd-shared-"))
    try:
        os.chown(shared, second_user.pw_uid, second_user.pw_gid)
        (shared / "config.yaml").symlink_to(real)
        with pytest.raises(ConfigError, match="a folder others can write"):
            read_yaml(shared / "config.yaml")
        (shared / "config.yaml").unlink()
        os.mkfifo(shared / "config.yaml")
        with pytest.raises(ConfigError, match="FIFO"):
            read_yaml(shared / "config.yaml")
    finally:
        shutil.rmtree(shared)


# --- paths made absolute where they are given ---------------------------------------------


def test_relative_state_dir_made_absolute_and_live_links_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: a relative ``--state-dir`` left live links relative to the wrong folder."""
    monkeypatch.chdir(tmp_path)
    config = parse_config({"state_dir": "rel-state", "harper": {"root": "hdb"}})
    assert config.state_dir == tmp_path / "rel-state"
    paths = resolve_paths(with_overrides(config, state_dir=Path("flag-state")))
    assert paths.state == tmp_path / "flag-state"
    assert paths.harper_root == tmp_path / "hdb"
    assert all(p.is_absolute() for p in (paths.incoming, paths.processed, paths.rejected))
    # end to end: `install --state-dir <relative>` run from another folder
    node = make_node(tmp_path / "n")
    node.config_data.pop("state_dir")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    source = node.source("next")
    expected = (source / "certificate.pem").read_bytes()
    config_file = node.write_config()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "harper_certd", "install", str(source)),
            *("--config", str(config_file), "--state-dir", "relative-state"),
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    target = os.readlink(node.live.cert)
    assert Path(target).is_absolute(), target
    assert target.startswith(str(elsewhere / "relative-state"))
    assert node.live.cert.read_bytes() == expected  # the link resolves from the keys folder


def _status_as(user: pwd.struct_passwd, config: Path, *flags: str) -> tuple[int, str, str]:
    """``status --no-probe`` run in a child of this process with ``user``'s uid and gid: a
    real other user's permissions (forked, not exec-ed: this Python's files under /root are
    not the user's to read, so the parent has imported everything the status needs)."""
    import contextlib
    import io

    from harper_certd import cli

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = cli.main(["status", "--no-probe", "--config", str(config), *flags])
                except BaseException as exc:  # reported to the parent
                    code, err = -1, io.StringIO(f"{type(exc).__name__}: {exc}")
            os.write(write_end, json.dumps([code, out.getvalue(), err.getvalue()]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 1 << 16):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    code, out, err = json.loads(data)
    return code, out, err


def test_a_status_by_a_user_the_state_keeps_out_is_critical_not_a_traceback(
    second_user: pwd.struct_passwd,
) -> None:
    """After an install the live paths are links through the state directory; a user that
    directory (0700) keeps out, or lets through without its lock (0711), gets exit 2 with
    the sentence, and with --json the critical JSON a monitoring check reads (a newcomer got
    PermissionError from discover's ``Path.exists`` as a traceback at 0700, and at 0711 exit
    1 without JSON)."""
    import contextlib
    import io

    from harper_certd import cli

    folder = Path(tempfile.mkdtemp(prefix="hcd-"))
    try:
        os.chmod(folder, 0o755)  # noqa: S103 - the user reaches the configuration, not the state
        node = make_node(folder, method="none")
        config = node.write_config()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli.main(["install", "--config", str(config), str(node.source("n1"))]) == 0
            # as root, and so that the child finds every module it needs imported already
            assert cli.main(["status", "--no-probe", "--json", "--config", str(config)]) == 0
        assert os.readlink(node.live.cert).startswith(str(node.state))
        os.chmod(node.state, 0o700)
        code, out, err = _status_as(second_user, config, "--json")
        assert code == 2, err
        report = json.loads(out)
        assert report["health"] == "critical"
        assert "permission denied" in report["error"]
        code, out, err = _status_as(second_user, config)
        assert code == 2
        assert err.startswith("harper-certd status: "), err
        assert "permission denied" in err
        assert "Traceback" not in err
        assert "Error:" not in err
        os.chmod(node.state, 0o711)  # noqa: S103 - it passes through, cannot take the lock
        code, out, err = _status_as(second_user, config, "--json")
        assert code == 2, err
        assert "cannot be locked" in json.loads(out)["error"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
