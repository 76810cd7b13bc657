"""heap.trim: glibc's malloc_trim where the C library has it (the daemon's RSS over
rotations, docs/bench/report.md), nothing elsewhere."""

from __future__ import annotations

import platform

from harper_certd import heap


def test_trim_uses_glibcs_malloc_trim_where_there_is_one() -> None:
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert heap.trim() is on_glibc
    assert heap.trim() is on_glibc  # again: nothing is used up
