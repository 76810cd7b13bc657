"""The one YAML reader refuses bombs with a sentence, fast (issue 10 item 8)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from harper_certd import devca
from harper_certd.errors import ConfigError
from harper_certd.yamlfile import YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES, read_yaml


def _nested_block(depth: int) -> str:
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "leaf\n"


def _refused(path: Path) -> str:
    started = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    took = time.perf_counter() - started
    print(f"{path.name}: refused in {took * 1000:.1f} ms")  # a reported figure, no bound
    return str(info.value)


def test_depth_limit_is_exact(tmp_path: Path) -> None:
    """Nested exactly YAML_MAX_DEPTH deep loads; one level more is refused."""
    ok = tmp_path / "ok.yaml"
    ok.write_text(_nested_block(YAML_MAX_DEPTH))
    data = read_yaml(ok)
    for i in range(YAML_MAX_DEPTH - 1):
        data = data[f"k{i}"]
    assert data == {f"k{YAML_MAX_DEPTH - 1}": "leaf"}
    deep = tmp_path / "deep.yaml"
    deep.write_text(_nested_block(YAML_MAX_DEPTH + 1))
    assert "nested more than 64 levels" in _refused(deep)


@pytest.mark.parametrize("depth", [1_001, 50_000])
def test_flow_nesting_bomb_is_refused_as_nesting(tmp_path: Path, depth: int) -> None:
    """The issue's bomb ("[" 50,000 deep) and one just past libyaml's own limit: the same
    sentence, never RecursionError."""
    path = tmp_path / f"flow{depth}.yaml"
    path.write_text("tls:\n  certificate: " + "[" * depth + "]" * depth + "\n")
    assert "nested more than 64 levels" in _refused(path)


def test_too_many_nodes_and_too_large(tmp_path: Path) -> None:
    many = tmp_path / "many.yaml"
    many.write_text("".join(f"k{i}: {i}\n" for i in range(YAML_MAX_NODES // 2 + 1)))
    assert f"more than {YAML_MAX_NODES} YAML nodes" in _refused(many)
    large = tmp_path / "large.yaml"
    large.write_text("# " + "x" * YAML_MAX_BYTES + "\n")
    assert f"larger than {YAML_MAX_BYTES} bytes" in _refused(large)


def test_not_a_regular_file(tmp_path: Path) -> None:
    """A directory or a FIFO is refused without blocking on it."""
    assert "not a regular file" in _refused(tmp_path)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    assert "not a regular file" in _refused(fifo)


def test_not_utf8_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: \xff\n")
    assert "not UTF-8" in _refused(path)


def test_libyaml_loads_what_pyyaml_loads(tmp_path: Path) -> None:
    """libyaml loads the document (PyYAML's SafeLoader, ten times slower, only words an
    error): the same objects, YAML 1.1's implicit types included."""
    import yaml

    text = (
        "rootPath: /var/lib/harper\noperationsApi:\n  network:\n    port: 9925\n"
        "    securePort: null\ntls:\n  - certificate: ~/keys/a.pem\n    uses: [replication]\n"
        "mode: 0700\nflag: yes\nratio: 1.5e3\nwhen: 2026-12-07\nempty:\n"
    )
    path = tmp_path / "harperdb-config.yaml"
    path.write_text(text)
    assert read_yaml(path) == yaml.load(text, Loader=yaml.SafeLoader)


def test_invalid_yaml_quotes_its_line(tmp_path: Path) -> None:
    """A syntax error names the line and shows it, a caret under the column (PyYAML's wording,
    which libyaml's lacks)."""
    path = tmp_path / "broken.yaml"
    path.write_text("harper:\n  root: /var/lib/harper\n  port: a: b\n")
    message = _refused(path)
    assert "is not valid YAML: mapping values are not allowed here" in message
    assert "line 3, column 10:\n      port: a: b\n" in message
    assert message.rstrip().endswith("^")


def test_invalid_yaml_holding_a_key_quotes_none_of_it(tmp_path: Path) -> None:
    """A broken file with a private key pasted in: the error names line and column and quotes
    no line (PyYAML's caret snippet could be a line of the key)."""
    key = devca.make_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    lines = key.decode().splitlines()
    body = lines[1]
    path = tmp_path / "pasted.yaml"
    path.write_text(
        "tls:\n  privateKey: |\n" + "".join(f"    {x}\n" for x in lines) + f"  x: {body}: y\n"
    )
    message = _refused(path)
    assert "not valid YAML" in message
    assert "line " in message
    for line in lines[1:-1]:  # no 12 characters of any line of the key's body
        assert not any(line[i : i + 12] in message for i in range(len(line) - 11)), line


def test_pyyaml_patterns_are_compiled_when_first_used() -> None:
    """``harper_certd.pyyaml`` imports PyYAML without compiling its patterns
    (``Reader.NON_PRINTABLE`` alone cost 7-15 ms of every command's start-up, and libyaml
    never uses it): in a fresh interpreter they are deferred; a document loads with the
    implicit types of YAML 1.1 (only the patterns its scalars need compiled); PyYAML's own
    SafeLoader still refuses a control character with NON_PRINTABLE; ``re.compile`` is itself
    again after the import."""
    import subprocess
    import sys

    script = (
        "import re, sys\n"
        "from harper_certd.pyyaml import yaml, _Deferred\n"
        "pattern = yaml.reader.Reader.NON_PRINTABLE\n"
        "assert isinstance(pattern, _Deferred), type(pattern)\n"
        "stamp = yaml.constructor.SafeConstructor.timestamp_regexp\n"
        "assert isinstance(stamp, _Deferred) and stamp._compiled is None\n"
        "doc = yaml.load('a: yes\\nb: 0o17\\nc: 12\\nd: ~\\ne: 1.5\\n', Loader=yaml.CSafeLoader)\n"
        "assert doc == {'a': True, 'b': '0o17', 'c': 12, 'd': None, 'e': 1.5}, doc\n"
        "assert pattern._compiled is None and stamp._compiled is None\n"
        "import datetime\n"
        "assert yaml.load('w: 2026-12-07', Loader=yaml.CSafeLoader) == "
        "{'w': datetime.date(2026, 12, 7)}\n"
        "try:\n"
        "    yaml.load('a: \\x07', Loader=yaml.SafeLoader)\n"
        "except yaml.reader.ReaderError as exc:\n"
        "    assert '#x0007' in str(exc), exc\n"
        "else:\n"
        "    sys.exit('a control character was accepted')\n"
        "assert isinstance(pattern._compiled, re.Pattern)\n"
        "assert pattern.search('ok\\x1bx').start() == 2\n"
        "assert not isinstance(re.compile('x'), _Deferred)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_pyyaml_imported_already_is_taken_as_it_is() -> None:
    """A process that imported PyYAML itself (a test, a tool) gets that very module."""
    import yaml

    from harper_certd import pyyaml

    assert pyyaml._import_pyyaml() is yaml
