"""Drive vehicle cores through the clock protocol in one thread, without NATS.

Each step is taken by the step rule (services/kernel/steprule.py), as the
services over NATS take it: every vehicle applies what was published before
the step in (time, source, sequence) order and advances; ground takes the step
last, also applying what the vehicles published in it; steps adapt to the
smallest largest-step any participant accepts and stop exactly on flight-plan
instants. So vehicle logic can be developed and unit-tested in milliseconds,
and a test compares this loop's messages with the services' over NATS
(tests/integration/test_step_rule_drivers.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.ground.vehicle import GroundCore
from services.kernel.bus import subject_matches
from services.kernel.envelope import Envelope
from services.kernel.runtime import ENVELOPE_KIND
from services.kernel.steprule import FIRST_STEP_S, next_max_dt, next_t_to, take_step
from services.kernel.subjects import Subjects
from services.kernel.vehicle import Outbox, VehicleCore

MISSION = "sim"


@dataclass
class SimResult:
    steps: int
    t_s: float
    events: list[Envelope] = field(default_factory=list)
    messages: int = 0


class SimLoop:
    def __init__(self, ground: GroundCore, cores: dict[str, VehicleCore], *,
                 mission: str = MISSION, record: bool = False) -> None:
        self.ground = ground
        self.cores = dict(sorted(cores.items()))
        self.mission = mission
        self.subjects = Subjects(mission)
        self.seq: dict[str, int] = {}
        self.pending: list[tuple[str, Envelope]] = []  # (subject, env) published this step
        self.held: dict[str, list[Envelope]] = {n: [] for n in [*self.cores, "ground"]}
        self.step = 0
        self.t_s = 0.0
        self.max_dt = FIRST_STEP_S
        self.events: list[Envelope] = []
        self.messages = 0
        #: Every message published, as (subject, envelope), when ``record``.
        self.published: list[tuple[str, Envelope]] | None = [] if record else None
        self.prompt = False
        all_cores: dict[str, VehicleCore] = {**self.cores, "ground": ground}
        self.inbound = {name: [self.subjects.command(name), self.subjects.transfer(name),
                               *getattr(core, "extra_subjects", lambda s: [])(self.subjects)]
                        for name, core in all_cores.items()}

    def _take(self, name: str, core: VehicleCore, t_from: float, t_to: float) -> float:
        """``name`` takes the step by the rule; what it wrote is published."""
        out = Outbox()
        held, self.held[name] = self.held[name], []
        max_dt = take_step(core, held, t_from, t_to, out)
        self._publish(name, out)
        return max_dt

    def _publish(self, source: str, out: Outbox) -> None:
        for item in out.drain():
            self.prompt = self.prompt or item.prompt
            subject = self.subjects.of(item.kind, item.target)
            self.seq[source] = self.seq.get(source, 0) + 1
            env = Envelope(self.mission, source, self.seq[source], item.t, self.step,
                           ENVELOPE_KIND[item.kind], item.body)
            if item.kind == "evt":
                self.events.append(env)
            if self.published is not None:
                self.published.append((subject, env))
            self.pending.append((subject, env))

    def _route(self) -> None:
        """Hold what was published for every participant subscribed to it."""
        for subject, env in self.pending:
            self.messages += 1
            for name, patterns in self.inbound.items():
                if name != env.src and any(subject_matches(p, subject) for p in patterns):
                    self.held[name].append(env)
        self.pending = []

    def run(self, until_s: float = math.inf,
            on_step: Callable[[SimLoop], None] | None = None) -> SimResult:
        g = self.ground
        while not g.finished and self.t_s < until_s:
            t_from = self.t_s
            t_to = next_t_to(t_from, self.max_dt, g.next_stop_after(t_from), g.end_t_s,
                             until_s)
            self.step += 1
            self.prompt = False
            dts = [self._take(name, core, t_from, t_to) for name, core in self.cores.items()]
            self._route()  # ground takes the step last, with what the vehicles published
            dts.append(self._take("ground", g, t_from, t_to))
            self._route()
            self.t_s = t_to
            self.max_dt = next_max_dt(dts, self.prompt)
            if on_step is not None:
                on_step(self)
        return SimResult(self.step, self.t_s, self.events, self.messages)

    def event_names(self) -> list[str]:
        return [str(e.body["name"]) for e in self.events]


def event_rows(events: list[Envelope]) -> list[dict[str, Any]]:
    return [{"name": e.body["name"], "vehicle": e.src, "t": e.t, **e.body} for e in events]
