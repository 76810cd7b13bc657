"""``harper-certd status``'s store part: the live set judged now, the generations kept (and
which are damaged), the last history lines, and an interrupted swap completed first.
(The node's health, levels and findings are ``health.py``'s.)
"""

import datetime as dt
from typing import Any, NamedTuple

from harper_certd.adoption import foreign
from harper_certd.errors import SwapError
from harper_certd.generation import Generation
from harper_certd.install.context import Context, live_names, read_live
from harper_certd.install.verdict import validate_set
from harper_certd.recover import Recovery, recover
from harper_certd.validate import Report


class Status(NamedTuple):
    live: Report | None
    current: str | None
    generations: tuple[Generation, ...]
    history: tuple[dict[str, Any], ...]
    recovery: Recovery | None
    live_paths: dict[str, str]
    watch_only: str | None  # why the live paths are only watched (adoption.foreign)
    damaged: dict[str, str]  # generation id -> Store.intact's
    trust_store: str | None  # a set without a CA file: the roots it is judged against

    def as_dict(self, at: dt.datetime) -> dict[str, Any]:
        live = None
        if self.live is not None and self.live.certificate is not None:
            cert = self.live.certificate
            live = {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "sha256": cert.sha256,
                "not_after": cert.not_after.isoformat(),
                "days_left": round(cert.days_left(at), 2),
                "valid": self.live.valid,
                "problems": [p.as_dict() for p in self.live.problems],
                "judge": None if self.live.judge is None else self.live.judge.line(),
            }
        return {
            "live": live,
            "live_paths": self.live_paths,
            "current_generation": self.current,
            "generations": [
                {
                    "id": g.id,
                    "current": g.id == self.current,
                    "created": g.info.created,
                    "outcome": g.info.outcome,
                    "fingerprint": g.info.fingerprint,
                    "subject": g.info.subject,
                    "not_after": g.info.not_after,
                    "source": g.info.source,
                }
                for g in self.generations
            ],
            "history": list(self.history),
            "recovered": None if self.recovery is None else self.recovery.outcome,
            "watch_only": self.watch_only,
            "damaged": self.damaged,
            "trust_store": self.trust_store,
        }


def status(ctx: Context) -> Status:
    recovery = None
    if foreign(ctx.store) is None:
        with ctx.store.locked():
            recovery = recover(ctx.store)
    try:
        live: Report | None = validate_set(ctx, read_live(ctx), live_names(ctx))
    except SwapError:
        live = None
    generations = tuple(ctx.store.generations())
    damaged = {g.id: d for g in generations if (d := ctx.store.intact(g)) is not None}
    trust = ctx.trust_store()
    return Status(
        live,
        ctx.store.current_id(),
        generations,
        tuple(ctx.store.history.last(10)),
        recovery,
        {r: str(p) for r, p in ctx.store.live_paths().items()},
        foreign(ctx.store),
        damaged,
        None if trust is None else trust.where,
    )
