"""Commands on board: validation, rejection events and time tags (kernel, pure)."""

from __future__ import annotations

from services.ground.plan import parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.dynamics.timescale import mission_s_from_utc
from services.kernel.simloop import SimLoop
from services.kernel.vehicle import COAST_STEP_S, Outbox, VehicleCore


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
