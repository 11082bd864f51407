"""The MissionClock servicer, call by call: each reply's fields and each refusal's
status code and reason (README, gRPC table; proto/twin/v1/clock.proto).

Ground and one coasting vehicle in-process over a real nats-server, each with
its own grpc.aio server; a twin starts in tens of milliseconds, so each test
flies its own. The vehicle accepts 60 s steps, so the lock-step rule (the next
step is the smallest any service accepts, cut at plan instants and run-until
targets) makes every step after the first exactly 60 mission seconds. Expected
instants are worked out here from the launch instant, not by the twin's code,
in the form the proto shows ("2024-05-08T02:12:00.000Z"). A refusal's reason
is pinned word for word: it is what the operator reads (``twin clock`` prints
it), and the status codes alone cannot tell one refusal from another.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest

from services.ground.plan import FlightPlan, parse_plan
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc
from services.kernel.vehicle import Outbox, VehicleCore
from services.local.inproc import LocalTwin
from tests.authorities import LAUNCH_UTC

CALL_S = 10.0  # deadline of every call: a bound on a hang, never reached when all is well
STEP_S = 60.0  # the step the coasting vehicle accepts
UNSEEN_EVENT = "lunar_touchdown"  # a mission event no service here ever publishes
ONE_HOUR = {"at": "2024-05-03T10:27:29Z"}  # a plan's end: launch + 3,600 s
ONE_HOUR_S = 3_600.0
PAST_END_S = 2 * ONE_HOUR_S
AFTER_LANDING = {"after": "earth_landing"}  # no fixed end: unknown until the landing


def _utc(mission_s: float) -> str:
    """Mission seconds as the twin writes UTC: launch + t, to the millisecond
    (no leap second falls in the mission)."""
    launch = datetime.fromisoformat(LAUNCH_UTC.replace("Z", "+00:00"))
    return (launch + timedelta(seconds=mission_s)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _plan(end: dict[str, Any], items: list[dict[str, Any]] | None = None) -> FlightPlan:
    return parse_plan({"name": "clock-control", "end": end, "items": items or []})


class Coaster(VehicleCore):
    """A vehicle that only coasts, accepting STEP_S steps."""

    name = "relay"
    downlink_enabled = False

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return STEP_S


@dataclass
class Rig:
    twin: LocalTwin
    clock: clock_pb2_grpc.MissionClockStub

    async def time(self) -> clock_pb2.ClockState:
        state: clock_pb2.ClockState = await self.clock.GetTime(clock_pb2.GetTimeRequest(),
                                                               timeout=CALL_S)
        return state

    async def refused(self, method: str, request: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(self.clock, method)(request, timeout=CALL_S)
        return info.value.code(), info.value.details() or ""

    async def settled(self) -> clock_pb2.ClockState:
        """The state once the loop itself is paused (a step in flight has completed)."""
        loop = self.twin.ground.clock
        await asyncio.wait_for(loop.wait_until(lambda: loop.status.mode == "paused"), CALL_S)
        return await self.time()

    async def run_until(self, **target: Any) -> clock_pb2.ClockState:
        state: clock_pb2.ClockState = await self.clock.RunUntil(
            clock_pb2.RunUntilRequest(**target), timeout=CALL_S)
        return state


@contextlib.asynccontextmanager
async def _rig(nats_url: str, mission: str, plan: FlightPlan) -> AsyncIterator[Rig]:
    """A twin started paused, once its roll call is done."""
    async with (LocalTwin(nats_url, mission, plan, vehicles=("relay",), cores={"relay": Coaster},
                          start_paused=True) as twin,
                grpc.aio.insecure_channel(f"127.0.0.1:{twin.ground.grpc_port}") as ch):
        rig = Rig(twin, clock_pb2_grpc.MissionClockStub(ch))
        await rig.settled()
        yield rig


@pytest.fixture
async def rig(nats_url: str, mission_id: str) -> AsyncIterator[Rig]:
    """A paused twin whose plan has no fixed end (nothing ends it here)."""
    async with _rig(nats_url, mission_id, _plan(AFTER_LANDING)) as r:
        yield r


@pytest.fixture
async def hour_rig(nats_url: str, mission_id: str) -> AsyncIterator[Rig]:
    """A paused twin whose plan ends an hour after launch."""
    async with _rig(nats_url, mission_id, _plan(ONE_HOUR)) as r:
        yield r


# --- GetTime: the state's fields -----------------------------------------------------


async def test_during_the_roll_call_the_state_names_the_missing_service(
        nats_url: str, mission_id: str) -> None:
    twin = LocalTwin(nats_url, mission_id, _plan(ONE_HOUR), vehicles=("relay",),
                     cores={"relay": Coaster})
    await twin.ground.start()  # the relay never comes: the roll call goes on
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{twin.ground.grpc_port}") as ch:
            state = await clock_pb2_grpc.MissionClockStub(ch).GetTime(
                clock_pb2.GetTimeRequest(), timeout=CALL_S)
    finally:
        await twin.ground.stop()
    assert (state.mode, list(state.waiting_for)) == ("starting", ["relay"])
    assert (state.step, state.mission_time_s, state.utc) == (0, 0.0, _utc(0.0))
    assert state.end_mission_time_s == ONE_HOUR_S


async def test_a_plan_without_a_fixed_end_answers_a_negative_end(rig: Rig) -> None:
    state = await rig.time()
    assert state.end_mission_time_s < 0  # as for run_until_mission_time_s: none
    assert (state.mode, state.step, list(state.waiting_for)) == ("paused", 0, [])


async def test_the_phase_follows_the_flight_plan(nats_url: str, mission_id: str) -> None:
    """A plan item that opens a phase: the reply of the RunUntil that reaches it
    carries the new phase; the item, once issued, is refused as a target with
    when it happened and the time now."""
    item = {"id": "tli_coast", "at": "2024-05-03T09:37:29Z", "target": "ground",
            "command": {"op": "set_mode", "mode": "watch"}, "phase": "earth_moon_transfer"}
    async with _rig(nats_url, mission_id, _plan(ONE_HOUR, [item])) as rig:
        state = await rig.run_until(event="tli_coast", wait=True)
        assert (state.phase, state.mode, state.utc) == (
            "earth_moon_transfer", "paused", _utc(600.0))
        code, why = await rig.refused("RunUntil", clock_pb2.RunUntilRequest(event="tli_coast"))
    assert (code, why) == (grpc.StatusCode.INVALID_ARGUMENT,
                           f"'tli_coast' already happened at {_utc(600.0)}; "
                           f"the mission's current time is {_utc(600.0)}")


# --- SetWarp -----------------------------------------------------------------------


async def test_set_warp_answers_the_pace_it_set(rig: Rig) -> None:
    assert (await rig.time()).as_fast_as_possible  # the default: TWIN_WARP=max
    for warp in (1.0, 0.5, 3_600.0):  # 1.0: real time is not "as fast as possible"
        state = await rig.clock.SetWarp(clock_pb2.SetWarpRequest(warp=warp), timeout=CALL_S)
        assert (state.warp, state.as_fast_as_possible, state.mode) == (warp, False, "paused")
    state = await rig.clock.SetWarp(clock_pb2.SetWarpRequest(as_fast_as_possible=True),
                                    timeout=CALL_S)
    assert state.as_fast_as_possible
    assert (await rig.time()).as_fast_as_possible


@pytest.mark.parametrize("warp", [0.0, -1.0, math.nan, math.inf])
async def test_set_warp_refuses_a_factor_not_finite_and_above_zero(rig: Rig,
                                                                   warp: float) -> None:
    await rig.clock.SetWarp(clock_pb2.SetWarpRequest(warp=2.0), timeout=CALL_S)
    assert await rig.refused("SetWarp", clock_pb2.SetWarpRequest(warp=warp)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "warp must be a finite factor > 0, or set as_fast_as_possible")
    state = await rig.time()
    assert (state.warp, state.as_fast_as_possible) == (2.0, False)  # left as it was


# --- Step --------------------------------------------------------------------------


async def test_step_advances_exactly_that_many_steps_of_mission_time(rig: Rig) -> None:
    start = await rig.clock.Step(clock_pb2.StepRequest(steps=1), timeout=CALL_S)
    state = await rig.clock.Step(clock_pb2.StepRequest(steps=4), timeout=CALL_S)
    assert (state.step, state.mode) == (start.step + 4, "paused")
    assert state.mission_time_s == start.mission_time_s + 4 * STEP_S
    assert state.utc == _utc(state.mission_time_s)
    assert (await rig.settled()).step == start.step + 4  # no step too many


async def test_step_refuses_fewer_than_one_step(rig: Rig) -> None:
    assert await rig.refused("Step", clock_pb2.StepRequest(steps=0)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "steps must be >= 1")
    assert (await rig.time()).step == 0


async def test_step_refuses_a_running_clock(rig: Rig) -> None:
    await rig.clock.SetWarp(clock_pb2.SetWarpRequest(warp=0.01), timeout=CALL_S)
    await rig.clock.Resume(clock_pb2.ResumeRequest(), timeout=CALL_S)
    assert await rig.refused("Step", clock_pb2.StepRequest(steps=1)) == (
        grpc.StatusCode.FAILED_PRECONDITION, "the clock is running: Pause it before stepping")
    assert (await rig.time()).mode == "running"


async def test_a_pause_ends_a_step_call_at_the_step_it_reached(rig: Rig) -> None:
    start = await rig.clock.Step(clock_pb2.StepRequest(steps=1), timeout=CALL_S)
    await rig.clock.SetWarp(clock_pb2.SetWarpRequest(warp=STEP_S / 0.1), timeout=CALL_S)
    stepping = asyncio.ensure_future(
        rig.clock.Step(clock_pb2.StepRequest(steps=1_000), timeout=CALL_S))  # 100 wall s
    await asyncio.sleep(0.3)
    await rig.clock.Pause(clock_pb2.PauseRequest(), timeout=CALL_S)
    state = await stepping
    assert state.mode == "paused"
    assert start.step <= state.step < start.step + 1_000
    assert state.mission_time_s == start.mission_time_s + (state.step - start.step) * STEP_S
    assert (await rig.settled()).step == state.step


# --- RunUntil: refusals --------------------------------------------------------------


async def test_run_until_refuses_a_request_without_a_target(rig: Rig) -> None:
    assert await rig.refused("RunUntil", clock_pb2.RunUntilRequest(wait=True)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "give a target: mission_time_s, utc or event")
    assert (await rig.time()).mode == "paused"


async def test_run_until_refuses_an_unreadable_utc(rig: Rig) -> None:
    code, why = await rig.refused("RunUntil", clock_pb2.RunUntilRequest(utc="next tuesday"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert why.startswith("bad utc 'next tuesday': "), why
    assert len(why) > len("bad utc 'next tuesday': ")  # and says what is wrong with it


async def test_run_until_refuses_now_and_mission_times_that_are_no_instant(rig: Rig) -> None:
    now = (await rig.clock.Step(clock_pb2.StepRequest(steps=2), timeout=CALL_S)).mission_time_s
    not_after = f"is not after the mission's current time {_utc(now)}"
    for t, given in ((now, f"mission time {now} s ({_utc(now)})"),
                     (math.inf, "mission time inf s"), (math.nan, "mission time nan s")):
        assert await rig.refused("RunUntil", clock_pb2.RunUntilRequest(mission_time_s=t)) == (
            grpc.StatusCode.INVALID_ARGUMENT, f"{given} {not_after}"), t
    state = await rig.time()
    assert (state.mode, state.mission_time_s, state.run_until_mission_time_s) == (
        "paused", now, -1.0)


async def _target_set(rig: Rig, request: clock_pb2.RunUntilRequest) -> None:
    """Until the clock holds `request`'s target: a RunUntil sets it and starts
    waiting in one go, so a waiting call is then in."""
    st = rig.twin.ground.clock.status

    def holds() -> bool:
        return (st.run_until_event == request.event if request.event
                else st.run_until_t_s == request.mission_time_s)

    await asyncio.wait_for(rig.twin.ground.clock.wait_until(holds), CALL_S)


# --- RunUntil: reaching the target, and the ends of a waiting call --------------------


async def test_run_until_half_a_second_ahead_waits_until_it_is_reached(rig: Rig) -> None:
    now = (await rig.clock.Step(clock_pb2.StepRequest(steps=1), timeout=CALL_S)).mission_time_s
    state = await rig.run_until(mission_time_s=now + 0.5, wait=True)
    assert (state.mission_time_s, state.mode) == (now + 0.5, "paused")
    assert state.run_until_mission_time_s < 0  # reached: no target left


async def test_a_waiting_run_until_replaced_by_another_is_aborted_naming_both(
        rig: Rig) -> None:
    """At warp 0.01 the first step (from launch) is not taken during the test:
    mission time stays at launch, and each reason says so."""
    await rig.clock.SetWarp(clock_pb2.SetWarpRequest(warp=0.01), timeout=CALL_S)
    cases = ((clock_pb2.RunUntilRequest(event=UNSEEN_EVENT, wait=True),
              clock_pb2.RunUntilRequest(mission_time_s=0.5), UNSEEN_EVENT, _utc(0.5)),
             (clock_pb2.RunUntilRequest(mission_time_s=0.75, wait=True),
              clock_pb2.RunUntilRequest(event=UNSEEN_EVENT), _utc(0.75), UNSEEN_EVENT))
    for first, second, replaced, by in cases:
        waiting = asyncio.ensure_future(rig.clock.RunUntil(first, timeout=CALL_S))
        await _target_set(rig, first)  # and so the waiting call is in
        await rig.clock.RunUntil(second, timeout=CALL_S)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await waiting
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.ABORTED,
            f"another RunUntil replaced {replaced} by {by} (at {_utc(0.0)})")
    state = await rig.time()
    assert (state.mission_time_s, state.mode, state.run_until_event) == (
        0.0, "running", UNSEEN_EVENT)


async def test_a_waiting_run_until_past_the_end_fails_and_then_every_control_call(
        hour_rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await hour_rig.run_until(mission_time_s=PAST_END_S, wait=True)
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"the mission finished at {_utc(ONE_HOUR_S)} before {_utc(PAST_END_S)}")
    state = await hour_rig.time()
    assert (state.mode, state.mission_time_s, state.end_mission_time_s) == (
        "finished", ONE_HOUR_S, ONE_HOUR_S)
    for method, request in (("Pause", clock_pb2.PauseRequest()),
                            ("Resume", clock_pb2.ResumeRequest()),
                            ("Step", clock_pb2.StepRequest(steps=1)),
                            ("RunUntil", clock_pb2.RunUntilRequest(event=UNSEEN_EVENT))):
        assert await hour_rig.refused(method, request) == (
            grpc.StatusCode.FAILED_PRECONDITION, "the mission has finished"), method


async def test_a_waiting_run_until_ends_unavailable_when_ground_is_stopping(
        rig: Rig) -> None:
    """Stopping is asked for as SIGTERM asks for it (the runtime's stop event);
    the clock, running as fast as possible, stops after the step in flight."""
    waiting = asyncio.ensure_future(rig.run_until(event=UNSEEN_EVENT, wait=True))
    loop = rig.twin.ground.clock
    await asyncio.wait_for(loop.wait_until(lambda: rig.twin.ground.step >= 3), CALL_S)
    rig.twin.ground.stopping.set()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await waiting
    state = await rig.time()  # where the clock stopped
    assert state.step >= 3
    assert (info.value.code(), info.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        f"ground is stopping (at {state.utc}) before {UNSEEN_EVENT}")


async def test_stopping_ground_answers_a_waiting_run_until_with_why(rig: Rig) -> None:
    """Ground's own stop (SIGTERM's path) ends the wait with its reason, not
    with the gRPC server's "Cancelling all calls" at the end of its grace."""
    waiting = asyncio.ensure_future(rig.run_until(event=UNSEEN_EVENT, wait=True))
    loop = rig.twin.ground.clock
    await asyncio.wait_for(loop.wait_until(lambda: rig.twin.ground.step >= 3), CALL_S)
    stopping = asyncio.ensure_future(rig.twin.ground.stop())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await waiting
    await stopping
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (info.value.details() or "").startswith("ground is stopping (at ")
    assert (info.value.details() or "").endswith(f"before {UNSEEN_EVENT}")
