"""The configuration file: example documents every key with its default; strict loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harper_certd.config import Config, load_config, parse_config, resolve_paths
from harper_certd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.yaml"


def _keys(cls: Any, prefix: str = "") -> set[str]:
    out = set()
    for field in cls._fields:
        name = f"{prefix}{field}"
        out.add(name)
        default = cls._field_defaults.get(field)
        if isinstance(default, tuple) and hasattr(default, "_fields"):  # a section
            out |= _keys(type(default), name + ".")
    return out


def _yaml_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        out.add(f"{prefix}{key}")
        if isinstance(value, dict):
            out |= _yaml_keys(value, f"{prefix}{key}.")
    return out


def test_example_documents_every_key_with_its_default() -> None:
    """config.example.yaml has each key of Config, and its values are the defaults."""
    data = yaml.safe_load(EXAMPLE.read_text())
    assert _yaml_keys(data) == _keys(Config)
    assert load_config(EXAMPLE) == Config()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"restart": {"method": "reboot"}}, "restart.method: expected 'auto' or"),
        (
            {"restart": {"command": "systemctl restart harperdb"}},
            "restart.command: expected a list",
        ),
        ({"verify": {"timeout": "60s"}}, "verify.timeout: expected a number"),
        ({"watch": []}, "watch: expected a mapping"),
        ({"nope": 1}, "nope: unknown key"),
        ({"generations_kept": 1}, "generations_kept: must be 2 or more"),
        ({"restart": {"method": "command"}}, "restart.command: must name an argv list"),
    ],
)
def test_bad_values_name_key_and_expectation(data: dict[str, Any], message: str) -> None:
    """Each mistake is refused with the key's path and what was expected."""
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_config(data)


def test_default_paths_follow_root_and_systemd() -> None:
    """incoming/processed/rejected follow harper.root; state follows $STATE_DIRECTORY."""
    config = parse_config({"harper": {"root": "/srv/hdb"}})
    paths = resolve_paths(config, env={"STATE_DIRECTORY": "/var/lib/harper-certd"})
    assert paths.incoming == Path("/srv/hdb/keys/incoming")
    assert paths.rejected == Path("/srv/hdb/keys/rejected")
    assert paths.state == Path("/var/lib/harper-certd")
    assert resolve_paths(parse_config({}), env={"ROOTPATH": "/x"}).harper_root == Path("/x")


def test_an_unquoted_off_is_off(tmp_path: Path) -> None:
    """YAML 1.1 reads `off` and `no` unquoted as false: where a key's values include "off",
    that is what it means (a newcomer wrote `check: off`, as the example says, and was
    refused); a true where no "on" exists is still refused, with the key."""
    config = tmp_path / "certd.yaml"
    for text in ("peers:\n  check: off\n", "peers:\n  check: no\n", 'peers:\n  check: "off"\n'):
        config.write_text(text)
        assert load_config(config).peers.check == "off", text
    config.write_text("peers:\n  check: on\n")
    with pytest.raises(ConfigError, match=r"peers\.check: expected 'auto' or 'off', got True"):
        load_config(config)
    config.write_text("log:\n  level: off\n")  # no "off" among its values
    with pytest.raises(ConfigError, match=r"log\.level"):
        load_config(config)
