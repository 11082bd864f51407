"""Ground's wiring: the runtime plus the clock authority and its gRPC service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry

from services.ground import fork
from services.ground.control import ClockServicer
from services.ground.plan import FlightPlan, load_raw, parse_plan
from services.ground.station import StationServicer
from services.ground.vehicle import GroundCore
from services.kernel.clock import ClockAuthority
from services.kernel.config import ServiceConfig
from services.kernel.gauges import ServiceGauges
from services.kernel.outbox import Summary
from services.kernel.runtime import ServiceRuntime
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc, ground_pb2, ground_pb2_grpc

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
        #: The plan as written (what a fork of this mission starts from); a fork
        #: flies the one its record gives (:meth:`_start_fork`).
        self.plan_raw: dict[str, Any] = load_raw(config.flight_plan)
        core = GroundCore(config.seed, plan or parse_plan(
            self.plan_raw, str(config.flight_plan or "the nominal plan")))
        super().__init__(core, config, registry)
        self.clock = ClockAuthority(self, self.core, config.expect, config.warp,
                                    config.start_paused, config.ack_timeout_s)
        self._clock_task: asyncio.Task[None] | None = None

    def add_servicers(self, server: grpc.aio.Server) -> list[str]:
        names = super().add_servicers(server)
        clock_pb2_grpc.add_MissionClockServicer_to_server(
            ClockServicer(self.clock, self.make_fork), server)
        ground_pb2_grpc.add_GroundStationServicer_to_server(StationServicer(self), server)
        return [*names, clock_pb2.DESCRIPTOR.services_by_name["MissionClock"].full_name,
                ground_pb2.DESCRIPTOR.services_by_name["GroundStation"].full_name]

    async def subscribe_clock(self) -> None:
        await self.clock.attach()

    async def say_hello(self) -> None:
        if self.snapstore is not None:  # a restarted ground resumes its run's last commit
            commit = await self.snapstore.last_commit()
            mine = commit is not None and commit.get("run", "") == self.config.run_id
            if self.config.fork_of:
                commit = await self._start_fork(commit if mine else None)
            elif not mine:
                commit = None
            if commit is not None:
                log.warning("resuming from the last commit",
                            extra={"step": commit["step"], "epoch": commit.get("epoch")})
                self.clock.resume_from(commit)
        self._clock_task = asyncio.create_task(self.clock.run(), name="clock")
        self._clock_task.add_done_callback(self._clock_done)

    async def _start_fork(self, own: dict[str, Any] | None) -> dict[str, Any]:
        """A fork's ground: fly the plan of its record and start from the branch
        commit, adopted from the parent unless this run already committed."""
        if self.snapstore is None:
            raise fork.ForkRefused("precondition", "a fork starts from a committed snapshot: "
                                   "it needs snapshots on (TWIN_SNAPSHOT_EVERY_STEPS > 0)")
        js = self.bus.js
        assert js is not None
        spec = await fork.wait_for_record(js, self.config.fork_of, self.config.mission_id)
        self.plan_raw = dict(spec["plan"])
        self.core.plan = parse_plan(self.plan_raw, f"fork {self.config.mission_id}'s plan")
        self.core.restored()
        self.metrics.child("fork_of", self.config.fork_of).set(1)
        if own is not None:
            return own
        return await fork.adopt(js, self.snapstore, child=self.config.mission_id,
                                run=self.config.run_id, spec=spec)

    async def make_fork(self, kind: str, value: str, child: str,
                        change: fork.Change) -> dict[str, Any]:
        """The Fork call: resolve, check and record a fork of this mission."""
        fork.check_child(self.config.mission_id, child)
        js, store = self.bus.js, self.snapstore
        if js is None or store is None:
            raise fork.ForkRefused("precondition", "forks start from committed snapshots: "
                                   "this mission runs with snapshots off")
        if await fork.read_record(js, self.config.mission_id, child) is not None:
            raise fork.ForkRefused("exists", f"mission {self.config.mission_id} already has a "
                                   f"fork {child!r}: choose another id")
        branch = fork.resolve_branch(kind, value, now_step=self.step, now_t_s=self.t_s,
                                     steps=self.clock.step_times, seen=self.core.seen)
        commit = fork.choose_commit(await store.commits(), self.config.run_id, branch)
        plan = fork.fork_plan(self.plan_raw, change, branch, self.core.issued, self.core.seen)
        spec = fork.make_spec(parent=self.config.mission_id, parent_run=self.config.run_id,
                              child=child, seed=self.config.seed, branch=branch,
                              commit=commit, change=change, plan=plan)
        await fork.write_record(js, self.config.mission_id, spec)
        self.metrics.child("forks").inc()
        log.warning("fork recorded", extra={"child": child, "branch": spec["branch"],
                                            "commit_step": commit["step"]})
        return spec

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
