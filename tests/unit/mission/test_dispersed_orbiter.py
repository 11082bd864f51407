"""The orbiter's dispersible parameters act where the physics says, through the step rule.

Each burn is flown twice or three times from one lunar orbit (hand-made:
200 km circular, state set before the first step): nominal, dispersed, and
where a delta-v vector is measured, without any burn, so the delivered
delta-v is the difference of two states one short step later. Expected
values are physics written here: the rocket equation, constant-thrust mass
flow, rotation geometry, the RTN frame. Exhaust velocity and stack mass are
read from the nominal run, so no design figure is imported. The separation
state comes from the TLI solver (~0.5 s, once per process); the whole
dispersed mission (~5 s) is the slow test.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np
import orjson
import pytest

from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import load_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.parameters import ParameterError
from services.kernel.vehicle import VehicleCore
from services.local.simloop import SimLoop
from services.orbiter.flight import Flight, Vec
from services.orbiter.vehicle import OrbiterCore
from tests.authorities import (
    EARTH_MEAN_RADIUS_M,
    GM_MOON_M3_S2,
    LOI_UTC,
    R_MOON_M,
    SEPARATION_UTC,
    SIZIWANG_REACH_M,
    SIZIWANG_SEAT_LAT_DEG,
    SIZIWANG_SEAT_LON_DEG,
    central_angle_rad,
)
from tests.unit.mission.driver import Drive

SEED = 6
#: An instant in lunar orbit (the day the LA stack separated).
T_ORBIT = mission_s_from_utc("2024-05-30T06:00:00Z")
T_SEP = mission_s_from_utc(SEPARATION_UTC)
PARKING_RADIUS_M = R_MOON_M + 200_000.0  # the 200 km parking orbit (reference (c))
#: The CE-6 stack at launch, reference (b): 8.35 t.
LAUNCH_MASS_KG = 8_350.0
#: The operator burns flown: 20 m/s prograde; 120 s at the engine's full 3,000 N.
PROGRADE_RTN = {"x": 0.0, "y": 20.0, "z": 0.0}
FULL_THRUST_N = 3_000.0
FINITE_BURN_S = 120.0
#: The first step in orbit lasts this long: a delta-v is measured this long
#: after its burn, when the gravity gradient across the two states'
#: separation (mu / r^3 dv dt^2 ~ 7e-8 m/s) has barely acted.
ORBIT_STEP_S = 0.1
# Tolerances. Rounding of a few float operations: relative 1e-9. A delta-v
# from two states: the gravity gradient above and the coasts' integrator
# (rtol 1e-10 of ~1.6 km/s), both well below 1e-6 m/s.
REL_TOL = 1e-9
DV_TOL_M_S = 1e-6
ANGLE_TOL_DEG = 1e-5  # 1e-6 m/s of 20 m/s is 3e-6 deg
#: The first step after separation lasts this long; in it the RTN frame turns
#: by ~1.6e-6 rad and the state moves by the velocity error times it.
SEP_STEP_S = 1e-3
INJ_POS_TOL_M = 0.01
INJ_VEL_TOL_M_S = 1e-5


def in_orbit(params: dict[str, float] | None = None) -> Drive:
    """An orbiter in a 200 km circular lunar orbit, with ``params`` given before
    its first step; a first step of ORBIT_STEP_S."""
    core = OrbiterCore(SEED)
    if params:
        core.set_parameters(params)
    speed = math.sqrt(GM_MOON_M3_S2 / PARKING_RADIUS_M)
    tilt = math.radians(137.0)
    core.flight = Flight("moon", np.array([PARKING_RADIUS_M, 0.0, 0.0]),
                         speed * np.array([0.0, math.cos(tilt), math.sin(tilt)]), T_ORBIT)
    core.phase = "lunar_orbit"
    return Drive(core, T_ORBIT, ORBIT_STEP_S)


def impulse(params: dict[str, float] | None, burn: bool = True) -> Drive:
    """One step in which the operator's 20 m/s prograde impulse is applied (or not)."""
    d = in_orbit(params)
    if burn:
        d.deliver("command", {"op": "burn", "frame": "RTN", "delta_v_m_s": dict(PROGRADE_RTN),
                              "command_id": "b1"})
    d.step()
    return d


def finite(params: dict[str, float] | None) -> Drive:
    """The operator's 120 s full-thrust prograde finite burn, flown to its end."""
    d = in_orbit(params)
    d.deliver("command", {"op": "finite_burn", "frame": "RTN", "direction": {"y": 1.0},
                          "thrust_n": FULL_THRUST_N, "duration_s": FINITE_BURN_S,
                          "command_id": "f1"})
    d.until(lambda x: "commanded_burn" in x.names(), max_steps=2_000)
    return d


def flight(d: Drive) -> Flight:
    assert isinstance(d.core, OrbiterCore) and d.core.flight is not None
    return d.core.flight


def delivered_dv(params: dict[str, float] | None) -> Vec:
    """The delta-v vector the impulse gave: burnt minus unburnt, one step on."""
    dv: Vec = flight(impulse(params)).v_m_s - flight(impulse(None, burn=False)).v_m_s
    return dv


def rtn(r: Vec, v: Vec) -> Vec:
    """Rows R (radial), T (N x R, along-track), N (orbit normal), written here."""
    r_hat = r / np.linalg.norm(r)
    n_hat = np.cross(r, v) / np.linalg.norm(np.cross(r, v))
    return np.array([r_hat, np.cross(n_hat, r_hat), n_hat])


def angle_deg(a: Vec, b: Vec) -> float:
    return math.degrees(math.atan2(float(np.linalg.norm(np.cross(a, b))), float(a @ b)))


def exhaust_velocity_m_s(m0_kg: float, dv_m_s: float, used_kg: float) -> float:
    """The rocket equation solved for v_e: dv = v_e ln(m0 / (m0 - used))."""
    return dv_m_s / math.log(m0_kg / (m0_kg - used_kg))


# --- engine ---------------------------------------------------------------------------------


def test_isp_scale_spends_propellant_by_the_rocket_equation_with_the_scaled_exhaust_velocity(
        ) -> None:
    m0 = in_orbit().core.summary().mass_kg
    _, nominal = impulse(None).event("burn_end")
    v_e = exhaust_velocity_m_s(m0, nominal["dv_m_s"], nominal["propellant_kg"])
    _, low = impulse({"engine.isp_scale": 0.98}).event("burn_end")
    assert low["dv_m_s"] == pytest.approx(nominal["dv_m_s"], rel=REL_TOL)  # same delta-v
    assert low["propellant_kg"] == pytest.approx(
        m0 * (1.0 - math.exp(-low["dv_m_s"] / (0.98 * v_e))), rel=REL_TOL)


def test_thrust_scale_lengthens_a_finite_burn_by_its_inverse_for_the_same_delta_v() -> None:
    """Cut off on delta-v: t = m0 (1 - exp(-dv / v_e)) / mdot with mdot = F / v_e,
    so the same delta-v at 0.9 F takes 1 / 0.9 as long and the same propellant."""
    _, nominal = finite(None).event("commanded_burn")
    _, weak = finite({"engine.thrust_scale": 0.9}).event("commanded_burn")
    assert nominal["burn_s"] == pytest.approx(FINITE_BURN_S, rel=REL_TOL)
    assert weak["burn_s"] == pytest.approx(FINITE_BURN_S / 0.9, rel=REL_TOL)
    assert weak["dv_m_s"] == pytest.approx(nominal["dv_m_s"], rel=REL_TOL)
    assert weak["propellant_kg"] == pytest.approx(nominal["propellant_kg"], rel=REL_TOL)


def test_a_dispersed_burn_restored_mid_way_ends_at_the_same_cut_off() -> None:
    """The moved cut-off and the values given are state: a snapshot taken
    during the burn flies on to the same end, bit for bit."""
    params = {"engine.thrust_scale": 0.9, "burn.magnitude_error": -0.01}
    d = in_orbit(params)
    d.deliver("command", {"op": "finite_burn", "frame": "RTN", "direction": {"y": 1.0},
                          "thrust_n": FULL_THRUST_N, "duration_s": FINITE_BURN_S,
                          "command_id": "f1"})
    d.until_t(T_ORBIT + FINITE_BURN_S / 2.0)
    copy = OrbiterCore(SEED)
    copy.restore(orjson.loads(orjson.dumps(d.core.snapshot())))
    resumed = Drive(copy, d.t_s, d.dt_s)
    for drive in (d, resumed):
        drive.until(lambda x: "commanded_burn" in x.names(), max_steps=2_000)
    assert resumed.event("commanded_burn") == d.event("commanded_burn")


def test_isp_scale_on_a_finite_burn_follows_the_rocket_equation_too() -> None:
    m0 = in_orbit().core.summary().mass_kg
    _, nominal = finite(None).event("commanded_burn")
    v_e = exhaust_velocity_m_s(m0, nominal["dv_m_s"], nominal["propellant_kg"])
    _, high = finite({"engine.isp_scale": 1.02}).event("commanded_burn")
    assert high["dv_m_s"] == pytest.approx(nominal["dv_m_s"], rel=REL_TOL)
    assert high["propellant_kg"] == pytest.approx(
        m0 * (1.0 - math.exp(-high["dv_m_s"] / (1.02 * v_e))), rel=REL_TOL)


# --- burn execution ------------------------------------------------------------------------


def test_magnitude_error_makes_every_burn_deliver_one_per_cent_more() -> None:
    commanded = delivered_dv(None)
    assert float(np.linalg.norm(commanded)) == pytest.approx(20.0, abs=DV_TOL_M_S)
    got = delivered_dv({"burn.magnitude_error": 0.01})
    assert got == pytest.approx(1.01 * commanded, abs=DV_TOL_M_S)  # same direction
    _, nominal = finite(None).event("commanded_burn")
    _, long = finite({"burn.magnitude_error": 0.01}).event("commanded_burn")
    assert long["dv_m_s"] == pytest.approx(1.01 * nominal["dv_m_s"], rel=REL_TOL)


@pytest.mark.parametrize(("x_deg", "y_deg"), [(0.5, 0.0), (0.0, 0.5), (-0.3, 0.4)])
def test_pointing_error_turns_the_delta_v_by_the_angle_asked(x_deg: float, y_deg: float) -> None:
    """Turned about x then y, both perpendicular to the burn and to each other:
    cos(angle) = cos(x) cos(y). For a prograde burn x = T x N = R turns it
    towards +N (out of plane), y = T x R = -N towards +R (up)."""
    commanded = delivered_dv(None)
    got = delivered_dv({"burn.pointing_error_x_deg": x_deg, "burn.pointing_error_y_deg": y_deg})
    ax, ay = math.radians(x_deg), math.radians(y_deg)
    expected = math.degrees(math.acos(math.cos(ax) * math.cos(ay)))
    assert angle_deg(commanded, got) == pytest.approx(expected, abs=ANGLE_TOL_DEG)
    assert float(np.linalg.norm(got)) == pytest.approx(20.0, abs=DV_TOL_M_S)
    f = flight(in_orbit())
    r_part, _, n_part = rtn(f.r_m, f.v_m_s) @ got
    assert n_part == pytest.approx(20.0 * math.sin(ax), abs=DV_TOL_M_S)
    assert r_part == pytest.approx(20.0 * math.cos(ax) * math.sin(ay), abs=DV_TOL_M_S)


def test_pointing_error_tilts_a_finite_burn_out_of_the_orbit_plane() -> None:
    """A prograde burn turned 1 deg about the radial pushes sin(1 deg) of its
    delta-v across the plane while the speed grows from v0 to v0 + dv: the
    orbit normal turns by the integral of sin(1 deg) dv' / v', sin(1 deg) ln((v0 + dv) / v0)."""
    def normal(d: Drive) -> Vec:
        f = flight(d)
        h = np.cross(f.r_m, f.v_m_s)
        return np.asarray(h / np.linalg.norm(h))

    nominal, tilted = finite(None), finite({"burn.pointing_error_x_deg": 1.0})
    dv = nominal.event("commanded_burn")[1]["dv_m_s"]
    speed = math.sqrt(GM_MOON_M3_S2 / PARKING_RADIUS_M)
    expected = math.degrees(math.sin(math.radians(1.0)) * math.log((speed + dv) / speed))
    # 1 %: the burn's 120 s (6 deg) arc turns the thrust with the orbit
    assert angle_deg(normal(nominal), normal(tilted)) == pytest.approx(expected, rel=0.01)


# --- mass properties ------------------------------------------------------------------------


def test_mass_offsets_change_the_stack_and_its_load() -> None:
    nominal = OrbiterCore(SEED).summary()
    core = OrbiterCore(SEED)
    core.set_parameters({"dry_mass_offset_kg": 40.0, "propellant_offset_kg": -25.0})
    s = core.summary()
    assert nominal.mass_kg == pytest.approx(LAUNCH_MASS_KG)
    assert s.mass_kg == pytest.approx(LAUNCH_MASS_KG + 40.0 - 25.0)
    assert s.propellant_kg == pytest.approx(nominal.propellant_kg - 25.0)


def test_a_heavier_stack_spends_propellant_in_proportion_to_its_mass() -> None:
    """Same delta-v and v_e: used = m0 (1 - exp(-dv / v_e)) goes as m0."""
    offsets = {"dry_mass_offset_kg": 60.0, "propellant_offset_kg": 30.0}
    m_nominal = in_orbit().core.summary().mass_kg
    m_heavy = in_orbit(offsets).core.summary().mass_kg
    assert m_heavy == pytest.approx(m_nominal + 90.0)
    _, nominal = impulse(None).event("burn_end")
    _, heavy = impulse(offsets).event("burn_end")
    assert heavy["propellant_kg"] == pytest.approx(
        nominal["propellant_kg"] * m_heavy / m_nominal, rel=REL_TOL)


# --- injection ------------------------------------------------------------------------------

INJECTION = {"injection.position_error_radial_m": 1_000.0,
             "injection.position_error_along_m": -2_000.0,
             "injection.position_error_cross_m": 500.0,
             "injection.velocity_error_radial_m_s": 0.3,
             "injection.velocity_error_along_m_s": -1.2,
             "injection.velocity_error_cross_m_s": 0.7}


def separated(params: dict[str, float] | None) -> tuple[Vec, Vec]:
    """The orbiter's ECI state one short step after probe separation."""
    core = OrbiterCore(SEED)
    if params:
        core.set_parameters(params)
    d = Drive(core, T_SEP, SEP_STEP_S)
    d.deliver("command", {"op": "probe_separation", "loi_utc": LOI_UTC})
    d.step()
    assert "probe_separation" in d.names()
    f = core.flight
    assert f is not None and f.central == "earth"
    return np.array(f.r_m), np.array(f.v_m_s)


def test_the_injection_error_appears_in_the_separation_state_in_the_rtn_frame() -> None:
    r0, v0 = separated(None)
    r1, v1 = separated(INJECTION)
    basis = rtn(r0, v0)
    dr = np.array([INJECTION[f"injection.position_error_{a}_m"]
                   for a in ("radial", "along", "cross")])
    dv = np.array([INJECTION[f"injection.velocity_error_{a}_m_s"]
                   for a in ("radial", "along", "cross")])
    assert basis @ (v1 - v0) == pytest.approx(dv, abs=INJ_VEL_TOL_M_S)
    assert basis @ (r1 - r0) == pytest.approx(dr + dv * SEP_STEP_S, abs=INJ_POS_TOL_M)


def test_a_value_outside_the_vehicles_range_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"orbiter\.engine\.thrust_scale = 2\.0 is outside"):
        OrbiterCore(SEED).set_parameters({"engine.thrust_scale": 2.0})
    with pytest.raises(ParameterError, match=r"unknown parameter orbiter\.burn\.pointing_error_z"):
        OrbiterCore(SEED).set_parameters({"burn.pointing_error_z_deg": 0.1})


# --- the whole mission, dispersed ------------------------------------------------------------

#: A few parameters of each of the three vehicles, within what each could have.
DISPERSED = {
    "orbiter": {"engine.thrust_scale": 0.97, "engine.isp_scale": 0.99,
                "burn.magnitude_error": 0.003, "burn.pointing_error_x_deg": 0.1,
                "burn.pointing_error_y_deg": -0.1, "dry_mass_offset_kg": 10.0,
                "propellant_offset_kg": -10.0, "injection.velocity_error_along_m_s": 0.5,
                "injection.position_error_radial_m": 1_000.0},
    "ascender": {"engine.thrust_scale": 0.95, "engine.isp_scale": 0.99,
                 "dry_mass_offset_kg": 5.0},
    "reentry": {"atmosphere.density_scale": 1.1, "entry.fpa_error_deg": -0.1,
                "mass_offset_kg": 3.0},
}


@pytest.fixture(scope="module")
def dispersed_mission() -> SimLoop:
    cores: dict[str, VehicleCore] = {}
    for name in VEHICLES:
        module = importlib.import_module(f"services.{name}.vehicle")
        cores[name] = getattr(module, name.capitalize() + "Core")(SEED)
        if name in DISPERSED:
            cores[name].set_parameters(DISPERSED[name])
    loop = SimLoop(GroundCore(SEED, load_plan(None)), cores)
    loop.run()
    return loop


def _events(loop: SimLoop, name: str) -> list[dict[str, Any]]:
    return [dict(e.body) for e in loop.events if e.body["name"] == name]


@pytest.mark.slow
def test_a_dispersed_mission_still_lands_in_inner_mongolia(dispersed_mission: SimLoop) -> None:
    loop = dispersed_mission
    assert loop.ground.finished
    applied = {e.src: e.body["parameters"] for e in loop.events
               if e.body["name"] == "parameters_applied"}
    assert applied == {v: {f"{v}.{k}": x for k, x in p.items()} for v, p in DISPERSED.items()}
    (landing,) = _events(loop, "earth_landing")
    assert landing["in_zone"] and landing["sample_mass_g"] > 0.0
    miss = central_angle_rad(landing["lat_deg"], landing["lon_deg"], SIZIWANG_SEAT_LAT_DEG,
                             SIZIWANG_SEAT_LON_DEG) * EARTH_MEAN_RADIUS_M
    assert miss < SIZIWANG_REACH_M
    # the cruise corrections absorbed the injection error: captured as planned
    (loi,) = _events(loop, "lunar_orbit_insertion")
    assert loi["perilune_km"] == pytest.approx(200.0, abs=20.0)


@pytest.mark.slow
def test_the_tei_events_carry_the_propellant_left(dispersed_mission: SimLoop) -> None:
    """Left after TEI-2 = left after TEI-1 - what TEI-2 burnt (its burn_end)."""
    (tei1,), (tei2,) = _events(dispersed_mission, "tei_burn_1"), _events(dispersed_mission,
                                                                         "tei_burn_2")
    (burnt,) = [e for e in _events(dispersed_mission, "burn_end") if e["burn"] == "TEI-2"]
    assert tei2["propellant_kg"] == pytest.approx(tei1["propellant_kg"] - burnt["propellant_kg"],
                                                  rel=REL_TOL)
    assert 0.0 < tei2["propellant_kg"] < tei1["propellant_kg"]
