"""Staged -> flipped: the new set written as a generation and made live by one flip.

The store (``swap.Store``) does the writing and the crash safety; this adds what an
operation needs around it: adopt the live files first (once), prune to make room, retry
once after pruning to the minimum when the disk is full, and the one shape of
``certd.swap_failed``.  A failed swap leaves the live set as it was (``SwapError``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import time
from pathlib import Path
from typing import Any

from harper_certd import events, fsio, logs
from harper_certd.adoption import adopt
from harper_certd.errors import SwapError
from harper_certd.generation import Generation
from harper_certd.harper.method import RestartMethod
from harper_certd.install.context import Context, read_live
from harper_certd.recover import recover
from harper_certd.roles import SetBytes

ADOPTION_SETTLE = 1.0


def log_swap_failed(
    source: str,
    cause: str | None,
    error: str | None,
    *,
    failures: int | None = None,
    next_attempt: dt.datetime | None = None,
) -> None:
    """The one shape of ``certd.swap_failed``: the live set is unchanged.  ``failures`` and
    ``next_attempt`` when the daemon retries (None from the command line, which does not)."""
    logs.emit(
        events.SwapFailed(
            source=source,
            cause=cause,
            error=error,
            failures=failures,
            next_attempt=None if next_attempt is None else next_attempt.isoformat(),
        )
    )


def swap_cause(exc: BaseException) -> str:
    """The OS's reason behind a failed swap, in words ("no space left on the device")."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    return fsio.describe_os_error(cause) if isinstance(cause, OSError) else str(exc)


def _no_space(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.ENOSPC


def prune(ctx: Context, keep: int, said: set[str] | None = None) -> list[str]:
    """Prune generations beyond ``keep`` (never the live one or the one before it); logs
    ``certd.generation_pruned`` only for directories really gone, ``certd.prune_failed``
    for the others (once per operation: ids in ``said`` are not said again)."""
    said = set() if said is None else said
    try:
        result = ctx.store.prune(max(keep, 2))
    except OSError as exc:
        logs.emit(events.PruneFailed(generation=None, error=fsio.describe_os_error(exc)))
        return []
    for gen_id in result.removed:
        logs.emit(events.GenerationPruned(generation=gen_id))
    for gen_id, why in result.failed:
        if gen_id not in said:
            said.add(gen_id)
            logs.emit(events.PruneFailed(generation=gen_id, error=why))
    return result.removed


def swap_in(
    ctx: Context, data: SetBytes, meta: dict[str, Any], folder: Path, said: set[str]
) -> Generation:
    """Adopt the live files if needed, stage ``data`` and flip to it; SwapError when it fails.

    Nothing is pruned first: the generations beyond ``generations_kept`` are removed after
    the set is live (``pipeline.filed``), so the swap does not wait for an ``rmtree``
    (1.4-1.6 ms of each install, measured in bench/).  A write that finds no space prunes
    to the minimum (the live generation and the one before it), then is tried once more.
    """
    store = ctx.store
    for attempt in (1, 2):
        try:
            adopted = adopt(store, lambda: read_live(ctx), {"source": "live files"})
            if adopted is not None:
                logs.emit(
                    events.LiveAdopted(generation=adopted.id, live=str(ctx.managed.live.cert))
                )
                if RestartMethod(ctx.config.restart.method).may_hot_reload:
                    # Harper's watchers move from the replaced files to the links' targets a
                    # few ms after adoption; a flip before that goes unseen (measured: 6 of 6
                    # misses without this pause, 0 of 3 with it). Once per node, ever.
                    time.sleep(ADOPTION_SETTLE)
            gen = store.stage(data, meta, str(folder))
            store.commit_flip(gen)
        except SwapError as exc:
            # Whatever was written is undone; the live set never changed.
            with contextlib.suppress(SwapError, OSError):
                recover(store)
            if attempt == 1 and _no_space(exc) and prune(ctx, 2, said):
                continue
            raise
        except OSError as exc:
            with contextlib.suppress(SwapError, OSError):
                recover(store)
            raise SwapError(
                f"the swap failed: {fsio.describe_os_error(exc)}; the live set is unchanged"
            ) from exc
        else:
            return gen
    raise AssertionError("unreachable")  # pragma: no cover
