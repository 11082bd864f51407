"""Every clock control call judged by what it does to mission time, not by its reply.

A real nats-server, the in-process twin (each service its own NATS connection
and grpc.aio server), and a recorder on the bus: what counts is the ticks ground
publishes and the mission time they carry. Wall intervals bound hangs and pace
tolerances; mission time comes only from the twin.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import nats
import pytest

from services.ground.plan import FlightPlan
from services.kernel.config import VEHICLES
from services.kernel.envelope import decode
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc, control_pb2, control_pb2_grpc
from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import chatty, nominal_until, plan

HOLD_WALL_S = 1.0  # how long a paused clock is watched for any tick
#: The plan's end: after LOI (2024-05-08 ~02:27) and ICUBE-Q, before the first
#: orbit adjustment (2024-05-10).
IN_LUNAR_ORBIT_UTC = "2024-05-09T00:00:00Z"
WAIT_S = 60.0  # a bound on a hang
# Chatty cores take 30, 60 or 90 s steps: a paced clock is at most a step
# behind or ahead of warp x wall time, plus scheduling noise on a shared
# 2-core machine (the window's start and end are each off by up to ~0.2 s).
MAX_STEP_S = 90.0
PACE_WALL_NOISE_S = 0.4
LONG_PLAN_S = 100 * 86_400.0  # longer than any test here flies


@dataclass
class Ticks:
    """Every tick ground publishes: (step, t_from, t_to)."""

    seen: list[tuple[int, float, float]] = field(default_factory=list)

    def since(self, step: int) -> list[tuple[int, float, float]]:
        return [t for t in self.seen if t[0] > step]


@pytest.fixture
async def ticks(nats_url: str, mission_id: str) -> AsyncIterator[Ticks]:
    nc = await nats.connect(nats_url)
    record = Ticks()

    async def cb(msg: Any) -> None:
        env = decode(msg.data, mission=mission_id)
        record.seen.append((int(env.body["step"]), float(env.body["t_from"]),
                            float(env.body["t_to"])))

    await nc.subscribe(f"twin.{mission_id}.clock.tick", cb=cb)
    await nc.flush()
    yield record
    await nc.drain()


@pytest.fixture
async def chatty_twin(nats_url: str, mission_id: str) -> AsyncIterator[tuple[LocalTwin, Any]]:
    cores = {v: chatty(v) for v in VEHICLES}
    long_plan = FlightPlan(name="long", items=(), end_at_s=LONG_PLAN_S)
    async with LocalTwin(nats_url, mission_id, long_plan, cores=cores, start_paused=True) as twin:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{twin.ground.grpc_port}")
        clock = clock_pb2_grpc.MissionClockStub(ch)
        await _until(clock, lambda s: s.mode == "paused")
        yield twin, clock
        await ch.close()


async def _until(clock: Any, ok: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        state = await clock.GetTime(clock_pb2.GetTimeRequest())
        if ok(state):
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"clock never reached the expected state; last {state}")


async def _settled(twin: LocalTwin, clock: Any) -> Any:
    """The clock's state once no step is in flight (a Pause lets one finish)."""
    loop_clock = twin.ground.clock
    await asyncio.wait_for(loop_clock.wait_until(lambda: loop_clock.status.mode == "paused"),
                           WAIT_S)
    return await clock.GetTime(clock_pb2.GetTimeRequest())


async def test_pause_holds_mission_time_still(chatty_twin: tuple[LocalTwin, Any],
                                              ticks: Ticks) -> None:
    twin, clock = chatty_twin
    await clock.Resume(clock_pb2.ResumeRequest())
    await _until(clock, lambda s: s.step >= 20)
    await clock.Pause(clock_pb2.PauseRequest())
    held = await _settled(twin, clock)
    await asyncio.sleep(HOLD_WALL_S)
    after = await clock.GetTime(clock_pb2.GetTimeRequest())
    assert (after.step, after.mission_time_s) == (held.step, held.mission_time_s)
    assert ticks.since(held.step) == [], "a paused clock published a tick"


async def test_resume_after_pause_moves_mission_time_again(
        chatty_twin: tuple[LocalTwin, Any], ticks: Ticks) -> None:
    _, clock = chatty_twin
    held = await clock.GetTime(clock_pb2.GetTimeRequest())
    await clock.Resume(clock_pb2.ResumeRequest())
    moved = await _until(clock, lambda s: s.step >= held.step + 10)
    assert moved.mission_time_s > held.mission_time_s
    # Each tick starts where the last ended: no mission time skipped or repeated.
    flown = sorted(ticks.since(held.step))
    assert all(a[2] == b[1] for a, b in itertools.pairwise(flown))


@pytest.mark.parametrize("warp", [600.0, 3_000.0])
async def test_set_warp_moves_mission_time_at_the_asked_pace(
        chatty_twin: tuple[LocalTwin, Any], warp: float) -> None:
    _, clock = chatty_twin
    await clock.SetWarp(clock_pb2.SetWarpRequest(warp=warp))
    await clock.Resume(clock_pb2.ResumeRequest())
    await _until(clock, lambda s: s.step >= 2)  # past the first, possibly late, step
    start = await clock.GetTime(clock_pb2.GetTimeRequest())
    wall0 = time.monotonic()
    await asyncio.sleep(2.0)
    end = await clock.GetTime(clock_pb2.GetTimeRequest())
    wall_s = time.monotonic() - wall0
    flown_s = end.mission_time_s - start.mission_time_s
    slack_s = MAX_STEP_S + warp * PACE_WALL_NOISE_S
    assert warp * wall_s - slack_s <= flown_s <= warp * wall_s + slack_s, (
        f"warp {warp:g}: {flown_s:.0f} mission s in {wall_s:.2f} wall s")


async def test_step_n_advances_exactly_n_steps(chatty_twin: tuple[LocalTwin, Any],
                                               ticks: Ticks) -> None:
    twin, clock = chatty_twin
    before = await _settled(twin, clock)
    state = await clock.Step(clock_pb2.StepRequest(steps=7))
    assert (state.step, state.mode) == (before.step + 7, "paused")
    await asyncio.sleep(HOLD_WALL_S / 2)  # a step too many would have started by now
    assert [t[0] for t in ticks.since(before.step)] == list(range(before.step + 1,
                                                                  before.step + 8))
    again = await clock.GetTime(clock_pb2.GetTimeRequest())
    assert again.step == before.step + 7


async def test_run_until_a_mission_time_pauses_exactly_there(
        chatty_twin: tuple[LocalTwin, Any], ticks: Ticks) -> None:
    _, clock = chatty_twin
    now = await clock.GetTime(clock_pb2.GetTimeRequest())
    target = now.mission_time_s + 1_234.5  # not on the 30/60/90 s grid: the clock stops on it
    state = await clock.RunUntil(clock_pb2.RunUntilRequest(mission_time_s=target, wait=True),
                                 timeout=WAIT_S)
    assert (state.mission_time_s, state.mode) == (target, "paused")
    assert max(t[2] for t in ticks.seen) == target, "a step went past the target"


# --- RunUntil on events of the real mission ------------------------------------


@pytest.fixture
async def real_twin(nats_url: str, mission_id: str) -> AsyncIterator[tuple[Any, list[Any]]]:
    nc = await nats.connect(nats_url)
    events: list[Any] = []

    async def cb(msg: Any) -> None:
        events.append(decode(msg.data, mission=mission_id))

    await nc.subscribe(f"twin.{mission_id}.evt.*", cb=cb)
    await nc.flush()
    to_orbit = nominal_until(IN_LUNAR_ORBIT_UTC, "to-lunar-orbit")
    async with LocalTwin(nats_url, mission_id, to_orbit, start_paused=True) as twin:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{twin.ground.grpc_port}")
        clock = clock_pb2_grpc.MissionClockStub(ch)
        await _until(clock, lambda s: s.mode == "paused")
        yield clock, events
        await ch.close()
    await nc.drain()


@pytest.mark.parametrize(("target", "event", "source"), [
    ("lunar_orbit_insertion", "lunar_orbit_insertion", "orbiter"),  # a vehicle's event
    ("loi", "plan_item_issued", "ground"),  # a flight-plan item id
    ("icubeq_release", "icubeq_release", "orbiter"),
])
async def test_run_until_an_event_pauses_at_the_step_that_published_it(
        real_twin: tuple[Any, list[Any]], target: str, event: str, source: str) -> None:
    clock, events = real_twin
    state = await clock.RunUntil(clock_pb2.RunUntilRequest(event=target, wait=True),
                                 timeout=WAIT_S)
    assert state.mode == "paused"
    await asyncio.sleep(0.2)  # the event reaches this subscriber just after the ack
    published = [e for e in events if e.src == source and e.body.get("name") == event
                 and (event != "plan_item_issued" or e.body.get("id") == target)]
    assert published, f"no {event} from {source}"
    assert state.step == published[0].step, "paused a step after (or before) the event"
    assert max(e.step for e in events) <= state.step


# --- documented status codes ---------------------------------------------------------


async def test_every_control_call_after_the_end_is_failed_precondition(
        nats_url: str, mission_id: str) -> None:
    cores = {v: chatty(v) for v in VEHICLES}
    async with LocalTwin(nats_url, mission_id, plan(hours=1.0), cores=cores) as twin:
        await twin.wait_finished(WAIT_S)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{twin.ground.grpc_port}") as ch:
            clock = clock_pb2_grpc.MissionClockStub(ch)
            assert (await clock.GetTime(clock_pb2.GetTimeRequest())).mode == "finished"
            for call, request in (
                    (clock.Pause, clock_pb2.PauseRequest()),
                    (clock.Resume, clock_pb2.ResumeRequest()),
                    (clock.Step, clock_pb2.StepRequest(steps=1)),
                    (clock.RunUntil, clock_pb2.RunUntilRequest(mission_time_s=1e9))):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(request)
                assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, call
                assert "finished" in (caught.value.details() or "")


async def test_run_until_an_unknown_event_is_invalid_argument_naming_the_valid_ones(
        real_twin: tuple[Any, list[Any]]) -> None:
    clock, _ = real_twin
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clock.RunUntil(clock_pb2.RunUntilRequest(event="not_an_event"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert "not_an_event" in details and "lunar_touchdown" in details and "loi" in details


async def test_a_command_timed_in_the_past_and_bad_watch_arguments_are_refused(
        chatty_twin: tuple[LocalTwin, Any]) -> None:
    twin, clock = chatty_twin
    await clock.Step(clock_pb2.StepRequest(steps=5))
    now = await clock.GetTime(clock_pb2.GetTimeRequest())
    port = twin.vehicles["orbiter"].grpc_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        orbiter = control_pb2_grpc.VehicleControlStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orbiter.SendCommand(control_pb2.SendCommandRequest(
                command_id="late", execute_at_mission_time_s=now.mission_time_s - 10.0,
                set_mode=control_pb2.SetMode(mode="checkout")))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "in the past" in (caught.value.details() or "")
        for bad in (-1.0, float("nan"), float("inf")):
            stream = orbiter.WatchTelemetry(control_pb2.WatchTelemetryRequest(
                min_interval_s=bad))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stream:
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert "min_interval_s" in (caught.value.details() or "")
