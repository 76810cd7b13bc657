"""Harper's Operations API: HTTP POST of one JSON operation, basic auth, over TCP
(``operationsApi.network.port``, or https) or the Unix socket
(``operationsApi.network.domainSocket``).

Credentials come from ``operations_api.credentials_file`` ("user:password", refused when
others can read it) or the two environment variables the configuration names.  A failed
call raises :class:`harper_certd.errors.HarperError` (``HarperNoAnswer`` when the request
was sent but no answer came: its effect is unknown); the request (which may carry
credentials) is never echoed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from harper_certd import discover, fsio
from harper_certd.config import Config
from harper_certd.errors import ConfigError, HarperError, HarperNoAnswer


class Api(Protocol):
    """What callers of the Operations API need (a fake in unit tests)."""

    def call(self, operation: Mapping[str, Any]) -> dict[str, Any]: ...


def hdb_nodes(api: Api, attributes: list[str]) -> list[dict[str, Any]]:
    """Every record of ``system.hdb_nodes`` (Harper's cluster membership: one per node it
    knows), with ``attributes`` (``name``, ``url``, ``ca``, ``ca_info``, ...): the records
    that are objects, in Harper's order.  Raises ``HarperError`` when the Operations API
    fails."""
    answer = api.call(
        {
            "operation": "search_by_value",
            "database": "system",
            "table": "hdb_nodes",
            "search_attribute": "name",
            "search_value": "*",
            "get_attributes": attributes,
        }
    )
    rows = answer.get("result", answer)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _credentials(config: Config, env: Mapping[str, str]) -> tuple[str, str] | None:
    section = config.operations_api
    if section.credentials_file is not None:
        path = section.credentials_file
        # Opened as every file from a place others may write (issue 17): no link followed
        # unless its folder is ours alone, never a FIFO, bounded, and owned by root or the
        # daemon's user: a file of another user's would let that user choose the credentials.
        trusted = frozenset({0, os.geteuid()})
        follow = not fsio.others_can_write(path.parent)
        try:
            fd = fsio.open_regular(path, owners=trusted, follow=follow)
            with os.fdopen(fd, "rb") as handle:
                st = os.fstat(handle.fileno())
                text = handle.read(4096).decode("utf-8", "replace").strip()
        except OSError as exc:
            raise ConfigError(
                f"operations_api.credentials_file {path}: {exc.strerror or exc}"
            ) from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"operations_api.credentials_file {path} is readable by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        user, sep, password = text.partition(":")
        if not sep:
            raise ConfigError(f"operations_api.credentials_file {path}: expected user:password")
        return user, password
    env_user, env_password = env.get(section.username_env), env.get(section.password_env)
    if env_user and env_password:
        return env_user, env_password
    return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


@dataclass(frozen=True, slots=True)
class OperationsApi:
    target: str  # http://host:port, https://host:port or unix:/path
    credentials: tuple[str, str] | None
    timeout: float = 10.0

    def call(self, operation: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(operation).encode()
        headers = {"Content-Type": "application/json"}
        if self.credentials is not None:
            token = base64.b64encode(":".join(self.credentials).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        conn: http.client.HTTPConnection
        if self.target.startswith("unix:"):
            conn = _UnixConnection(self.target[5:], self.timeout)
        else:
            url = urlsplit(self.target)
            if url.scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # our own node on loopback, mid-rotation
                conn = http.client.HTTPSConnection(
                    url.hostname or "127.0.0.1", url.port, timeout=self.timeout, context=ctx
                )
            else:
                conn = http.client.HTTPConnection(
                    url.hostname or "127.0.0.1", url.port, timeout=self.timeout
                )
        try:
            try:
                conn.request("POST", "/", body=body, headers=headers)
            except OSError as exc:  # not sent: nothing was done
                raise HarperError(f"Operations API at {self.target}: {exc}") from None
            try:
                response = conn.getresponse()
                text = response.read().decode(errors="replace")
            except OSError as exc:  # sent, no answer (RemoteDisconnected, timeout, reset)
                raise HarperNoAnswer(f"Operations API at {self.target}: {exc}") from None
        finally:
            conn.close()
        if response.status >= 300:
            # Never echo the request: it may carry credentials.
            raise HarperError(
                f"Operations API at {self.target}: HTTP {response.status}: {text[:200]}"
            )
        try:
            data = json.loads(text)
        except ValueError:
            return {"message": text}
        return data if isinstance(data, dict) else {"result": data}


def operations_api(
    config: Config, harper: discover.HarperConfig, env: Mapping[str, str] | None = None
) -> OperationsApi | None:
    env = os.environ if env is None else env
    credentials = _credentials(config, env)
    target = config.operations_api.url
    if target is None:
        if harper.operations_socket is not None:
            target = f"unix:{harper.operations_socket}"
        elif harper.operations_port is not None:
            target = f"http://127.0.0.1:{harper.operations_port}"
        else:
            return None
    return OperationsApi(target, credentials)
