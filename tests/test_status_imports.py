"""`status --no-probe` reads files: it must not load the peers' WebSocket client nor logging
(issue 21).

What it costs is measured by ``python -m bench`` (status against validate, as processes);
this only pins which heavy modules stay out, so a new top-level import is caught here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nodefix import make_node

PROBE = """\
import contextlib, io, json, sys
from harper_certd import cli
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(["status", "--no-probe", "--config", sys.argv[1]])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_status_no_probe_leaves_the_websocket_client_unloaded(tmp_path: Path) -> None:
    node = make_node(tmp_path, method="none")
    # Harper's pidfile names a live process (this one, not a Harper): read from /proc, with
    # no scan of the machine's node processes (psutil's, where a Harper server is running)
    (node.root / "hdb.pid").write_text(f"{os.getpid()}\n")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(node.write_config())],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0  # a healthy node: the status really ran
    modules = set(result["modules"])
    assert "harper_certd.peers" in modules or "harper_certd.health" in modules
    assert not {m for m in modules if m == "websockets" or m.startswith("websockets.")}
    # nor psutil: Harper's pid and script are read from /proc (20-30 ms of imports)
    assert "psutil" not in modules
    # nor logging: structlog costs about a third of the command's time (issue 21)
    assert "harper_certd.logs" not in modules
    assert not {m for m in modules if m == "structlog" or m.startswith("structlog.")}
    # nor the install path behind the live set's verdict (install.verdict, not install.judge),
    # the peer guard (install.context imports it where a guard runs) or secrets (fsio)
    left_out = {
        "harper_certd.install.judge",
        "harper_certd.install.filing",
        "harper_certd.install.outcomes",
        "harper_certd.peers",
        "secrets",
        # nor Harper's API client, the probes and the restart methods: the applier is built at
        # its first call (install.context), the ports are dialled only without --no-probe
        "harper_certd.harper.apply",
        "harper_certd.harper.api",
        "harper_certd.harper.probe",
        "harper_certd.restart",
        "http.client",
        "ssl",
    }
    assert "harper_certd.install.verdict" in modules
    assert not modules & left_out, modules & left_out
