"""Reading a YAML file safely: one reader for the daemon's configuration and Harper's.

A leaf module (imports only ``errors``, ``fsio`` and ``yamlmemo``).  Bounded before it is
parsed: size, nesting depth and node count, so that a hostile or broken file is a sentence,
never a stall or a crash.  A file read before with the same bytes is not parsed again: its
value comes from ``yamlmemo`` (exact: keyed by the bytes' SHA-256), and PyYAML is imported
only to parse.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harper_certd import fsio, yamlmemo
from harper_certd.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

# Bounds for any YAML file we read (ours and Harper's): both are a few kB.  A file nested
# 50,000 deep made PyYAML's recursive constructor raise RecursionError (issue 10 item 8);
# PyYAML's event parser is iterative, so depth and size are measured on the event stream
# before anything is constructed.
YAML_MAX_BYTES = 1 << 20
YAML_MAX_DEPTH = 64
YAML_MAX_NODES = 100_000
# libyaml's parser when PyYAML has it (its wheels do): PyYAML's pure-Python scanner looks up
# to 1024 characters ahead for a simple key at every flow level, 0.6 s for a 50,000-deep
# "[[[..." (measured); libyaml refuses nesting past its own limit at once.  It also loads the
# document: 0.07 ms for the test nodes' 249-byte harperdb-config.yaml against 0.58 ms with
# PyYAML's SafeLoader (the same objects; a status reads four YAML files).  SafeLoader only
# words an error: its message quotes the line with a caret under the column, libyaml's does not.


def _check_yaml_shape(yaml: ModuleType, text: str, path: Path) -> None:
    depth = nodes = 0
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > YAML_MAX_DEPTH:
                raise ConfigError(
                    f"{path} is nested more than {YAML_MAX_DEPTH} levels deep; "
                    "no configuration needs that"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.NodeEvent):
            nodes += 1
            if nodes > YAML_MAX_NODES:
                raise ConfigError(f"{path} has more than {YAML_MAX_NODES} YAML nodes")


def read_yaml(path: Path, *, missing: str = "") -> Any:
    """A YAML file's content; ConfigError with a sentence (and ``missing``'s hint) otherwise.

    Refused with ConfigError: a path that is not a regular file (after links, followed only
    in a folder no one else can write: ``fsio.others_can_write``), a file over
    ``YAML_MAX_BYTES``, nested deeper than ``YAML_MAX_DEPTH`` or with more than
    ``YAML_MAX_NODES`` nodes, and invalid YAML.
    """
    # A link is followed only in a folder no one else can write (a Kubernetes ConfigMap's
    # ..data links); elsewhere it is refused, never read through (issue 17).
    follow = not fsio.others_can_write(path.parent)
    try:
        raw = fsio.read_regular(path, YAML_MAX_BYTES, follow=follow)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist{missing}") from None
    except fsio.NotRegular as exc:
        if exc.errno == errno.EFBIG:
            raise ConfigError(f"{path} is larger than {YAML_MAX_BYTES} bytes") from None
        raise ConfigError(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a link in {path.parent}, a folder others can write; "
                "name the file itself"
            ) from None
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
    key = yamlmemo.digest(raw)
    bounds = (YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES)  # a memo is kept under them
    value = yamlmemo.recall(key, bounds)
    if value is yamlmemo.MISSING:
        value = _parse(raw, path)
        yamlmemo.remember(key, raw, value, bounds)
    return value


def _parse(raw: bytes, path: Path) -> Any:
    """``read_yaml``'s parse of the bytes it read (its docstring says what is refused)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    from harper_certd.pyyaml import yaml  # start-up cost: only to parse (not on a memo hit)

    try:
        _check_yaml_shape(yaml, text, path)
        # a safe loader (libyaml's CSafeLoader)
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        if "nesting depth" in str(exc):  # libyaml's own limit (1000), past ours
            raise ConfigError(
                f"{path} is nested more than {YAML_MAX_DEPTH} levels deep; "
                "no configuration needs that"
            ) from None
        raise ConfigError(f"{path} is not valid YAML: {_worded(yaml, text, exc)}") from None
    except RecursionError:  # a last guard; the shape check should have refused it
        raise ConfigError(f"{path} is nested too deeply to read") from None


def _worded(yaml: ModuleType, text: str, exc: Exception) -> object:
    """PyYAML's own error for ``text`` where its SafeLoader refuses it too (its message quotes
    the line, a caret under the column), else ``exc`` (libyaml's, which quotes no line).
    A file that holds a private key block keeps libyaml's: a quoted line could be the key's."""
    if "PRIVATE KEY" in text:
        return exc
    try:
        yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as worded:
        return worded
    except RecursionError:
        return exc
    return exc
