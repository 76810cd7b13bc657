"""A set's bytes judged for the managed set's use (``validate_set``), and the live set
(``live_report``): what ``status``, the monitor, the rollback and the install's judging
share.  Kept apart from ``install.judge`` (the install's own step, with its filing and
outcomes): ``status`` imports this module and none of the install path behind it.
"""

from __future__ import annotations

from typing import Any

from harper_certd.check import validate_data_against_store
from harper_certd.install.context import Context, live_names, read_live
from harper_certd.roles import SetBytes
from harper_certd.validate import Inputs, Report, validate


def validate_set(ctx: Context, data: SetBytes, names: tuple[str, str, str]) -> Report:
    """``data`` judged for the managed set's use; a set without a CA file against the
    system trust store (``check.validate_data_against_store``, the validator ``check``
    uses), ``names[2]`` then unused."""
    kwargs: dict[str, Any] = {
        "at": ctx.clock(),
        "purpose": ctx.managed.purpose,
        "hostnames": ctx.managed.hostnames,
        "expiry_warning_days": ctx.config.expiry_warning_days,
        "node_names": ctx.managed.verbatim_names,
        "url_hosts": ctx.managed.url_hosts,
    }
    trust = ctx.trust_store()
    if trust is not None:
        return validate_data_against_store(
            data.cert, data.key, trust, cert_name=names[0], key_name=names[1], **kwargs
        )
    return validate(Inputs(data.cert, data.key, data.ca, *names), **kwargs)


def live_report(ctx: Context) -> Report:
    """The live set, validated for its use; SwapError when it cannot be read."""
    return validate_set(ctx, read_live(ctx), live_names(ctx))
