"""The descent guidance piece by piece, on constructed states (no whole flight).

Each test checks one rule descent.py states (module and function docstrings,
the config's fields) with the expected figure derived here from that rule:
the hazard map's radii, the safe-spot choice, the time-to-go search against
closed-form E-guidance profiles, the braking law in its curvilinear axes,
each phase's commanded acceleration, the throttle law, the phase changes at
their thresholds, the last free fall, propellant exhaustion and what a step
reports. Frames are built here from latitude and longitude (never with the
module's own ENU basis); gravity is the point mass of tests.authorities.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from services.dynamics.burns import Engine
from services.dynamics.guidance import ArcGravity, MoonRotation
from services.dynamics.guidance import descent as d
from services.dynamics.timescale import mission_s_from_utc
from tests.authorities import (
    GM_MOON_M3_S2,
    HOVER_HEIGHT_M,
    LANDER_ENGINE_THRUST_N,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)

Vec = NDArray[np.float64]

#: Powered descent start (reference timeline row 13).
T_S = mission_s_from_utc("2024-06-01T22:09:00Z")
ROTATION = MoonRotation.at(T_S)
R_SITE_M = R_MOON_M + LANDING_SITE_HEIGHT_M
#: The engine as the module states it: 7,500 N (authority), throttle floor
#: 1,500 N, exhaust velocity 3,100 m/s; dry mass 1,500 kg.
MIN_THRUST_N, V_E_M_S, DRY_KG = 1_500.0, 3_100.0, 1_500.0
ENGINE = Engine(LANDER_ENGINE_THRUST_N, V_E_M_S, MIN_THRUST_N)
#: Config with every field a test relies on spelled out (the module's stated
#: values: gate 2.5 km up, 4 km uprange, 60 m/s down and 40 m/s sinking;
#: hover 20 s at 100 m; cut-off at 2 m; rates 1.5 then 1 m/s below 10 m).
CFG = d.DescentConfig(
    rotation=ROTATION, engine=ENGINE, dry_mass_kg=DRY_KG, seed=6,
    gate_height_m=2_500.0, gate_uprange_m=4_000.0, gate_velocity_m_s=(60.0, -40.0),
    hover_height_m=HOVER_HEIGHT_M, hover_hold_s=20.0, avoidance_end_height_m=30.0,
    avoidance_speed_m_s=2.0, descent_rate_m_s=1.5, final_rate_m_s=1.0,
    final_rate_below_m=10.0, cutoff_height_m=2.0, footprint_radius_m=4.0, substep_s=0.2,
)  # fmt: skip
MASS_KG = 2_000.0

ACCEL_TOL_M_S2 = 1e-9
TIME_TOL_S = 1e-6
POSITION_TOL_M = 1e-3
#: The time-to-go search must land within half a per cent above the shortest
#: feasible t_go (0.5 s of a ~100 s approach: fewer than three 0.2 s cycles).
TGO_REL_TOL = 0.005


def _site_enu() -> Vec:
    """Rows east, north, up at the site, Moon-fixed axes (spherical Moon)."""
    lat, lon = math.radians(LANDING_SITE_LAT_DEG), math.radians(LANDING_SITE_LON_DEG)
    return np.array([
        [-math.sin(lon), math.cos(lon), 0.0],
        [-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)],
        [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)],
    ])  # fmt: skip


ENU = _site_enu()
SITE_F = R_SITE_M * ENU[2]


def _g(r: Vec) -> Vec:
    """Point-mass lunar gravity at ``r`` (Moon-centred)."""
    rn = float(np.linalg.norm(r))
    result: Vec = -GM_MOON_M3_S2 * r / rn**3
    return result


def _near_site(p_enu: tuple[float, float, float], v_enu: tuple[float, float, float],
               phase: str, mass_kg: float = MASS_KG, **fields: object) -> d.DescentState:
    """A vehicle at ``p_enu`` from the site (metres east, north, up) moving at
    ``v_enu`` over the ground, as a state in MCI at T_S, 5 s into its phase."""
    r_f = SITE_F + ENU.T @ np.array(p_enu)
    r, v = ROTATION.mci_state(r_f, ENU.T @ np.array(v_enu), T_S)
    return d.DescentState(T_S, r, v, mass_kg, phase, T_S - 5.0, T_S - 800.0,
                          **fields)  # type: ignore[arg-type]


def _flat(p_enu: tuple[float, float, float], u_enu: tuple[float, float, float], phase: str,
          **fields: object) -> tuple[d.DescentState, d._Local]:
    """The same seen in a frame where MCI, Moon-fixed and site ENU axes coincide
    and the site sits at (0, 0, R_SITE_M): gravity is then ``_g`` of the
    position, and the commanded accelerations come out in ENU as they are."""
    r = np.array([p_enu[0], p_enu[1], R_SITE_M + p_enu[2]])
    u = np.array(u_enu, dtype=np.float64)
    height = float(np.linalg.norm(r)) - R_SITE_M
    loc = d._Local(np.eye(3), r, u, np.eye(3), np.array(p_enu, dtype=np.float64), u, height)
    state = d.DescentState(T_S, r, u, MASS_KG, phase, T_S - 5.0, T_S - 800.0,
                           **fields)  # type: ignore[arg-type]
    return state, loc


# --- the hazard map and the safe spot ------------------------------------------


def test_hazard_radii_span_the_documented_1_to_8_m() -> None:
    radii = [h.radius_m for seed in range(50) for h in d.hazard_map(seed)]
    assert min(radii) >= 1.0 and max(radii) <= 8.0
    # 50 maps of tens of hazards cover the band: both ends within 0.1 m.
    assert min(radii) < 1.1 and max(radii) > 7.9


def test_with_no_hazard_the_site_itself_is_chosen() -> None:
    assert d.choose_safe_spot((), 4.0) == (0.0, 0.0)


def test_a_point_exactly_two_footprints_from_a_rim_is_safe() -> None:
    # A 1 m boulder on the site: the grid points 9 m away clear its rim by
    # exactly 8 m = two 4 m footprints, "at least two footprints": safe.
    east, north = d.choose_safe_spot((d.Hazard(0.0, 0.0, 1.0),), 4.0)
    assert math.hypot(east, north) == 9.0


def test_with_no_safe_point_the_largest_clearance_in_the_scan_disc_is_chosen() -> None:
    # A 45 m crater centred 10 m west: inside the 40 m scan disc the clearance
    # |p - (-10, 0)| - 45 is largest, 5 m (< 8 m: nothing is safe), at (40, 0)
    # alone. Outside the disc, the square's corner (40, 40) is 19 m clear: a
    # scan that reached past 40 m would find it safe.
    spot = d.choose_safe_spot((d.Hazard(-10.0, 0.0, 45.0),), 4.0)
    assert spot == (40.0, 0.0)


def test_the_chosen_spot_lies_on_the_grid_asked_for() -> None:
    # On a 2 m grid the points clear of a 1 m boulder by 8 m are >= 9 m from
    # it: the nearest have 4 (a^2 + b^2) = 100 (e.g. (0, 10), (6, 8)).
    east, north = d.choose_safe_spot((d.Hazard(0.0, 0.0, 1.0),), 4.0, grid_m=2.0)
    assert east % 2.0 == 0.0 and north % 2.0 == 0.0
    assert math.hypot(east, north) == 10.0


# --- the approach's time-to-go search ------------------------------------------

NO_GRAVITY = ArcGravity(np.zeros(3))
ORIGIN = np.zeros(3)


def _no_burn(accel_m_s2: float) -> d._AccelLimit:
    return d._AccelLimit(accel_m_s2, 3_000.0, 0.0, 1_500.0)


@pytest.mark.parametrize("distance_m", [150.0, 1_000.0, 2_345.0, 7_000.0])
def test_tgo_rest_to_rest_is_the_shortest_whose_peak_fits(distance_m: float) -> None:
    # Linear acceleration a0 -> af moving D from rest to rest: a0 = 6 D / T^2 =
    # -af, so the shortest T with |a| <= A everywhere is sqrt(6 D / A).
    accel = 2.0
    shortest = math.sqrt(6.0 * distance_m / accel)
    tgo = d._shortest_feasible_tgo(ORIGIN, ORIGIN, NO_GRAVITY, np.array([distance_m, 0.0, 0.0]),
                                   ORIGIN, _no_burn(accel))
    assert shortest <= tgo <= shortest * (1.0 + TGO_REL_TOL)


@pytest.mark.parametrize("speed_m_s", [30.0, 50.0, 77.0])
def test_tgo_to_stop_where_it_is_fits_the_first_instant(speed_m_s: float) -> None:
    # From v0 to rest at the present position: a0 = -4 v0 / T, af = 2 v0 / T;
    # the start needs most, so the shortest T is 4 v0 / A.
    accel = 1.5
    shortest = 4.0 * speed_m_s / accel
    tgo = d._shortest_feasible_tgo(ORIGIN, np.array([0.0, speed_m_s, 0.0]), NO_GRAVITY, ORIGIN,
                                   ORIGIN, _no_burn(accel))
    assert shortest <= tgo <= shortest * (1.0 + TGO_REL_TOL)


def test_tgo_counts_the_thrust_gained_as_propellant_burns() -> None:
    # From rest to V in place: a0 = -2 V / T, af = 4 V / T; the end needs most,
    # and by then the vehicle is lighter (m - q T): the fixed thrust gives
    # A m / (m - q T). The shortest T solves 4 V (m - q T) = A m T.
    accel, mass, flow, speed = 2.0, 3_000.0, 2.0, 50.0
    shortest = 4.0 * speed * mass / (accel * mass + 4.0 * speed * flow)  # 93.75 s
    limit = d._AccelLimit(accel, mass, flow, 1_500.0)
    tgo = d._shortest_feasible_tgo(ORIGIN, ORIGIN, NO_GRAVITY, ORIGIN,
                                   np.array([0.0, 0.0, speed]), limit)
    assert shortest <= tgo <= shortest * (1.0 + TGO_REL_TOL)


def test_tgo_for_a_target_in_reach_at_once_is_a_couple_of_seconds() -> None:
    # 10 cm from rest to rest with 2 m/s^2 fits in 0.55 s: the search must not
    # answer a long time-to-go for it.
    tgo = d._shortest_feasible_tgo(ORIGIN, ORIGIN, NO_GRAVITY, np.array([0.1, 0.0, 0.0]),
                                   ORIGIN, _no_burn(2.0))
    assert math.sqrt(6.0 * 0.1 / 2.0) <= tgo <= 2.5


# --- the braking law -----------------------------------------------------------


def _uprange(arc_m: float, height_m: float, v_down_m_s: float, v_cross_m_s: float,
             v_up_m_s: float) -> tuple[Vec, Vec, Vec, Vec, Vec]:
    """A vehicle ``arc_m`` of site-radius arc uprange of the site (coming from
    the south), ``height_m`` above the site's radius, moving ``v_down_m_s``
    toward the site, ``v_cross_m_s`` across, ``v_up_m_s`` up (Moon-fixed).
    Returns r_f, v_f and the downrange, crossrange, up unit vectors
    (right-handed: crossrange = up x downrange)."""
    theta = arc_m / R_SITE_M
    s_hat, e_hat = ENU[2], ENU[1]
    up = math.cos(theta) * s_hat - math.sin(theta) * e_hat
    down = math.sin(theta) * s_hat + math.cos(theta) * e_hat
    cross = np.cross(up, down)
    v_f = v_down_m_s * down + v_cross_m_s * cross + v_up_m_s * up
    return (R_SITE_M + height_m) * up, v_f, down, cross, up


def _braking_law(arc_m: float, height_m: float, v_down_m_s: float, v_cross_m_s: float,
                 v_up_m_s: float) -> tuple[float, Vec]:
    """The module docstring's braking law, written out: downrange a constant
    deceleration to the gate speed at the gate, t_go = 2 d / (v + v_f), with the
    downrange distance and speed measured along the arc at the site's radius;
    crossrange and vertical kinematic E-guidance (6 ZEM / t^2 - 2 ZEV / t) to
    the gate over that t_go, the engine also cancelling gravity less the
    centrifugal relief v_h^2 / r of the true horizontal speed."""
    _, _, down, cross, up = _uprange(arc_m, height_m, v_down_m_s, v_cross_m_s, v_up_m_s)
    r = R_SITE_M + height_m
    v_arc = v_down_m_s * R_SITE_M / r
    dist = arc_m - CFG.gate_uprange_m
    v_gate, vz_gate = CFG.gate_velocity_m_s
    tgo = 2.0 * dist / (v_arc + v_gate)
    a_down = (v_gate**2 - v_arc**2) / (2.0 * dist)
    zem_c, zev_c = -v_cross_m_s * tgo, -v_cross_m_s
    zem_z, zev_z = CFG.gate_height_m - (height_m + v_up_m_s * tgo), vz_gate - v_up_m_s
    a_cross = 6.0 * zem_c / tgo**2 - 2.0 * zev_c / tgo
    net_gravity_up = -GM_MOON_M3_S2 / r**2 + (v_down_m_s**2 + v_cross_m_s**2) / r
    a_up = max(6.0 * zem_z / tgo**2 - 2.0 * zev_z / tgo - net_gravity_up, 0.0)
    return tgo, a_down * down + a_cross * cross + a_up * up


@pytest.mark.parametrize(("arc_m", "height_m", "v_down", "v_cross", "v_up"), [
    (64_000.0, 5_000.0, 600.0, 5.0, -20.0),
    (24_000.0, 3_200.0, 250.0, -3.0, -35.0),
])
def test_braking_flies_the_documented_law_in_curvilinear_axes(
        arc_m: float, height_m: float, v_down: float, v_cross: float, v_up: float) -> None:
    r_f, v_f, *_ = _uprange(arc_m, height_m, v_down, v_cross, v_up)
    loc = d._Local(np.eye(3), r_f, v_f, ENU, np.zeros(3), np.zeros(3), height_m)
    tgo, accel = d._braking_accel_fixed(loc, CFG, SITE_F, MASS_KG)
    tgo_law, accel_law = _braking_law(arc_m, height_m, v_down, v_cross, v_up)
    assert tgo == pytest.approx(tgo_law, abs=TIME_TOL_S)
    np.testing.assert_allclose(accel, accel_law, rtol=0.0, atol=ACCEL_TOL_M_S2)


def test_braking_time_to_go_is_remembered_as_time_left() -> None:
    # After one 0.2 s guidance cycle the state's t_go is the law's t_go at the
    # start less the 0.2 s flown.
    arc_m, height_m, v_down = 64_000.0, 5_000.0, 600.0
    r_f, v_f, *_ = _uprange(arc_m, height_m, v_down, 0.0, 0.0)
    r, v = ROTATION.mci_state(r_f, v_f, T_S)
    state = d.DescentState(T_S, r, v, MASS_KG, "braking", T_S - 300.0, T_S - 300.0)
    after, _, _ = d._substep(state, 0.2, CFG, ENU, SITE_F, [])
    tgo_law, _ = _braking_law(arc_m, height_m, v_down, 0.0, 0.0)
    assert after.phase == "braking"
    assert after.tgo_s == pytest.approx(tgo_law - 0.2, abs=TIME_TOL_S)


# --- each phase's commanded acceleration (engine's share, ENU) -------------------


def test_approach_is_e_guidance_to_the_hover_point_on_the_time_left() -> None:
    # E-guidance to rest 100 m above the site with t_go = 1.5 s left (the
    # approach's last second and a half), under point-mass gravity.
    p, u, tgo = (30.0, -20.0, 160.0), (-2.0, 1.0, -3.0), 1.5
    state, loc = _flat(p, u, "approach", tgo_s=tgo)
    g = _g(loc.r_f)
    zem = np.array([0.0, 0.0, HOVER_HEIGHT_M]) - (np.array(p) + np.array(u) * tgo
                                                  + 0.5 * g * tgo**2)
    zev = -(np.array(u) + g * tgo)
    _, accel = d._thrust_accel_enu(state, loc, CFG, SITE_F, 0.0)
    e_guidance = 6.0 * zem / tgo**2 - 2.0 * zev / tgo
    np.testing.assert_allclose(accel, e_guidance, rtol=0.0, atol=ACCEL_TOL_M_S2)


def test_hover_holds_still_over_the_site() -> None:
    state, loc = _flat((0.0, 0.0, HOVER_HEIGHT_M), (0.0, 0.0, 0.0), "hover")
    _, accel = d._thrust_accel_enu(state, loc, CFG, SITE_F, 0.0)
    np.testing.assert_allclose(accel, -_g(loc.r_f), rtol=0.0, atol=ACCEL_TOL_M_S2)


@pytest.mark.parametrize(("height_m", "rate_m_s"), [(50.0, 1.5), (11.0, 1.5), (5.0, 1.0)])
def test_vertical_descent_holds_1_5_m_s_then_1_m_s_below_10_m(height_m: float,
                                                               rate_m_s: float) -> None:
    # Over the aim and sinking at the stated rate: the engine only carries the weight.
    state, loc = _flat((3.0, -4.0, height_m), (0.0, 0.0, -rate_m_s), "vertical_descent",
                       aim_en_m=(3.0, -4.0))
    _, accel = d._thrust_accel_enu(state, loc, CFG, SITE_F, 0.0)
    np.testing.assert_allclose(accel, -_g(loc.r_f), rtol=0.0, atol=ACCEL_TOL_M_S2)


def test_hover_returns_to_its_point_without_overshoot() -> None:
    # The terminal loops are a P position loop inside a P velocity loop:
    # x'' = kv (kp (x_t - x) - x'), characteristic s^2 + kv s + kv kp, damping
    # ratio sqrt(kv / (4 kp)); the module states kp <= kv / 4 ("well damped",
    # no overshoot). 2 m east of the hover point at rest (inside the 1 m/s cap).
    dt = 0.02
    east, u_east = 2.0, 0.0
    for _ in range(int(40.0 / dt)):
        state, loc = _flat((east, 0.0, HOVER_HEIGHT_M), (u_east, 0.0, 0.0), "hover")
        _, accel = d._thrust_accel_enu(state, loc, CFG, SITE_F, 0.0)
        u_east += float(accel[0] + _g(loc.r_f)[0]) * dt
        east += u_east * dt
        assert east > -1e-6  # never past the hover point
    assert east < 0.01


def test_avoidance_moves_at_the_avoidance_speed_and_no_faster() -> None:
    # Fly the avoidance's command as a point mass from rest at the hover point
    # to an aim 17 m east, 6 m north (seed 6's spot): the horizontal speed
    # reaches the configured 2 m/s and never exceeds it; it ends on the aim.
    aim, dt = (17.0, 6.0), 0.02
    p, u = np.array([0.0, 0.0, HOVER_HEIGHT_M]), np.zeros(3)
    speeds = []
    for _ in range(int(60.0 / dt)):
        state, loc = _flat((p[0], p[1], p[2]), (u[0], u[1], u[2]), "avoidance", aim_en_m=aim)
        _, accel = d._thrust_accel_enu(state, loc, CFG, SITE_F, 0.0)
        u = u + (accel + _g(loc.r_f)) * dt
        p = p + u * dt
        speeds.append(math.hypot(u[0], u[1]))
    assert max(speeds) <= CFG.avoidance_speed_m_s + 1e-9
    assert max(speeds) > 0.99 * CFG.avoidance_speed_m_s
    assert math.hypot(p[0] - aim[0], p[1] - aim[1]) < 0.05


# --- the throttle ------------------------------------------------------------


@pytest.mark.parametrize(("accel", "thrust_n"), [
    ((0.0, 0.0, 1.0), 2_000.0),  # |a| m = 2,000 N: inside the range
    ((0.3, -0.4, 1.2), 2_600.0),  # |a| = 1.3
    ((0.0, 0.6, 0.0), MIN_THRUST_N),  # 1,200 N asked: the engine's floor
    ((3.0, 0.0, 4.0), LANDER_ENGINE_THRUST_N),  # 10,000 N asked: full thrust
])
def test_a_lit_engine_gives_the_asked_thrust_within_its_range(accel: tuple[float, ...],
                                                             thrust_n: float) -> None:
    a = np.array(accel)
    thrust, direction = d._limit_thrust(a, MASS_KG, ENGINE, True)
    assert thrust == pytest.approx(thrust_n, rel=1e-12)
    np.testing.assert_allclose(direction, a / np.linalg.norm(a), rtol=0.0, atol=1e-12)


@pytest.mark.parametrize(("accel", "lit"), [((0.0, 0.0, 0.0), True), ((0.0, 0.0, 0.0), False),
                                            ((1.0, 2.0, 2.0), False)])
def test_no_thrust_asked_or_the_engine_off_gives_zero_thrust(accel: tuple[float, ...],
                                                            lit: bool) -> None:
    thrust, direction = d._limit_thrust(np.array(accel), MASS_KG, ENGINE, lit)
    assert thrust == 0.0
    assert float(np.linalg.norm(direction)) == pytest.approx(1.0, abs=1e-12)  # still a direction


# --- phase changes at their thresholds -------------------------------------------


def _transition(state: d.DescentState, loc: d._Local) -> tuple[d.DescentState, list[str]]:
    events: list[str] = []
    return d._transition(state, loc, CFG, 0.0, events), events


@pytest.mark.parametrize(("tgo_s", "phase"), [(2.0, "approach"), (2.05, "braking")])
def test_braking_ends_when_its_time_to_go_is_down_to_2_s(tgo_s: float, phase: str) -> None:
    state, loc = _flat((0.0, -4_000.0, 2_500.0), (0.0, 60.0, -40.0), "braking", tgo_s=tgo_s)
    after, events = _transition(state, loc)
    assert after.phase == phase
    if phase == "approach":
        assert events == ["approach_start"] and after.phase_start_s == T_S
        assert 0.0 < after.tgo_s < math.inf  # the approach's own time-to-go


@pytest.mark.parametrize(("tgo_s", "phase"), [(1.0, "hover"), (1.05, "approach")])
def test_approach_ends_when_its_time_to_go_is_down_to_1_s(tgo_s: float, phase: str) -> None:
    state, loc = _flat((0.0, 0.0, 100.5), (0.0, 0.0, -0.5), "approach", tgo_s=tgo_s)
    after, events = _transition(state, loc)
    assert after.phase == phase
    assert events == (["hover_start"] if phase == "hover" else [])


@pytest.mark.parametrize(("held_s", "phase"), [(20.0, "avoidance"), (19.8, "hover")])
def test_hover_lasts_the_hold_then_aims_at_a_safe_spot(held_s: float, phase: str) -> None:
    state, loc = _flat((0.0, 0.0, 100.0), (0.0, 0.0, 0.0), "hover")
    state = replace(state, t_s=1_000.0, phase_start_s=1_000.0 - held_s)  # exact differences
    after, events = _transition(state, loc)
    assert after.phase == phase
    if phase == "avoidance":
        assert events == ["avoidance_start"]
        east, north = after.aim_en_m
        clearance = min(math.hypot(east - h.east_m, north - h.north_m) - h.radius_m
                        for h in d.hazard_map(CFG.seed))
        assert clearance >= 2.0 * CFG.footprint_radius_m and math.hypot(east, north) <= 40.0


@pytest.mark.parametrize(("offset_m", "speed_m_s", "phase"), [
    (0.45, 0.15, "vertical_descent"),  # within 0.5 m, slower than 0.2 m/s
    (0.6, 0.0, "avoidance"),  # still too far
    (0.0, 0.25, "avoidance"),  # on the spot, still moving
    (0.3, 1.0, "avoidance"),
])
def test_avoidance_hands_over_within_0_5_m_and_0_2_m_s(offset_m: float, speed_m_s: float,
                                                       phase: str) -> None:
    state, loc = _flat((17.0 + offset_m, 6.0, 30.0), (0.0, -speed_m_s, 0.0), "avoidance",
                       aim_en_m=(17.0, 6.0))
    after, events = _transition(state, loc)
    assert after.phase == phase
    assert events == (["vertical_descent_start"] if phase == "vertical_descent" else [])


@pytest.mark.parametrize(("height_m", "phase"), [(2.0, "free_fall"), (2.01, "vertical_descent")])
def test_engine_cut_at_2_m(height_m: float, phase: str) -> None:
    state, loc = _flat((0.0, 0.0, 5.0), (0.0, 0.0, -1.0), "vertical_descent")
    loc = replace(loc, height_m=height_m)
    after, events = _transition(state, loc)
    assert after.phase == phase
    assert events == (["engine_cutoff"] if phase == "free_fall" else [])


# --- the last free fall and the surface --------------------------------------------


@pytest.mark.parametrize(("height_m", "v_enu", "substep_s"), [
    (0.3, (0.3, -0.4, -2.5), 0.2),  # the last sub-step of a fall from the cut-off
    (0.1, (0.0, 0.2, -0.3), 0.5),  # a slow contact: v^2 + 2 g z < 1 (m/s)^2
])
def test_free_fall_lands_where_and_when_constant_gravity_says(
        height_m: float, v_enu: tuple[float, float, float], substep_s: float) -> None:
    cfg = replace(CFG, substep_s=substep_s)
    state = _near_site((0.0, 0.0, height_m), v_enu, "free_fall")
    g = GM_MOON_M3_S2 / (R_SITE_M + height_m) ** 2
    vz = v_enu[2]
    t_hit = (vz + math.sqrt(vz * vz + 2.0 * g * height_m)) / g  # z + vz t - g t^2 / 2 = 0
    events: list[str] = []
    landed, thrust, direction = d._substep(state, substep_s, cfg, ENU, SITE_F, events)
    assert landed.phase == "landed" and events == ["touchdown"]
    assert (thrust, direction.shape) == (0.0, (3,)) and not direction.any()
    assert landed.phase_start_s == pytest.approx(T_S + t_hit, abs=TIME_TOL_S)
    assert landed.touchdown_v_m_s == pytest.approx((-(vz - g * t_hit), math.hypot(*v_enu[:2])),
                                                   abs=1e-6)
    assert landed.landed_fixed_m is not None
    drift = SITE_F + ENU.T @ np.array([v_enu[0] * t_hit, v_enu[1] * t_hit, 0.0])
    expected = drift * R_SITE_M / float(np.linalg.norm(drift))  # on the site's sphere
    np.testing.assert_allclose(landed.landed_fixed_m, expected, rtol=0.0, atol=POSITION_TOL_M)


def test_the_step_of_the_touchdown_ends_at_rest_on_the_turning_moon() -> None:
    # From the 2 m cut-off sinking at 1 m/s: touchdown after
    # (-1 + sqrt(1 + 2 g 2)) / g, at sqrt(1 + 2 g 2) m/s; the 2 s step ends
    # with the lander at rest on the ground at the step's end.
    state = _near_site((0.0, 0.0, 2.0), (0.0, 0.0, -1.0), "free_fall")
    g = GM_MOON_M3_S2 / R_SITE_M**2
    t_hit = (-1.0 + math.sqrt(1.0 + 4.0 * g)) / g
    landed, out = d.step(state, 2.0, CFG)
    assert landed.phase == "landed" and out.events == ("touchdown",)
    assert landed.phase_start_s == pytest.approx(T_S + t_hit, abs=1e-3)
    assert landed.touchdown_v_m_s is not None
    assert landed.touchdown_v_m_s[0] == pytest.approx(math.sqrt(1.0 + 4.0 * g), abs=1e-3)
    assert landed.t_s == out.t_s == T_S + 2.0
    assert (out.thrust_n, out.throttle) == (0.0, 0.0)
    assert out.altitude_m == pytest.approx(0.0, abs=POSITION_TOL_M)
    np.testing.assert_allclose(landed.landed_fixed_m or (), SITE_F, rtol=0.0, atol=POSITION_TOL_M)
    # At rest on the surface: the Moon-fixed point carried by the spin.
    r_f, v_f = ROTATION.fixed_state(landed.r_mci_m, landed.v_mci_m_s, landed.t_s)
    np.testing.assert_allclose(r_f, SITE_F, rtol=0.0, atol=POSITION_TOL_M)
    np.testing.assert_allclose(v_f, np.zeros(3), rtol=0.0, atol=1e-9)


# --- propellant exhaustion ----------------------------------------------------------


def test_a_cycle_that_would_burn_more_than_is_left_cuts_the_engine() -> None:
    # Hovering takes ~m g = 2,437 N: 0.157 kg in a 0.2 s cycle; 50 g are left.
    state = _near_site((0.0, 0.0, HOVER_HEIGHT_M), (0.0, 0.0, 0.0), "hover",
                       mass_kg=DRY_KG + 0.05)
    after, out = d.step(state, 0.2, CFG)
    assert out.events == ("propellant_exhausted", "engine_cutoff")
    assert after.phase == out.phase == "free_fall"
    assert out.thrust_n == 0.0 and after.mass_kg == DRY_KG + 0.05
    assert out.propellant_kg == pytest.approx(0.05, abs=1e-12)
    # Coasting: it starts to fall at g.
    _, v_f = ROTATION.fixed_state(after.r_mci_m, after.v_mci_m_s, after.t_s)
    g = GM_MOON_M3_S2 / (R_SITE_M + HOVER_HEIGHT_M) ** 2
    assert float(v_f @ ENU[2]) == pytest.approx(-g * 0.2, abs=1e-4)


def test_a_cycle_with_enough_propellant_burns_it() -> None:
    # 0.5 kg left covers the 0.157 kg of a hover cycle.
    mass = DRY_KG + 0.5
    state = _near_site((0.0, 0.0, HOVER_HEIGHT_M), (0.0, 0.0, 0.0), "hover", mass_kg=mass)
    after, out = d.step(state, 0.2, CFG)
    weight_n = mass * GM_MOON_M3_S2 / (R_SITE_M + HOVER_HEIGHT_M) ** 2
    assert out.events == () and after.phase == "hover"
    assert out.thrust_n == pytest.approx(weight_n, rel=1e-9)
    assert after.mass_kg == pytest.approx(mass - weight_n * 0.2 / V_E_M_S, abs=1e-9)


# --- what a step reports ---------------------------------------------------------------


def test_a_step_reports_the_state_it_ends_in() -> None:
    state = _near_site((0.0, 0.0, HOVER_HEIGHT_M), (0.0, 0.0, 0.0), "hover")
    after, out = d.step(state, 0.2, CFG)
    weight_n = MASS_KG * GM_MOON_M3_S2 / (R_SITE_M + HOVER_HEIGHT_M) ** 2
    assert (out.t_s, out.phase, out.events) == (T_S + 0.2, "hover", ())
    assert out.thrust_n == pytest.approx(weight_n, rel=1e-9)
    assert out.throttle == pytest.approx(weight_n / LANDER_ENGINE_THRUST_N, rel=1e-9)
    # Straight up: along the radius, in MCI.
    up_mci = state.r_mci_m / float(np.linalg.norm(state.r_mci_m))
    assert out.thrust_dir_mci.shape == (3,)
    assert float(out.thrust_dir_mci @ up_mci) == pytest.approx(1.0, abs=1e-12)
    assert out.altitude_m == pytest.approx(float(np.linalg.norm(after.r_mci_m)) - R_SITE_M,
                                           abs=1e-9)
    assert out.altitude_m == pytest.approx(HOVER_HEIGHT_M, abs=0.01)
    assert out.propellant_kg == pytest.approx(after.mass_kg - DRY_KG, abs=1e-9)


@pytest.mark.parametrize("dt_s", [0.3, 0.5, 1.3])
def test_a_step_ends_at_its_own_length(dt_s: float) -> None:
    state = _near_site((0.0, 0.0, HOVER_HEIGHT_M), (0.0, 0.0, 0.0), "hover")
    after, out = d.step(state, dt_s, CFG)
    assert after.t_s == pytest.approx(T_S + dt_s, abs=1e-9) and out.t_s == after.t_s


def test_a_zero_step_changes_nothing_and_holds_no_thrust() -> None:
    state = _near_site((0.0, 0.0, HOVER_HEIGHT_M), (0.0, 0.0, 0.0), "hover")
    after, out = d.step(state, 0.0, CFG)
    assert after == state and np.array_equal(after.r_mci_m, state.r_mci_m)
    assert (out.t_s, out.thrust_n, out.throttle, out.events) == (T_S, 0.0, 0.0, ())
    assert out.thrust_dir_mci.shape == (3,) and not out.thrust_dir_mci.any()


def test_a_negative_step_is_refused() -> None:
    state = _near_site((0.0, 0.0, HOVER_HEIGHT_M), (0.0, 0.0, 0.0), "hover")
    with pytest.raises(ValueError, match=r"^dt_s must be >= 0, got -1\.0$"):
        d.step(state, -1.0, CFG)


def test_ignition_is_reported_once_by_the_first_step() -> None:
    r_f, v_f, *_ = _uprange(400_000.0, 15_000.0, 1_690.0, 0.0, 0.0)
    r, v = ROTATION.mci_state(r_f, v_f, T_S)
    state = d.DescentState.at_ignition(T_S, r, v, 3_200.0)
    first, out1 = d.step(state, 1.0, CFG)
    _, out2 = d.step(first, 1.0, CFG)
    assert out1.events == ("ignition",) and out2.events == ()
    assert out1.phase == out2.phase == "braking"


def test_config_refusal_says_the_rule_and_the_values() -> None:
    with pytest.raises(ValueError, match=(
            r"^need hover_height_m > avoidance_end_height_m > cutoff_height_m > 0, "
            r"got 100\.0, 30\.0, 0\.0$")):
        d.DescentConfig(rotation=ROTATION, cutoff_height_m=0.0)
