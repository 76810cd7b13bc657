"""The YAML memo (``yamlmemo``): a file read again with the same bytes is not parsed again
and imports no PyYAML; anything else is parsed, and a memo is used only from a folder that
only this user can change."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from harper_certd import yamlmemo
from harper_certd.errors import ConfigError
from harper_certd.yamlfile import YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES, read_yaml

BOUNDS = (YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's memo folder: ``$XDG_CACHE_HOME/harper-certd``."""
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.delenv(yamlmemo.MEMO_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "harper-certd"


def _values(cache: Path) -> dict[str, object]:
    memo = json.loads((cache / yamlmemo.MEMO_NAME).read_text())
    assert memo["salt"] == yamlmemo.salt(BOUNDS)
    values: dict[str, object] = memo["values"]
    return values


def _craft(folder: Path, file: Path, value: object) -> None:
    """A memo in ``folder`` that says ``file``'s bytes parse to ``value``."""
    folder.mkdir(parents=True, exist_ok=True)
    key = yamlmemo.digest(file.read_bytes())
    memo = {"salt": yamlmemo.salt(BOUNDS), "values": {key: value}}
    (folder / yamlmemo.MEMO_NAME).write_text(json.dumps(memo))


def test_a_file_read_again_imports_no_pyyaml(tmp_path: Path) -> None:
    """Two fresh interpreters read the same file: the first parses it and keeps its value
    (folder 0700, file 0600), the second gets the same value without importing PyYAML."""
    config = tmp_path / "certd.yaml"
    config.write_text("harper:\n  root: /srv/hdb\nwatch:\n  settle_seconds: 0.5\nflag: yes\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("CACHE_DIRECTORY", None)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from harper_certd.yamlfile import read_yaml\n"
        f"value = read_yaml(Path({str(config)!r}))\n"
        "print(json.dumps({'value': value, 'pyyaml': 'yaml' in sys.modules}))\n"
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        for _ in range(2)
    ]
    expected = {"harper": {"root": "/srv/hdb"}, "watch": {"settle_seconds": 0.5}, "flag": True}
    assert [r["value"] for r in runs] == [expected, expected]
    assert [r["pyyaml"] for r in runs] == [True, False]
    folder = tmp_path / "xdg" / "harper-certd"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / yamlmemo.MEMO_NAME).stat().st_mode & 0o777 == 0o600


def test_a_hit_is_what_the_memo_holds(tmp_path: Path, cache: Path) -> None:
    """The memo is read: an entry for the file's bytes is what ``read_yaml`` returns (so a
    memo is trusted as the configuration is, which the tests below hold it to)."""
    config = tmp_path / "c.yaml"
    config.write_text("a: 1\n")
    _craft(cache, config, {"a": "from the memo"})
    assert read_yaml(config) == {"a": "from the memo"}


def test_one_changed_byte_is_a_miss_whatever_the_stamps(tmp_path: Path, cache: Path) -> None:
    """Same size, same mtime, one byte changed: parsed again (no stamp is trusted)."""
    config = tmp_path / "c.yaml"
    config.write_text("a: 1\nb: x\n")
    assert read_yaml(config) == {"a": 1, "b": "x"}
    before = config.stat()
    config.write_text("a: 2\nb: x\n")
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert config.stat().st_size == before.st_size
    assert read_yaml(config) == {"a": 2, "b": "x"}
    assert len(_values(cache)) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("when: 2026-12-08\n", {"when": dt.date(2026, 12, 8)}),
        ("1: one\n", {1: "one"}),
        ("true: yes\n", {True: True}),
        ("s: !!set {a, b}\n", {"s": {"a", "b"}}),
        ("b: !!binary aGk=\n", {"b": b"hi"}),
        ("inf: .inf\n", {"inf": float("inf")}),
    ],
)
def test_a_value_json_would_change_is_parsed_each_time(
    tmp_path: Path, cache: Path, text: str, expected: object
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert not yamlmemo.keeps(expected)
    for _ in range(2):
        assert read_yaml(config) == expected
    assert not (cache / yamlmemo.MEMO_NAME).exists()


def test_a_nan_is_parsed_each_time(tmp_path: Path, cache: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("n: .nan\n")
    value = read_yaml(config)
    assert value["n"] != value["n"]
    assert not (cache / yamlmemo.MEMO_NAME).exists()


def test_a_file_holding_a_private_key_is_not_kept(tmp_path: Path, cache: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("key: |\n  -----BEGIN PRIVATE KEY-----\n  MC4CAQAwBQYDK2VwBCIEIA==\n")
    assert read_yaml(config)["key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert not (cache / yamlmemo.MEMO_NAME).exists()


def test_invalid_yaml_is_refused_each_time(tmp_path: Path, cache: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("a: [1, 2\n")
    for _ in range(2):
        with pytest.raises(ConfigError, match="not valid YAML"):
            read_yaml(config)
    assert not (cache / yamlmemo.MEMO_NAME).exists()


def test_a_memo_others_can_change_is_not_used(tmp_path: Path, cache: Path) -> None:
    """A crafted memo (``test_a_hit_is_what_the_memo_holds``) in a folder others can write,
    behind a link, in a folder others could replace, writable by others, with a second name
    (a hard link), or as a link itself: the file is
    parsed, and the crafted memo is left as it was (a link is replaced, not written
    through)."""
    config = tmp_path / "c.yaml"
    config.write_text("a: 1\n")
    _craft(cache, config, {"a": "from the memo"})
    memo = cache / yamlmemo.MEMO_NAME
    crafted = memo.read_bytes()

    cache.chmod(0o777)  # others can write the folder
    assert read_yaml(config) == {"a": 1}
    assert memo.read_bytes() == crafted
    cache.chmod(0o700)

    real = tmp_path / "elsewhere"
    cache.rename(real)  # the folder is a link to a folder with the memo
    cache.symlink_to(real)
    assert read_yaml(config) == {"a": 1}
    assert (real / yamlmemo.MEMO_NAME).read_bytes() == crafted
    cache.unlink()
    real.rename(cache)

    cache.parent.chmod(0o777)  # others could put a link in the folder's place
    assert read_yaml(config) == {"a": 1}
    assert memo.read_bytes() == crafted
    cache.parent.chmod(0o755)

    memo.chmod(0o666)  # the memo itself others could write
    assert read_yaml(config) == {"a": 1}
    memo.write_bytes(crafted)
    memo.chmod(0o600)
    os.link(memo, tmp_path / "second-name.json")  # a second name for it
    assert read_yaml(config) == {"a": 1}
    memo.unlink()
    memo.write_bytes(crafted)
    memo.chmod(0o600)

    memo.unlink()  # the memo is a link to the crafted one
    (tmp_path / "crafted.json").write_bytes(crafted)
    memo.symlink_to(tmp_path / "crafted.json")
    assert read_yaml(config) == {"a": 1}
    assert (tmp_path / "crafted.json").read_bytes() == crafted
    assert not memo.is_symlink()  # replaced by a memo of our own, never written through
    assert list(_values(cache).values()) == [{"a": 1}]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files to another user")
def test_a_memo_owned_by_another_user_is_not_used(tmp_path: Path, cache: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("a: 1\n")
    _craft(cache, config, {"a": "from the memo"})
    nobody = pwd.getpwnam("nobody").pw_uid
    memo = cache / yamlmemo.MEMO_NAME
    os.chown(memo, nobody, -1)
    assert read_yaml(config) == {"a": 1}
    _craft(cache, config, {"a": "from the memo"})
    os.chown(cache, nobody, -1)  # the folder is another user's
    assert read_yaml(config) == {"a": 1}
    assert json.loads(memo.read_text())["values"] != {}  # not rewritten


def test_a_damaged_memo_or_another_salt_is_a_miss(tmp_path: Path, cache: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("a: 1\n")
    cache.mkdir(parents=True, mode=0o700)
    memo = cache / yamlmemo.MEMO_NAME
    memo.write_bytes(b'{"salt": "1:2:3", "val')
    assert read_yaml(config) == {"a": 1}
    assert list(_values(cache).values()) == [{"a": 1}]  # rewritten whole
    key = yamlmemo.digest(config.read_bytes())
    memo.write_text(json.dumps({"salt": "0:older", "values": {key: "from an older memo"}}))
    assert read_yaml(config) == {"a": 1}


def test_off_reads_and_writes_nothing(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("a: 1\n")
    _craft(cache, config, {"a": "from the memo"})
    monkeypatch.setenv(yamlmemo.MEMO_ENV, "off")
    other = tmp_path / "d.yaml"
    other.write_text("b: 2\n")
    assert read_yaml(config) == {"a": 1}
    assert read_yaml(other) == {"b": 2}
    assert yamlmemo.digest(other.read_bytes()) not in _values(cache)


def test_the_newest_entries_are_kept(tmp_path: Path, cache: Path) -> None:
    files = []
    for i in range(yamlmemo.MEMO_ENTRIES + 8):
        f = tmp_path / f"c{i}.yaml"
        f.write_text(f"n: {i}\n")
        assert read_yaml(f) == {"n": i}
        files.append(f)
    values = _values(cache)
    assert len(values) == yamlmemo.MEMO_ENTRIES
    assert yamlmemo.digest(files[-1].read_bytes()) in values
    assert yamlmemo.digest(files[7].read_bytes()) not in values
    assert yamlmemo.digest(files[8].read_bytes()) in values


def test_the_folder_is_systemds_then_xdgs_then_the_users() -> None:
    home = Path(pwd.getpwuid(os.geteuid()).pw_dir)
    default = (
        Path("/var/cache/harper-certd") if os.geteuid() == 0 else home / ".cache" / "harper-certd"
    )
    assert yamlmemo.folder(
        {"CACHE_DIRECTORY": "/var/cache/a:/var/cache/b", "XDG_CACHE_HOME": "/x"}
    ) == Path("/var/cache/a")
    assert yamlmemo.folder({"XDG_CACHE_HOME": "/x", "HOME": "/h"}) == Path("/x/harper-certd")
    assert yamlmemo.folder({"HOME": "/somewhere/else"}) == default
    assert yamlmemo.folder({yamlmemo.MEMO_ENV: "off", "XDG_CACHE_HOME": "/x"}) is None
    assert yamlmemo.folder({"CACHE_DIRECTORY": "rel", "XDG_CACHE_HOME": "also/rel"}) == default
