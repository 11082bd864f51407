"""The flight plan: a data file of commands at mission times or after events.

Format (JSON)::

    {"name": "nominal",
     "end": {"at": "2024-06-25T06:30:00Z"} | {"after": "earth_landing", "offset_s": 600,
                                              "latest": "2024-06-26T00:00:00Z"},
     "items": [
       {"id": "loi", "at": "2024-05-08T02:12:00Z", "target": "orbiter",
        "command": {"op": "...", ...}, "phase": "lunar_orbit_insertion"},
       {"id": "ascent", "after": "sample_sealed", "offset_s": 3600,
        "not_before": "2024-06-03T23:38:10Z", "target": "ascender", "command": {...}}
     ]}

``after`` names a mission event published by any vehicle, or the id of an
earlier plan item (seen when it is issued). ``at_s`` (mission seconds since
launch) may stand for ``at`` where an instant must be exact to the bit: a
fork's change goes at its branch point, the end of a step of its parent
(services/ground/fork.py), which a millisecond UTC string would miss. An
item with ``after`` waits on it whatever the clock says; ``not_before`` keeps
it from running early.

An item may inject a fault instead of sending a command, the test conductor's
hand rather than a telecommand (so no link, no phase rule delays it)::

    {"id": "loi_weak", "at": "2024-05-08T01:50:00Z", "target": "orbiter",
     "fault": {"kind": "thrust_loss", "magnitude": 0.05, "duration_s": 3600}}

It reaches the vehicle as the command ``inject_fault`` (services/kernel/
vehicle.py), with the item's id as the fault id, so a scheduled fault strikes
at the same step in every run and every driver; gRPC ``InjectFault`` strikes
when the operator calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from services.dynamics.timescale import mission_s_from_utc
from services.kernel.config import SERVICE_NAMES
from services.kernel.errors import FlightPlanError
from services.kernel.faults import INJECT_FAULT_OP

NOMINAL_PLAN = Path(__file__).parent / "plans" / "nominal.json"


@dataclass(frozen=True)
class PlanItem:
    id: str
    target: str
    command: dict[str, Any]
    at_s: float | None = None
    after: str | None = None
    offset_s: float = 0.0
    not_before_s: float = -math.inf
    phase: str | None = None


@dataclass(frozen=True)
class FlightPlan:
    name: str
    items: tuple[PlanItem, ...]
    end_at_s: float = math.inf
    end_after: str | None = None
    end_offset_s: float = 0.0


def load_plan(path: Path | None) -> FlightPlan:
    path = path or NOMINAL_PLAN
    return parse_plan(load_raw(path), str(path))


def load_raw(path: Path | None) -> Any:
    """The plan file's JSON, unparsed (``None``: the nominal plan)."""
    path = path or NOMINAL_PLAN
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise FlightPlanError(str(path), f"cannot read: {exc}") from exc


def parse_plan(raw: Any, where: str = "<plan>") -> FlightPlan:
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list):
        raise FlightPlanError(where, "must be an object with an 'items' list")
    facts = _facts(raw.get("facts", {}), where)
    items = tuple(_item(_with_facts(x, facts, f"{where} items[{i}]"), f"{where} items[{i}]")
                  for i, x in enumerate(raw["items"]))
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise FlightPlanError(where, "item ids must be unique")
    end = raw.get("end")
    if not isinstance(end, dict) or not ("at" in end or "after" in end):
        raise FlightPlanError(where, "needs 'end': {'at': UTC} or {'after': event, ...}")
    end_at = _utc(end["at"], f"{where} end.at") if "at" in end else math.inf
    if "latest" in end:
        end_at = min(end_at, _utc(end["latest"], f"{where} end.latest"))
    return FlightPlan(name=str(raw.get("name", "unnamed")), items=items, end_at_s=end_at,
                      end_after=end.get("after"), end_offset_s=float(end.get("offset_s", 0.0)))


def _facts(raw: Any, where: str) -> dict[str, Any]:
    """The plan's mission facts (e.g. ``pdi_utc``): written once, named by items
    as ``"${name}"``, so every command that needs one gets the same value."""
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise FlightPlanError(where, "'facts' must be an object of name: value")
    return dict(raw)


def _with_facts(x: Any, facts: dict[str, Any], where: str) -> Any:
    """``x`` with every string ``"${name}"`` in its command replaced by that fact."""
    if not isinstance(x, dict) or not isinstance(x.get("command"), dict):
        return x
    command = dict(x["command"])
    for key, value in command.items():
        if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
            name = value[2:-1]
            if name not in facts:
                raise FlightPlanError(where, f"command {key!r} names the fact {name!r}, which "
                                      f"the plan's 'facts' lacks (it has: "
                                      f"{', '.join(sorted(facts)) or 'none'})")
            command[key] = facts[name]
    return {**x, "command": command}


def _fault_command(fault: Any, where: str) -> dict[str, Any]:
    """A plan item's ``fault`` as the command that injects it."""
    if not isinstance(fault, dict) or not isinstance(fault.get("kind"), str):
        raise FlightPlanError(where, "fault must be an object with a 'kind'")
    unknown = set(fault) - {"kind", "magnitude", "duration_s", "subsystem"}
    if unknown:
        raise FlightPlanError(where, f"fault has unknown keys {sorted(unknown)}; "
                              "known: kind, magnitude, duration_s, subsystem")
    if fault["kind"] == "stall_clock":
        raise FlightPlanError(where, "stall_clock holds mission time still, so a plan cannot "
                              "end it: inject it with gRPC InjectFault and end it with ClearFault")
    try:
        magnitude = float(fault.get("magnitude", 0.0))
        duration = float(fault.get("duration_s", 0.0))
    except (TypeError, ValueError) as exc:
        raise FlightPlanError(where, "fault magnitude and duration_s must be numbers") from exc
    if not math.isfinite(magnitude) or not math.isfinite(duration) or duration < 0:
        raise FlightPlanError(where, "fault magnitude must be finite and duration_s >= 0")
    return {"op": INJECT_FAULT_OP, "kind": fault["kind"], "magnitude": magnitude,
            "duration_s": duration, "subsystem": str(fault.get("subsystem", ""))}


def _item(x: Any, where: str) -> PlanItem:
    if not isinstance(x, dict):
        raise FlightPlanError(where, "must be an object")
    if "fault" in x:
        if "command" in x:
            raise FlightPlanError(where, "give one of 'command' or 'fault', not both")
        x = {**x, "command": _fault_command(x["fault"], where)}
    for key in ("id", "target", "command"):
        if key not in x:
            raise FlightPlanError(where, f"missing {key!r}")
    if x["target"] not in SERVICE_NAMES:
        raise FlightPlanError(where, f"unknown target {x['target']!r}")
    if not isinstance(x["command"], dict) or not isinstance(x["command"].get("op"), str):
        raise FlightPlanError(where, "command must be an object with an 'op'")
    if sum(k in x for k in ("at", "at_s", "after")) != 1:
        raise FlightPlanError(where, "give exactly one of 'at' (UTC), 'at_s' (mission "
                              "seconds) or 'after' (event)")
    at_s = _utc(x["at"], where) if "at" in x else _mission_s(x["at_s"], where) \
        if "at_s" in x else None
    offset = float(x.get("offset_s", 0.0))
    if not math.isfinite(offset) or offset < 0:
        raise FlightPlanError(where, "offset_s must be >= 0")
    return PlanItem(
        id=str(x["id"]), target=x["target"], command=dict(x["command"]),
        at_s=at_s,
        after=str(x["after"]) if "after" in x else None, offset_s=offset,
        not_before_s=_utc(x["not_before"], where) if "not_before" in x else -math.inf,
        phase=x.get("phase"))


def _mission_s(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise FlightPlanError(where, f"at_s {value!r} is not mission seconds >= 0")
    return float(value)


def _utc(value: Any, where: str) -> float:
    try:
        t = mission_s_from_utc(str(value))
    except ValueError as exc:
        raise FlightPlanError(where, f"bad UTC instant {value!r}: {exc}") from exc
    if t < 0:
        raise FlightPlanError(where, f"{value} is before launch")
    return t
