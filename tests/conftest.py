from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from harper_certd.judge import runtime

# Test helpers (limbo_adapter, harper_rig) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

# The YAML memo (yamlmemo) of every command the tests run, in process or not, goes to a
# folder of this run's own, never to root's /var/cache/harper-certd or a user's ~/.cache:
# through CACHE_DIRECTORY, the memo's first choice.  Not XDG_CACHE_HOME, which also says
# where tests/install-harper.sh put Harper (harper_rig.harper_dir).
_CACHE = tempfile.mkdtemp(prefix="certd-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["CACHE_DIRECTORY"] = str(Path(_CACHE) / "memo")  # in a 0700 folder: used


@pytest.fixture(autouse=True)
def _process_judge_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-wide judge (``judge.configure``) as it was before each test: a command
    run in process (``cli.main(["validate", "--node", "none", ...])``) sets it for the
    process, and a later test must not inherit the model alone."""
    monkeypatch.setattr(runtime, "_settings", runtime.settings())
