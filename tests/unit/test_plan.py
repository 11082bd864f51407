"""The flight plan: parsing errors, and the schedule ground derives from it (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import NOMINAL_PLAN, load_plan, parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.envelope import Envelope
from services.kernel.errors import FlightPlanError
from services.kernel.vehicle import Outbox

T1 = "2024-05-03T10:00:00Z"


def _plan(**extra: Any) -> dict[str, Any]:
    return {"name": "p", "end": {"after": "b", "offset_s": 100},
            "items": [
                {"id": "a", "at": T1, "target": "orbiter", "command": {"op": "set_mode",
                                                                       "mode": "x"}},
                {"id": "b", "after": "sample_sealed", "offset_s": 60, "not_before": T1,
                 "target": "ascender", "command": {"op": "set_mode", "mode": "y"}},
            ], **extra}


@pytest.mark.parametrize(("mutate", "words"), [
    (lambda p: p.pop("end"), "end"),
    (lambda p: p["items"][0].pop("target"), "missing 'target'"),
    (lambda p: p["items"][0].update(target="rover"), "unknown target"),
    (lambda p: p["items"][0].update(after="x"), "exactly one"),
    (lambda p: p["items"][0].update(at="yesterday"), "bad UTC"),
    (lambda p: p["items"][0].update(at="2024-05-01T00:00:00Z"), "before launch"),
    (lambda p: p["items"][1].update(id="a"), "unique"),
    (lambda p: p["items"][1].update(offset_s=-1), "offset_s"),
    (lambda p: p["items"][0]["command"].update(mode="${nope}"), "names the fact 'nope'"),
    (lambda p: p.update(facts=["pdi_utc"]), "'facts' must be an object"),
    (lambda p: p["items"][0].update(fault={"kind": "thrust_loss"}), "not both"),
    (lambda p: p["items"][0].update(fault=3, command=None) or p["items"][0].pop("command"),
     "fault must be an object with a 'kind'"),
    (lambda p: p["items"][0].pop("command") and p["items"][0].update(
        fault={"kind": "thrust_loss", "size": 1}), "unknown keys \\['size'\\]"),
    (lambda p: p["items"][0].pop("command") and p["items"][0].update(
        fault={"kind": "stall_clock"}), "stall_clock holds mission time still"),
    (lambda p: p["items"][0].pop("command") and p["items"][0].update(
        fault={"kind": "thrust_loss", "duration_s": -5}), "duration_s >= 0"),
    (lambda p: p["items"][0].pop("command") and p["items"][0].update(
        fault={"kind": "thrust_loss", "magnitude": "lots"}), "must be numbers"),
])
def test_bad_plans_say_what_is_wrong(mutate: Any, words: str) -> None:
    raw = _plan()
    mutate(raw)
    with pytest.raises(FlightPlanError, match=words):
        parse_plan(raw)


def test_packaged_nominal_plan_loads() -> None:
    assert load_plan(NOMINAL_PLAN).items


def test_a_fact_is_written_once_and_every_command_naming_it_gets_it() -> None:
    raw = _plan(facts={"mode_a": "checkout"})
    raw["items"][0]["command"]["mode"] = "${mode_a}"
    raw["items"][1]["command"]["mode"] = "${mode_a}"
    plan = parse_plan(raw)
    assert [item.command["mode"] for item in plan.items] == ["checkout", "checkout"]


def test_the_nominal_plan_names_pdi_once_for_the_orbiter_and_the_lander() -> None:
    pdi = {item.id: item.command["pdi_utc"] for item in load_plan(NOMINAL_PLAN).items
           if "pdi_utc" in item.command}
    assert set(pdi) == {"adjust1", "adjust2", "adjust3", "trim", "descent_plan"}
    assert set(pdi.values()) == {"2024-06-01T22:09:00Z"}  # reference timeline row 13


def test_a_fault_item_goes_straight_to_its_vehicle_as_inject_fault() -> None:
    """Not a telecommand: no link path is needed (the orbiter has shown none yet)."""
    raw = _plan()
    raw["items"][0] = {"id": "weak", "at": T1, "target": "orbiter",
                       "fault": {"kind": "thrust_loss", "magnitude": 0.1, "duration_s": 60}}
    core = GroundCore(6, parse_plan(raw))
    out = Outbox()
    core.advance(0.0, mission_s_from_utc(T1), out)
    [cmd] = [i for i in out.drain() if i.kind == "cmd"]
    assert (cmd.target, cmd.body) == ("orbiter", {
        "op": "inject_fault", "kind": "thrust_loss", "magnitude": 0.1, "duration_s": 60.0,
        "subsystem": "", "plan_id": "weak"})


def test_items_wait_on_events_not_on_clock_times() -> None:
    core = GroundCore(6, parse_plan(_plan()))
    t1 = mission_s_from_utc(T1)
    out = Outbox()
    assert core.next_stop_after(0.0) == t1  # only the timed item is scheduled
    core.advance(0.0, t1, out)
    assert [i.target for i in out.drain() if i.kind == "cmd"] == ["orbiter"]
    core.advance(t1, t1 + 86_400, out)  # a day later: b still waits on its event
    assert "b" not in core.issued and core.next_stop_after(t1) == float("inf")
    core.apply(Envelope("m", "lander", 1, t1 + 90_000, 5, "event", {"name": "sample_sealed"}),
               out)
    assert core.next_stop_after(t1 + 90_000) == t1 + 90_060
    core.advance(t1 + 90_000, t1 + 90_060, out)
    cmds = [i for i in out.drain() if i.kind == "cmd"]
    assert [(c.target, c.body["plan_id"]) for c in cmds] == [("ascender", "b")]
    assert core.end_t_s == t1 + 90_160 and not core.finished
    core.advance(t1 + 90_060, t1 + 90_160, out)
    assert core.finished
