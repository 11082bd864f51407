"""Commands on board: validation, rejection events and time tags (kernel, pure)."""

from __future__ import annotations

import orjson

from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.steprule import advance as step_after
from services.kernel.vehicle import COAST_STEP_S, Outbox, VehicleCore
from services.local.simloop import SimLoop


class Probe(VehicleCore):
    name = "orbiter"

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.ran_at: list[tuple[str, float]] = []

    def execute(self, command: dict[str, object], t: float, out: Outbox) -> None:
        self.ran_at.append((str(command.get("mode")), t))
        super().execute(command, t, out)

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return COAST_STEP_S


def _loop(items: list[dict[str, object]]) -> tuple[SimLoop, Probe]:
    plan = parse_plan({"name": "t", "end": {"at": "2024-05-03T14:00:00Z"}, "items": items})
    probe = Probe(6)
    return SimLoop(GroundCore(6, plan), {"orbiter": probe}), probe


def test_a_time_tagged_command_runs_exactly_at_its_tag() -> None:
    tag = "2024-05-03T12:34:56.5Z"
    loop, probe = _loop([{"id": "up", "at": "2024-05-03T10:00:00Z", "target": "orbiter",
                          "command": {"op": "set_mode", "mode": "later",
                                      "execute_at_utc": tag}}])
    loop.run()
    assert probe.ran_at == [("later", mission_s_from_utc(tag))]


def test_a_bad_command_is_rejected_on_board_with_a_reason() -> None:
    loop, probe = _loop([
        {"id": "a", "at": "2024-05-03T10:00:00Z", "target": "orbiter",
         "command": {"op": "warp_drive"}},
        {"id": "b", "at": "2024-05-03T10:00:00Z", "target": "orbiter",
         "command": {"op": "set_mode", "mode": "x", "execute_at_s": "soon"}},
    ])
    loop.run()
    rejected = [e.body for e in loop.events if e.body["name"] == "command_rejected"]
    assert [r["plan_id"] for r in rejected] == ["a", "b"]
    assert "no operation 'warp_drive'" in rejected[0]["reason"]
    assert "execute_at_s" in rejected[1]["reason"]
    assert probe.ran_at == []


def _fault(fid: str, kind: str, since: float, duration_s: float) -> dict[str, object]:
    return {"fault_id": fid, "kind": kind, "target": "", "magnitude": 0.5, "since": since,
            "duration_s": duration_s}


def _fault_events(out: Outbox) -> list[tuple[str, float, str, str]]:
    return [(str(i.body["name"]), i.t, str(i.body["fault_id"]), str(i.body.get("reason", "")))
            for i in out.drain() if str(i.body["name"]).startswith("fault_")]


def test_faults_are_announced_once_and_a_timed_fault_ends_on_its_own() -> None:
    probe, out = Probe(6), Outbox()
    probe.faults["drop_telemetry"] = _fault("f1", "drop_telemetry", 0.0, 100.0)
    probe.faults["stall_clock"] = _fault("f2", "stall_clock", 0.0, 0.0)  # until cleared
    # The step is cut at the timed fault's end, so it ends exactly then.
    assert step_after(probe, 0.0, 60.0, out) == 40.0
    assert _fault_events(out) == [("fault_injected", 0.0, "f1", ""),
                                  ("fault_injected", 0.0, "f2", "")]
    step_after(probe, 60.0, 100.0, out)
    assert _fault_events(out) == []  # announced once only
    step_after(probe, 100.0, 700.0, out)
    assert _fault_events(out) == [("fault_cleared", 100.0, "f1", "expired")]
    assert list(probe.faults) == ["stall_clock"]
    assert probe.clear_fault("f2") and not probe.clear_fault("f2")
    step_after(probe, 700.0, 1300.0, out)
    assert _fault_events(out) == [("fault_cleared", 700.0, "f2", "cleared")]
    assert probe.faults == {}


def test_a_cleared_fault_survives_a_snapshot_until_it_is_announced() -> None:
    probe = Probe(6)
    probe.faults["drop_telemetry"] = _fault("f1", "drop_telemetry", 0.0, 0.0)
    step_after(probe, 0.0, 60.0, Outbox())
    probe.clear_fault("f1")
    again = Probe(6)
    again.restore(orjson.loads(orjson.dumps(probe.snapshot())))
    out = Outbox()
    step_after(again, 60.0, 120.0, out)
    assert _fault_events(out) == [("fault_cleared", 60.0, "f1", "cleared")]


def test_ground_runs_its_own_time_tagged_commands() -> None:
    """Ground steps through the same step_after as the vehicles."""
    loop, _ = _loop([])
    tag = mission_s_from_utc("2024-05-03T11:00:00Z")
    out = Outbox()
    loop.ground.receive_command({"op": "set_mode", "mode": "later", "execute_at_s": tag}, out)
    assert loop.ground.timed and loop.ground.next_timed_s() == tag
    loop.run()
    assert not loop.ground.timed
    assert any(e.body["name"] == "mode_changed" and e.t == tag and e.src == "ground"
               for e in loop.events)


def test_a_planned_fault_strikes_on_schedule_and_ends_after_its_duration() -> None:
    loop, probe = _loop([
        {"id": "quiet", "at": "2024-05-03T10:00:00Z", "target": "orbiter",
         "fault": {"kind": "drop_telemetry", "duration_s": 1800}},
        {"id": "gremlin", "at": "2024-05-03T10:00:00Z", "target": "orbiter",
         "fault": {"kind": "flux_capacitor"}},
    ])
    loop.run()
    events = {(e.body["name"], e.body.get("fault_id") or e.body.get("plan_id")): e
              for e in loop.events if e.src == "orbiter"}
    # Issued by ground at the end of the step ending 10:00, struck by the
    # orbiter as it starts the next one: at 10:00.
    issued = mission_s_from_utc("2024-05-03T10:00:00Z")
    injected = events[("fault_injected", "quiet")]
    assert injected.t == issued and injected.body["kind"] == "drop_telemetry"
    cleared = events[("fault_cleared", "quiet")]
    assert cleared.body["reason"] == "expired"
    assert cleared.t == injected.t + 1800.0  # the clock stops on the fault's end
    rejected = events[("command_rejected", "gremlin")]
    assert rejected.body["op"] == "inject_fault"
    assert "unknown fault kind 'flux_capacitor'" in rejected.body["reason"]
    assert probe.faults == {}
