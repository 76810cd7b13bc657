"""CLI operations in the journal: the same JSON events as the daemon, identifier harper-certd.

The daemon's events reach the journal through its unit's stdout.  ``install``, ``rollback``,
``stage`` and ``release`` run from a shell or a deploy hook, where stdout is a person's
terminal or certbot's log; ``attach()`` also sends each of their events to journald's native
socket (``/run/systemd/journal/socket``, systemd's native protocol: one datagram of
``KEY=value`` lines), with ``SYSLOG_IDENTIFIER=harper-certd``, the sd-daemon priority of the
event's level as ``PRIORITY``, and ``MESSAGE`` the event's JSON line, exactly as the daemon
writes it (key material redacted by the same processor).  So
``journalctl -t harper-certd`` tells the whole story.  No journald (a container, say): a
silent no-op.  ``HARPER_CERTD_JOURNAL_SOCKET`` names another socket (tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from typing import Any

from harper_certd import logs
from harper_certd.clock import utc_now

SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "HARPER_CERTD_JOURNAL_SOCKET"
IDENTIFIER = "harper-certd"


def _datagram(name: str, fields: Mapping[str, Any]) -> bytes:
    event = dict(logs.drop_key_material(None, "", dict(fields)))
    level = str(event.pop("level", "info"))
    body = {"ts": utc_now().isoformat(), "level": level, "event": name}
    body.update({k: v for k, v in event.items() if k not in body})
    message = json.dumps(body, default=str)  # no raw newline: JSON escapes them
    priority = logs.PRIORITIES.get(level, logs.PRIORITIES["info"])
    lines = [
        f"MESSAGE={message}",
        f"PRIORITY={priority}",
        f"SYSLOG_IDENTIFIER={IDENTIFIER}",
        f"HARPER_CERTD_EVENT={name}",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")


class JournalSender:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def __call__(self, name: str, fields: Mapping[str, Any]) -> None:
        if not name.startswith("certd."):
            return
        with contextlib.suppress(OSError):  # journald gone: the terminal still has it
            self.sock.sendto(_datagram(name, fields), self.path)

    def close(self) -> None:
        logs.remove_observer(self)
        self.sock.close()


def attach(env: Mapping[str, str] | None = None) -> JournalSender | None:
    """Send this process's events to the journal too; None when there is no journald."""
    env = os.environ if env is None else env
    path = env.get(SOCKET_ENV) or SOCKET
    if not os.path.exists(path):
        return None
    sender = JournalSender(path)
    logs.add_observer(sender)
    return sender
