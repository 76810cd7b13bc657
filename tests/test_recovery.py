"""recovery.decide: the whole crash-recovery decision as a pure function, case by case.

The real-process counterpart (SIGKILL at each named step, then ``recover.recover`` carrying
the plan out) is tests/test_crash.py; these pin the plan itself, exactly.
"""

from __future__ import annotations

from harper_certd.journal import Journal
from harper_certd.recovery import NOTHING, Act, Action, Plan, decide


def _acts(plan: Plan) -> list[tuple[str, str | None]]:
    return [(a.act.value, a.generation) for a in plan.actions]


def test_nothing_under_way() -> None:
    assert decide(None, "000003", [], {"000002", "000003"}) == NOTHING


def test_pending_generation_switched_in_is_completed_and_verified() -> None:
    plan = decide(None, "000004", ["000004"], {"000003", "000004"})
    assert (plan.op, plan.outcome, plan.generation, plan.needs_verify) == (
        "install",
        "completed",
        "000004",
        True,
    )
    assert _acts(plan) == [("mark_recovered", "000004"), ("record", "000004")]


def test_pending_generation_never_switched_in_is_removed() -> None:
    plan = decide(None, "000003", ["000004"], {"000003", "000004"})
    assert (plan.outcome, plan.generation, plan.needs_verify) == ("undone", "000003", False)
    assert _acts(plan) == [("discard", "000004"), ("record", "000003")]


def test_adoption_after_the_flip_is_linked_with_its_previous() -> None:
    journal = Journal("adopt", "linking", new="000002", prev="000001")
    plan = decide(journal, "000002", [], {"000001", "000002"})
    assert plan.actions[0] == Action(Act.LINK_LIVE, "000002", prev="000001")
    assert (plan.op, plan.outcome, plan.needs_verify) == ("adopt", "completed", False)


def test_adoption_before_the_flip_is_undone() -> None:
    journal = Journal("adopt", "flipping", new="000001")
    plan = decide(journal, None, [], {"000001"})
    assert _acts(plan) == [("discard", "000001"), ("clear_journal", None), ("record", None)]
    assert (plan.outcome, plan.generation) == ("undone", None)


def test_rollback_cut_short_is_finished_never_undone() -> None:
    journal = Journal("rollback", "flipping", new="000002", prev="000003")
    plan = decide(journal, "000003", [], {"000002", "000003"})
    assert _acts(plan) == [("flip", "000002"), ("clear_journal", None), ("record", "000002")]
    assert (plan.outcome, plan.generation, plan.needs_verify) == ("completed", "000002", True)


def test_rollback_to_a_generation_gone_is_undone() -> None:
    journal = Journal("rollback", "flipping", new="000001", prev="000003")
    plan = decide(journal, "000003", [], {"000003"})
    assert (plan.outcome, plan.generation) == ("undone", "000003")
    assert ("flip", "000001") not in _acts(plan)


def test_old_journal_without_new_fields_is_read() -> None:
    journal = Journal.from_dict({"op": "adopt", "step": "writing", "started": "x"})
    assert journal == Journal("adopt", "writing", None, None, "x")
    plan = decide(journal, None, [], set())
    assert _acts(plan) == [("clear_journal", None), ("record", None)]


def test_generation_meta_is_read_typed_and_tolerant() -> None:
    """meta.json as written by this release, by an older one, and with an unknown outcome."""
    from harper_certd.journal import GenerationMeta, Outcome

    meta = GenerationMeta.from_dict(
        "000002",
        {"outcome": "installed", "replaced": "000001", "digests": {"cert": "ab"}, "x": 1},
    )
    assert meta.outcome is Outcome.INSTALLED
    assert (meta.replaced, meta.digests, meta.fingerprint) == ("000001", {"cert": "ab"}, None)
    old = GenerationMeta.from_dict("000001", {"outcome": "adopted", "source": "live files"})
    assert (old.outcome, old.digests, old.subject) == (Outcome.ADOPTED, {}, None)
    assert GenerationMeta.from_dict("000003", {"outcome": "archived"}).outcome == "archived"
