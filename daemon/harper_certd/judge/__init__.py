"""Harper's own runtime judges a set; our analysis explains the verdict.

``start`` launches Node on the set's bytes (``node``: one short process running the shipped
``node_judge.js``) before the analysis runs, ``finish`` waits for it and lays its verdict
over the analysis' problems (``verdict.reconcile``).  When there is no Node, or Node cannot
judge the instant asked, the model answers alone and the judge line says so.

Node judges the present only (OpenSSL reads the wall clock; Node cannot be handed another
instant).  Its verdict holds for another instant ``at`` when no certificate of the set has a
notBefore or notAfter between ``at`` and the instant Node judged at, which its answer says
(OpenSSL compares whole seconds: expired from the notAfter second on, valid from the notBefore
second on), so ``validate --at`` a few hours back is still Node's verdict; across a validity
bound the model answers.

The same set asked again within ``REUSE_SECONDS`` (``status`` starts Node on the live set
before its imports, then judges the same bytes) shares the Node run already started: Node's
verdict depends on the bytes, the names, the direction and the instant, and ``finish`` checks
the instant against the seconds Node says it judged in (``node.Batch.judged``) as for any run.
"""

import hashlib
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from harper_certd import rawio, warmstart
from harper_certd.judge import runtime, verdict
from harper_certd.judge.runtime import MODEL, Choice, NodeChoice, configure
from harper_certd.judge.verdict import JudgeInfo, model_info
from harper_certd.problems import Problem

if TYPE_CHECKING:  # the CLI starts Node before cryptography is imported (start-up cost)
    import datetime as dt

    from cryptography import x509

    # imported where a Node process is started (start-up cost: ``validate --node none``
    # loads neither it nor subprocess, json and threading)
    from harper_certd.judge import node

__all__ = [
    "EARLY_LIMIT",
    "MODEL",
    "Choice",
    "JudgeInfo",
    "NodeChoice",
    "Pending",
    "configure",
    "finish",
    "start",
    "start_files",
]

# Bytes read per file by ``start_files`` (see warmstart.EARLY_LIMIT).
EARLY_LIMIT = warmstart.EARLY_LIMIT
# Seconds a Node run is shared with the same request asked again.
REUSE_SECONDS = 10.0
# The last run started: (node path, SHA-256 of the request), the run, when it started.
_last: "tuple[tuple[str, bytes], node.Run, float] | None" = None


class Pending(NamedTuple):
    """A judgement under way: Node running (``run``) or the reason the model judges alone;
    ``judged``: the bytes Node was given (cert, key, CA), to check they are the analysed."""

    run: "node.Run | None"
    choice: NodeChoice | None
    why_model: str
    judged: tuple[bytes, bytes, bytes] | None = None

    def judges(self, cert: object, key: object, ca: object) -> bool:
        """Whether Node judges exactly these bytes."""
        return self.judged is not None and self.judged == (cert, key, ca)


def start(
    cert: bytes | None,
    key: bytes | None,
    ca: bytes | None,
    *,
    names: Sequence[str],
    server: bool,
    client: bool,
    judge: Choice | None = None,
) -> Pending:
    """Start Node on the files' bytes (None: a file that could not be read, or no key)."""
    now = time.time()
    choice = runtime.choose() if judge is None else judge
    if choice is MODEL:
        why = runtime.settings().off_reason if judge is None else "the model alone was asked for"
        return Pending(None, None, why)
    if isinstance(choice, str):
        return Pending(None, None, choice)
    assert isinstance(choice, NodeChoice)
    if cert is None or ca is None:
        return Pending(None, choice, "a file could not be read, so no handshake can be made")
    if key is None:
        return Pending(None, choice, "the private key could not be read, and a handshake needs it")
    global _last  # noqa: PLW0603 - one run remembered, for the same set asked again
    from harper_certd.judge import node  # start-up cost (above)

    request = node.SetRequest("set", cert, key, ca, tuple(names), server, client)
    digest = hashlib.sha256(repr((cert, key, ca, tuple(names), server, client)).encode()).digest()
    if (
        _last is not None
        and _last[0] == (choice.path, digest)
        and 0 <= now - _last[2] < REUSE_SECONDS
    ):
        return Pending(_last[1], choice, "", (cert, key, ca))
    run = node.Run(choice.path, [request], jit=runtime.settings().jit)
    _last = ((choice.path, digest), run, now)
    return Pending(run, choice, "", (cert, key, ca))


def start_files(
    cert: Path,
    key: Path,
    ca: Path,
    *,
    names: Sequence[str],
    server: bool,
    client: bool,
    limit: int,
) -> Pending:
    """``start`` on three files, before anything heavy is imported: the CLI's ``validate``
    starts Node first, so its start-up runs while Python imports the analysis."""
    return start(
        rawio.read_file(cert, limit),
        rawio.read_file(key, limit),
        rawio.read_file(ca, limit),
        names=names,
        server=server,
        client=client,
    )


def _timestamp(value: "dt.datetime") -> float:
    return value.timestamp()


def holds_at(
    certs: "Iterable[x509.Certificate]", at: "dt.datetime", judged: tuple[float, float]
) -> bool:
    """Whether Node's verdict, made between ``judged``'s two instants (seconds since the
    epoch), is its verdict at ``at``: no validity bound between the seconds they fall in
    (OpenSSL compares validity in whole seconds: ``X509_cmp_time``)."""
    seconds = (math.floor(at.timestamp()), math.floor(judged[0]), math.floor(judged[1]))
    low, high = min(seconds), max(seconds)
    if low == high:
        return True
    for cert in certs:
        for bound in (cert.not_valid_before_utc, cert.not_valid_after_utc):
            if low < _timestamp(bound) <= high:
                return False
    return True


def finish(
    pending: Pending,
    problems: Sequence[Problem],
    certs: "Iterable[x509.Certificate]",
    at: "dt.datetime",
) -> tuple[tuple[Problem, ...], JudgeInfo]:
    """The problems once Node's verdict is in, and who judged."""
    if pending.run is None or pending.choice is None:
        return tuple(problems), model_info(pending.why_model)
    from harper_certd.judge import node  # start-up cost (above); loaded by ``start`` already

    try:
        batch = pending.run.result()
    except node.JudgeUnavailable as exc:
        return tuple(problems), model_info(f"{pending.choice.path} could not judge: {exc}")
    if not holds_at(certs, at, batch.judged):
        return tuple(problems), model_info(
            "Node judges only the present, and a certificate's validity changes between the "
            "instant asked and the instant Node judged at"
        )
    found = batch.verdicts.get("set")
    if found is None:
        return tuple(problems), model_info("Node's answer named no set")
    version = f"Node {batch.node}, OpenSSL {batch.openssl}"
    out, disagreement = verdict.reconcile(problems, found.ok, found.reason, version)
    info = JudgeInfo(
        "node",
        version,
        node_path=pending.choice.path,
        source=pending.choice.source,
        node_accepts=found.ok,
        node_reason=found.reason,
        disagreement=disagreement,
    )
    if disagreement:
        _log_disagreement(info, out)
    return out, info


def _log_disagreement(info: JudgeInfo, problems: Sequence[Problem]) -> None:
    # Imported here for start-up cost: `validate` does not load logging otherwise.
    import structlog

    if not structlog.is_configured():
        return  # the CLI's validate: the report itself shows the disagreement
    # Imported here for start-up cost, as above (logging and the event records).
    from harper_certd import events, logs

    logs.emit(
        events.JudgeDisagreed(
            kind=info.disagreement,
            judge=info.version,
            node_reason=info.node_reason or None,
            codes=[p.code for p in problems],
        )
    )
