"""gRPC MissionClock servicer: thin, delegating to the clock authority.

Every reply is the clock's state after the action (``ClockAuthority.mode``):
Pause answers "paused", Resume "running", RunUntil "running" with its target.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson

from services.dynamics.timescale import iso_utc, mission_s_from_utc
from services.ground import fork, targets
from services.ground.vehicle import GroundCore
from services.kernel.clock import ClockAuthority
from services.kernel.control import instrumented
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc

#: The gRPC status of each kind of refused fork.
_FORK_CODES = {"invalid": grpc.StatusCode.INVALID_ARGUMENT,
               "precondition": grpc.StatusCode.FAILED_PRECONDITION,
               "exists": grpc.StatusCode.ALREADY_EXISTS}

#: What the Fork call runs: ground's ``make_fork`` (services/ground/service.py).
MakeFork = Callable[[str, str, str, fork.Change], Awaitable[dict[str, Any]]]


class ClockServicer(clock_pb2_grpc.MissionClockServicer):
    def __init__(self, clock: ClockAuthority, make_fork: MakeFork | None = None) -> None:
        if not isinstance(clock.plan, GroundCore):
            raise TypeError("the clock servicer answers from ground's state: the clock's "
                            f"plan must be a GroundCore, not {type(clock.plan).__name__}")
        self.clock = clock
        self.ground: GroundCore = clock.plan
        self.rt = clock.rt
        self._make_fork = make_fork

    async def make_fork(self, kind: str, value: str, child: str,
                        change: fork.Change) -> dict[str, Any]:
        if self._make_fork is None:
            raise fork.ForkRefused("precondition", "this ground cannot fork its mission")
        return await self._make_fork(kind, value, child, change)

    def state(self) -> clock_pb2.ClockState:
        c, st = self.clock, self.clock.status
        end = c.plan.end_t_s
        return clock_pb2.ClockState(
            step=c.rt.step, mission_time_s=c.rt.t_s, utc=iso_utc(c.rt.t_s), mode=c.mode,
            warp=st.warp, as_fast_as_possible=st.warp <= 0, waiting_for=st.waiting_for,
            steps_per_second=c.steps_per_second(), phase=c.rt.core.phase,
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
        # Paused again when the steps are done, or earlier by a Pause: either way
        # the reply is the paused clock at the step it reached.
        await self.clock.wait_until(lambda: self.rt.step >= target or self.clock.paused)
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
            await self._run_until_event(request.event, context)
            reached = self._event_reached(request.event)
            still_set = self._event_still_set(request.event)
            what = request.event
        else:
            t = await self._run_until_time(request, context)
            reached, still_set = self._time_reached(t), self._time_still_set(t)
            what = iso_utc(t)
        if request.wait:
            await self._wait_for(reached, still_set, what, context)
        return self.state()

    @instrumented
    async def ListTargets(self, request: clock_pb2.ListTargetsRequest,
                          context: grpc.aio.ServicerContext) -> clock_pb2.ListTargetsResponse:
        found = targets.run_targets(self.ground.plan, self.ground.seen)
        return clock_pb2.ListTargetsResponse(targets=[
            clock_pb2.RunTarget(name=t.name, kind=t.kind, due=t.due, seen_utc=t.seen_utc)
            for t in found])

    @instrumented
    async def Fork(self, request: clock_pb2.ForkRequest,
                   context: grpc.aio.ServicerContext) -> clock_pb2.ForkReply:
        which = request.WhichOneof("at") or "now"
        value = "" if which == "now" else str(getattr(request, which))
        try:
            change = fork.as_change(list(request.items_json), dict(request.delays_s),
                                    request.plan_json, request.reseed)
            spec = await self.make_fork(which, value, request.mission, change)
        except fork.ForkRefused as exc:
            await context.abort(_FORK_CODES[exc.code], exc.reason)
            raise
        branch, commit = spec["branch"], spec["commit"]
        return clock_pb2.ForkReply(
            mission=spec["child"], parent=spec["parent"], branch_step=max(branch["step"], 0),
            branch_mission_time_s=branch["t_s"], branch_utc=branch["utc"],
            commit_step=commit["step"], commit_mission_time_s=commit["t_s"],
            seed=spec["seed"], spec_json=orjson.dumps(spec).decode())

    # --- RunUntil's parts --------------------------------------------------------
    async def _run_until_event(self, event: str, context: grpc.aio.ServicerContext) -> None:
        plan, seen = self.ground.plan, self.ground.seen
        if not targets.is_target(plan, event):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                targets.unknown_target_reason(plan, event))
        if event in seen:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                targets.already_seen_reason(event, seen[event], self.rt.t_s))
        self.clock.run_until(None, event)

    async def _run_until_time(self, request: clock_pb2.RunUntilRequest,
                              context: grpc.aio.ServicerContext) -> float:
        """The target's mission time, refused (in the operator's terms) unless after now."""
        if request.WhichOneof("target") == "utc":
            try:
                t = mission_s_from_utc(request.utc)
            except ValueError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"bad utc {request.utc!r}: {exc}")
                raise
            given = request.utc
        else:
            t = request.mission_time_s
            given = (f"mission time {t} s ({iso_utc(t)})" if math.isfinite(t)
                     else f"mission time {t} s")
        if not math.isfinite(t) or t <= self.rt.t_s:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                targets.past_instant_reason(given, self.rt.t_s))
        self.clock.run_until(t, None)
        return t

    def _event_reached(self, event: str) -> Callable[[], bool]:
        return lambda: self.ground.has_seen(event)

    def _event_still_set(self, event: str) -> Callable[[], bool]:
        return lambda: self.clock.status.run_until_event == event

    def _time_reached(self, t_s: float) -> Callable[[], bool]:
        return lambda: self.rt.t_s >= t_s - 1e-9  # the clock stops on t_s exactly

    def _time_still_set(self, t_s: float) -> Callable[[], bool]:
        return lambda: self.clock.status.run_until_t_s == t_s

    async def _wait_for(self, reached: Callable[[], bool], still_set: Callable[[], bool],
                        what: str, context: grpc.aio.ServicerContext) -> None:
        """Until `reached`; or say why it never will be. The caller's deadline bounds it."""
        await self.clock.wait_until(lambda: reached() or not still_set())
        if reached():
            return
        now = iso_utc(self.rt.t_s)
        if self.ground.finished:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"the mission finished at {now} before {what}")
        if self.rt.stopping.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"ground is stopping (at {now}) before {what}")
        st = self.clock.status
        instead = st.run_until_event or (iso_utc(st.run_until_t_s)
                                         if st.run_until_t_s >= 0 else "nothing")
        await context.abort(grpc.StatusCode.ABORTED,
                            f"another RunUntil replaced {what} by {instead} (at {now})")

    async def _not_finished(self, context: grpc.aio.ServicerContext) -> None:
        if self.clock.plan.finished:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the mission has finished")
