"""Run a whole twin inside one event loop: for tests and benchmarks.

Each service still has its own NATS connection, gRPC server and metrics
registry, so the protocol is exercised exactly as between processes; only the
operating-system process boundary is missing. ``twin up`` runs real processes.

It runs plaintext unless given a ``security`` (services/kernel/security.py):
most tests drive the clock and the step rule on the session's plaintext
nats-server, where TLS and JWTs would add cost and nothing under test; the
secure path is tested with a provisioned server (tests/integration/test_secure_run.py).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from services.ground.plan import FlightPlan
from services.ground.service import GroundRuntime
from services.kernel.config import VEHICLES, ServiceConfig
from services.kernel.runtime import ServiceRuntime
from services.kernel.security import Security
from services.kernel.vehicle import VehicleCore

CoreFactory = Callable[[int], VehicleCore]


class LocalTwin:
    def __init__(self, nats_url: str, mission: str, plan: FlightPlan, *, seed: int = 6,
                 cores: Mapping[str, CoreFactory] | None = None, warp: float = 0.0,
                 start_paused: bool = False, ack_timeout_s: float = 2.0,
                 vehicles: tuple[str, ...] = VEHICLES, security: Security | None = None,
                 **overrides: Any) -> None:
        sec = security or Security.plaintext()
        overrides |= {"insecure": sec.insecure, "pki_dir": sec.pki_dir,
                      "nats_creds": sec.nats_creds}
        base = ServiceConfig(service="ground", mission_id=mission, nats_urls=(nats_url,),
                             grpc_port=0, metrics_port=-1, seed=seed, warp=warp,
                             start_paused=start_paused, ack_timeout_s=ack_timeout_s,
                             expect=vehicles, **overrides)
        self.ground = GroundRuntime(base, CollectorRegistry(), plan=plan)
        self.vehicles: dict[str, ServiceRuntime] = {}
        for name in vehicles:
            cfg = replace(base, service=name)
            if cores and name in cores:
                self.vehicles[name] = ServiceRuntime(cores[name](seed), cfg, CollectorRegistry())
            else:
                module = importlib.import_module(f"services.{name}.service")
                self.vehicles[name] = module.make(cfg, CollectorRegistry())

    @property
    def all(self) -> dict[str, ServiceRuntime]:
        return {"ground": self.ground, **self.vehicles}

    async def start(self) -> None:
        # together: ground creates the streams the vehicles wait for
        await asyncio.gather(*(rt.start() for rt in self.vehicles.values()), self.ground.start())

    async def wait_finished(self, timeout_s: float = 60.0) -> None:
        await asyncio.wait_for(self.ground.clock.finished.wait(), timeout_s)

    async def stop(self) -> None:
        await self.ground.stop()
        await asyncio.gather(*(rt.stop() for rt in self.vehicles.values()))

    async def __aenter__(self) -> LocalTwin:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
