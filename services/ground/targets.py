"""What the clock can run until, by name: flight-plan item ids and mission events.

Pure: the names, when each is due or was seen, and the reasons RunUntil gives
for a name or an instant it cannot run to, every time in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.dynamics.timescale import iso_utc
from services.ground.plan import FlightPlan, PlanItem
from services.kernel.events import KEY_EVENTS, KNOWN_EVENTS, OTHER_EVENTS

PLAN_ITEM = "plan_item"
EVENT = "event"


@dataclass(frozen=True)
class RunTarget:
    name: str
    kind: str  # PLAN_ITEM or EVENT
    due: str  # a plan item's due time in UTC, or "after <event> + <s> s"; "" for events
    seen_utc: str  # "" while it has not happened


def item_due(item: PlanItem, seen: Mapping[str, float]) -> str:
    """When `item` is due: UTC once known, else what it waits for."""
    if item.at_s is not None:
        return iso_utc(item.at_s)
    assert item.after is not None  # parse_plan: exactly one of at/after
    if item.after in seen:
        return iso_utc(max(seen[item.after] + item.offset_s, item.not_before_s))
    offset = f" + {item.offset_s:g} s" if item.offset_s else ""
    return f"after {item.after}{offset}"


def run_targets(plan: FlightPlan, seen: Mapping[str, float]) -> list[RunTarget]:
    """Plan items in plan order, then key events in mission order, then the others."""
    items = [RunTarget(it.id, PLAN_ITEM, item_due(it, seen), _seen_utc(it.id, seen))
             for it in plan.items]
    events = [RunTarget(name, EVENT, "", _seen_utc(name, seen))
              for name in KEY_EVENTS + OTHER_EVENTS]
    return items + events


def is_target(plan: FlightPlan, name: str) -> bool:
    return name in KNOWN_EVENTS or any(it.id == name for it in plan.items)


def unknown_target_reason(plan: FlightPlan, name: str) -> str:
    """Why `name` is refused, naming every valid one (the operator's next try)."""
    ids = ", ".join(it.id for it in plan.items) or "(none)"
    return (f"unknown event {name!r}: give a flight-plan item id ({ids}) "
            f"or a mission event ({', '.join(KEY_EVENTS + OTHER_EVENTS)})")


def already_seen_reason(name: str, seen_t_s: float, now_s: float) -> str:
    return (f"{name!r} already happened at {iso_utc(seen_t_s)}; the mission's current time "
            f"is {iso_utc(now_s)}")


def past_instant_reason(target: str, now_s: float) -> str:
    """`target` as the operator wrote it (a UTC instant, or mission seconds)."""
    return f"{target} is not after the mission's current time {iso_utc(now_s)}"


def _seen_utc(name: str, seen: Mapping[str, float]) -> str:
    return iso_utc(seen[name]) if name in seen else ""
