"""The daemon's small trackers and the restart budget, each driven by an injected ``now``."""

from __future__ import annotations

import datetime as dt
import json
import random
import stat
from pathlib import Path

from harper_certd import statefile
from harper_certd.schedule import Backoff, RestartBudget, Watched
from harper_certd.trackers import Burst, ClockWatch, Expiry, HeldSets, Renewal, Retry

T0 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_clock_watch_reports_steps_not_slewing() -> None:
    """Skew moving 2 ms between checks is slewing (silent); 90 s back is a step of -90."""
    skew = [1000.0]
    watch = ClockWatch(lambda: skew[0], now=0.0, every=5.0, tolerance=5.0)
    assert watch.next_due(0.0) == 5.0
    assert watch.tick(1.0) is None  # not due yet: nothing read
    skew[0] += 0.002
    assert watch.tick(5.0) is None
    assert watch.next_due(5.0) == 10.0
    skew[0] -= 90.0
    step = watch.tick(10.0)
    assert step is not None
    assert abs(step + 90.0) < 1e-9


def test_clock_watch_step_is_measured_from_the_last_check() -> None:
    skew = [50.0]
    watch = ClockWatch(lambda: skew[0], now=0.0, every=1.0, tolerance=5.0)
    skew[0] = 40.0
    step = watch.tick(1.0)
    assert step is not None
    assert abs(step + 10.0) < 1e-9
    assert watch.tick(2.0) is None  # the new skew is the reference now
    skew[0] = 47.0
    step = watch.tick(3.0)
    assert step is not None
    assert abs(step - 7.0) < 1e-9


def test_burst_reports_the_first_of_each_burst() -> None:
    burst = Burst(quiet=60.0)
    firsts = [burst.first(t) for t in (0.0, 0.1, 5.0, 59.0, 119.0, 180.0)]
    # 0 starts a burst; 0.1..119 are each within 60 s of the previous one; 180 is 61 s later.
    assert firsts == [True, False, False, False, False, True]
    assert burst.suppressed == 0


def test_retry_backs_off_exponentially_to_the_maximum() -> None:
    retry = Retry(Backoff(30.0, 100.0, jitter=0.0))
    assert retry.next_due(0.0) == float("inf")
    delays = [retry.failed(1000.0) for _ in range(4)]
    assert delays == [30.0, 60.0, 100.0, 100.0]
    assert retry.due(1099.0) is False
    assert retry.due(1100.0) is True
    retry.taken()
    assert retry.due(5000.0) is False
    retry.succeeded()
    assert retry.failures == 0


def test_backoff_jitter_stays_within_its_share() -> None:
    rng = random.Random(7)
    delays = [Backoff(60.0, 3600.0).delay(3, rng) for _ in range(200)]
    assert min(delays) >= 240 * 0.8
    assert max(delays) <= 240 * 1.2
    assert max(delays) - min(delays) > 10  # jittered, not constant


def test_held_sets_announce_once_and_come_due_at_not_before(tmp_path: Path) -> None:
    held = HeldSets()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert held.hold(a, T0 + dt.timedelta(seconds=30), T0) is True
    assert held.hold(a, T0 + dt.timedelta(seconds=30), T0) is False  # same set: said once
    assert held.hold(b, T0 + dt.timedelta(seconds=10), T0) is True
    assert held.next_wall() == T0 + dt.timedelta(seconds=10)
    assert held.due(T0 + dt.timedelta(seconds=9)) == []
    assert held.due(T0 + dt.timedelta(seconds=10)) == [b]
    b.rmdir()
    a.rmdir()
    held.forget_missing()
    assert held.sets == {}


def test_restart_budget_is_kept_on_disk_0600(tmp_path: Path) -> None:
    """Spent restarts survive a new RestartBudget on the same file; an hour later they
    are gone; a damaged file is a full budget, not a crash."""
    path = tmp_path / statefile.BUDGET_FILE
    budget = RestartBudget(2, path)
    budget.spend(T0)
    budget.spend(T0 + dt.timedelta(minutes=10))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = RestartBudget(2, path)
    assert again.allowed(T0 + dt.timedelta(minutes=20)) is False
    assert again.next_allowed(T0 + dt.timedelta(minutes=20)) == T0 + dt.timedelta(hours=1)
    assert again.allowed(T0 + dt.timedelta(minutes=61)) is True
    path.write_text("{not json")
    assert RestartBudget(2, path).allowed(T0) is True
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left over


def test_restart_budget_after_the_clock_went_back(tmp_path: Path) -> None:
    """Restarts recorded "in the future" (the clock was set back) count as now: they
    hold for at most an hour from now, never for ever."""
    budget = RestartBudget(1, tmp_path / "b.json")
    budget.spend(T0 + dt.timedelta(days=30))
    assert budget.allowed(T0) is False
    assert budget.next_allowed(T0) == T0 + dt.timedelta(hours=1)
    assert budget.allowed(T0 + dt.timedelta(hours=1, seconds=1)) is True


def test_restart_budget_carries_over_a_reload(tmp_path: Path) -> None:
    old = RestartBudget(3)
    old.spend(T0)
    new = RestartBudget(1, tmp_path / "b.json")
    new.carry_over(old)
    assert new.allowed(T0 + dt.timedelta(minutes=1)) is False
    new.spend(T0 + dt.timedelta(minutes=2))
    assert len(json.loads((tmp_path / "b.json").read_text())["restarts"]) == 2


def test_waiting_file_is_written_whole_and_removed_when_empty(tmp_path: Path) -> None:
    entries = [{"source": "/x/incoming/a", "reason": "restart budget", "until": T0.isoformat()}]
    statefile.write_waiting(tmp_path, entries)
    assert statefile.read_waiting(tmp_path) == entries
    statefile.write_waiting(tmp_path, [])
    assert not (tmp_path / statefile.WAITING_FILE).exists()
    assert statefile.read_waiting(tmp_path) == []


def _cert(not_after: dt.datetime) -> Watched:
    return Watched("leaf", "CN=nodea", "ab" * 32, not_after - dt.timedelta(days=90), not_after)


def test_expiry_reports_the_most_urgent_band_once_and_again_after_a_step_back() -> None:
    """At start 5 days before expiry only the 7-day warning is reported; each later mark
    once; after the clock is set back past a mark, that mark is due again."""
    end = T0 + dt.timedelta(days=5)
    expiry = Expiry()
    expiry.plan([_cert(end)], (30, 14, 7, 3, 1))
    assert [(m.kind, m.days) for m in expiry.tick(T0)] == [("warning", 7)]
    assert expiry.tick(T0) == []
    assert expiry.next_wall(T0) == end - dt.timedelta(days=3)
    late = end + dt.timedelta(seconds=1)
    assert [(m.kind, m.days) for m in expiry.tick(late)] == [("expired", 0.0)]
    back = end - dt.timedelta(days=2)  # the clock was set back by three days
    expiry.stepped(back)
    assert expiry.next_wall(back) == end - dt.timedelta(days=1)
    assert [(m.kind, m.days) for m in expiry.tick(late)] == [("expired", 0.0)]


def test_renewal_backoff_waits_and_success_pauses() -> None:
    renewal = Renewal(Backoff(10.0, 40.0, jitter=0.0))
    assert renewal.may_start(0.0)
    assert renewal.next_due(0.0, window_in=100.0, grace=5.0) == 100.0
    renewal.await_result(0.0, 60.0, "fp", "out")
    assert not renewal.may_start(1.0)
    assert renewal.next_due(1.0, None, grace=5.0) == 60.0
    assert renewal.next_due(61.0, None, grace=5.0) == 65.0  # late arrivals: one grace more
    assert [renewal.failed(100.0) for _ in range(3)] == [10.0, 20.0, 40.0]
    assert renewal.waiting is None
    assert not renewal.may_start(139.0)
    assert renewal.may_start(140.0)
    assert renewal.next_due(100.0, window_in=0.0, grace=5.0) == 140.0
    renewal.await_result(200.0, 60.0, "fp", "out")
    waited = renewal.succeeded(210.0)
    assert waited is not None
    assert waited.output == "out"
    assert (renewal.failures, renewal.next_try) == (0, 220.0)
