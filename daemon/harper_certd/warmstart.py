"""The judge's Node process: started with ``spawn``, and for ``validate`` before anything else
of the CLI is imported (issue 19 item 5).

``harper-certd validate`` is judged by Node: one short ``node node_judge.js`` process (with
its JIT: ``judge.node``) that reads its request on stdin.  Node takes about 70 ms from its
start to its answer (Node 20.20 on 2 cores: 55 ms to start, 3 ms for ``tls``, 10 ms to judge
a set), and the CLI's imports before it knows the set used to come first.  ``prestart``
starts the judge process first, before anything else is imported, even ``subprocess``
(about 4 ms with ``contextlib`` and ``signal``): ``spawn`` is ``os.posix_spawn`` on pipes.
Node waits on stdin while Python imports, and ``take`` hands it to the judge
(``judge.node.Run``) when the judge chose exactly the same command.  A process nobody took
is killed at exit (``_discard``).

Started only where the choice is known from the command line alone: ``validate`` without a
``--node`` option (any abbreviation), which judges with the ``node`` on PATH, found as
``shutil.which`` finds it; and ``status``, whose judge is that same node unless Harper runs
here on another binary or ``judge.node`` names one (known only once the configuration is
read: 20-40 ms of imports later, which Node's start-up would otherwise follow), except when
that configuration, read here as text, names the judge itself (``_configured_judge``: a
``judge.node`` of ``none`` took a status' Node process 70 ms of CPU on the other core, to be
killed unused).  Any other command, or a judge chosen differently, starts cold; the worst
case is one Node process started for nothing.

The request is sent at once too when the command line alone says what it will be
(``--cert``, ``--key``, ``--ca``, ``--purpose``, ``--hostname``, ``--url-host`` written out,
and nothing else but ``--at``, ``--warn-days``, ``--json`` and ``--replication``): the three
files are read as ``judge.start_files`` reads them (``rawio.read_file``) and the request, encoded
as the judge encodes it (``encode_request``), is written into the pipe (when it fits: 64 KiB,
Linux's pipe size) and stdin closed.  Node then judges while Python imports, and its answer
is waiting when the analysis is done.  ``take`` hands that process over only when the judge's
own request is byte for byte the one sent (files that changed in between, or arguments read
otherwise than argparse reads them, give another request: the process is killed and the judge
starts cold).  Node judged the set some 40 ms before ``judge.start`` noted its instant;
the judge's time rule reads the seconds Node says it judged in (``node.Batch.judged``).

A leaf that imports only ``os``, ``atexit`` and ``time`` (built in) and ``rawio`` (``os``
and ``stat``, which ``os`` loads) at first, not even ``typing`` (about 5 ms with ``re`` and
``enum``): its annotations name builtin types alone;
``binascii`` and ``_json`` (C modules, 0.3 ms each, which ``base64`` and ``json`` load later
anyway) encode a request.  The console script (``entry``) calls ``prestart`` before it
imports the CLI.
"""

from __future__ import annotations

import atexit
import os
import time

from harper_certd.rawio import read_file

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    # One set of a request: (id, cert, key, CA file bytes, names, server, client).
    Request = tuple[str, bytes, bytes, bytes, Sequence[str], bool, bool]

# The shipped judge script (judge/node.py's script_path(): the package is a directory).
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "judge", "node_judge.js")
# Seconds ``_discard`` waits for a killed process to be reaped.
_REAP_SECONDS = 5.0
_CHUNK = 1 << 16
# Node's default trust store, which the judge never uses: every context it builds has the
# set's own ``ca`` (as Harper's has), and a context with ``ca`` verifies against those roots
# alone.  Node 20 still builds the default store when ``ca`` is added to a context: it
# parses its ~140 bundled roots (26 ms of a 75 ms judgement, Node 20.20 on 2 cores), plus
# NODE_EXTRA_CA_CERTS (15 ms for a system bundle of ~150 roots) at start-up.  The judge
# runs with ``--use-openssl-ca`` (the default store is OpenSSL's default paths instead of
# the bundle) and those paths set to the null device, and without NODE_EXTRA_CA_CERTS: an
# empty default store, built in no time.  No verdict changes: tests/test_judge.py::
# test_the_default_store_changes_no_verdict judges sets with both stores, including a leaf
# whose root is in the default store alone.
JUDGE_FLAGS = ("--use-openssl-ca",)
_JUDGE_ENV_SET = {"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull}
_UNUSED_BY_THE_JUDGE = "NODE_EXTRA_CA_CERTS"
# Node's flags that choose the default store (--use-system-ca: Node 22.15 and 23.8 on): out
# of NODE_OPTIONS for the judge (judge_env).
_STORE_FLAGS = frozenset({"--use-bundled-ca", "--use-openssl-ca", "--use-system-ca"})

# Bytes read per file for the judge (the CA file's limit, load.MAX_CA_FILE_BYTES; the
# analysis applies each file's own limit and Node's verdict counts only for the same bytes).
EARLY_LIMIT = 16 << 20
# A request sent before the CLI's imports must fit in the pipe at once (Linux: 64 KiB).
_PIPE_BYTES = 1 << 16
# ``validate``'s options with a value, and the request field each gives (None: none).
_VALUE_OPTIONS = {
    "--cert": "cert",
    "--key": "key",
    "--ca": "ca",
    "--purpose": "purpose",
    "--hostname": "hostname",
    "--url-host": "url_host",
    "--at": None,
    "--warn-days": None,
}
_FLAG_OPTIONS = frozenset({"--json", "--replication"})
_PURPOSES = frozenset({"cluster", "server", "client"})

# The started process: its command, the process, and the request already sent (or None).
_warm: tuple[list[str], Child, bytes | None] | None = None


class Child:
    """A process from ``spawn``: its ``pid``, our ends of its stdin, stdout and stderr pipes
    (raw descriptors), and ``returncode`` once reaped (negative: the signal that ended it,
    as ``subprocess`` says it)."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        self._fds = {"in": stdin, "out": stdout, "err": stderr}
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status if the process has ended (reaped now), else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL, unless it is already reaped (its pid may be another's by then; until it is
        reaped, the pid is this process's, running or a zombie)."""
        if self.returncode is None:
            os.kill(self.pid, 9)  # SIGKILL, without importing signal

    def close(self) -> None:
        """Close our ends of its pipes (idempotent)."""
        for name in self._fds:
            self._close(name)

    def wait(self, timeout: float) -> int | None:
        """Reap it within ``timeout`` seconds; None if it is still running then."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)
        return self.returncode

    def communicate(
        self, data: bytes, timeout: float, on_line: Callable[[bytes], None] | None = None
    ) -> tuple[bytes, bytes]:
        """Write ``data`` to its stdin and close it, read stdout and stderr to their end, and
        reap it, all within ``timeout`` seconds: ``(stdout, stderr)``.  A process that stops
        reading (a closed stdin: EPIPE) is no error here; its exit status says what it did.
        TimeoutError (the process killed and reaped) when the time is up.  ``on_line`` is
        called once with stdout so far when its first newline arrives: an answer complete
        before the process has exited (Node's teardown takes about 5 ms more)."""
        import select  # start-up cost: an extension module, loaded after Node started

        deadline = time.monotonic() + timeout
        stdin, stdout, stderr = self._fds["in"], self._fds["out"], self._fds["err"]
        out: dict[int, list[bytes]] = {stdout: [], stderr: []}
        poller = select.poll()
        for fd in out:
            poller.register(fd, select.POLLIN)
        sent, open_fds = 0, set(out)
        if data and stdin >= 0:
            os.set_blocking(stdin, False)
            poller.register(stdin, select.POLLOUT)
            open_fds.add(stdin)
        else:
            self._close("in")  # nothing to send, or sent already (``prestart``)
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                self.end()
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            for fd, _ in poller.poll(left * 1000):
                if fd == stdin:
                    try:
                        sent += os.write(fd, data[sent : sent + _CHUNK])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        sent = len(data)
                    if sent >= len(data):
                        poller.unregister(fd)
                        open_fds.discard(fd)
                        self._close("in")
                    continue
                chunk = os.read(fd, _CHUNK)
                if chunk:
                    out[fd].append(chunk)
                    if on_line is not None and fd == stdout and b"\n" in chunk:
                        on_line(b"".join(out[stdout]))
                        on_line = None
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
        self.close()
        if self.wait(max(deadline - time.monotonic(), 0.0)) is None:
            self.end()
            raise TimeoutError(f"no exit within {timeout:.0f} s")
        return b"".join(out[stdout]), b"".join(out[stderr])

    def send_at_once(self, data: bytes) -> bool:
        """Write ``data`` to its stdin and close it, when the pipe takes it all now (64 KiB:
        ``_PIPE_BYTES``); False, with nothing written, when it does not.  OSError when only
        part of it went in (the process is then ended: no one can use it)."""
        fd = self._fds["in"]
        if len(data) > _PIPE_BYTES or fd < 0:
            return False
        os.set_blocking(fd, False)
        try:
            written = os.write(fd, data)
        except (BlockingIOError, BrokenPipeError):  # full, or gone: the judge says why
            return False
        if written == len(data):
            self._close("in")
            return True
        self.end()
        raise OSError("the request did not fit in the pipe")

    def _close(self, name: str) -> None:
        fd = self._fds[name]
        if fd >= 0:
            os.close(fd)
            self._fds[name] = -1

    def end(self) -> None:
        """Kill it, close our ends of its pipes and reap it (bounded: ``_REAP_SECONDS``)."""
        self.kill()
        self.close()
        self.wait(_REAP_SECONDS)


def spawn(argv: list[str], env: dict[str, str] | None = None) -> Child:
    """Start ``argv`` (no shell) with new pipes for stdin, stdout and stderr: ``os.posix_spawn``,
    so that the CLI need not import ``subprocess`` before Node starts.  The child gets only
    those three descriptors (the rest of ours are close-on-exec, PEP 446) and our signal
    dispositions (an ignored SIGPIPE stays ignored, as Node ignores it itself).  OSError when
    the program cannot be started."""
    pipes = [os.pipe() for _ in range(3)]  # (read, write): stdin, stdout, stderr
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = pipes
    actions = [
        (os.POSIX_SPAWN_DUP2, in_r, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    try:
        pid = os.posix_spawnp(
            argv[0], argv, os.environ if env is None else env, file_actions=actions
        )
    except OSError:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    for fd in (in_r, out_w, err_w):  # the child's ends
        os.close(fd)
    return Child(pid, in_w, out_r, err_r)


def judge_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The judge's environment: ``env`` (default ours) without NODE_EXTRA_CA_CERTS, with
    OpenSSL's default paths on the null device (``JUDGE_FLAGS``), and without the default
    store's flags in NODE_OPTIONS (Node exits 9 when ``--use-bundled-ca`` meets
    ``--use-openssl-ca``; either only chooses the store the judge never uses)."""
    source = os.environ if env is None else env
    kept = {k: v for k, v in source.items() if k != _UNUSED_BY_THE_JUDGE}
    options = kept.get("NODE_OPTIONS", "").split()
    if _STORE_FLAGS.intersection(options):  # otherwise NODE_OPTIONS is passed as it is
        rest = [o for o in options if o not in _STORE_FLAGS]
        if rest:
            kept["NODE_OPTIONS"] = " ".join(rest)
        else:
            del kept["NODE_OPTIONS"]
    return {**kept, **_JUDGE_ENV_SET}


def judge_argv(node: str, *, jit: bool = False) -> list[str]:
    """The judge's command line: ``node`` with ``JUDGE_FLAGS``, ``--jitless`` unless ``jit``
    (judge/node.py says why), and the shipped script."""
    return [node, *JUDGE_FLAGS, SCRIPT] if jit else [node, *JUDGE_FLAGS, "--jitless", SCRIPT]


def path_node() -> str | None:
    """``node`` on PATH, as ``shutil.which("node")`` finds it (without importing shutil)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not folder:
            continue
        candidate = os.path.join(folder, "node")
        if (
            os.path.exists(candidate)
            and os.access(candidate, os.X_OK)
            and not os.path.isdir(candidate)
        ):
            return candidate
    return None


def wants_warm(args: list[str]) -> bool:
    """Whether ``args`` (the command line after the program name) is a ``validate`` judged
    by PATH's node (the command first, and no option that argparse would read as ``--node``)
    or a ``status``, whose judge is PATH's node unless Harper runs here on another binary or
    the configuration names one (``judge.runtime.choose``): its live set is judged with the
    JIT (``cli.cmd_status``), its request known only once the configuration is read."""
    if not args or args[0] not in ("validate", "status"):
        return False
    if args[0] == "status":
        return not _configured_judge(args)
    return not any(a.startswith("--n") for a in args[1:])


# Where every command reads its configuration without ``--config`` (config.CONFIG_ENV and
# config.DEFAULT_CONFIG_PATH are these).
CONFIG_ENV = "HARPER_CERTD_CONFIG"
DEFAULT_CONFIG = "/etc/harper-certd/config.yaml"


def _configured_judge(args: list[str]) -> bool:
    """Whether the configuration ``status`` will read names its judge (``judge.node``:
    ``none``, or a path), written as ``config.example.yaml`` writes it (a ``judge:`` line,
    ``node:`` indented under it): PATH's node is then not the status' judge and is not
    started.  What this cannot tell (a flow mapping, an abbreviated ``--config``, a file it
    cannot read) counts as no: Node is started, and killed if the configuration says
    otherwise, one process started for nothing, as before.  Never more than a guess about
    start-up: the judge is chosen from the configuration as read (``cli._start_live_judge``)."""
    path = None
    rest = iter(args[1:])
    for arg in rest:
        if arg == "--config":
            path = next(rest, None)
        elif arg.startswith("--config="):
            path = arg.partition("=")[2]
        elif arg.startswith("--co"):
            return False  # an abbreviation argparse may take for --config
    data = read_file(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG, 1 << 20)
    return data is not None and _names_judge(data)


def _names_judge(text: bytes) -> bool:
    """``judge.node`` given a value in block style in the YAML ``text`` (see above)."""
    in_judge = False
    for raw in text.split(b"\n"):
        line = raw.split(b" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        if not line[:1].isspace():  # a top-level key
            key, colon, value = line.partition(b":")
            in_judge = key.rstrip() == b"judge" and bool(colon) and not value.strip()
            continue
        key, colon, value = line.strip().partition(b":")
        if in_judge and key.rstrip() == b"node" and colon:
            value = value.strip().strip(b"'\"")
            return value not in (b"", b"null", b"Null", b"NULL", b"~")
    return False


def encode_request(sets: Iterable[Request]) -> bytes:
    """The judge's request on stdin (``node_judge.js``): ``{"sets": [{"id", "cert", "key",
    "ca" (base64 of the bytes), "names", "server", "client"}]}``, the bytes ``json.dumps``
    gives for it (ASCII, its default separators).  One encoder for ``prestart`` and the
    judge (``judge.node.Run``), whose requests ``take`` compares byte for byte."""
    # start-up cost: json's C encoder and binascii, loaded only to encode a request
    from _json import encode_basestring_ascii as quote
    from binascii import b2a_base64

    def b64(data: bytes) -> str:
        return quote(b2a_base64(data, newline=False).decode("ascii"))

    items = []
    for id_, cert, key, ca, names, server, client in sets:
        items.append(
            f'{{"id": {quote(id_)}, "cert": {b64(cert)}, "key": {b64(key)}, "ca": {b64(ca)}, '
            f'"names": [{", ".join(quote(n) for n in names)}], '
            f'"server": {"true" if server else "false"}, '
            f'"client": {"true" if client else "false"}}}'
        )
    return f'{{"sets": [{", ".join(items)}]}}'.encode("ascii")


def _validate_request(args: list[str]) -> bytes | None:
    """The request ``validate`` will make (``cli.cmd_validate``), when ``args`` say it alone
    (see the module); None when they do not, or a file cannot be read."""
    single: dict[str, str] = {"purpose": "cluster"}
    names: dict[str, list[str]] = {"hostname": [], "url_host": []}
    rest = iter(args[1:])
    for arg in rest:
        if arg in _FLAG_OPTIONS:
            continue
        option, equals, value = arg.partition("=")
        if option not in _VALUE_OPTIONS:
            return None
        if not equals:
            value = next(rest, "-")
            if value.startswith("-"):
                return None  # argparse reads it otherwise (an option, or an error)
        field = _VALUE_OPTIONS[option]
        if field in names:
            names[field].append(value)
        elif field is not None:
            single[field] = value  # argparse: the last one counts
    if single["purpose"] not in _PURPOSES or not {"cert", "key", "ca"} <= single.keys():
        return None
    files = [read_file(single[f], EARLY_LIMIT) for f in ("cert", "key", "ca")]
    cert, key, ca = files
    if cert is None or key is None or ca is None:
        return None
    purpose = single["purpose"]
    return encode_request(
        [
            (
                "set",
                cert,
                key,
                ca,
                [*names["hostname"], *names["url_host"]],
                purpose != "client",
                purpose != "server",
            )
        ]
    )


def prestart(args: list[str]) -> None:
    """Start the judge process for ``args`` when the choice is known now, and send it the
    request when that is known too (see module)."""
    global _warm  # noqa: PLW0603 - one process per CLI run
    if _warm is not None or not wants_warm(args):
        return
    node = path_node()
    if node is None:
        return
    argv = judge_argv(node, jit=True)  # validate and status ask for the JIT (judge/node.py)
    try:
        child = spawn(argv, judge_env())
    except OSError:
        return  # the judge starts it again and says why it could not
    _warm = (argv, child, None)
    atexit.register(_discard)  # whatever happens next, nobody's process is left behind
    # a status' request is known once its configuration is read (cli._start_live_judge)
    request = _validate_request(args) if args[0] == "validate" else None
    try:
        if request is not None and child.send_at_once(request):
            _warm = (argv, child, request)
    except OSError:  # half of it went in: that process is ended, and a cold one judges
        _warm = None


def take(argv: list[str], request: bytes) -> tuple[Child, bool] | None:
    """The started process when it runs exactly ``argv`` (it is then the caller's) and was
    sent nothing or exactly ``request``: ``(process, whether request was sent)``; else None
    (a process sent another request is killed).  Taken even when it has ended already: its
    exit status is what a new start would give (a JIT that a restriction killed, for one:
    the judge then runs ``--jitless`` at once)."""
    global _warm  # noqa: PLW0603 - one process per CLI run
    if _warm is None or _warm[0] != argv:
        return None
    _, child, sent = _warm
    _warm = None
    if sent is None:
        return child, False
    if sent == request:
        return child, True
    child.end()
    return None


def _discard() -> None:
    """Kill a process nobody took, and reap it."""
    global _warm  # noqa: PLW0603 - one process per CLI run
    if _warm is None:
        return
    child = _warm[1]
    _warm = None
    child.end()
