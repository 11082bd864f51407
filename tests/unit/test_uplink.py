"""An operator's telecommand (ground's Uplink, services/gateway/), pure parts:
ground sends it by the target's path like a plan command, or holds it, and the
events that follow name its id; the vehicle says it ran it, or why not.
Commands of the flight plan carry no id, and their events stay as they were.
"""

from __future__ import annotations

from typing import Any

from services.ground.plan import parse_plan
from services.ground.vehicle import UPLINK_OP, GroundCore
from services.kernel.outbox import Outbox
from services.kernel.vehicle import VehicleCore

PLAN = parse_plan({"name": "t", "end": {"at": "2024-05-04T00:00:00Z"}, "items": []})


class Probe(VehicleCore):
    name = "orbiter"


def _events(out: Outbox) -> list[dict[str, Any]]:
    return [item.body for item in out.items if item.kind == "evt"]


def test_a_vehicle_names_the_id_of_a_command_it_ran_or_refused() -> None:
    probe, out = Probe(6), Outbox()
    probe.receive_command({"op": "set_mode", "mode": "safe", "command_id": 41}, out)
    probe.receive_command({"op": "warp_drive", "command_id": 42}, out)
    assert probe.phase == "safe"
    assert [(e["name"], e.get("command_id")) for e in _events(out)] == [
        ("mode_changed", None), ("command_executed", 41), ("command_rejected", 42)]
    assert "no operation 'warp_drive'" in _events(out)[2]["reason"]


def test_a_plan_command_says_nothing_more_than_before() -> None:
    probe, out = Probe(6), Outbox()
    probe.receive_command({"op": "set_mode", "mode": "safe", "plan_id": "p"}, out)
    probe.receive_command({"op": "warp_drive", "plan_id": "q"}, out)
    assert [e["name"] for e in _events(out)] == ["mode_changed", "command_rejected"]
    assert all("command_id" not in e for e in _events(out))


def _uplink(ground: GroundCore, target: str, command_id: int, t: float) -> Outbox:
    out = Outbox()
    ground.receive_command({"op": UPLINK_OP, "target": target,
                            "command": {"op": "set_mode", "mode": "safe",
                                        "command_id": command_id}}, out)
    return out


def test_ground_sends_an_uplink_by_the_targets_path() -> None:
    ground = GroundCore(6, PLAN)
    out = _uplink(ground, "lander", 7, 0.0)  # never heard from: rides the stack, direct
    sent = [i for i in out.items if i.kind == "cmd"]
    assert [(i.target, i.body) for i in sent] == [
        ("lander", {"op": "set_mode", "mode": "safe", "command_id": 7})]
    [uplinked] = [e for e in _events(out) if e["name"] == "command_uplinked"]
    assert (uplinked["target"], uplinked["command_id"], uplinked["path"]) == ("lander", 7,
                                                                              "direct")
    # heard last through Queqiao-2: it goes to the relay, wrapped
    ground.links.on_event("lander", "link_acquired", {"path": "relay", "station": "q2"}, 5.0)
    relayed = [i for i in _uplink(ground, "lander", 8, 6.0).items if i.kind == "xfer"]
    assert [(i.target, i.body["type"], i.body["to"], i.body["command"]["command_id"])
            for i in relayed] == [("relay", "relay_cmd", "lander", 8)]


def test_ground_holds_an_uplink_while_the_target_has_no_path_and_names_it() -> None:
    ground = GroundCore(6, PLAN)
    ground.links.on_event("orbiter", "link_lost", {"path": "direct"}, 1.0)
    out = _uplink(ground, "orbiter", 9, 2.0)
    assert not [i for i in out.items if i.kind in ("cmd", "xfer")]
    names = {e["name"]: e for e in _events(out)}
    assert names["command_held"]["command_id"] == 9
    assert names["command_uplinked"]["path"] == "held"
    ground.links.on_event("orbiter", "link_acquired", {"path": "direct", "station": "k"}, 3.0)
    later = Outbox()
    ground.links.release(4.0, later)
    [released] = _events(later)
    assert (released["name"], released["command_id"], released["path"]) == (
        "command_released", 9, "direct")
