"""The ``harper-certd`` console script (and ``python -m harper_certd``): the Node judge of a
``validate`` started before the CLI is imported (``warmstart``), then the CLI.

Python's cyclic garbage collector is off from the first line: its passes over what the
imports build (about 100,000 objects) cost ``validate`` about 7 ms of its 100 and ``status``
about 10 ms (measured side by side, 2 cores).  A command is one short process whose objects
reference counting frees; the commands that keep running (the daemon, the demo) turn the
collector back on first thing (``cli.keep_running``).

When the command is done, every object is moved to the collector's permanent generation
(``gc.freeze``): Python collects once more at exit whether the collector is off or not, a pass
over what the command built that frees nothing a process exit does not (open files are closed
as their last reference goes, and by the kernel).  ``status`` ended 23 ms sooner for it,
``validate`` 14 ms (11 alternated runs each, 2 cores).
"""

from __future__ import annotations

import gc
import sys

from harper_certd import warmstart


def main() -> int:
    gc.disable()  # see the module's docstring
    warmstart.prestart(sys.argv[1:])
    # start-up cost: the CLI after prestart (the point of this module)
    from harper_certd.cli import main as cli_main

    code = cli_main()
    gc.freeze()  # see the module's docstring
    return code
