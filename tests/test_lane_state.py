"""The lane's states: a leaf module, a table of edges with one event each, one change_state."""

from __future__ import annotations

import ast
import datetime as dt
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harper_certd import events, logs
from harper_certd.clock import Clock
from harper_certd.lane import state
from harper_certd.lane.lane import Lane
from harper_certd.lane.state import (
    LANE_EDGES,
    RENEWAL_EDGES,
    InvalidTransition,
    LaneState,
    RenewalState,
    edge_event,
)


def _lane() -> Lane:
    clock = Clock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC), 0.0, 1.0, time.time())
    return Lane("tls", clock, {}, threading.Event(), lambda: None, lambda: True)


def test_state_module_is_a_leaf() -> None:
    """lane/state.py imports nothing from harper_certd (anyone may import it)."""
    tree = ast.parse(Path(state.__file__).read_text())
    imported = [
        alias.name if isinstance(node, ast.Import) else str(node.module)
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert [m for m in imported if m.startswith("harper_certd")] == []


def test_every_state_has_an_edge_in_and_out_or_is_final() -> None:
    """No state is unreachable; only STOPPED has no way out."""
    for edges, members, start, final in (
        (LANE_EDGES, list(LaneState), LaneState.STARTING, {LaneState.STOPPED}),
        (RENEWAL_EDGES, list(RenewalState), RenewalState.IDLE, set()),
    ):
        entered = {new for _, new in edges} | {start}
        left = {old for old, _ in edges}
        assert entered == set(members)
        assert left == set(members) - final


def test_every_edge_event_is_catalogued() -> None:
    names = {e for e in [*LANE_EDGES.values(), *RENEWAL_EDGES.values()] if e is not None}
    assert names == {
        "certd.restart_held",
        "certd.swap_failed",
        "certd.renewal_started",
        "certd.renewal_failed",
        "certd.renewal_succeeded",
    }
    assert names <= set(logs.EVENTS)


def test_an_edge_not_in_the_table_is_refused() -> None:
    with pytest.raises(InvalidTransition, match="STOPPED -> WATCHING"):
        edge_event(LaneState.STOPPED, LaneState.WATCHING)
    with pytest.raises(InvalidTransition, match="IDLE -> AWAITING"):
        edge_event(RenewalState.IDLE, RenewalState.AWAITING)
    lane = _lane()
    with pytest.raises(InvalidTransition):
        lane.change_state(LaneState.HELD)  # STARTING -> HELD: no such edge
    assert lane.state is LaneState.STARTING


def test_change_state_logs_the_one_event_of_the_edge() -> None:
    """A silent edge logs nothing; an edge with an event logs exactly that event."""
    lane = _lane()
    held = events.RestartHeld(["/x"], 2, "2027-01-01T01:00:00+00:00")
    with capture_logs() as captured:
        lane.change_state(LaneState.WATCHING)
        lane.change_state(LaneState.HELD, held)
        lane.change_state(LaneState.WATCHING)
    assert captured == [
        {
            "event": "certd.restart_held",
            "log_level": "error",
            "waiting": ["/x"],
            "limit_per_hour": 2,
            "next_allowed": "2027-01-01T01:00:00+00:00",
        }
    ]
    assert lane.state is LaneState.WATCHING
    started = events.RenewalStarted(["true"], "ab" * 32, "2027-02-01T00:00:00+00:00")
    with capture_logs() as captured:
        lane.change_state(RenewalState.RUNNING, started)
        lane.change_state(RenewalState.AWAITING)
    assert captured == [
        {
            "event": "certd.renewal_started",
            "log_level": "info",
            "command": ["true"],
            "fingerprint": "ab" * 32,
            "not_after": "2027-02-01T00:00:00+00:00",
        }
    ]
    assert (lane.state, lane.renewal.state) == (LaneState.WATCHING, RenewalState.AWAITING)


def test_change_state_refuses_a_record_that_is_not_the_edges_event() -> None:
    """The edge decides the event: a silent edge takes no record, a logged one its own."""
    lane = _lane()
    lane.change_state(LaneState.WATCHING)
    wrong = events.Rescan("/srv/incoming")
    with capture_logs() as captured, pytest.raises(InvalidTransition, match="restart_held"):
        lane.change_state(LaneState.HELD, wrong)
    with capture_logs() as captured, pytest.raises(InvalidTransition, match="swap_failed"):
        lane.change_state(LaneState.RETRYING)
    assert captured == []
    assert lane.state is LaneState.WATCHING
