"""Queqiao-2's dispersible outage: nothing forwarded in [start, start + duration).

The relay is driven through the step rule (Drive) with hand-made frames and
commands, then flown in SimLoop with ground and a lander at the CE-6 site (the
far side: everything the lander sends, and everything sent to it, goes through
Queqiao-2), and once with the whole mission. What is expected follows from
the outage's definition: commands and frames taken during it wait and go on,
in order, at its end (store-and-forward); before and after, the relay forwards
as it always does. Light time is distance over c (tests/unit/mission/test_relay.py
checks the legs themselves).
"""

from __future__ import annotations

import importlib
from typing import Any

import orjson
import pytest

from services.dynamics import links
from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import load_plan, parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.parameters import ParameterError
from services.kernel.vehicle import VehicleCore
from services.local.simloop import SimLoop
from services.relay.vehicle import RelayCore
from tests.unit.mission.driver import Drive
from tests.unit.mission.test_relay import TOUCHDOWN_S, SiteCore

#: An outage on the first day on the surface, while stations see Queqiao-2
#: (Jiamusi, from touchdown for ~19 h): 2 h to 5 h after touchdown.
T0_S = TOUCHDOWN_S + 3_600.0
START_S = TOUCHDOWN_S + 7_200.0
DURATION_S = 3 * 3_600.0
END_S = START_S + DURATION_S
OUTAGE = {"outage.start_s": START_S, "outage.duration_s": DURATION_S}
#: The clock lands on an outage edge to float rounding of mission seconds.
EDGE_TOL_S = 1e-6
#: A safe mode recovered within two days (the range the relay declares).
LONGEST_OUTAGE_S = 2 * 86_400.0

COMMAND = {"op": "set_mode", "mode": "drill", "plan_id": "drill"}


def _relay(**parameters: float) -> Drive:
    relay = RelayCore(6)
    relay.set_parameters(parameters)
    d = Drive(relay, T0_S, dt_s=600.0)
    d.step()  # the first step announces the parameters
    return d


def _relay_cmd(command: dict[str, Any]) -> dict[str, Any]:
    return {"type": "relay_cmd", "to": "lander", "command": command}


def _relay_frame(seq: int, t_s: float) -> dict[str, Any]:
    return {"type": "relay_frame",
            "frame": {"origin": "lander", "frame_seq": seq, "t_s": t_s, "path": "relay",
                      "station": "x", "sent_at_s": t_s, "deliver_at_s": t_s + 1.3,
                      "playback": False}}


def _commands(d: Drive) -> list[tuple[float, str, dict[str, Any]]]:
    return [(s.t, s.target, s.body) for s in d.sent if s.kind == "cmd"]


def _forwarded(d: Drive) -> list[dict[str, Any]]:
    return [s.body["frame"] for s in d.sent if s.kind == "dl"
            and s.body.get("type") == "forwarded" and s.body["origin"] == "lander"]


def test_the_outage_is_announced_on_its_edges_and_the_clock_stops_on_them() -> None:
    d = _relay(**OUTAGE)
    ends: list[float] = []
    d.until(lambda x: x.t_s >= END_S + 3_600.0, each=lambda x: ends.append(x.t_s))
    assert any(abs(t - START_S) < EDGE_TOL_S for t in ends)
    assert any(abs(t - END_S) < EDGE_TOL_S for t in ends)
    t_start, start = d.event("relay_outage_start")
    t_end, end = d.event("relay_outage_end")
    assert t_start == pytest.approx(START_S, abs=EDGE_TOL_S)
    assert t_end == pytest.approx(END_S, abs=EDGE_TOL_S)
    assert (start["start_s"], start["end_s"]) == (end["start_s"], end["end_s"]) == (START_S,
                                                                                   END_S)
    assert d.names().count("relay_outage_start") == d.names().count("relay_outage_end") == 1
    assert d.event("parameters_applied")[1]["parameters"] == {
        "relay.outage.start_s": START_S, "relay.outage.duration_s": DURATION_S}


def test_a_command_for_the_lander_taken_during_the_outage_goes_on_at_its_end() -> None:
    """Before the outage a command goes on in the step that takes it; during it,
    two commands wait and go on at the end, in the order they came."""
    d = _relay(**OUTAGE)
    d.deliver("transfer", _relay_cmd({**COMMAND, "plan_id": "before"}))
    t_before = d.t_s
    d.step()
    d.until_t(START_S + 600.0)
    d.deliver("transfer", _relay_cmd({**COMMAND, "plan_id": "first"}))
    d.step()
    d.deliver("transfer", _relay_cmd({**COMMAND, "plan_id": "second"}))
    d.until_t(END_S - 1.0)
    assert [body["plan_id"] for _, _, body in _commands(d)] == ["before"]
    assert _commands(d)[0][0] == t_before
    d.until_t(END_S + 600.0)
    sent = _commands(d)
    assert [(target, body["plan_id"]) for _, target, body in sent] == [
        ("lander", "before"), ("lander", "first"), ("lander", "second")]
    for t, _, body in sent[1:]:
        assert t == pytest.approx(END_S, abs=EDGE_TOL_S)
        assert body == {**COMMAND, "plan_id": body["plan_id"]}
    assert d.event("relay_outage_end")[1]["held_commands"] == 2
    assert d.core.summary().values["commands_forwarded"] == 3
    assert isinstance(d.core, RelayCore) and d.core.held_commands == []  # none left behind


def test_frames_taken_during_the_outage_are_stored_and_played_back_at_its_end() -> None:
    """A station sees Queqiao-2 all along: outside the outage a frame goes on at
    once; inside, frames wait and are played back at the end, oldest first,
    arriving one ground leg of light time later."""
    d = _relay(**OUTAGE)
    assert all(links.relay_ground_link(t).up for t in (T0_S, START_S, END_S))
    d.deliver("transfer", _relay_frame(1, d.t_s), src="lander")
    d.step()
    assert [f["frame_seq"] for f in _forwarded(d)] == [1]
    d.until_t(START_S + 60.0)
    for seq in (2, 3, 4):
        d.deliver("transfer", _relay_frame(seq, d.t_s), src="lander")
    d.step()
    d.until_t(END_S - 1.0)
    assert [f["frame_seq"] for f in _forwarded(d)] == [1]
    assert d.core.summary().values["relay_store_frames"] == 3
    d.until_t(END_S + 600.0)
    played = _forwarded(d)[1:]
    assert [f["frame_seq"] for f in played] == [2, 3, 4]
    # The second leg to the station Queqiao-2 is working (it keeps one while it can).
    assert isinstance(d.core, RelayCore)
    leg_s = links.relay_ground_link(END_S, d.core.ground.station).light_time_s
    for f in played:
        assert f["relay_playback"] is True
        assert f["relayed_at_s"] == pytest.approx(END_S, abs=EDGE_TOL_S)
        assert f["deliver_at_s"] == pytest.approx(END_S + leg_s, abs=EDGE_TOL_S)
    d.deliver("transfer", _relay_frame(5, d.t_s), src="lander")
    d.step()
    assert _forwarded(d)[-1]["frame_seq"] == 5 and "relay_playback" not in _forwarded(d)[-1]


def test_an_outage_taken_from_a_snapshot_still_releases_what_it_held() -> None:
    d = _relay(**OUTAGE)
    d.until_t(START_S + 600.0)
    d.deliver("transfer", _relay_cmd(COMMAND))
    d.step()
    again = RelayCore(6)
    again.restore(orjson.loads(orjson.dumps(d.core.snapshot())))
    resumed = Drive(again, d.t_s, dt_s=d.dt_s)
    resumed.until_t(END_S + 600.0)
    [(t, target, body)] = _commands(resumed)
    assert (target, body) == ("lander", COMMAND)
    assert t == pytest.approx(END_S, abs=EDGE_TOL_S)
    assert "relay_outage_start" not in resumed.names()  # announced once, before


def test_no_outage_parameters_no_outage() -> None:
    """Only a start, no duration: nothing is held (the nominal duration is 0)."""
    d = _relay(**{"outage.start_s": START_S})
    d.until_t(START_S + 600.0)
    d.deliver("transfer", _relay_cmd(COMMAND))
    d.step()
    assert [t for t, _, _ in _commands(d)] == [START_S + 600.0]
    assert "relay_outage_start" not in d.names()


def test_an_outage_longer_than_a_safe_mode_lasts_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"relay.outage.duration_s = .* is outside what "
                                             r"the vehicle can have: \[0, 172800\] s"):
        RelayCore(6).set_parameters({"outage.duration_s": LONGEST_OUTAGE_S + 1.0})


# --- in the loop: ground, a lander at the site, Queqiao-2 -------------------------------


def test_a_lander_at_the_site_gets_grounds_command_after_the_outage_and_telemetry_resumes(
) -> None:
    """Ground's plan commands the lander during the outage (an item after
    another, so it goes by the path the lander is heard on: Queqiao-2; an
    absolute-time item would count as uploaded before): the command reaches it
    at the end (it changes mode then, not before). The lander's frames sent
    during the outage reach ground, played back from the end; the archive has
    no gap."""
    plan = parse_plan({"name": "outage", "end": {"at": "2024-06-02T06:00:00Z"}, "items": [
        {"id": "mark", "at": "2024-06-02T00:50:00Z", "target": "ground",
         "command": {"op": "set_mode", "mode": "surface_operations"}},
        {"id": "drill", "after": "mark", "offset_s": 600, "target": "lander",
         "command": {"op": "set_mode", "mode": "drill"}}]})
    assert START_S < mission_s_from_utc("2024-06-02T01:00:00Z") < END_S
    ground = GroundCore(6, plan)
    lander, relay = SiteCore(6), RelayCore(6)
    relay.set_parameters(OUTAGE)
    loop = SimLoop(ground, {"lander": lander, "relay": relay}, record=True)
    loop.t_s = lander.t_s = relay.t_s = TOUCHDOWN_S
    loop.run()
    [issued] = [e for e in loop.events if e.body["name"] == "plan_item_issued"
                and e.body.get("id") == "drill"]
    assert START_S < issued.t < END_S
    [changed] = [e for e in loop.events if e.body["name"] == "mode_changed"
                 and e.src == "lander"]
    assert changed.t == pytest.approx(END_S, abs=EDGE_TOL_S)
    assert lander.phase == "drill"
    assert loop.published is not None
    frames = [env.body["frame"] for _, env in loop.published
              if env.src == "relay" and env.body.get("type") == "forwarded"
              and env.body["origin"] == "lander"]
    during = [f for f in frames if START_S <= f["sent_at_s"] < END_S]
    after = [f for f in frames if f["sent_at_s"] >= END_S]
    assert during and after
    assert all(f["relayed_at_s"] >= END_S - EDGE_TOL_S for f in during)
    assert not [f for f in frames if START_S <= f["relayed_at_s"] < END_S - EDGE_TOL_S]
    archive = ground.links.heard.archives["lander"]
    assert archive.gaps() == [] and archive.duplicates == 0
    [(first, last)] = archive.ranges
    assert first == 1 and all(f["frame_seq"] <= last for f in [*during, *after[:-1]])


# --- the whole mission, dispersed ----------------------------------------------------


@pytest.mark.slow
def test_the_whole_mission_flies_with_the_lander_and_relay_dispersed() -> None:
    """A few of each vehicle's parameters off nominal, Queqiao-2 out from 7 min
    after the real touchdown for 2 h (the plan's surface set-up, due 10 min after
    touchdown, waits for it): the mission still ends with the sample on Earth."""
    outage_start_s = TOUCHDOWN_S + 420.0
    lander_values = {"engine.thrust_scale": 0.97, "engine.isp_scale": 0.99,
                     "mass_offset_kg": 30.0, "navigation.bias_east_m": 150.0,
                     "navigation.bias_north_m": -100.0, "terrain.height_error_m": 1.0}
    cores: dict[str, VehicleCore] = {
        name: getattr(importlib.import_module(f"services.{name}.vehicle"),
                      f"{name.capitalize()}Core")(6) for name in VEHICLES}
    cores["lander"].set_parameters(lander_values)
    cores["relay"].set_parameters({"outage.start_s": outage_start_s, "outage.duration_s": 7_200.0})
    loop = SimLoop(GroundCore(6, load_plan(None)), cores)
    loop.run()
    names = loop.event_names()
    for name in ("lunar_touchdown", "sampling_complete", "docking", "earth_landing",
                 "mission_end", "relay_outage_start", "relay_outage_end"):
        assert name in names, name
    applied = {e.src: e.body["parameters"] for e in loop.events
               if e.body["name"] == "parameters_applied"}
    assert applied["lander"] == {f"lander.{k}": v for k, v in lander_values.items()}
    [setup] = [e for e in loop.events if e.body["name"] == "surface_setup"]
    assert setup.t >= outage_start_s + 7_200.0 - EDGE_TOL_S
