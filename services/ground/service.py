"""Ground's wiring: the runtime plus the clock authority and its gRPC service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry

from services.ground.control import ClockServicer
from services.ground.plan import FlightPlan, load_plan
from services.ground.vehicle import GroundCore
from services.kernel.clock import ClockAuthority
from services.kernel.config import ServiceConfig
from services.kernel.gauges import ServiceGauges
from services.kernel.outbox import Summary
from services.kernel.runtime import ServiceRuntime
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc

log = logging.getLogger("twin.ground")


class GroundGauges(ServiceGauges):
    def create_own(self) -> None:
        """The clock's series, so every one exists before its first change."""
        m = self.metrics
        m.steps.touch()
        m.step_rate.labels(*m.labels()).set(0)
        for peer in self.config.expect:
            m.ack_overdue.labels(*m.labels(), peer).set(0)

    def refresh_own(self, s: Summary, g: dict[str, Any]) -> None:
        """Ground flies no body: its summary counts the frames it received."""
        self.link_metrics.update_ground(self.metrics, s.values)


class GroundRuntime(ServiceRuntime):
    core: GroundCore
    gauges_type = GroundGauges

    def __init__(self, config: ServiceConfig, registry: CollectorRegistry = REGISTRY,
                 plan: FlightPlan | None = None) -> None:
        core = GroundCore(config.seed, plan or load_plan(config.flight_plan))
        super().__init__(core, config, registry)
        self.clock = ClockAuthority(self, self.core, config.expect, config.warp,
                                    config.start_paused, config.ack_timeout_s)
        self._clock_task: asyncio.Task[None] | None = None

    def add_servicers(self, server: grpc.aio.Server) -> list[str]:
        names = super().add_servicers(server)
        clock_pb2_grpc.add_MissionClockServicer_to_server(ClockServicer(self.clock), server)
        return [*names, clock_pb2.DESCRIPTOR.services_by_name["MissionClock"].full_name]

    async def subscribe_clock(self) -> None:
        await self.clock.attach()

    async def say_hello(self) -> None:
        if self.snapstore is not None:  # a restarted ground resumes its run's last commit
            commit = await self.snapstore.last_commit()
            if commit is not None and commit.get("run", "") == self.config.run_id:
                log.warning("resuming from the last commit",
                            extra={"step": commit["step"], "epoch": commit.get("epoch")})
                self.clock.resume_from(commit)
        self._clock_task = asyncio.create_task(self.clock.run(), name="clock")
        self._clock_task.add_done_callback(self._clock_done)

    async def reconnected(self) -> None:
        """Messages in flight when NATS went away are lost: roll back at once,
        rather than after an ack timeout and a delivery timeout."""
        self.clock.request_rollback("reconnect")

    def _clock_done(self, task: asyncio.Task[None]) -> None:
        """The clock loop ends only when the service stops: anything else is a failure."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.fail("clock", exc)

    async def stop(self) -> None:
        self.stopping.set()
        self.clock.release_waiters()
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._clock_task
        await super().stop()


def make(config: ServiceConfig, registry: CollectorRegistry = REGISTRY) -> ServiceRuntime:
    return GroundRuntime(config, registry)
