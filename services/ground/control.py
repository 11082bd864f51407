"""gRPC MissionClock servicer: thin, delegating to the clock authority."""

from __future__ import annotations

import math

import grpc

from services.kernel.clock import ClockAuthority
from services.kernel.control import instrumented
from services.kernel.dynamics.timescale import iso_utc, mission_s_from_utc
from services.kernel.events import KNOWN_EVENTS
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc


class ClockServicer(clock_pb2_grpc.MissionClockServicer):
    def __init__(self, clock: ClockAuthority) -> None:
        self.clock = clock
        self.rt = clock.rt

    def state(self) -> clock_pb2.ClockState:
        c, st = self.clock, self.clock.status
        end = c.plan.end_t_s
        return clock_pb2.ClockState(
            step=c.rt.step, mission_time_s=c.rt.t_s, utc=iso_utc(c.rt.t_s), mode=st.mode,
            warp=st.warp, as_fast_as_possible=st.warp <= 0, waiting_for=st.waiting_for,
            steps_per_second=st.steps_per_second, phase=c.rt.core.phase,
            run_until_mission_time_s=st.run_until_t_s, run_until_event=st.run_until_event,
            end_mission_time_s=end if math.isfinite(end) else -1.0)

    @instrumented
    async def GetTime(self, request: clock_pb2.GetTimeRequest,
                      context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        return self.state()

    @instrumented
    async def Pause(self, request: clock_pb2.PauseRequest,
                    context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        await self._not_finished(context)
        self.clock.pause()
        return self.state()

    @instrumented
    async def Resume(self, request: clock_pb2.ResumeRequest,
                     context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        await self._not_finished(context)
        self.clock.resume()
        return self.state()

    @instrumented
    async def SetWarp(self, request: clock_pb2.SetWarpRequest,
                      context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        if request.as_fast_as_possible:
            self.clock.set_warp(0.0)
        elif not (math.isfinite(request.warp) and request.warp > 0):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "warp must be a finite factor > 0, or set as_fast_as_possible")
        else:
            self.clock.set_warp(request.warp)
        return self.state()

    @instrumented
    async def Step(self, request: clock_pb2.StepRequest,
                   context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        await self._not_finished(context)
        if request.steps < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "steps must be >= 1")
        if not self.clock.paused:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "the clock is running: Pause it before stepping")
        target = self.rt.step + request.steps
        self.clock.request_steps(request.steps)
        await self.clock.wait_until(lambda: self.rt.step >= target)
        return self.state()

    @instrumented
    async def RunUntil(self, request: clock_pb2.RunUntilRequest,
                       context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        await self._not_finished(context)
        which = request.WhichOneof("target")
        if which is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "give a target: mission_time_s, utc or event")
        if which == "event":
            plan_ids = self.clock.plan.item_ids()
            if request.event not in KNOWN_EVENTS and request.event not in plan_ids:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"unknown event {request.event!r}: give a mission event "
                                    "(docs/mission.md) or a flight-plan item id")
            self.clock.run_until(None, request.event)
            if request.wait:
                await self.clock.wait_until(lambda: self.clock.plan.has_seen(request.event))
            return self.state()
        if which == "utc":
            try:
                t = mission_s_from_utc(request.utc)
            except ValueError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"bad utc {request.utc!r}: {exc}")
                raise
        else:
            t = request.mission_time_s
        if not math.isfinite(t) or t <= self.rt.t_s:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"target {t} s is not after now ({self.rt.t_s} s)")
        self.clock.run_until(t, None)
        if request.wait:
            await self.clock.wait_until(lambda: self.rt.t_s >= t - 1e-9)
        return self.state()

    async def _not_finished(self, context: grpc.aio.ServicerContext) -> None:
        if self.clock.plan.finished:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the mission has finished")
