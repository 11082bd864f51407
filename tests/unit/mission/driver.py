"""Drive one vehicle core through the clock protocol with hand-made messages.

Each step is taken by the step rule (services/kernel/steprule.py), as the
services and SimLoop take it, so faults, time-tagged commands and the
on-board downlink run as in flight; the step length is what the core accepted
last. The other vehicles are replaced by messages the test writes: fast and
explicit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.kernel.envelope import Envelope
from services.kernel.steprule import take_step
from services.kernel.vehicle import Outbox, Outgoing, VehicleCore


@dataclass
class Drive:
    core: VehicleCore
    t_s: float
    dt_s: float = 60.0
    pending: list[Envelope] = field(default_factory=list)
    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    sent: list[Outgoing] = field(default_factory=list)
    steps: int = 0
    seq: int = 0

    def __post_init__(self) -> None:
        self.core.advance(0.0, self.t_s, Outbox())  # a stowed core just follows the clock

    def deliver(self, kind: str, body: dict[str, Any], src: str = "ground") -> None:
        self.seq += 1
        self.pending.append(Envelope("sim", src, self.seq, self.t_s, self.steps, kind, body))

    def step(self) -> None:
        out = Outbox()
        held, self.pending = self.pending, []
        t_to = self.t_s + self.dt_s
        self.dt_s = take_step(self.core, held, self.t_s, t_to, out)
        assert self.dt_s > 0.0 and math.isfinite(self.dt_s)
        self.steps += 1
        self.t_s = t_to
        for item in out.drain():
            if item.kind == "evt":
                body = dict(item.body)
                self.events.append((item.t, str(body.pop("name")), body))
            else:
                self.sent.append(item)

    def until(self, done: Callable[[Drive], bool], max_steps: int = 20_000,
              each: Callable[[Drive], None] | None = None) -> None:
        for _ in range(max_steps):
            if done(self):
                return
            self.step()
            if each is not None:
                each(self)
        raise AssertionError(f"condition not met after {max_steps} steps at t={self.t_s}")

    def until_t(self, t_s: float) -> None:
        """Step until ``t_s`` exactly (the last step is cut short)."""
        while self.t_s < t_s - 1e-9:
            self.dt_s = min(self.dt_s, t_s - self.t_s)
            self.step()

    def names(self) -> list[str]:
        return [e[1] for e in self.events]

    def event(self, name: str) -> tuple[float, dict[str, Any]]:
        hits = [(t, v) for t, n, v in self.events if n == name]
        assert hits, f"no {name!r} event; got {sorted(set(self.names()))}"
        return hits[0]

    def sent_of(self, msg_type: str) -> list[Outgoing]:
        return [s for s in self.sent if s.body.get("type") == msg_type]
