"""VehicleControl answers, field by field (services/kernel/control.py).

A real nats-server and the in-process twin with one vehicle, the lander, flown
by a probe core whose summary is a set of distinct literal numbers (so a
field copied into the wrong place shows) and which records every command it
runs. The clock starts paused and is stepped; mission time after n steps is
known: the first step is 1 s, then the probe's 60 s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from services.kernel.twin_pb import common_pb2, control_pb2, control_pb2_grpc
from services.kernel.twin_pb.common_pb2 import Vector3
from services.kernel.vehicle import Outbox, Summary, VehicleCore
from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import plan

PROBE_STEP_S = 60.0
#: Mission time after two steps: 1 s, then 60 s.
T2_S = 61.0
T2_UTC = "2024-05-03T09:28:30.000Z"  # launch 09:27:29 UTC + 61 s
WAIT_S = 5.0  # wall seconds: a bound on a hang, never a speed assertion
#: A refusal comes back in milliseconds; a stream wrongly accepted waits this
#: long for a frame the paused clock never sends (wall seconds, a hang bound).
REFUSAL_WAIT_S = 2.0
NO_COMMAND = ("no command given: set one of impulsive_burn, finite_burn, set_mode, deploy, "
              "start_operation")


class ProbeLander(VehicleCore):
    name = "lander"
    fault_kinds = frozenset({"thrust_loss"})
    downlink_enabled = False  # only the clock and gRPC matter here

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.ran: list[tuple[dict[str, Any], float]] = []

    def operations(self) -> frozenset[str]:
        return frozenset({"set_mode", "burn", "finite_burn", "deploy", "operation"})

    def execute(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        self.ran.append((dict(command), t))
        super().execute(command, t, out)

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return PROBE_STEP_S

    def summary(self) -> Summary:
        return Summary(phase=self.phase, frame="MCI", central_body="moon",
                       r_m=(self.t_s, 2.0, 3.0), v_m_s=(4.0, 5.0, 6.0), altitude_m=7.0,
                       speed_m_s=8.0, mass_kg=9.0, propellant_kg=10.0, sample_mass_g=11.0,
                       values={"battery_soc_ratio": 0.75}, info={"note": "probe"})


def _state_at(t_s: float) -> common_pb2.StateSummary:
    """The probe's summary at mission time ``t_s`` as the API must report it."""
    return common_pb2.StateSummary(
        vehicle="lander", frame="MCI", central_body="moon",
        position_m=Vector3(x=t_s, y=2.0, z=3.0), velocity_m_s=Vector3(x=4.0, y=5.0, z=6.0),
        altitude_m=7.0, speed_m_s=8.0, mass_kg=9.0, propellant_kg=10.0, sample_mass_g=11.0,
        values={"battery_soc_ratio": 0.75})


@dataclass
class Rig:
    twin: LocalTwin
    stub: control_pb2_grpc.VehicleControlStub
    core: ProbeLander
    mission: str

    async def steps(self, n: int) -> None:
        """``n`` clock steps from paused; back when the clock is paused again."""
        clock, target = self.twin.ground.clock, self.twin.ground.step + n
        await clock.wait_until(lambda: clock.status.mode == "paused")
        clock.request_steps(n)
        await clock.wait_until(lambda: self.twin.ground.step >= target and clock.paused)

    async def requests(self, method: str, code: str, expected: float = 1.0) -> float | None:
        """The server's count of ``method`` calls ending in ``code``, once it reads
        ``expected`` or after WAIT_S. The status reaches the client before
        the server's handler has counted it (grpc resumes the handler from its
        completion queue): on a loaded machine the read can come first."""
        registry = self.twin.vehicles["lander"].registry
        labels = {"mission": self.mission, "service": "lander", "method": method, "code": code}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while (value := registry.get_sample_value("twin_grpc_requests_total", labels)) != expected:
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.01)
        return value

    async def refused(self, method: str, request: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(self.stub, method)(request)
        return info.value.code(), info.value.details() or ""


@pytest.fixture
async def rig(nats_url: str, mission_id: str) -> AsyncIterator[Rig]:
    async with LocalTwin(nats_url, mission_id, plan(hours=2.0), cores={"lander": ProbeLander},
                         vehicles=("lander",), start_paused=True) as twin:
        core = twin.vehicles["lander"].core
        assert isinstance(core, ProbeLander)
        async with grpc.aio.insecure_channel(
                f"127.0.0.1:{twin.vehicles['lander'].grpc_port}") as ch:
            r = Rig(twin, control_pb2_grpc.VehicleControlStub(ch), core, mission_id)
            await r.steps(2)
            yield r


# --- GetStatus ------------------------------------------------------------------
async def test_status_reports_the_summary_of_the_step_it_answers_at(rig: Rig) -> None:
    status = await rig.stub.GetStatus(control_pb2.GetStatusRequest())
    assert status == control_pb2.GetStatusResponse(
        service="lander", mission_id=rig.mission, phase="prelaunch", mission_time_s=T2_S,
        utc=T2_UTC, step=2, state=_state_at(T2_S), faults=[], info={"note": "probe"})
    assert await rig.requests("GetStatus", "OK") == 1.0


async def test_status_lists_active_faults_sorted_by_kind(rig: Rig) -> None:
    await rig.stub.InjectFault(control_pb2.InjectFaultRequest(
        kind="thrust_loss", target="main_engine", magnitude=0.25, duration_s=600.0))
    await rig.stub.InjectFault(control_pb2.InjectFaultRequest(kind="drop_telemetry"))
    status = await rig.stub.GetStatus(control_pb2.GetStatusRequest())
    assert list(status.faults) == [
        common_pb2.Fault(fault_id="lander-drop_telemetry-2", kind="drop_telemetry",
                         since_mission_time_s=T2_S),
        common_pb2.Fault(fault_id="lander-thrust_loss-1", kind="thrust_loss",
                         target="main_engine", magnitude=0.25, since_mission_time_s=T2_S,
                         duration_s=600.0)]


# --- SendCommand ----------------------------------------------------------------
async def test_a_command_is_answered_queued_and_runs_at_the_next_step(rig: Rig) -> None:
    reply = await rig.stub.SendCommand(control_pb2.SendCommandRequest(
        command_id="c-7", set_mode=control_pb2.SetMode(mode="checkout")))
    assert reply == control_pb2.SendCommandResponse(
        command_id="c-7", accepted=True, detail="queued for the next step",
        execute_at_mission_time_s=T2_S)
    await rig.steps(1)
    assert rig.core.ran == [({"op": "set_mode", "mode": "checkout", "execute_at_s": 0.0,
                              "command_id": "c-7"}, T2_S)]
    assert rig.core.phase == "checkout"


async def test_each_kind_of_command_reaches_the_core_as_its_op(rig: Rig) -> None:
    requests = [
        control_pb2.SendCommandRequest(command_id="b", impulsive_burn=control_pb2.ImpulsiveBurn(
            delta_v_m_s=Vector3(x=1.5, y=-2.0, z=0.25), frame="RTN")),
        control_pb2.SendCommandRequest(command_id="f", finite_burn=control_pb2.FiniteBurn(
            thrust_n=3000.0, duration_s=12.5, direction=Vector3(y=1.0), frame="VNB")),
        control_pb2.SendCommandRequest(command_id="d", deploy=control_pb2.Deploy(
            item="solar_array")),
        control_pb2.SendCommandRequest(command_id="o", start_operation=control_pb2.StartOperation(
            operation="drill", parameters={"depth_m": 2.0})),
    ]
    for request in requests:
        await rig.stub.SendCommand(request)
    await rig.steps(1)
    tag = {"execute_at_s": 0.0}
    # field names as in the proto (snake case), as the cores read them
    assert [c for c, _ in rig.core.ran] == [
        {"op": "burn", "delta_v_m_s": {"x": 1.5, "y": -2.0, "z": 0.25}, "frame": "RTN",
         **tag, "command_id": "b"},
        {"op": "finite_burn", "thrust_n": 3000.0, "duration_s": 12.5,
         "direction": {"y": 1.0}, "frame": "VNB", **tag, "command_id": "f"},
        {"op": "deploy", "item": "solar_array", **tag, "command_id": "d"},
        {"op": "operation", "operation": "drill", "parameters": {"depth_m": 2.0}, **tag,
         "command_id": "o"},
    ]


async def test_a_time_tagged_command_runs_at_its_tag(rig: Rig) -> None:
    reply = await rig.stub.SendCommand(control_pb2.SendCommandRequest(
        command_id="later", set_mode=control_pb2.SetMode(mode="drill"),
        execute_at_mission_time_s=200.0))
    assert (reply.accepted, reply.execute_at_mission_time_s) == (True, 200.0)
    await rig.steps(3)  # 61 -> 121 -> 181 -> 200: the step is cut at the tag
    assert rig.core.ran == [({"op": "set_mode", "mode": "drill", "command_id": "later"}, 200.0)]


async def test_a_tag_of_exactly_now_is_not_in_the_past(rig: Rig) -> None:
    reply = await rig.stub.SendCommand(control_pb2.SendCommandRequest(
        set_mode=control_pb2.SetMode(mode="now"), execute_at_mission_time_s=T2_S))
    assert (reply.accepted, reply.execute_at_mission_time_s) == (True, T2_S)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (control_pb2.SendCommandRequest(command_id="x"), NO_COMMAND),
        (control_pb2.SendCommandRequest(set_mode=control_pb2.SetMode(mode="m"),
                                        execute_at_mission_time_s=30.0),
         "execute_at_mission_time_s is in the past (now 61.000 s)"),
        (control_pb2.SendCommandRequest(impulsive_burn=control_pb2.ImpulsiveBurn(
            delta_v_m_s=Vector3(x=1.0, z=math.inf))),
         "impulsive_burn.delta_v_m_s.z must be finite"),
        (control_pb2.SendCommandRequest(finite_burn=control_pb2.FiniteBurn(
            thrust_n=math.nan, duration_s=1.0)), "finite_burn.thrust_n must be finite"),
        (control_pb2.SendCommandRequest(start_operation=control_pb2.StartOperation(
            operation="drill", parameters={"depth_m": -math.inf})),
         "start_operation.parameters.depth_m must be finite"),
        (control_pb2.SendCommandRequest(set_mode=control_pb2.SetMode(mode="")),
         "set_mode needs a non-empty 'mode'"),
    ],
)
async def test_invalid_commands_are_refused_with_their_reason(
        rig: Rig, request_: control_pb2.SendCommandRequest, reason: str) -> None:
    assert await rig.refused("SendCommand", request_) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                         reason)
    await rig.steps(1)
    assert rig.core.ran == []  # nothing was queued
    assert await rig.requests("SendCommand", "INVALID_ARGUMENT") == 1.0


async def test_a_command_in_an_autonomous_phase_is_a_failed_precondition(rig: Rig) -> None:
    rig.core.phase = "powered_descent"
    assert await rig.refused("SendCommand", control_pb2.SendCommandRequest(
        set_mode=control_pb2.SetMode(mode="hover"))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "lander is in the autonomous phase 'powered_descent'; ground cannot intervene "
        "until it ends")


# --- InjectFault / ClearFault -----------------------------------------------------
async def test_injected_faults_are_numbered_per_service_and_echo_the_request(rig: Rig) -> None:
    first = await rig.stub.InjectFault(control_pb2.InjectFaultRequest(
        kind="thrust_loss", target="main_engine", magnitude=0.25, duration_s=600.0))
    assert first.fault == common_pb2.Fault(
        fault_id="lander-thrust_loss-1", kind="thrust_loss", target="main_engine",
        magnitude=0.25, since_mission_time_s=T2_S, duration_s=600.0)
    await rig.steps(1)
    second = await rig.stub.InjectFault(control_pb2.InjectFaultRequest(kind="stall_clock"))
    assert second.fault == common_pb2.Fault(fault_id="lander-stall_clock-2", kind="stall_clock",
                                            since_mission_time_s=T2_S + PROBE_STEP_S)
    assert set(rig.core.faults) == {"thrust_loss", "stall_clock"}


async def test_clear_fault_ends_it_once_then_it_is_not_found(rig: Rig) -> None:
    fault = (await rig.stub.InjectFault(control_pb2.InjectFaultRequest(
        kind="drop_telemetry"))).fault
    reply = await rig.stub.ClearFault(control_pb2.ClearFaultRequest(fault_id=fault.fault_id))
    assert reply == control_pb2.ClearFaultResponse(cleared=True)
    assert rig.core.faults == {}
    assert await rig.refused("ClearFault", control_pb2.ClearFaultRequest(
        fault_id=fault.fault_id)) == (grpc.StatusCode.NOT_FOUND,
                                      "no active fault 'lander-drop_telemetry-1'")


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (control_pb2.InjectFaultRequest(kind="gremlins"),
         "unknown fault kind 'gremlins'; known: drop_telemetry, stall_clock, thrust_loss"),
        (control_pb2.InjectFaultRequest(kind="thrust_loss", duration_s=-1.0),
         "duration_s must be >= 0 and magnitude finite"),
        (control_pb2.InjectFaultRequest(kind="thrust_loss", magnitude=math.nan),
         "duration_s must be >= 0 and magnitude finite"),
        (control_pb2.InjectFaultRequest(kind="stall_clock", duration_s=5.0),
         "stall_clock holds mission time still, so duration_s can never run out: inject it "
         "with duration_s 0 and end it with ClearFault"),
    ],
)
async def test_bad_faults_are_refused_with_their_reason(
        rig: Rig, request_: control_pb2.InjectFaultRequest, reason: str) -> None:
    assert await rig.refused("InjectFault", request_) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                         reason)
    assert rig.core.faults == {}


# --- WatchTelemetry ---------------------------------------------------------------
async def _watch(rig: Rig, request: control_pb2.WatchTelemetryRequest,
                 steps: int) -> list[control_pb2.TelemetryFrame]:
    """Open a stream, step the clock once the server holds it, read it to its end."""
    call = rig.stub.WatchTelemetry(request)
    watchers = rig.twin.vehicles["lander"].telemetry.watchers
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not watchers:  # the server registers the stream when it reads the request
        assert loop.time() < deadline, "WatchTelemetry never reached the server"
        await asyncio.sleep(0.01)
    await rig.steps(steps)

    async def read() -> list[control_pb2.TelemetryFrame]:
        return [frame async for frame in call]

    return await asyncio.wait_for(read(), WAIT_S)


async def test_watch_sends_max_frames_spaced_by_min_interval_then_ends(rig: Rig) -> None:
    frames = await _watch(rig, control_pb2.WatchTelemetryRequest(
        min_interval_s=120.0, max_frames=3), steps=9)
    # steps end at 121, 181, ..., 601; a frame exactly 120 s after the last is due
    assert [(f.step, f.mission_time_s) for f in frames] == [(3, 121.0), (5, 241.0),
                                                            (7, 361.0)]
    assert frames[0] == control_pb2.TelemetryFrame(
        service="lander", step=3, mission_time_s=121.0, utc="2024-05-03T09:29:30.000Z",
        phase="prelaunch", state=_state_at(121.0))
    assert await rig.requests("WatchTelemetry", "OK") == 1.0
    assert rig.twin.vehicles["lander"].telemetry.watchers == []  # the ended stream is gone


async def test_watch_rejects_a_negative_or_infinite_interval(rig: Rig) -> None:
    for bad in (-1.0, math.inf):
        call = rig.stub.WatchTelemetry(control_pb2.WatchTelemetryRequest(min_interval_s=bad))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), REFUSAL_WAIT_S)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT, "min_interval_s must be >= 0")
