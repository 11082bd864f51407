"""Ground's state: flight-plan progress, mission phase, telemetry archive. Pure.

Comms (services/kernel/telecommand.py, `GroundLinks`): frames from ``dl.*`` are
archived by origin and ``frame_seq`` once their ``deliver_at_s`` has passed,
with gap detection; plan commands go by the path the target last showed in
its downlink (direct on ``cmd.<target>``, or via Queqiao-2), and wait while it
has none. Absolute-time plan items and time-tagged commands count as
uploaded in an earlier pass and go at once.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Any

from services.ground.plan import FlightPlan, PlanItem
from services.kernel.envelope import Envelope
from services.kernel.faults import INJECT_FAULT_OP
from services.kernel.subjects import Subjects
from services.kernel.telecommand import GroundLinks
from services.kernel.vehicle import CommandHandler, Outbox, Summary, VehicleCore

#: Ground's own command that carries an operator's telecommand to a vehicle.
UPLINK_OP = "uplink"
#: Ground never needs the clock to stop for it between plan instants (those it
#: stops on exactly); the vehicles' own limits decide the steps.
GROUND_STEP_S = 3_600.0


class GroundCore(VehicleCore):
    name = "ground"
    downlink_enabled = False  # ground receives the downlink; it has none of its own

    issued: dict[str, float]  # plan item id -> when
    seen: dict[str, float]  # event or plan item -> first time
    events: list[dict[str, Any]]
    frames: dict[str, int]  # downlink frames received per vehicle
    last_frame: dict[str, dict[str, Any]]
    links: GroundLinks
    finished: bool

    def __init__(self, seed: int, plan: FlightPlan) -> None:
        super().__init__(seed)
        self.plan = plan  # given, not state: a restored ground flies its own
        self.phase = "launch"
        self.issued = {}
        self.seen = {}
        self.events = []
        self.frames = {}
        self.last_frame = {}
        self.links = GroundLinks()
        self.finished = False
        self._due: list[float] = []
        self._due_key: tuple[int, int] = (-1, -1)

    def command_table(self) -> dict[str, CommandHandler]:
        return {**super().command_table(), UPLINK_OP: self._uplink}

    def _uplink(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        """An operator's telecommand (GroundStation.Uplink, checked there): sent
        by the target's path like a plan command, or held while it has none."""
        target, inner = str(command["target"]), dict(command["command"])
        path = self.links.route(target, inner, t, out)
        out.event(self.name, "command_uplinked", t, target=target, op=inner.get("op"),
                  command_id=inner.get("command_id"), path=path)

    def extra_subjects(self, s: Subjects) -> list[str]:
        return [s.all_of("evt"), s.all_of("dl")]

    # --- the flight plan -----------------------------------------------------
    @property
    def end_t_s(self) -> float:
        end = self.plan.end_at_s
        if self.plan.end_after and self.plan.end_after in self.seen:
            end = min(end, self.seen[self.plan.end_after] + self.plan.end_offset_s)
        return end

    def due_s(self, item: PlanItem) -> float | None:
        if item.at_s is not None:
            return item.at_s
        assert item.after is not None
        if item.after not in self.seen:
            return None
        return max(self.seen[item.after] + item.offset_s, item.not_before_s)

    def _due_times(self) -> list[float]:
        """Due times of the items not yet issued whose time is known, sorted. They
        change only when an item is issued or an event is first seen; the clock
        asks every step, so they are kept until then."""
        key = (len(self.issued), len(self.seen))
        if self._due_key != key:
            self._due = sorted(d for it in self.plan.items if it.id not in self.issued
                               if (d := self.due_s(it)) is not None)
            self._due_key = key
        return self._due

    def next_stop_after(self, t_s: float) -> float:
        due = self._due_times()
        i = bisect_right(due, t_s + 1e-9)  # the first due time after t_s (sorted)
        return due[i] if i < len(due) else math.inf

    def has_seen(self, event: str) -> bool:
        return event in self.seen

    def item_ids(self) -> frozenset[str]:
        return frozenset(item.id for item in self.plan.items)

    # --- VehicleCore hooks ---------------------------------------------------
    def apply(self, msg: Envelope, out: Outbox) -> None:
        if msg.kind == "event":
            name = str(msg.body.get("name"))
            self.seen.setdefault(name, msg.t)
            self.events.append({"name": name, "vehicle": msg.src, "t": msg.t, **msg.body})
            self.links.on_event(msg.src, name, msg.body, msg.t)
        elif msg.kind == "downlink":
            self.frames[msg.src] = self.frames.get(msg.src, 0) + 1
            self.last_frame[msg.src] = msg.body
            self.links.on_downlink(msg.body)
        else:
            super().apply(msg, out)

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        self.links.deliver(t_to)
        self.links.release(t_to, out)
        due_times = self._due_times()
        for item in self.plan.items if due_times and due_times[0] <= t_to + 1e-9 else ():
            if item.id in self.issued:
                continue
            due = self.due_s(item)
            if due is None or due > t_to + 1e-9:
                continue
            self.issued[item.id] = t_to
            self.seen.setdefault(item.id, t_to)
            if item.target == self.name:  # ground's own step: no message to itself
                self.execute({**item.command, "plan_id": item.id}, t_to, out)
            elif item.command["op"] == INJECT_FAULT_OP:  # the conductor's hand: no link
                out.send("cmd", item.target, t_to, {**item.command, "plan_id": item.id})
            else:
                self.links.route(item.target, {**item.command, "plan_id": item.id}, t_to, out,
                                 stored=item.at_s is not None)
            out.event(self.name, "plan_item_issued", t_to, id=item.id, target=item.target,
                      op=item.command["op"])
            if item.phase:
                self.phase = item.phase
        if t_to >= self.end_t_s - 1e-9 and not self.finished:
            self.finished = True
            self.phase = "complete"
            out.event(self.name, "mission_end", t_to, plan=self.plan.name)
        return GROUND_STEP_S

    def telemetry_interval_s(self) -> float:
        """Ground's truth telemetry (plan progress) is for operators; hourly is plenty."""
        return GROUND_STEP_S

    def summary(self) -> Summary:
        return Summary(
            phase=self.phase,
            values={"plan_items_issued": float(len(self.issued)),
                    "plan_items_total": float(len(self.plan.items)),
                    "events_seen": float(len(self.events)), **self.links.values()},
            info={"plan": self.plan.name, **self.links.info()})

    def restored(self) -> None:
        self._due_key = (-1, -1)  # recompute the schedule from the restored state
