from __future__ import annotations

import sys
from pathlib import Path

# Test helpers (limbo_adapter, harper_rig) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
