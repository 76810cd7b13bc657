"""Renewers that write in place cannot destroy the history (issue 17 item 5).

acme.sh's ``--install-cert`` writes cert, key and CA with a plain open(O_TRUNC)/write to
the configured paths: through the daemon's live links, into the live generation.  Here a
real daemon, two such renewals, then ``rollback``: the generations they overwrote are put
back from ``<state>/pristine/<id>`` and the original set's bytes come back.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from daemonfix import DaemonProc
from harper_certd import devca
from nodefix import Node, make_node

FAST = {"watch": {"settle_seconds": 0.3}}
NAMES = {"cert": "certificate.pem", "key": "privateKey.pem", "ca": "ca.pem"}


def _live_bytes(node: Node) -> dict[str, bytes]:
    assert node.live.ca is not None
    return {
        "cert": node.live.cert.read_bytes(),
        "key": node.live.key.read_bytes(),
        "ca": node.live.ca.read_bytes(),
    }


def _gen_bytes(node: Node, gen: str) -> dict[str, bytes]:
    folder = node.state / "generations" / gen
    return {role: (folder / name).read_bytes() for role, name in NAMES.items()}


def _write_in_place(node: Node, leaf: devca.Issued) -> None:
    """What acme.sh's ``--install-cert`` does: open(O_WRONLY|O_CREAT|O_TRUNC), write."""
    assert node.live.ca is not None
    for path, data in (
        (node.live.key, leaf.key_pem),
        (node.live.ca, node.ca.cert_pem),
        (node.live.cert, leaf.cert_pem),
    ):
        with open(path, "wb") as handle:  # follows the link, as `cat > file` does
            handle.write(data)


def _cli(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harper_certd", *args, "--config", str(node.write_config())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_two_in_place_renewals_then_rollback_restores_the_original(tmp_path: Path) -> None:
    """Issue 17's measurement: the first renewal (over the plain files Harper was set up
    with) is adopted as generation 000001; the second writes through the links into it.
    000001 gets its bytes back at once, and ``rollback`` returns to them."""
    node = make_node(tmp_path, extra=json.loads(json.dumps(FAST)))
    first = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    second = devca.make_leaf(node.ca, "nodea", dns=["nodea"], ips=["127.0.0.2"])
    with DaemonProc(node) as d:
        d.wait_for("certd.started")
        _write_in_place(node, first)
        one = d.wait_for("certd.live_changed", timeout=60)
        assert (one["written_through"], one["generation"]) == (None, "000001")
        adopted = _live_bytes(node)
        assert os.readlink(node.live.cert).endswith("/current/certificate.pem")
        assert adopted["cert"] == first.cert_pem
        _write_in_place(node, second)  # through the links, into 000001's files
        two = d.wait_for("certd.live_changed", timeout=60, count=2)
        assert (two["written_through"], two["generation"]) == ("000001", "000002")
        # detected at once, and the overwritten generation has its bytes back
        assert _gen_bytes(node, "000001") == adopted
        assert d.stop() == 0
    assert _live_bytes(node)["cert"] == second.cert_pem
    assert _gen_bytes(node, "000002")["key"] == second.key_pem
    key_mode = stat.S_IMODE(os.stat(node.state / "generations" / "000001" / NAMES["key"]).st_mode)
    assert key_mode & 0o277 == 0  # put back read-only, the key for nobody else
    pristine = node.state / "pristine"
    assert stat.S_IMODE(os.stat(pristine).st_mode) == 0o700
    assert sorted(p.name for p in pristine.iterdir()) == ["000001", "000002"]
    back = _cli(node, "rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert _live_bytes(node) == adopted
    status = json.loads(_cli(node, "status", "--json").stdout)
    assert status["damaged"] == {}
