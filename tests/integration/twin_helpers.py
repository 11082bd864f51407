"""Helpers shared by the integration tests: small vehicle cores and plans, and
waiting on a real process's output."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import nats
from prometheus_client import CollectorRegistry

from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import FlightPlan, load_plan, parse_plan
from services.kernel.bus import Bus
from services.kernel.config import VEHICLES
from services.kernel.envelope import Envelope
from services.kernel.metrics import Metrics
from services.kernel.snapstore import SnapStore
from services.kernel.vehicle import Outbox, Summary, VehicleCore


async def create_mission_streams(nats_url: str, mission: str, **options: Any) -> None:
    """What ground (or an operator) does first: a vehicle started without ground
    waits for the mission log and snapshot streams (runtime.ensure_streams).
    ``options``: nats.connect's (a secure server's TLS and creds)."""
    nc = await nats.connect(nats_url, **options)
    try:
        bus = Bus(mission, "ground", Metrics(mission, "ground", CollectorRegistry()),
                  lambda where, exc: None)
        bus.nc, bus.js = nc, nc.jetstream()
        await bus.ensure_stream()
        await SnapStore(bus.js, bus.subjects).ensure()
    finally:
        await nc.drain()


def nominal_until(end_utc: str, name: str = "nominal-part") -> FlightPlan:
    """The nominal plan's clock-timed items before ``end_utc``, ending there."""
    end_s = mission_s_from_utc(end_utc)
    items = tuple(i for i in load_plan(None).items if i.at_s is not None and i.at_s < end_s)
    return FlightPlan(name=name, items=items, end_at_s=end_s)


def plan(hours: float = 2.0, items: list[dict[str, Any]] | None = None) -> FlightPlan:
    h = int(hours)
    m = int((hours - h) * 60)
    return parse_plan({"name": "test", "end": {"at": f"2024-05-03T{9 + h:02d}:{27 + m:02d}:29Z"},
                       "items": items or []})


class ChattyCore(VehicleCore):
    """Sends a random number to a random peer every step and folds what it
    receives, in the order it applies it, into a digest. If delivery order
    depended on NATS timing, the digests would differ between runs."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.digest = hashlib.sha256()
        self.received = 0

    def apply(self, msg: Envelope, out: Outbox) -> None:
        if msg.kind == "transfer":
            self.digest.update(f"{msg.src}:{msg.seq}:{msg.t}:{msg.body['x']}".encode())
            self.received += 1
        else:
            super().apply(msg, out)

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        peers = [p for p in VEHICLES if p != self.name]
        for _ in range(self.rng.randint(1, 3)):
            out.send("xfer", self.rng.choice(peers), t_to, {"x": self.rng.random()})
        if self.rng.random() < 0.2:
            out.event(self.name, "chat", t_to, digest=self.digest.hexdigest()[:16])
        return float(self.rng.choice([30.0, 60.0, 90.0]))

    def summary(self) -> Summary:
        return Summary(phase=self.phase, values={"received": float(self.received)},
                       info={"digest": self.digest.hexdigest()})


def chatty(name: str) -> Any:
    def make(seed: int) -> ChattyCore:
        core = ChattyCore.__new__(ChattyCore)
        core.name = name
        ChattyCore.__init__(core, seed)
        return core

    return make


class PoweredWindowCore(VehicleCore):
    """Accepts at most 1 s steps inside [start, end] (powered flight), 600 s outside."""

    def __init__(self, seed: int, start_s: float, end_s: float) -> None:
        super().__init__(seed)
        self.start_s, self.end_s = start_s, end_s

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        if t_to < self.start_s:
            return min(600.0, self.start_s - t_to)
        return 1.0 if t_to < self.end_s else 600.0


def wait_text(path: Path, needle: str, timeout_s: float) -> None:
    """Until a process writing to ``path`` has written ``needle``; else fail with
    what it wrote (``timeout_s``: wall seconds, a bound on a hang)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in {path} after {timeout_s} s:\n"
                         + (path.read_text(errors="replace") if path.exists() else "(none)"))
