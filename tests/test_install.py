"""Installing sets: the swap, generations, rollback, sources kept, refusals, OS failures."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harper_certd import devca, load, roles
from harper_certd.cli import main
from harper_certd.errors import ConfigError, SwapError
from harper_certd.install.context import build_context
from harper_certd.install.pipeline import install
from harper_certd.install.rollback import rollback
from harper_certd.recover import in_flight
from nodefix import Node, make_node, reason


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path)


def _fp(path: Path) -> str:
    cert = load.parse_certificates(path.read_bytes(), name=str(path)).certs[0]
    return devca.fingerprint_of(cert)


def test_install_swaps_all_three_files_through_one_link(node: Node) -> None:
    """A valid set becomes live: the live paths resolve through `current` to the new files."""
    old = node.live_fingerprint()
    src = node.source("new")
    new_fp = _fp(src / "certificate.pem")
    outcome = install(build_context(node.config), src)
    assert outcome.status == "installed", outcome.problems
    assert node.live_fingerprint() == new_fp != old
    for role, path in (("cert", node.live.cert), ("key", node.live.key), ("ca", node.ca_file)):
        assert os.readlink(path) == str(node.state / "current" / roles.KEY_FILES[role])
    assert os.readlink(node.state / "current") == f"generations/{outcome.generation}"
    assert node.restarts() == 1
    assert not src.exists()
    assert outcome.kept_at is not None
    assert outcome.kept_at.parent == node.root / "keys" / "processed"
    # The set that was live first is kept as the adopted generation, for rollback.
    ctx = build_context(node.config)
    gens = ctx.store.generations()
    assert [g.meta["outcome"] for g in gens] == ["adopted", "installed"]
    assert gens[0].meta["id"] == outcome.previous


def test_modes_and_key_privacy_are_kept(node: Node) -> None:
    """The new files keep the live files' modes without write bits (generation files are
    read-only once written); the key is never wider than the live key."""
    os.chmod(node.live.cert, 0o640)
    os.chmod(node.live.key, 0o600)
    install(build_context(node.config), node.source("new"))
    assert stat.S_IMODE(os.stat(node.live.cert).st_mode) == 0o440
    assert stat.S_IMODE(os.stat(node.live.key).st_mode) == 0o400
    assert stat.S_IMODE(os.stat(node.ca_file).st_mode) == 0o444


def test_refused_set_changes_nothing_and_is_kept_with_reason(node: Node) -> None:
    """A mismatched key is refused: live untouched, no restart, source in rejected/ with reason."""
    old = node.live_fingerprint()
    src = node.source("bad")
    other = devca.make_leaf(node.ca)
    devca.write_private(src / "privateKey.pem", other.key_pem)
    outcome = install(build_context(node.config), src)
    assert outcome.status == "refused"
    assert node.live_fingerprint() == old
    assert node.restarts() == 0
    assert outcome.kept_at is not None
    assert outcome.kept_at.parent == node.root / "keys" / "rejected"
    why = reason(outcome.kept_at)
    assert [p["code"] for p in why["problems"]] == ["key_mismatch"]
    assert why["stage"] == "validate"
    assert (outcome.kept_at / "privateKey.pem").exists()


def test_older_set_refused_unless_forced(node: Node) -> None:
    """A set expiring before the live one is refused (certbot#10655), installed with force."""
    import datetime as dt

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=40)
    outcome = install(build_context(node.config), node.source("older", not_after=soon))
    assert outcome.status == "refused"
    assert [p.code for p in outcome.problems] == ["older_than_live"]
    forced = install(
        build_context(node.config), node.source("older2", not_after=soon), force_older=True
    )
    assert forced.status == "installed"


def test_failed_restart_rolls_back(node: Node) -> None:
    """When the restart command fails, the previous generation is put back and restarted."""
    old = node.live_fingerprint()
    node.fail_restarts()
    outcome = install(build_context(node.config), node.source("new"))
    assert outcome.status == "rollback_failed"  # the restart fails for the rollback too
    assert node.live_fingerprint() == old
    node.exit_file.unlink()
    outcome = install(build_context(node.config), node.source("new2"))
    assert outcome.status == "installed"


def test_rollback_after_transient_failure(node: Node, tmp_path: Path) -> None:
    """A restart that fails once then works: rolled back (exit 3), old fingerprint live."""
    old = node.live_fingerprint()
    # Fails on the first call only: the command removes its exit file after reading it.
    flaky = tmp_path / "flaky.py"
    flaky.write_text(
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(node.exit_file)!r})\n"
        "code = int(p.read_text()) if p.exists() else 0\n"
        "p.unlink(missing_ok=True)\n"
        "sys.exit(code)\n"
    )
    node.config_data["restart"]["command"] = [sys.executable, str(flaky)]
    node.fail_restarts()
    outcome = install(build_context(node.config), node.source("new"))
    assert outcome.status == "rolled_back"
    assert node.live_fingerprint() == old
    assert outcome.kept_at is not None
    assert [p["code"] for p in reason(outcome.kept_at)["problems"]] == ["applied_failed"]
    ctx = build_context(node.config)
    assert ctx.store.generation(outcome.generation or "").meta["outcome"] == "rolled_back"


def test_rollback_command_and_explicit_generation(node: Node) -> None:
    """rollback puts the generation before back; an explicit id puts that one back."""
    first = node.live_fingerprint()
    a = install(build_context(node.config), node.source("a"))
    second = node.live_fingerprint()
    install(build_context(node.config), node.source("b"))
    back = rollback(build_context(node.config))
    assert back.status == "rolled_back"
    assert node.live_fingerprint() == second
    assert a.previous is not None
    to_first = rollback(build_context(node.config), a.previous)
    assert to_first.status == "rolled_back"
    assert node.live_fingerprint() == first


def test_generations_pruned_never_live_or_previous(node: Node) -> None:
    """Only generations_kept generations stay; the live one and the one before always do."""
    node.config_data["generations_kept"] = 3
    for i in range(5):
        assert install(build_context(node.config), node.source(f"s{i}")).status == "installed"
    ctx = build_context(node.config)
    ids = [g.id for g in ctx.store.generations()]
    assert len(ids) == 3
    current = ctx.store.current()
    assert current is not None
    assert current.id == ids[-1]
    assert current.meta["replaced"] in ids
    # A rollback to a pruned generation (a newcomer's: the adopted 000001) says what is kept
    # and what to do, not an errno about a meta.json; so does a name that is no generation.
    live = node.live_fingerprint()
    for gone in ("000001", "../keys"):
        with pytest.raises(SwapError) as refused:
            rollback(build_context(node.config), gone)
        message = str(refused.value)
        assert f"generation {gone} is not kept" in message
        assert f"kept now: {', '.join(ids)}" in message
        assert "Errno" not in message
        assert "meta.json" not in message
    assert node.live_fingerprint() == live


def test_certbot_lineage_is_read_in_place(node: Node) -> None:
    """certbot's live/<name> symlinks into archive/ are read; the lineage is left where it is."""
    le = node.tmp / "letsencrypt"
    archive, live = le / "archive" / "nodea", le / "live" / "nodea"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    leaf = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    (archive / "fullchain1.pem").write_bytes(leaf.cert_pem)
    devca.write_private(archive / "privkey1.pem", leaf.key_pem)
    for name in ("fullchain", "privkey"):
        (live / f"{name}.pem").symlink_to(f"../../archive/nodea/{name}1.pem")
    outcome = install(build_context(node.config), live)
    assert outcome.status == "installed", outcome.problems
    assert node.live_fingerprint() == devca.fingerprint_of(leaf.cert)
    assert (live / "fullchain.pem").is_symlink()  # certbot's lineage untouched
    assert outcome.kept_at is not None
    assert (outcome.kept_at / "fullchain.pem").is_file()


def test_unsafe_sources_refused(node: Node) -> None:
    """World-writable folders, symlinks out of the folder and foreign owners are refused."""
    loose = node.source("loose")
    os.chmod(loose, 0o777)  # noqa: S103 - the unsafe folder is the case under test
    escaping = node.source("escaping")
    (escaping / "ca.pem").unlink()
    (escaping / "ca.pem").symlink_to(node.ca_file)
    foreign = node.source("foreign")
    os.chown(foreign / "certificate.pem", 65534, 65534)
    for folder, words in ((loose, "writable"), (escaping, "outside"), (foreign, "uid 65534")):
        outcome = install(build_context(node.config), folder)
        assert outcome.status == "refused"
        assert [p.code for p in outcome.problems] == ["source_unsafe"]
        assert words in outcome.problems[0].message


def test_incomplete_source_refused(node: Node) -> None:
    """A folder without a whole set is refused with the names it lacks."""
    src = node.source("partial")
    (src / "privateKey.pem").unlink()
    outcome = install(build_context(node.config), src)
    assert [p.code for p in outcome.problems] == ["source_incomplete"]
    assert outcome.kept_at is not None
    assert reason(outcome.kept_at)["stage"] == "source"


def test_same_set_twice_is_unchanged(node: Node) -> None:
    """Installing the live set again restarts nothing."""
    src = node.source("a")
    copy = node.tmp / "src" / "a-again"
    copy.mkdir()
    for name in ("certificate.pem", "privateKey.pem", "ca.pem"):
        devca.write_private(copy / name, (src / name).read_bytes())
    install(build_context(node.config), src)
    assert install(build_context(node.config), copy).status == "unchanged"
    assert node.restarts() == 1


def test_disk_full_leaves_live_set(node: Node) -> None:
    """ENOSPC on a real full tmpfs state directory: clear error, live set as it was."""
    node.state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(node.state)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        ctx = build_context(node.config)
        install(ctx, node.source("fill"))  # adoption + first install fit
        old = node.live_fingerprint()
        filler = node.state / "filler"
        with pytest.raises(OSError, match="No space left"):
            filler.write_bytes(b"\0" * 256 * 1024)
        with pytest.raises(SwapError, match="no space left"):
            install(ctx, node.source("big"))
        assert node.live_fingerprint() == old
        assert not in_flight(ctx.store)
        assert not [p for p in (node.state / "generations").iterdir() if p.name.startswith(".")]
        assert (node.tmp / "src" / "big").exists()  # not judged, so not moved
    finally:
        subprocess.run(["umount", str(node.state)], check=False)


def test_permission_denied_leaves_live_set(node: Node) -> None:
    """An immutable generations directory (chattr +i): clear error, live set as it was."""
    ctx = build_context(node.config)
    install(ctx, node.source("first"))
    old = node.live_fingerprint()
    gens = node.state / "generations"
    if (
        subprocess.run(["chattr", "+i", str(gens)], capture_output=True, check=False).returncode
        != 0
    ):
        pytest.skip("chattr +i is not supported here")
    try:
        with pytest.raises(SwapError, match=r"not permitted|permission denied"):
            install(ctx, node.source("second"))
    finally:
        subprocess.run(["chattr", "-i", str(gens)], check=False)
    assert node.live_fingerprint() == old
    assert not in_flight(ctx.store)


def test_failing_rename_leaves_live_set(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """rename(2) failing on the flip (EXDEV, as across devices) leaves the live set."""
    ctx = build_context(node.config)
    install(ctx, node.source("first"))
    old = node.live_fingerprint()
    real_rename = os.rename

    def failing(src: object, dst: object) -> None:
        if str(dst) == str(node.state / "current"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(SwapError, match="cross-device"):
        install(ctx, node.source("second"))
    monkeypatch.undo()
    assert node.live_fingerprint() == old
    assert not in_flight(ctx.store)
    assert [g.meta["outcome"] for g in ctx.store.generations()] == ["adopted", "installed"]


def test_config_errors_name_the_key(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown keys and wrong types are refused with the key's path and what was expected."""
    node.config_data["restart"]["methd"] = "none"
    with pytest.raises(ConfigError, match=r"restart\.methd: unknown key"):
        _ = node.config
    del node.config_data["restart"]["methd"]
    node.config_data["generations_kept"] = "five"
    with pytest.raises(ConfigError, match="generations_kept: expected an integer"):
        _ = node.config
    path = node.write_config()
    assert main(["status", "--config", str(path)]) == 2
    assert "generations_kept" in capsys.readouterr().err


def test_cli_install_status_rollback(node: Node) -> None:
    """A person can install, look at status, roll back and install again (real processes)."""
    cfg = str(node.write_config())

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harper_certd", *args, "--config", cfg],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    first = cli("install", str(node.source("one")))
    assert first.returncode == 0, first.stderr
    assert "Installed as generation 000002" in first.stdout
    assert "()" not in first.stdout  # no empty account of how (a restart command says none)
    st = cli("status", "--json")
    data = json.loads(st.stdout)
    assert data["current_generation"] == "000002"
    assert data["live"]["valid"] is True
    assert [h["op"] for h in data["history"]] == ["adopt", "install"]
    human = cli("status")
    assert "* 000002" in human.stdout
    back = cli("rollback")
    assert back.returncode == 0, back.stderr
    assert json.loads(cli("status", "--json").stdout)["current_generation"] == "000001"
    again = cli("install", str(node.source("two")))
    assert again.returncode == 0
    bad = node.source("bad")
    (bad / "certificate.pem").write_bytes(b"junk")
    refused = cli("install", str(bad))
    assert refused.returncode == 1
    assert "cert_unreadable" in refused.stdout


def test_install_while_harper_is_stopped(tmp_path: Path) -> None:
    """With Harper stopped (no live hdb.pid) a valid set is installed, not rolled back, and the
    outcome says it is not verified."""
    node = make_node(tmp_path, method="auto")
    node.config_data["verify"] = {"enabled": True, "timeout": 30}
    (node.root / "hdb.pid").write_text("999999999\n")  # a stale pid file, as after a kill -9
    src = node.source("while-stopped")
    outcome = install(build_context(node.config), src)
    assert outcome.status == "installed", outcome.as_dict()
    assert outcome.applied is not None
    assert "not running" in outcome.applied.detail
    assert node.live_fingerprint() == _fp(
        node.root
        / "keys"
        / "processed"
        / next(p.name for p in (node.root / "keys" / "processed").iterdir())
        / "certificate.pem"
    )
