"""Operator burns end to end: gRPC SendCommand -> the orbiter's core -> a new orbit.

The twin flies the nominal plan into the 200 x 8,600 km capture orbit, pauses,
and an operator commands a burn through the orbiter's VehicleControl. The
expected orbit after it is worked out here from first principles, two-body
vis-viva about the Moon from the orbiter's own reported state at the burn
instant, never from the twin's planning code.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import nats
import numpy as np
import pytest

from services.kernel.envelope import decode
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc, control_pb2, control_pb2_grpc
from services.kernel.twin_pb.common_pb2 import Vector3
from services.local.inproc import LocalTwin
from tests.authorities import GM_MOON_M3_S2, R_MOON_M
from tests.integration.twin_helpers import nominal_until

pytestmark = pytest.mark.slow

#: Paused after LOI (2024-05-08 ~02:12-02:27) and ICUBE-Q (08:00), before the
#: first orbit adjustment (2024-05-10): the capture orbit, coasting.
PAUSE_AT_UTC = "2024-05-08T12:00:00Z"
# The twin's orbit elements come from the same instant's state with the DE421
# GM; the bound allows a GM differing by a part in 10^6 and float noise.
APSIDES_TOL_KM = 0.5
DV_TOL_M_S = 1e-6
#: The plan's end: after LOI (2024-05-08 ~02:27) and ICUBE-Q, before the first
#: orbit adjustment (2024-05-10).
IN_LUNAR_ORBIT_UTC = "2024-05-09T00:00:00Z"
WAIT_S = 120.0  # wall seconds to fly to the pause point: a bound on a hang
EVENT_POLLS = 20  # 10 ms apart


async def _orbiter_events(nc: Any, mission: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []

    async def cb(msg: Any) -> None:
        env = decode(msg.data, mission=mission)
        got.append({"t": env.t, **env.body})

    await nc.subscribe(f"twin.{mission}.evt.orbiter", cb=cb)
    await nc.flush()
    return got


def _apsides_km(r_m: np.ndarray, v_m_s: np.ndarray) -> tuple[float, float]:
    """Two-body perilune and apolune altitudes (vis-viva, eccentricity vector)."""
    r = float(np.linalg.norm(r_m))
    energy = float(v_m_s @ v_m_s) / 2.0 - GM_MOON_M3_S2 / r
    a = -GM_MOON_M3_S2 / (2.0 * energy)
    e_vec = ((float(v_m_s @ v_m_s) - GM_MOON_M3_S2 / r) * r_m
             - float(r_m @ v_m_s) * v_m_s) / GM_MOON_M3_S2
    e = float(np.linalg.norm(e_vec))
    return (a * (1 - e) - R_MOON_M) / 1e3, (a * (1 + e) - R_MOON_M) / 1e3


def _rtn_to_inertial(r_m: np.ndarray, v_m_s: np.ndarray, rtn: tuple[float, ...]) -> np.ndarray:
    radial = r_m / np.linalg.norm(r_m)
    normal = np.cross(r_m, v_m_s)
    normal /= np.linalg.norm(normal)
    along = np.cross(normal, radial)
    result: np.ndarray = rtn[0] * radial + rtn[1] * along + rtn[2] * normal
    return result


@pytest.fixture
async def in_capture_orbit(nats_url: str, mission_id: str) -> AsyncIterator[dict[str, Any]]:
    nc = await nats.connect(nats_url)
    events = await _orbiter_events(nc, mission_id)
    to_orbit = nominal_until(IN_LUNAR_ORBIT_UTC, "burn-test")
    async with LocalTwin(nats_url, mission_id, to_orbit, start_paused=True) as twin:
        ch_ground = grpc.aio.insecure_channel(f"127.0.0.1:{twin.ground.grpc_port}")
        port = twin.vehicles["orbiter"].grpc_port
        ch_orbiter = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        clock = clock_pb2_grpc.MissionClockStub(ch_ground)
        await clock.RunUntil(clock_pb2.RunUntilRequest(utc=PAUSE_AT_UTC, wait=True),
                             timeout=WAIT_S)
        yield {"twin": twin, "clock": clock, "events": events, "mission": mission_id,
               "orbiter": control_pb2_grpc.VehicleControlStub(ch_orbiter)}
        await ch_ground.close()
        await ch_orbiter.close()
    await nc.drain()


async def _state(orbiter: Any) -> tuple[float, np.ndarray, np.ndarray, Any]:
    s = await orbiter.GetStatus(control_pb2.GetStatusRequest())
    st = s.state
    assert s.phase == "lunar_orbit" and st.central_body.lower() == "moon", s
    r = np.array([st.position_m.x, st.position_m.y, st.position_m.z])
    v = np.array([st.velocity_m_s.x, st.velocity_m_s.y, st.velocity_m_s.z])
    return s.mission_time_s, r, v, st


async def _command_and_step(rig: dict[str, Any], request: control_pb2.SendCommandRequest,
                            name: str = "commanded_burn") -> dict[str, Any]:
    reply = await rig["orbiter"].SendCommand(request)
    assert reply.accepted, reply
    loop_clock = rig["twin"].ground.clock
    for _ in range(100):  # a finite burn spans several steps of at most 5 s
        before = await rig["clock"].GetTime(clock_pb2.GetTimeRequest())
        await rig["clock"].Step(clock_pb2.StepRequest(steps=1))
        await asyncio.wait_for(loop_clock.wait_until(lambda: loop_clock.paused), WAIT_S)
        for _ in range(EVENT_POLLS):  # events reach this subscriber just after the ack
            events: list[dict[str, Any]] = rig["events"]
            done = [e for e in events
                    if e.get("name") == name and e["t"] >= before.mission_time_s - 1e-6]
            if done:
                return done[-1]
            await asyncio.sleep(0.01)
    raise AssertionError(f"no {name} event; orbiter events: {rig['events'][-5:]}")


async def test_impulsive_burn_in_rtn_changes_the_orbit_as_vis_viva_says(
        in_capture_orbit: dict[str, Any]) -> None:
    rig = in_capture_orbit
    t0, r0, v0, st0 = await _state(rig["orbiter"])
    # 10 m/s along-track near apolune (~5,600 km up at this instant): perilune rises.
    dv_rtn = (0.0, 10.0, 0.0)
    event = await _command_and_step(rig, control_pb2.SendCommandRequest(
        command_id="raise", impulsive_burn=control_pb2.ImpulsiveBurn(
            delta_v_m_s=Vector3(y=10.0), frame="RTN")))
    assert event["t"] == pytest.approx(t0, abs=1e-6), "the burn acts at the start of a step"
    assert event["burn"] == "CMD-raise" and event["frame"] == "RTN"
    assert event["dv_m_s"] == pytest.approx(10.0, abs=DV_TOL_M_S)
    peri_before, _ = _apsides_km(r0, v0)
    peri, apo = _apsides_km(r0, v0 + _rtn_to_inertial(r0, v0, dv_rtn))
    assert peri > peri_before + 10.0  # the expectation itself is not a no-op
    assert event["perilune_km"] == pytest.approx(peri, abs=APSIDES_TOL_KM)
    assert event["apolune_km"] == pytest.approx(apo, abs=APSIDES_TOL_KM)
    _, _, _, st1 = await _state(rig["orbiter"])
    assert st1.propellant_kg < st0.propellant_kg


async def test_impulsive_burn_in_mci_adds_the_inertial_vector(
        in_capture_orbit: dict[str, Any]) -> None:
    rig = in_capture_orbit
    _, r0, v0, _ = await _state(rig["orbiter"])
    dv = np.array([3.0, -4.0, 12.0])  # |dv| = 13 m/s
    event = await _command_and_step(rig, control_pb2.SendCommandRequest(
        command_id="mci", impulsive_burn=control_pb2.ImpulsiveBurn(
            delta_v_m_s=Vector3(x=3.0, y=-4.0, z=12.0), frame="MCI")))
    assert event["dv_m_s"] == pytest.approx(13.0, abs=DV_TOL_M_S)
    peri, apo = _apsides_km(r0, v0 + dv)
    assert event["perilune_km"] == pytest.approx(peri, abs=APSIDES_TOL_KM)
    assert event["apolune_km"] == pytest.approx(apo, abs=APSIDES_TOL_KM)


async def test_finite_burn_delivers_what_its_thrust_and_duration_give(
        in_capture_orbit: dict[str, Any]) -> None:
    rig = in_capture_orbit
    _, _, _, st0 = await _state(rig["orbiter"])
    thrust_n, duration_s = 1_500.0, 60.0
    event = await _command_and_step(rig, control_pb2.SendCommandRequest(
        command_id="fin", finite_burn=control_pb2.FiniteBurn(
            thrust_n=thrust_n, duration_s=duration_s, direction=Vector3(y=1.0), frame="RTN")))
    assert event["burn_s"] == pytest.approx(duration_s, abs=1e-6)
    # Tsiolkovsky with the propellant actually drawn: dv = ve ln(m0/m1), and
    # thrust = ve * mdot, so ve = thrust * duration / propellant.
    m0 = st0.mass_kg
    ve = thrust_n * duration_s / event["propellant_kg"]
    assert event["dv_m_s"] == pytest.approx(ve * math.log(m0 / (m0 - event["propellant_kg"])),
                                            rel=1e-6)
    # Thrust times time over the mass, bounded by the mass before and after.
    impulse_n_s = thrust_n * duration_s
    assert impulse_n_s / m0 < event["dv_m_s"] < impulse_n_s / (m0 - event["propellant_kg"])
    _, _, _, st1 = await _state(rig["orbiter"])
    assert st1.propellant_kg == pytest.approx(st0.propellant_kg - event["propellant_kg"],
                                              abs=1e-6)


async def test_thrust_loss_fault_scales_a_commanded_impulse(
        in_capture_orbit: dict[str, Any]) -> None:
    rig = in_capture_orbit
    fault = await rig["orbiter"].InjectFault(control_pb2.InjectFaultRequest(
        kind="thrust_loss", magnitude=0.4))
    event = await _command_and_step(rig, control_pb2.SendCommandRequest(
        command_id="weak", impulsive_burn=control_pb2.ImpulsiveBurn(
            delta_v_m_s=Vector3(y=10.0), frame="RTN")))
    assert event["dv_m_s"] == pytest.approx(6.0, abs=DV_TOL_M_S)  # 60 % of the asked 10 m/s
    await rig["orbiter"].ClearFault(control_pb2.ClearFaultRequest(
        fault_id=fault.fault.fault_id))
    event = await _command_and_step(rig, control_pb2.SendCommandRequest(
        command_id="full", impulsive_burn=control_pb2.ImpulsiveBurn(
            delta_v_m_s=Vector3(y=10.0), frame="RTN")))
    assert event["burn"] == "CMD-full"
    assert event["dv_m_s"] == pytest.approx(10.0, abs=DV_TOL_M_S)


@pytest.mark.parametrize(("request_json", "code", "reason"), [
    ({"impulsive_burn": {"frame": "RTN"}}, grpc.StatusCode.INVALID_ARGUMENT, "delta_v_m_s"),
    ({"impulsive_burn": {"delta_v_m_s": {"x": 1.0}, "frame": "LVLH"}},
     grpc.StatusCode.INVALID_ARGUMENT, "frame must be one of RTN, MCI, ECI"),
    ({"finite_burn": {"thrust_n": 9000.0, "duration_s": 10.0, "direction": {"x": 1.0}}},
     grpc.StatusCode.INVALID_ARGUMENT, "thrust_n must be in (0, 3000] N"),
    ({"finite_burn": {"thrust_n": 100.0, "duration_s": 0.0, "direction": {"x": 1.0}}},
     grpc.StatusCode.INVALID_ARGUMENT, "duration_s must be in (0, 3600] s"),
])
async def test_bad_burns_are_refused_with_the_reason(
        in_capture_orbit: dict[str, Any], request_json: dict[str, Any],
        code: grpc.StatusCode, reason: str) -> None:
    from google.protobuf import json_format

    request = json_format.ParseDict({"command_id": "bad", **request_json},
                                    control_pb2.SendCommandRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await in_capture_orbit["orbiter"].SendCommand(request)
    assert caught.value.code() == code
    assert reason in (caught.value.details() or "")


async def test_vehicles_without_a_free_flight_refuse_burns(
        nats_url: str, mission_id: str) -> None:
    to_orbit = nominal_until(IN_LUNAR_ORBIT_UTC, "burn-test")
    async with LocalTwin(nats_url, mission_id, to_orbit, start_paused=True) as twin:
        port = twin.vehicles["lander"].grpc_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            lander = control_pb2_grpc.VehicleControlStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await lander.SendCommand(control_pb2.SendCommandRequest(
                    impulsive_burn=control_pb2.ImpulsiveBurn(delta_v_m_s=Vector3(x=1.0))))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "has no operation 'burn'" in (caught.value.details() or "")
