"""Run Harper's own Node.js on a certificate set: ``node_judge.js``, shipped in this package.

One short Node process per judged set (or per batch of sets), started before our own
analysis so that both run at once; nothing stays resident.  Node runs with ``--jitless``:
the shipped unit's ``MemoryDenyWriteExecute=yes`` kills V8's JIT (a W+X mapping), and the
interpreter alone judges a set as well (measured on Node 20: tests/test_judge.py runs the
judge under PR_SET_MDWE, the kernel's form of that setting).  ``validate`` and ``status``,
an operator's or a monitor's commands, ask for the JIT (``jit``): ``require('tls')`` takes
3 ms with it and 11 ms without (Node 20.20, 2 cores).  A JIT run that dies by a signal (SIGTRAP: a
restriction like the unit's refused the JIT's memory) is run again ``--jitless``.

The script's answer per set (``NodeVerdict``) is what Node's TLS did: the error of
``tls.createSecureContext``, of the handshake, or of one side's certificate verification
(OpenSSL's code and reason), and ``tls.checkServerIdentity`` per name asked.
"""

import atexit
import json
import re
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from harper_certd import warmstart

# A set's judgement takes 50-250 ms (process start included); the bound is for a stuck
# process on a loaded machine, after which the model answers alone.
TIMEOUT_SECONDS = 20.0
# Node's own warnings on stderr kept in a failure reason: enough to say why, never key bytes
# (the script prints only its own stack on a crash; key bytes never reach stderr).
_STDERR_KEPT = 300
# The threads that talk to Node are named so; at exit each is given this long to see its
# Node exit and reap it (an answer is used before Node's own exit: ``Run.result``).
_THREAD_NAME = "harper-certd node judge"
# OpenSSL 3's error-queue line as Node quotes it: "<thread id>:error:<code>:<library>:
# <function>:<reason>:<source file>:<line>:<data>".  The thread id changes every run and the
# source path is OpenSSL's build tree: both are left out of the reason we show.
_OPENSSL_LINE = re.compile(
    r"\b[0-9A-F]{6,16}:(error:[0-9A-F]{8}:[^:]*:[^:]*:[^:]*):[^:\s]+:\d+:\S*"
)
_REAP_AT_EXIT_SECONDS = 5.0


@atexit.register
def _reap_at_exit() -> None:
    for thread in threading.enumerate():
        if thread.name == _THREAD_NAME:
            thread.join(_REAP_AT_EXIT_SECONDS)


class SetRequest(NamedTuple):
    """One set to judge: the files' bytes as read, the names to check against the server
    certificate, and which directions count (``server``: a client verifies this set as a
    server, serverAuth; ``client``: a server verifies it as a client, clientAuth)."""

    id: str
    cert: bytes
    key: bytes
    ca: bytes
    names: tuple[str, ...] = ()
    server: bool = True
    client: bool = True

    def fields(self) -> "warmstart.Request":
        """The set as ``warmstart.encode_request`` takes it."""
        return (self.id, self.cert, self.key, self.ca, self.names, self.server, self.client)


def encode(sets: Sequence[SetRequest]) -> bytes:
    """The script's request for ``sets`` (``warmstart.encode_request``)."""
    return warmstart.encode_request(s.fields() for s in sets)


class NodeVerdict(NamedTuple):
    """Node's answer for one set.  ``stage``: ``context`` (createSecureContext threw),
    ``handshake``, ``server``/``client`` (that side's verification refused), ``name``
    (checkServerIdentity refused a name), ``""`` when accepted.  ``code``/``message``:
    Node's error code and OpenSSL's reason."""

    id: str
    ok: bool
    stage: str
    code: str
    message: str
    names: Mapping[str, str] = MappingProxyType({})

    @property
    def reason(self) -> str:
        """One line: where and why Node refused (empty when it accepted)."""
        if self.ok:
            return ""
        where = {
            "context": "loading the files (tls.createSecureContext)",
            "handshake": "the TLS handshake",
            "server": "verifying the certificate as a server (a peer dialling this node)",
            "client": "verifying the certificate as a client (this node dialling a peer)",
            "name": "checking a host name (tls.checkServerIdentity)",
        }.get(self.stage, self.stage)
        message = _OPENSSL_LINE.sub(r"\1", " ".join(self.message.split()))[:300]
        return f"{self.code} in {where}: {message}" if message else f"{self.code} in {where}"


class Batch(NamedTuple):
    """A finished run: Node's version, OpenSSL's version, one verdict per set id, and
    ``judged``: (first, last), the seconds since the epoch on Node's clock before its first
    handshake and after its last."""

    node: str
    openssl: str
    verdicts: Mapping[str, NodeVerdict]
    judged: tuple[float, float]


def _judged(data: Mapping[str, object]) -> tuple[float, float]:
    """The answer's ``judged`` pair: two numbers in order, else ValueError."""
    pair = data.get("judged")
    if not isinstance(pair, list) or len(pair) != 2:
        raise ValueError("no judged pair")
    first, last = pair
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair):
        raise ValueError("judged is not two numbers")
    if first > last:
        raise ValueError("judged is not in order")
    return float(first), float(last)


class JudgeUnavailable(Exception):
    """Node could not judge (not startable, crashed, timed out, unreadable answer);
    ``str()`` says why in our words."""


def script_path() -> str:
    """The shipped script's path (package data beside this module; the package is always a
    directory, and ``importlib.resources`` would cost the CLI 2 ms of imports)."""
    return warmstart.SCRIPT


def argv(node: str, *, jit: bool = False) -> list[str]:
    """The judge's command line: ``--jitless`` unless ``jit`` (see the module), and an empty
    default trust store (``warmstart.JUDGE_FLAGS``, with ``warmstart.judge_env``)."""
    return warmstart.judge_argv(node, jit=jit)


class Run:
    """A Node process judging ``sets``, started at construction; ``result()`` waits.

    The request is written and the answer read by a thread, so the caller goes on with its
    own analysis meanwhile (a CA file of 1 MB is more than a pipe holds).
    """

    def __init__(
        self,
        node: str,
        sets: Sequence[SetRequest],
        *,
        timeout: float = TIMEOUT_SECONDS,
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        jit: bool = False,
    ) -> None:
        self._timeout = timeout
        self._out: bytes = b""
        self._err: bytes = b""
        self._failure: str | None = None
        # The answer line, once read (``_answered``): used without waiting for Node's exit.
        self._line: bytes | None = None
        self._ready = threading.Event()
        # what a JIT run that a restriction killed is run again with (``result``)
        self._again = (node, sets, env, prefix) if jit else None
        payload = encode(sets)
        command = [*prefix, *argv(node, jit=jit)]
        # The CLI's ``validate`` may have started this very command already (warmstart), and
        # sent it this very request.
        warm = warmstart.take(command, payload) if env is None else None
        if warm is not None and warm[1]:
            payload = b""  # sent already: only the answer is left to read
        try:
            self._proc: warmstart.Child | None = (
                warm[0]
                if warm is not None
                else warmstart.spawn(
                    command, warmstart.judge_env(None if env is None else dict(env))
                )
            )
        except OSError as exc:
            self._proc = None
            self._failure = f"{node} could not be started ({exc.strerror or type(exc).__name__})"
            self._thread: threading.Thread | None = None
            return
        self._thread = threading.Thread(
            target=self._talk, args=(payload,), name=_THREAD_NAME, daemon=True
        )
        self._thread.start()

    def _answered(self, line: bytes) -> None:
        """The script's answer is one line: complete once its newline is read."""
        self._line = line
        self._ready.set()

    def _talk(self, payload: bytes) -> None:
        assert self._proc is not None
        try:
            self._out, self._err = self._proc.communicate(
                payload, timeout=self._timeout, on_line=self._answered
            )
        except TimeoutError:
            self._failure = f"Node did not answer within {self._timeout:.0f} s"
        except OSError as exc:  # reading or writing its pipes failed
            self._proc.end()
            self._failure = f"Node could not be talked to ({exc.strerror or type(exc).__name__})"
        finally:
            self._ready.set()

    def result(self) -> Batch:
        """Node's verdicts; JudgeUnavailable when it could not give them.  A complete answer
        line is used at once; Node's exit is then the thread's to wait for (and reap)."""
        if self._thread is not None:
            self._ready.wait()  # the answer line, or the end of the talk (bounded by timeout)
        answer = self._line
        if answer is None:
            if self._thread is not None:
                self._thread.join()
            if self._failure is not None:
                raise JudgeUnavailable(self._failure)
            assert self._proc is not None
            status = self._proc.returncode
            assert status is not None  # communicate reaped it
            if self._again is not None and status < 0:
                node, sets, env, prefix = self._again
                return Run(node, sets, timeout=self._timeout, env=env, prefix=prefix).result()
            if status != 0:
                tail = self._err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                raise JudgeUnavailable(
                    f"Node exited with status {status} ({tail[0][:_STDERR_KEPT]})"
                )
            answer = self._out
        try:
            data = json.loads(answer)
            verdicts = {
                r["id"]: NodeVerdict(
                    id=r["id"],
                    ok=bool(r["ok"]),
                    stage=str(r["stage"]),
                    code=str(r["code"]),
                    message=str(r["message"]),
                    names={str(k): str(v) for k, v in r.get("names", {}).items()},
                )
                for r in data["results"]
            }
            return Batch(str(data["node"]), str(data["openssl"]), verdicts, _judged(data))
        except (ValueError, KeyError, TypeError):
            raise JudgeUnavailable("Node's answer could not be read") from None


def judge_sets(node: str, sets: Sequence[SetRequest], **kwargs: object) -> Batch:
    """Judge ``sets`` in one Node process and wait (batches: tests, ``check``)."""
    return Run(node, sets, **kwargs).result()  # type: ignore[arg-type]
