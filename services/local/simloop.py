"""Drive vehicle cores through the clock protocol in one thread, without NATS.

The same semantics as the services over NATS -- messages published during a
step are applied at the start of the next, in (time, source, sequence) order;
steps adapt to the smallest largest-step any core accepts and stop exactly on
flight-plan instants -- so vehicle logic can be developed and unit-tested in
milliseconds. The whole-mission tests run the real services over NATS; this
loop is for pure tests of the cores and for comparing against them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.ground.vehicle import GroundCore
from services.kernel.bus import subject_matches
from services.kernel.clock import FIRST_STEP_S, MIN_STEP_S
from services.kernel.envelope import Envelope
from services.kernel.runtime import ENVELOPE_KIND, step_after
from services.kernel.subjects import Subjects
from services.kernel.vehicle import PROMPT_STEP_S, Outbox, VehicleCore

MISSION = "sim"


@dataclass
class SimResult:
    steps: int
    t_s: float
    events: list[Envelope] = field(default_factory=list)
    messages: int = 0


class SimLoop:
    def __init__(self, ground: GroundCore, cores: dict[str, VehicleCore]) -> None:
        self.ground = ground
        self.cores = dict(sorted(cores.items()))
        self.subjects = Subjects(MISSION)
        self.seq: dict[str, int] = {}
        self.pending: list[tuple[str, Envelope]] = []  # (subject, env) published this step
        self.held: dict[str, list[Envelope]] = {n: [] for n in [*self.cores, "ground"]}
        self.step = 0
        self.t_s = 0.0
        self.max_dt = FIRST_STEP_S
        self.events: list[Envelope] = []
        self.messages = 0
        self.prompt = False
        all_cores: dict[str, VehicleCore] = {**self.cores, "ground": ground}
        self.inbound = {name: [self.subjects.command(name), self.subjects.transfer(name),
                               *getattr(core, "extra_subjects", lambda s: [])(self.subjects)]
                        for name, core in all_cores.items()}

    def _publish(self, source: str, out: Outbox, step: int) -> None:
        for item in out.drain():
            self.prompt = self.prompt or item.prompt
            subject = self.subjects.of(item.kind, item.target)
            self.seq[source] = self.seq.get(source, 0) + 1
            env = Envelope(MISSION, source, self.seq[source], item.t, step,
                           ENVELOPE_KIND[item.kind], item.body)
            if item.kind == "evt":
                self.events.append(env)
            self.pending.append((subject, env))

    def _route(self) -> None:
        for subject, env in self.pending:
            self.messages += 1
            for name, patterns in self.inbound.items():
                if name != env.src and any(subject_matches(p, subject) for p in patterns):
                    self.held[name].append(env)
        self.pending = []

    def _deliver(self, name: str, core: VehicleCore, out: Outbox) -> None:
        msgs = sorted(self.held[name], key=lambda e: e.order_key)
        self.held[name] = []
        for msg in msgs:
            core.apply(msg, out)

    def run(self, until_s: float = math.inf,
            on_step: Callable[[SimLoop], None] | None = None) -> SimResult:
        g = self.ground
        while not g.finished and self.t_s < until_s:
            t_from = self.t_s
            limit = min(self.max_dt, g.next_stop_after(t_from) - t_from, g.end_t_s - t_from,
                        until_s - t_from)
            t_to = t_from + max(limit, MIN_STEP_S)
            self.step += 1
            dts = []
            self.prompt = False
            for name, core in self.cores.items():
                out = Outbox()
                self._deliver(name, core, out)
                dts.append(step_after(core, t_from, t_to, out))
                self._publish(name, out, self.step)
            self._route()
            out = Outbox()
            self._deliver("ground", g, out)
            dts.append(step_after(g, t_from, t_to, out))
            self._publish("ground", out, self.step)
            self._route()
            self.t_s = t_to
            if self.prompt:
                dts.append(PROMPT_STEP_S)
            self.max_dt = max(min(d for d in dts if d > 0), MIN_STEP_S)
            if on_step is not None:
                on_step(self)
        return SimResult(self.step, self.t_s, self.events, self.messages)

    def event_names(self) -> list[str]:
        return [str(e.body["name"]) for e in self.events]


def event_rows(events: list[Envelope]) -> list[dict[str, Any]]:
    return [{"name": e.body["name"], "vehicle": e.src, "t": e.t, **e.body} for e in events]
