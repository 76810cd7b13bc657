"""harper-certd fleet: real status --json of two nodes merged into one table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from harper_certd import devca
from nodefix import Node, make_node, run_cli


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


def _status_to(node: Node, out: Path) -> dict[str, object]:
    done = _cli("status", "--json", "--no-probe", "--config", str(node.write_config()))
    out.write_text(done.stdout)
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_two_nodes_side_by_side(tmp_path: Path) -> None:
    a = make_node(tmp_path / "a")
    b = make_node(tmp_path / "b")
    tree = yaml.safe_load((b.root / "harperdb-config.yaml").read_text())
    tree["replication"]["hostname"] = "nodeb"
    (b.root / "harperdb-config.yaml").write_text(yaml.safe_dump(tree))
    devca.write_set(
        b.live.cert.parent, devca.make_leaf(b.ca, "nodeb", dns=["nodeb"], ips=["127.0.0.2"]), [b.ca]
    )
    statuses = tmp_path / "statuses"
    statuses.mkdir()
    _status_to(a, statuses / "a.json")
    _status_to(b, statuses / "b.json")
    done = _cli("fleet", str(statuses))
    assert done.returncode == 0, done.stderr  # --no-probe: nothing is wrong on either node
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["NODE", "HEALTH", "SET", "CERT", "LEFT"]
    nodes = [line.split()[0] for line in lines[1:]]
    assert nodes == ["nodea", "nodea", "nodeb", "nodeb"]  # leaf and CA of each
    as_json = json.loads(
        _cli("fleet", "--json", str(statuses / "a.json"), str(statuses / "b.json")).stdout
    )
    roles = [(r["node"], r["role"]) for r in as_json["rows"]]
    assert roles == [("nodea", "leaf"), ("nodea", "ca"), ("nodeb", "leaf"), ("nodeb", "ca")]
    assert all(89 < r["days_left"] <= 90 for r in as_json["rows"] if r["role"] == "leaf")
    # a critical node makes the fleet critical
    data = json.loads((statuses / "b.json").read_text())
    data["health"] = "critical"
    (statuses / "b.json").write_text(json.dumps(data))
    assert _cli("fleet", str(statuses)).returncode == 2
    (statuses / "junk.json").write_text("{}")
    bad = _cli("fleet", str(statuses))
    assert bad.returncode == 2
    assert "junk.json: not the output of" in bad.stderr


def test_a_node_status_cannot_read_is_critical_json_and_a_fleet_row(tmp_path: Path) -> None:
    """``status --json`` prints JSON even when it cannot read the node (a newcomer's fresh
    Harper keeps its certificates in its database: stdout was empty), and ``fleet`` shows
    that node as critical with the reason, not as no row at all."""
    a = make_node(tmp_path / "a")
    fresh = tmp_path / "b" / "hdb"  # Harper 4.7 as installed: only tls.privateKey named
    fresh.mkdir(parents=True)
    (fresh / "harperdb-config.yaml").write_text(
        yaml.safe_dump({"tls": {"privateKey": str(fresh / "keys" / "privateKey.pem")}})
    )
    config = tmp_path / "b" / "certd.yaml"
    config.write_text(
        yaml.safe_dump({"harper": {"root": str(fresh)}, "state_dir": str(tmp_path / "b" / "st")})
    )
    done = _cli("status", "--json", "--no-probe", "--config", str(config))
    assert done.returncode == 2
    data = json.loads(done.stdout)
    assert data["health"] == "critical"
    assert data["error"]
    assert data["error"] in done.stderr
    statuses = tmp_path / "statuses"
    statuses.mkdir()
    _status_to(a, statuses / "a.json")
    (statuses / "b.json").write_text(done.stdout)
    fleet = _cli("fleet", str(statuses))
    assert fleet.returncode == 2
    [row] = [line for line in fleet.stdout.splitlines() if "critical" in line]
    assert data["error"][:40] in row
