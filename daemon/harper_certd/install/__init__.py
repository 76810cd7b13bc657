"""The install path: a set from a source folder to "served and accepted by the peers".

Read in this order (each module one job):

- ``context``: the node and set being worked on (``Context``, ``build_context``).
- ``judge``: a source read and validated for the set's use (or refused).
- ``filing``: where a source goes afterwards (processed/ or rejected/, reason beside it).
- ``pipeline``: judged -> guarded (peers) -> staged -> flipped -> applied (Harper) ->
  proved (served, then peers) -> filed; each step returns the next step or an outcome.
- ``rollback``: back to an earlier generation (after a failed install, or by hand),
  through the same guard and proof steps.
- ``live``: the live files changed by someone else; a swap recovered after a crash.
- ``outcomes``: how each of these ended, and the command line's exit code for each.

This ``__init__`` imports nothing, so that the command line can read ``outcomes`` alone.
"""
