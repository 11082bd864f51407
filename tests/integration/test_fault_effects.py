"""Every fault kind, injected and cleared through gRPC, judged by its effect.

The in-process twin (real nats-server, real grpc.aio servers) flies the nominal
plan to a pause point; InjectFault goes to the vehicle's VehicleControl; the
flight goes on, and what the vehicles published on NATS (events, truth
telemetry) is compared with a nominal flight of the same seed and the same
pause points (so the same step grid). Touchdown offsets are worked out here
from the published latitudes and longitudes on a sphere, never with the
twin's geometry helpers.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import nats
import pytest
import pytest_asyncio

from services.dynamics.guidance import descent as dg
from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import load_plan
from services.kernel.config import SERVICE_NAMES
from services.kernel.envelope import decode
from services.kernel.natsd import NatsServer
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc, control_pb2, control_pb2_grpc
from services.local.inproc import LocalTwin
from tests.authorities import R_MOON_M

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

#: CE-6 site (LROC, reference timeline row 14): the twin's landing target.
SITE_LAT_DEG, SITE_LON_DEG, SITE_HEIGHT_M = -41.6385, -153.9852, -5_256.0
#: Full thrust of the lander's variable engine and of the ascender's (CNSA).
LANDER_FULL_THRUST_N = 7_500.0
ASCENDER_FULL_THRUST_N = 3_000.0
#: Nine minutes before powered-descent ignition (22:09 UTC), and eight before
#: the ascender's time-tagged liftoff (23:38:10 UTC): every flight pauses at
#: both, so faulted and nominal flights share one step grid up to the fault.
BEFORE_PDI_UTC = "2024-06-01T22:00:00Z"
BEFORE_LIFTOFF_UTC = "2024-06-03T23:30:00Z"
#: The short flights (telemetry, stalls, refusals) end in the cruise to the
#: Moon: idle steps there reach an hour, so a few dozen steps fit.
CRUISE_END_UTC = "2024-05-07T00:00:00Z"
#: The avoidance hands over to vertical descent within 0.5 m of its aim and
#: vertical descent holds that point; published lat/lon are rounded to 1e-6
#: deg (3 cm). Touchdowns that should coincide must agree to this.
SPOT_TOL_M = 0.5
#: Nominal touchdown: engine cut at 2 m sinking at 1 m/s, sqrt(1 + 2 g 2).
NOMINAL_TOUCHDOWN_M_S = 2.73
#: Four times the nominal touchdown speed: not a landing a lander survives.
HARD_CONTACT_M_S = 10.0
THRUST_TOL_N = 1.0
WAIT_S = 180.0  # wall seconds for a whole flight on a shared 2-core machine: a hang bound
POLL_S = 0.02


@dataclass
class Flight:
    """What one flight published: events and the powered vehicles' telemetry."""

    events: list[dict[str, Any]] = field(default_factory=list)
    frames: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fault_ids: dict[str, str] = field(default_factory=dict)

    def event(self, src: str, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e["src"] == src and e["name"] == name]
        assert len(found) == 1, (src, name, found)
        return found[0]

    def powered(self, src: str, phase: str) -> list[dict[str, Any]]:
        return [f for f in self.frames.get(src, []) if f["phase"] == phase]


def _frames_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Truth-telemetry frames of one ``tm`` message, as dicts (README: NATS subjects)."""
    names = body["fields"]
    return [dict(zip(names, row, strict=True)) for row in body["frames"]]


async def _listen(nc: Any, mission: str, flight: Flight) -> None:
    async def on_event(msg: Any) -> None:
        env = decode(msg.data, mission=mission)
        flight.events.append({"src": env.src, "t": env.t, **env.body})

    async def on_tm(msg: Any) -> None:
        env = decode(msg.data, mission=mission)
        flight.frames.setdefault(env.src, []).extend(_frames_of(env.body))

    await nc.subscribe(f"twin.{mission}.evt.*", cb=on_event)
    await nc.subscribe(f"twin.{mission}.tm.*", cb=on_tm)
    await nc.flush()


async def _inject(port: int, request: control_pb2.InjectFaultRequest) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = await control_pb2_grpc.VehicleControlStub(ch).InjectFault(request)
    return str(reply.fault.fault_id)


async def _wait_for(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    """Poll for what another connection published (NATS orders per publisher only)."""
    for _ in range(int(timeout_s / POLL_S)):
        if predicate():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"never saw {what}")


async def _fly(url: str, mission: str, end_after: str,
               faults: dict[str, dict[str, control_pb2.InjectFaultRequest]]) -> Flight:
    """Fly the nominal plan to ``end_after``, pausing at each key of ``faults``
    (UTC, in order) to inject the faults given there per vehicle."""
    flight = Flight()
    nc = await nats.connect(url)
    await _listen(nc, mission, flight)
    flight_plan = replace(load_plan(None), end_after=end_after, end_offset_s=0.0,
                          end_at_s=math.inf)
    async with LocalTwin(url, mission, flight_plan, start_paused=True) as twin, \
            grpc.aio.insecure_channel(f"127.0.0.1:{twin.ground.grpc_port}") as ch:
        clock = clock_pb2_grpc.MissionClockStub(ch)
        for utc, injections in faults.items():
            await clock.RunUntil(clock_pb2.RunUntilRequest(utc=utc, wait=True), timeout=WAIT_S)
            for vehicle, request in injections.items():
                port = twin.vehicles[vehicle].grpc_port
                flight.fault_ids[vehicle] = await _inject(port, request)
        await clock.Resume(clock_pb2.ResumeRequest())
        await twin.wait_finished(WAIT_S)
    await _wait_for(lambda: any(e["name"] == end_after for e in flight.events), end_after)
    await nc.drain()
    return flight


def _pauses(lander: control_pb2.InjectFaultRequest | None = None,
            ascender: control_pb2.InjectFaultRequest | None = None,
            ) -> dict[str, dict[str, control_pb2.InjectFaultRequest]]:
    """Pause points of a flight: before PDI always (faulted and nominal flights
    share one step grid up to the fault), before liftoff if it flies that far."""
    pauses = {BEFORE_PDI_UTC: {"lander": lander} if lander else {}}
    if lander is None:
        pauses[BEFORE_LIFTOFF_UTC] = {"ascender": ascender} if ascender else {}
    return pauses


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A server of this module's own: its flights run in the module's event loop."""
    with NatsServer(tmp_path_factory.mktemp("nats-faults")) as srv:
        yield srv


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nominal(server: NatsServer) -> AsyncIterator[Flight]:
    yield await _fly(server.url, "fe-nominal", "ascent_orbit_insertion", _pauses())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def slight_thrust_loss(server: NatsServer) -> AsyncIterator[Flight]:
    loss = control_pb2.InjectFaultRequest(kind="engine_thrust_loss", magnitude=0.05)
    yield await _fly(server.url, "fe-loss-5", "lunar_touchdown", _pauses(lander=loss))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def large_thrust_loss(server: NatsServer) -> AsyncIterator[Flight]:
    loss = control_pb2.InjectFaultRequest(kind="engine_thrust_loss", magnitude=0.2)
    yield await _fly(server.url, "fe-loss-20", "lunar_touchdown", _pauses(lander=loss))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sensor_bias(server: NatsServer) -> AsyncIterator[Flight]:
    bias = control_pb2.InjectFaultRequest(kind="hazard_sensor_bias", magnitude=15.0)
    yield await _fly(server.url, "fe-bias", "lunar_touchdown", _pauses(lander=bias))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ascender_thrust_loss(server: NatsServer) -> AsyncIterator[Flight]:
    loss = control_pb2.InjectFaultRequest(kind="thrust_loss", magnitude=0.3)
    yield await _fly(server.url, "fe-asc-loss", "ascent_orbit_insertion",
                     _pauses(ascender=loss))


# --- geometry, written here ----------------------------------------------------


def _east_north_m(lat_deg: float, lon_deg: float, alt_m: float,
                  lat0_deg: float = SITE_LAT_DEG, lon0_deg: float = SITE_LON_DEG,
                  ) -> tuple[float, float]:
    """Offset east and north of (lat0, lon0), in metres along the surface sphere
    (radius: the IAU mean radius plus the point's height). Over tens of metres
    the tangent plane and the sphere differ by far less than a millimetre."""
    r = R_MOON_M + alt_m
    d_lon = (math.radians(lon_deg - lon0_deg) + math.pi) % math.tau - math.pi
    return (r * math.cos(math.radians(lat0_deg)) * d_lon,
            r * math.radians(lat_deg - lat0_deg))


def _touchdown_en_m(flight: Flight, **origin: float) -> tuple[float, float]:
    td = flight.event("lander", "lunar_touchdown")
    return _east_north_m(td["lat_deg"], td["lon_deg"], td["alt_m"], **origin)


def _clearance_m(hazards: tuple[dg.Hazard, ...], east_m: float, north_m: float) -> float:
    return min(math.hypot(east_m - h.east_m, north_m - h.north_m) - h.radius_m for h in hazards)


def _assert_fault_noted(flight: Flight, vehicle: str, kind: str) -> None:
    injected = flight.event(vehicle, "fault_injected")
    assert injected["kind"] == kind and injected["fault_id"] == flight.fault_ids[vehicle]


# --- the flown descent and the hazard map ----------------------------------------


async def test_nominal_descent_lands_on_the_chosen_spot_clear_of_every_hazard(
        nominal: Flight) -> None:
    """Seed 6, the whole flight: the touchdown is where the hover scan's choice
    is, and two footprints (8 m) from every rim less SPOT_TOL_M. The spot
    mirrored east-west lies 2.5 m inside a crater."""
    hazards = dg.hazard_map(6)
    chosen = dg.choose_safe_spot(hazards, 4.0)
    east, north = _touchdown_en_m(nominal)
    assert math.hypot(east - chosen[0], north - chosen[1]) < SPOT_TOL_M, ((east, north), chosen)
    assert _clearance_m(hazards, east, north) >= 8.0 - SPOT_TOL_M
    assert nominal.event("lander", "lunar_touchdown")["vertical_speed_m_s"] == pytest.approx(
        NOMINAL_TOUCHDOWN_M_S, abs=0.05)


# --- lander: engine_thrust_loss ---------------------------------------------------


def _thrust_at_ceiling_s(frames: list[dict[str, Any]], ceiling_n: float) -> int:
    """Clock steps (1 s each in powered descent) ending with the engine at its ceiling."""
    return sum(1 for f in frames if f["values"]["thrust_n"] >= ceiling_n - THRUST_TOL_N)


async def test_slight_thrust_loss_is_flown_at_a_lower_ceiling_and_still_lands_on_the_spot(
        nominal: Flight, slight_thrust_loss: Flight) -> None:
    """5 % loss: braking normally runs at ~90 % of full thrust, so the engine now
    sits at its lowered ceiling for minutes instead of seconds, and the
    variable-thrust guidance absorbs the rest: same spot, same soft touchdown,
    about the same propellant and duration (measured: +1.0 kg, -0.4 s)."""
    flight = slight_thrust_loss
    _assert_fault_noted(flight, "lander", "engine_thrust_loss")
    ceiling_n = 0.95 * LANDER_FULL_THRUST_N
    base, hurt = nominal.powered("lander", "powered_descent"), flight.powered(
        "lander", "powered_descent")
    assert max(f["values"]["thrust_n"] for f in base) == pytest.approx(
        LANDER_FULL_THRUST_N, abs=THRUST_TOL_N)
    assert max(f["values"]["thrust_n"] for f in hurt) == pytest.approx(ceiling_n,
                                                                         abs=THRUST_TOL_N)
    assert _thrust_at_ceiling_s(hurt, ceiling_n) > _thrust_at_ceiling_s(
        base, LANDER_FULL_THRUST_N) + 60
    east, north = _touchdown_en_m(flight)
    east0, north0 = _touchdown_en_m(nominal)
    assert math.hypot(east - east0, north - north0) < SPOT_TOL_M
    td, td0 = (f.event("lander", "lunar_touchdown") for f in (flight, nominal))
    assert td["vertical_speed_m_s"] == pytest.approx(NOMINAL_TOUCHDOWN_M_S, abs=0.05)
    assert td["propellant_kg"] == pytest.approx(td0["propellant_kg"], abs=2.0)
    assert td["t"] == pytest.approx(td0["t"], abs=5.0)


async def test_thrust_loss_beyond_the_margin_hits_the_ground_hard_not_under_it(
        nominal: Flight, large_thrust_loss: Flight) -> None:
    """20 % loss: more than the ~10 % braking margin. There is no abort: the
    guided path meets the terrain minutes early at tens of m/s. The lander must
    stop at the surface with that speed (it used to fly on kilometres under the
    surface and report a soft touchdown there)."""
    flight = large_thrust_loss
    _assert_fault_noted(flight, "lander", "engine_thrust_loss")
    frames = flight.powered("lander", "powered_descent")
    assert max(f["values"]["thrust_n"] for f in frames) == pytest.approx(
        0.8 * LANDER_FULL_THRUST_N, abs=THRUST_TOL_N)
    assert min(f["alt_m"] for f in frames) > SITE_HEIGHT_M - 1.0
    td, td0 = (f.event("lander", "lunar_touchdown") for f in (flight, nominal))
    assert td["vertical_speed_m_s"] > HARD_CONTACT_M_S
    assert td["t"] < td0["t"] - 60.0
    assert td["alt_m"] == pytest.approx(SITE_HEIGHT_M, abs=1.0)


# --- lander: hazard_sensor_bias ---------------------------------------------------


async def test_hazard_sensor_bias_moves_the_touchdown_east_by_the_bias(
        nominal: Flight, sensor_bias: Flight) -> None:
    """A 15 m bias of the hazard sensor moves the chosen spot 15 m east: the
    lander touches down there, not where the map says is safe."""
    _assert_fault_noted(sensor_bias, "lander", "hazard_sensor_bias")
    td0 = nominal.event("lander", "lunar_touchdown")
    east, north = _touchdown_en_m(sensor_bias, lat0_deg=td0["lat_deg"], lon0_deg=td0["lon_deg"])
    assert east == pytest.approx(15.0, abs=SPOT_TOL_M)
    assert north == pytest.approx(0.0, abs=SPOT_TOL_M)
    td = sensor_bias.event("lander", "lunar_touchdown")
    assert td["vertical_speed_m_s"] == pytest.approx(NOMINAL_TOUCHDOWN_M_S, abs=0.05)


# --- ascender: thrust_loss ----------------------------------------------------------


async def test_ascender_thrust_loss_lengthens_the_burn_and_still_reaches_the_orbit(
        nominal: Flight, ascender_thrust_loss: Flight) -> None:
    """30 % loss: the explicit guidance flies full thrust to the target energy,
    so the same orbit comes from a longer burn. At 70 % of the mass flow the
    nominal's propellant alone takes 1/0.7 of its time; the longer climb under
    gravity costs more (measured: 508 s against 347 s, 8 kg more)."""
    flight = ascender_thrust_loss
    _assert_fault_noted(flight, "ascender", "thrust_loss")
    frames = flight.powered("ascender", "ascent")
    assert max(f["values"]["thrust_n"] for f in frames) == pytest.approx(
        0.7 * ASCENDER_FULL_THRUST_N, abs=THRUST_TOL_N)
    ins, ins0 = (f.event("ascender", "ascent_orbit_insertion") for f in (flight, nominal))
    assert ins["burn_s"] > ins0["burn_s"] / 0.7
    assert ins["burn_s"] < 1.1 * ins0["burn_s"] / 0.7
    assert ins["mass_kg"] < ins0["mass_kg"] - 1.0  # more propellant burnt
    for key in ("perilune_alt_m", "apolune_alt_m"):
        assert ins[key] == pytest.approx(ins0[key], abs=1_000.0)  # the 15 x 180 km target
    # Into the orbiter's plane either way; the longer burn leaves 0.012 deg more
    # (~370 m out of plane), which the phasing trim burn takes out.
    assert ins["inclination_deg"] == pytest.approx(ins0["inclination_deg"], abs=0.05)


# --- drop_telemetry, every service ------------------------------------------------


@dataclass
class Rig:
    twin: LocalTwin
    clock: Any
    controls: dict[str, Any]
    flight: Flight
    nc: Any

    async def step(self, n: int) -> float:
        state = await self.clock.Step(clock_pb2.StepRequest(steps=n), timeout=WAIT_S)
        return float(state.mission_time_s)

    async def run_until(self, t: float) -> float:
        state = await self.clock.RunUntil(clock_pb2.RunUntilRequest(mission_time_s=t, wait=True),
                                          timeout=WAIT_S)
        return float(state.mission_time_s)

    async def settle(self) -> None:
        """Every frame recorded so far is here: GetStatus sends a service's
        pending frames; its connection's flush has the server route them; our
        own flush returns after the server wrote them to us."""
        for name, control in self.controls.items():
            await control.GetStatus(control_pb2.GetStatusRequest())
            service_nc = self.twin.all[name].bus.nc
            assert service_nc is not None
            await service_nc.flush()
        await self.nc.flush()

    def frame_times(self, name: str, after: float, upto: float) -> list[float]:
        return [f["t"] for f in self.flight.frames.get(name, []) if after < f["t"] <= upto]

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.flight.events if e["name"] == name]


@pytest_asyncio.fixture(loop_scope="module")
async def rig(server: NatsServer, mission_id: str) -> AsyncIterator[Rig]:
    flight = Flight()
    nc = await nats.connect(server.url)
    await _listen(nc, mission_id, flight)
    nominal_plan = load_plan(None)
    end_s = mission_s_from_utc(CRUISE_END_UTC)
    cruise = replace(nominal_plan, end_at_s=end_s, items=tuple(
        i for i in nominal_plan.items if i.at_s is not None and i.at_s < end_s))
    async with LocalTwin(server.url, mission_id, cruise, start_paused=True,
                         ack_timeout_s=0.5) as twin:
        channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{rt.grpc_port}")
                    for name, rt in twin.all.items()}
        ground = clock_pb2_grpc.MissionClockStub(channels["ground"])
        controls = {n: control_pb2_grpc.VehicleControlStub(c) for n, c in channels.items()}
        yield Rig(twin, ground, controls, flight, nc)
        for ch in channels.values():
            await ch.close()
    await nc.drain()


#: Longer than any service's telemetry interval (ground's is an hour): a
#: window this long without a frame is silence, not a slow cadence.
SILENT_WINDOW_S = 3 * 3_600.0


async def test_drop_telemetry_silences_every_service_until_cleared(rig: Rig) -> None:
    assert set(rig.controls) == set(SERVICE_NAMES)
    t_inject = await rig.step(2)
    ids = {n: (await c.InjectFault(control_pb2.InjectFaultRequest(kind="drop_telemetry"))
               ).fault.fault_id for n, c in rig.controls.items()}
    t_clear = await rig.run_until(t_inject + SILENT_WINDOW_S)
    for name, control in rig.controls.items():
        await control.ClearFault(control_pb2.ClearFaultRequest(fault_id=ids[name]))
    t_end = await rig.run_until(t_clear + SILENT_WINDOW_S)
    await rig.settle()
    for name in rig.controls:
        assert rig.frame_times(name, t_inject, t_clear) == [], name
        assert rig.frame_times(name, t_clear, t_end), name
    await _wait_for(lambda: len(rig.events_named("fault_cleared")) == len(ids), "fault_cleared")
    injected = {e["src"]: e for e in rig.events_named("fault_injected")}
    cleared = {e["src"]: e for e in rig.events_named("fault_cleared")}
    for name, fid in ids.items():
        assert (injected[name]["fault_id"], injected[name]["t"]) == (fid, t_inject)
        assert (cleared[name]["fault_id"], cleared[name]["reason"]) == (fid, "cleared")
        assert cleared[name]["t"] == t_clear


async def test_drop_telemetry_with_a_duration_ends_by_itself(rig: Rig) -> None:
    duration_s = 1_800.0
    t_inject = await rig.step(2)
    fault = (await rig.controls["orbiter"].InjectFault(control_pb2.InjectFaultRequest(
        kind="drop_telemetry", duration_s=duration_s))).fault
    t_end = await rig.run_until(t_inject + 2 * duration_s)
    await rig.settle()
    t_expire = t_inject + duration_s
    assert rig.frame_times("orbiter", t_inject, t_expire) == []
    assert rig.frame_times("relay", t_inject, t_expire)  # only the faulted service is silent
    # The clock stopped on the expiry: the next step's frame is the first again.
    assert min(rig.frame_times("orbiter", t_expire, t_end)) == min(
        rig.frame_times("relay", t_expire, t_end))
    await _wait_for(lambda: rig.events_named("fault_cleared"), "fault_cleared")
    (cleared,) = rig.events_named("fault_cleared")
    assert (cleared["src"], cleared["fault_id"], cleared["reason"]) == (
        "orbiter", fault.fault_id, "expired")
    assert cleared["t"] == pytest.approx(t_expire, abs=1e-6)
    assert any(f["t"] == pytest.approx(t_expire, abs=1e-6)
               for f in rig.flight.frames["relay"])  # a step ended exactly there


# --- stall_clock -------------------------------------------------------------------


async def test_stall_clock_holds_the_clock_names_the_service_and_is_logged(rig: Rig) -> None:
    """Waiting, waiting_for and the resumption are in test_clock.py; here the
    stalled steps of the lander and the events that log the fault."""
    t_inject = await rig.step(2)
    fault = (await rig.controls["lander"].InjectFault(
        control_pb2.InjectFaultRequest(kind="stall_clock"))).fault
    rig.twin.ground.clock.request_steps(2)
    clock = rig.twin.ground.clock
    await asyncio.wait_for(clock.wait_until(lambda: clock.status.waiting_for == ["lander"]),
                           WAIT_S)
    assert (await rig.clock.GetTime(clock_pb2.GetTimeRequest())).mission_time_s == t_inject
    await rig.controls["lander"].ClearFault(control_pb2.ClearFaultRequest(
        fault_id=fault.fault_id))
    await asyncio.wait_for(clock.wait_until(lambda: clock.paused), WAIT_S)
    assert rig.twin.ground.step == rig.twin.vehicles["lander"].step
    await _wait_for(lambda: rig.events_named("fault_cleared"), "fault_cleared")
    names = [e["name"] for e in rig.flight.events
             if e["src"] == "lander" and e["name"].startswith("fault_")]
    assert names == ["fault_injected", "fault_cleared"]


# --- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize(("vehicle", "kind", "known"), [
    ("lander", "thrust_loss", "engine_thrust_loss, hazard_sensor_bias"),
    ("ascender", "hazard_sensor_bias", "thrust_loss"),
    ("relay", "gremlins", "drop_telemetry, stall_clock"),
])
async def test_unknown_fault_kind_is_refused_naming_the_known_ones(
        rig: Rig, vehicle: str, kind: str, known: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.controls[vehicle].InjectFault(control_pb2.InjectFaultRequest(kind=kind))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"unknown fault kind {kind!r}" in (caught.value.details() or "")
    assert known in (caught.value.details() or "")
    assert rig.twin.vehicles[vehicle].core.faults == {}


async def test_clearing_an_unknown_or_already_cleared_fault_is_not_found(rig: Rig) -> None:
    control = rig.controls["lander"]
    fault = (await control.InjectFault(control_pb2.InjectFaultRequest(
        kind="hazard_sensor_bias", magnitude=5.0))).fault
    assert (await control.ClearFault(control_pb2.ClearFaultRequest(
        fault_id=fault.fault_id))).cleared
    for fault_id in (fault.fault_id, "lander-nope-99"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await control.ClearFault(control_pb2.ClearFaultRequest(fault_id=fault_id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert f"no active fault {fault_id!r}" in (caught.value.details() or "")


async def test_a_stall_with_a_duration_is_refused_as_it_could_never_end(rig: Rig) -> None:
    """The clock waits for a stalled service, so mission time stands still and a
    duration in mission seconds would never run out (the mission hung)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.controls["relay"].InjectFault(control_pb2.InjectFaultRequest(
            kind="stall_clock", duration_s=60.0))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inject it with duration_s 0 and end it with ClearFault" in (
        caught.value.details() or "")
    assert rig.twin.vehicles["relay"].core.faults == {}
