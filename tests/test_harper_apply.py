"""harper_certd.harper.apply without Harper: the restart-method table, the configuration's
spelling of the methods, and the before-restart hook (run before the restart, with the
applier's sleep).  Restarts, hot reloads and the re-nudge on a real Harper are tested in
tests/test_harper_integration.py and tests/test_harper_restart.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import sys
import threading
from pathlib import Path

import pytest

from harper_certd import discover
from harper_certd.config import parse_config
from harper_certd.errors import ConfigError, HarperError, HarperNoAnswer
from harper_certd.harper import apply
from harper_certd.harper.method import RestartMethod
from harper_certd.harper.probe import Sleep
from harper_certd.restart import command_applier, none_applier
from harper_certd.swap import Store

# The members that are not a way of restarting Harper: resolved (auto), Harper's own
# watchers (hot-reload), or nothing (none).
NOT_RESTARTS = {RestartMethod.AUTO, RestartMethod.HOT_RELOAD, RestartMethod.NONE}


def test_every_restarting_method_has_a_way() -> None:
    assert set(apply._RESTARTS) == set(RestartMethod) - NOT_RESTARTS


def test_config_spells_the_methods_as_the_enum() -> None:
    for member in RestartMethod:
        config = parse_config({"restart": {"method": member.value, "command": ["true"]}})
        assert config.restart.method is member
    with pytest.raises(ConfigError) as refused:
        parse_config({"restart": {"method": "reboot"}})
    expected = " or ".join(repr(m.value) for m in RestartMethod)
    assert str(refused.value) == f"configuration: restart.method: expected {expected}, got 'reboot'"


def _node(tmp_path: Path) -> discover.HarperConfig:
    root = tmp_path / "hdb"
    (root / "keys").mkdir(parents=True)
    (root / "harperdb-config.yaml").write_text(
        "tls:\n"
        f"  certificate: {root}/keys/certificate.pem\n"
        f"  certificateAuthority: {root}/keys/ca.pem\n"
        f"  privateKey: {root}/keys/privateKey.pem\n"
        "operationsApi:\n  network:\n    port: 1\n"
    )
    return discover.load_config(root)


def test_make_applier_by_method(tmp_path: Path) -> None:
    harper = _node(tmp_path)
    paths = harper.sets()[0].first.paths
    assert paths is not None
    store = Store(tmp_path / "state", paths)
    none = parse_config({"restart": {"method": "none"}})
    assert apply.make_applier(none, harper, store) is none_applier
    bare = parse_config(
        {"restart": {"method": "command", "command": ["true"]}, "verify": {"enabled": False}}
    )
    made = apply.make_applier(bare, harper, store)
    assert made.__qualname__ == command_applier(("true",), 1.0).__qualname__
    hot = parse_config({"restart": {"method": "hot-reload"}})
    assert isinstance(apply.make_applier(hot, harper, store), apply.HarperApplier)


def test_before_restart_runs_first_with_the_appliers_sleep(tmp_path: Path) -> None:
    """The hook is called before the restart command runs, and is handed the applier's own
    (interruptible) sleep; a failing restart is a HarperError naming the command."""
    harper_config = _node(tmp_path)
    marker = tmp_path / "restarted"
    config = parse_config(
        {
            "restart": {
                "method": "command",
                "command": [
                    sys.executable,
                    "-c",
                    "import pathlib, sys; m = pathlib.Path(sys.argv[1]); "
                    "sys.exit(0 if pathlib.Path(f'{m}.hook').exists() and not m.touch() else 3)",
                    str(marker),
                ],
            }
        }
    )
    harper = apply.make_harper(config, harper_config, env=dict(os.environ))
    paths = harper_config.sets()[0].first.paths
    assert paths is not None
    store = Store(tmp_path / "state", paths)
    seen: list[Sleep] = []

    def hook(sleep: Sleep) -> float:
        seen.append(sleep)
        Path(f"{marker}.hook").touch()  # the restart command fails unless this ran first
        return 0.0

    applier = apply.HarperApplier(harper, store, hook)
    applier.restart(RestartMethod.COMMAND)
    assert marker.exists()
    assert seen == [applier.sleep]
    failing = parse_config({"restart": {"method": "command", "command": ["false"]}})
    broken = apply.HarperApplier(apply.make_harper(failing, harper_config), store, hook)
    with pytest.raises(HarperError, match=r"^false exited 1"):
        broken.restart(RestartMethod.COMMAND)


def _ops_socket(path: Path, unanswered: set[str]) -> tuple[list[str], threading.Thread]:
    """A Unix-socket HTTP peer standing in for Harper's Operations API socket: it reads each
    request and answers it, except operations in ``unanswered``, whose connection it closes
    without a reply (what Harper 4.3 does to a ``restart`` when its workers go down before
    the reply is flushed; the race cannot be provoked on demand on a real node)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.settimeout(10)
    seen: list[str] = []

    def serve() -> None:
        with listener:
            while len(seen) < 2:
                conn, _ = listener.accept()
                with conn:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(4096)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
                    while len(body) < length:
                        body += conn.recv(4096)
                    operation = json.loads(body)["operation"]
                    seen.append(operation)
                    if operation in unanswered:
                        continue  # closed unanswered
                    reply = json.dumps({"message": f"{operation} taken"}).encode()
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(reply)}\r\nConnection: close\r\n\r\n".encode()
                        + reply
                    )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return seen, thread


def test_restart_sent_but_unanswered_goes_on_to_verification(tmp_path: Path) -> None:
    """A restart the Operations API took but did not answer is not a failed restart (CI,
    4.3.0 under load: the install and then its rollback were refused for it, while Harper
    had restarted): the applier says so and lets the verification decide.  A request that
    could not be sent at all is still a HarperError."""
    harper_config = _node(tmp_path)
    sock = tmp_path / "ops.sock"
    config = parse_config({"operations_api": {"url": f"unix:{sock}"}})
    harper = apply.make_harper(config, harper_config, env={})
    harper = dataclasses.replace(harper, ports={**harper.ports, "clusteringRoutes": 1})
    seen, server = _ops_socket(sock, unanswered={"restart"})
    detail = harper.restart(RestartMethod.OPERATIONS_API)
    server.join(10)
    assert seen == ["restart_service", "restart"]
    assert detail.startswith("restart_service taken; restart: no answer (")
    assert detail.endswith("Remote end closed connection without response); verifying")
    sock.unlink()
    with pytest.raises(HarperError) as unsent:
        harper.restart(RestartMethod.OPERATIONS_API)
    assert not isinstance(unsent.value, HarperNoAnswer)
    assert "No such file or directory" in str(unsent.value)
