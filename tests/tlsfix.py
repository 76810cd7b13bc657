"""A stand-in for Harper's TLS ports: serves whatever the live files hold at each handshake.

Harper 4.7 reloads its certificate files by itself; this server re-reads the live paths
(through their symlinks) for every connection, which is the same observable behaviour, and
records the SNI each client sent.  Real sockets, real TLS (the ssl module).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from pathlib import Path
from types import TracebackType


class LiveTlsServer:
    def __init__(self, cert: Path, key: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cert = cert
        self.key = key
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.sni: list[str | None] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.realpath(self.cert), os.path.realpath(self.key))

        def remember(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.sni.append(name)

        ctx.sni_callback = remember
        return ctx

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with contextlib.suppress(OSError, ssl.SSLError), conn:
                conn.settimeout(3)
                with self._context().wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)

    def __enter__(self) -> LiveTlsServer:
        self.thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True
