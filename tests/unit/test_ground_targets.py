"""What RunUntil accepts by name, and how it says no: pure, from a plan and what was seen."""

from __future__ import annotations

from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import parse_plan
from services.ground.targets import (
    EVENT,
    PLAN_ITEM,
    item_due,
    past_instant_reason,
    run_targets,
    unknown_target_reason,
)
from services.kernel.events import KEY_EVENTS, OTHER_EVENTS

PLAN = parse_plan({"name": "t", "end": {"at": "2024-05-04T00:00:00Z"}, "items": [
    {"id": "burn", "at": "2024-05-03T12:00:00Z", "target": "orbiter", "command": {"op": "x"}},
    {"id": "after_burn", "after": "burn", "offset_s": 60, "target": "lander",
     "command": {"op": "y"}},
]})


def test_items_come_in_plan_order_then_every_event_with_when_seen() -> None:
    burn_s = mission_s_from_utc("2024-05-03T12:00:00Z")
    found = run_targets(PLAN, {"burn": burn_s})
    assert [(t.name, t.kind) for t in found[:2]] == [("burn", PLAN_ITEM), ("after_burn", PLAN_ITEM)]
    assert found[0].seen_utc == "2024-05-03T12:00:00.000Z" and found[1].seen_utc == ""
    assert [t.name for t in found[2:]] == list(KEY_EVENTS + OTHER_EVENTS)
    assert {t.kind for t in found[2:]} == {EVENT}


def test_an_item_after_an_event_is_due_in_utc_once_the_event_is_seen() -> None:
    after = PLAN.items[1]
    assert item_due(after, {}) == "after burn + 60 s"
    assert item_due(after, {"burn": mission_s_from_utc("2024-05-03T12:00:00Z")}) == (
        "2024-05-03T12:01:00.000Z")


def test_refusals_name_the_valid_names_and_answer_in_utc() -> None:
    why = unknown_target_reason(PLAN, "nope")
    assert why.startswith("unknown event 'nope': give a flight-plan item id (burn, after_burn)")
    assert "lunar_touchdown" in why and "mission_end" in why
    assert past_instant_reason("2024-05-01T00:00:00Z", 3600.0) == (
        "2024-05-01T00:00:00Z is not after the mission's current time 2024-05-03T10:27:29.000Z")
