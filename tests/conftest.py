from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harper_certd.judge import runtime

# Test helpers (limbo_adapter, harper_rig) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _process_judge_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-wide judge (``judge.configure``) as it was before each test: a command
    run in process (``cli.main(["validate", "--node", "none", ...])``) sets it for the
    process, and a later test must not inherit the model alone."""
    monkeypatch.setattr(runtime, "_settings", runtime.settings())
