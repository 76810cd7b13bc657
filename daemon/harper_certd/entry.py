"""The ``harper-certd`` console script (and ``python -m harper_certd``): the Node judge of a
``validate`` started before the CLI is imported (``warmstart``), then the CLI."""

from __future__ import annotations

import sys

from harper_certd import warmstart


def main() -> int:
    warmstart.prestart(sys.argv[1:])
    # start-up cost: the CLI after prestart (the point of this module)
    from harper_certd.cli import main as cli_main

    return cli_main()
