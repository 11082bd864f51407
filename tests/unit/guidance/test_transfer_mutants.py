"""Edges of the transfer guidance that the flight-shaped tests leave open.

Each test pins a behaviour the mutation run (docs/mutation-survivors.md) found
unchecked: timing on a hyperbola far from perilune, an orbit already in the
target plane, a descent-orbit-lowering burn due at once, a hyperbolic Lambert
arc, the cost of the phasing burns, the finite capture's apolune, the end of
the ascent's vertical rise. Expected values come from the two-body closed
forms (vis-viva, Kepler's equation for the hyperbola, Hohmann) or from each
function's documented contract, never from the code under test.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from services.dynamics import frames
from services.dynamics.burns import Engine
from services.dynamics.guidance import MoonRotation, loi
from services.dynamics.guidance import ascent as ag
from services.dynamics.guidance import rendezvous as rz
from services.dynamics.kepler import Elements, elements_from_rv, rv_from_elements
from services.dynamics.timescale import mission_s_from_utc
from tests.authorities import (
    GM_MOON_M3_S2,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)

MU = GM_MOON_M3_S2
Vec = np.ndarray

#: The LOI tests' approach (test_loi.py): 850 m/s at infinity, 200 km perilune.
V_INF_M_S = 850.0
RP_HYP_M = R_MOON_M + 200e3
A_HYP_M = -MU / V_INF_M_S**2
E_HYP = 1.0 + RP_HYP_M * V_INF_M_S**2 / MU
#: Kepler's equation is solved to rounding; a millisecond is ~1e-8 of the times here.
TIME_TOL_S = 1e-3
DV_TOL_M_S = 1e-6


def _vis_viva_m_s(r_m: float, a_m: float) -> float:
    return math.sqrt(MU * (2.0 / r_m - 1.0 / a_m))


# --- time_to_true_anomaly_s on a hyperbola ------------------------------------


def _on_the_hyperbola(radius_m: float, inbound: bool) -> tuple[Vec, Vec, float]:
    """State at ``radius_m`` on the approach hyperbola and its hyperbolic anomaly
    H (r = a (1 - e cosh H), a < 0; tan(nu/2) = sqrt((e+1)/(e-1)) tanh(H/2))."""
    h_anom = math.acosh((1.0 - radius_m / A_HYP_M) / E_HYP) * (-1.0 if inbound else 1.0)
    nu = 2.0 * math.atan(math.sqrt((E_HYP + 1.0) / (E_HYP - 1.0)) * math.tanh(h_anom / 2.0))
    r, v = rv_from_elements(Elements(A_HYP_M, E_HYP, math.radians(120.0), 0.3, 0.5, nu), MU)
    return r, v, h_anom


def test_time_to_perilune_from_far_out_on_the_hyperbola_is_keplers() -> None:
    """At 60,000 km the mean anomaly still to go (hyperbolic Kepler equation,
    M = e sinh H - H) is ~7 rad, more than a turn: a hyperbola has no period to
    take it modulo."""
    r, v, h_anom = _on_the_hyperbola(60_000e3, inbound=True)
    mean_anom = E_HYP * math.sinh(h_anom) - h_anom
    assert -mean_anom > 2.0 * math.pi
    n = math.sqrt(MU / (-A_HYP_M) ** 3)
    assert loi.time_to_true_anomaly_s(r, v, 0.0) == pytest.approx(-mean_anom / n, abs=TIME_TOL_S)


def test_a_perilune_already_passed_on_the_hyperbola_is_refused() -> None:
    r, v, _ = _on_the_hyperbola(20_000e3, inbound=False)
    with pytest.raises(ValueError,
                       match=r"^the target true anomaly is behind the vehicle on this hyperbola$"):
        loi.time_to_true_anomaly_s(r, v, 0.0)


@pytest.mark.parametrize("conic", ["hyperbola", "ellipse"])
def test_the_true_anomaly_the_vehicle_is_at_is_reached_now(conic: str) -> None:
    if conic == "hyperbola":
        r, v, _ = _on_the_hyperbola(20_000e3, inbound=True)
    else:
        r, v = rv_from_elements(Elements(R_MOON_M + 5_000e3, 0.6, 2.4, 0.3, 0.5, 2.0), MU)
    nu_now = elements_from_rv(r, v, MU).nu_rad
    assert loi.time_to_true_anomaly_s(r, v, nu_now) == 0.0


# --- plane_normal_over_site ------------------------------------------------------

POLE = np.array([0.0, 0.0, 1.0])


def _site(lat_rad: float, lon_rad: float) -> Vec:
    return np.array([math.cos(lat_rad) * math.cos(lon_rad),
                     math.cos(lat_rad) * math.sin(lon_rad), math.sin(lat_rad)])


def test_no_plane_of_a_lower_inclination_passes_over_a_higher_latitude() -> None:
    with pytest.raises(ValueError, match=r"^no orbit of this inclination passes over a site at "
                                         r"that latitude$"):
        loi.plane_normal_over_site(_site(math.radians(60.0), 0.3), POLE, math.radians(45.0))


@pytest.mark.parametrize("lon_rad", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("northbound", [True, False])
def test_a_site_at_the_inclinations_latitude_has_one_plane(lon_rad: float,
                                                          northbound: bool) -> None:
    """The site is the orbit's northernmost point: the plane through it with that
    inclination is unique, and the vehicle crosses the site due east."""
    inc = math.radians(45.0)
    site = _site(inc, lon_rad)
    n = loi.plane_normal_over_site(site, POLE, inc, northbound=northbound)
    assert float(np.linalg.norm(n)) == pytest.approx(1.0, abs=1e-12)
    assert float(n @ POLE) == pytest.approx(math.cos(inc), abs=1e-12)
    assert float(n @ site) == pytest.approx(0.0, abs=1e-12)
    east = np.cross(POLE, site) / np.linalg.norm(np.cross(POLE, site))
    assert float(np.cross(n, site) @ east) == pytest.approx(1.0, abs=1e-12)


# --- plan_plane_change -------------------------------------------------------------


def test_an_orbit_already_in_the_target_plane_needs_no_burn() -> None:
    inc, raan = math.radians(137.0), 0.3
    r, v = rv_from_elements(Elements(R_MOON_M + 200e3, 0.01, inc, raan, 0.5, 1.0), MU)
    # The orbit's unit angular momentum from its inclination and node ...
    h_hat = [math.sin(inc) * math.sin(raan), -math.sin(inc) * math.cos(raan), math.cos(inc)]
    assert loi.plan_plane_change(r, v, 0.0, h_hat) == []
    # ... at any length, here the angular momentum's (m^2/s).
    h_m2_s = float(np.linalg.norm(np.cross(r, v)))
    assert loi.plan_plane_change(r, v, 0.0, h_m2_s * np.asarray(h_hat)) == []


# --- plan_descent_orbit_lowering ------------------------------------------------


def test_descent_orbit_lowering_takes_a_burn_point_half_a_second_ahead() -> None:
    """No lead time asked: the next burn point is taken however close. Circular
    200 km equatorial orbit, the site fixed on +x: the burn is at -x, half an
    orbit before a perilune 15 km above the site, retrograde by the vis-viva
    difference between the circle and the 15 x 200 km ellipse."""
    r_park = R_MOON_M + 200e3
    r_peri = R_MOON_M + 15e3
    v_circ = math.sqrt(MU / r_park)
    n = v_circ / r_park
    lead_s, t0_s = 0.5, 1_000.0
    theta = math.pi - n * lead_s
    r = r_park * np.array([math.cos(theta), math.sin(theta), 0.0])
    v = v_circ * np.array([-math.sin(theta), math.cos(theta), 0.0])
    (burn,) = loi.plan_descent_orbit_lowering(
        r, v, t0_s, lambda _t: np.array([R_MOON_M, 0.0, 0.0]), site_reference_radius_m=R_MOON_M)
    assert burn.t_s == pytest.approx(t0_s + lead_s, abs=TIME_TOL_S)
    v_apo = _vis_viva_m_s(r_park, 0.5 * (r_park + r_peri))
    # At -x the orbit moves along -y: retrograde is +y.
    np.testing.assert_allclose(burn.dv_mci_m_s, [0.0, v_circ - v_apo, 0.0], atol=DV_TOL_M_S)


# --- lambert -----------------------------------------------------------------------

#: The bisection stops at 1e-9 of the time of flight: ~1e-6 m/s on these speeds.
LAMBERT_TOL_M_S = 1e-5


def test_lambert_finds_a_fast_hyperbolic_arc() -> None:
    """e = 2, nu -60 to +60 deg: H from -ln 2 to ln 2, psi = -(2 ln 2)^2 ~ -1.9,
    the time from the hyperbolic Kepler equation; Lambert must give back the
    conic's own velocities."""
    a_m, e = -(R_MOON_M + 500e3), 2.0
    els = [Elements(a_m, e, 0.0, 0.0, 0.0, math.radians(nu)) for nu in (-60.0, 60.0)]
    (r1, v1), (r2, v2) = (rv_from_elements(el, MU) for el in els)
    h_anom = 2.0 * math.atanh(math.sqrt((e - 1.0) / (e + 1.0)) * math.tan(math.radians(30.0)))
    tof_s = 2.0 * (e * math.sinh(h_anom) - h_anom) / math.sqrt(MU / (-a_m) ** 3)
    v1_l, v2_l = rz.lambert(r1, r2, tof_s)
    np.testing.assert_allclose(v1_l, v1, atol=LAMBERT_TOL_M_S)
    np.testing.assert_allclose(v2_l, v2, atol=LAMBERT_TOL_M_S)


# --- plan_phasing ------------------------------------------------------------------


def test_the_phasing_burns_cost_no_more_than_the_hohmann_to_the_aim_circle() -> None:
    """From 15 x 180 km (at apolune) to the circle through the aim point, the
    cheapest horizontal burns are the Hohmann pair; a phasing orbit whose
    perilune lies between the ascender's and the aim circle costs nothing more
    (M1 and M2 add up to the Hohmann's first burn), so the cheapest plan the
    window allows costs exactly that."""
    inc = math.radians(137.0)
    r_apo, r_peri = R_MOON_M + 180e3, R_MOON_M + 15e3
    a_orb = R_MOON_M + 200e3
    r_aim = math.hypot(a_orb + 10e3, 50e3)
    asc = rv_from_elements(Elements(0.5 * (r_apo + r_peri), (r_apo - r_peri) / (r_apo + r_peri),
                                    inc, 1.0, 0.3, 0.0), MU)
    orb = rv_from_elements(Elements(a_orb, 0.0, inc, 1.0, 0.0, 0.0), MU)
    burns, _ = rz.plan_phasing(*asc, *orb, 0.0)
    a_transfer = 0.5 * (r_apo + r_aim)
    hohmann = (_vis_viva_m_s(r_apo, a_transfer) - _vis_viva_m_s(r_apo, 0.5 * (r_apo + r_peri))
               + math.sqrt(MU / r_aim) - _vis_viva_m_s(r_aim, a_transfer))
    assert sum(b.dv_m_s for b in burns[:3]) == pytest.approx(hohmann, abs=DV_TOL_M_S)


# --- plan_loi_finite ---------------------------------------------------------------

#: The secant stops within a metre of the asked apolune (1e-7 of it).
APOLUNE_TOL_M = 1.0


@pytest.mark.parametrize("apolune_height_m", [8_600e3, 30_000e3])
def test_the_finite_capture_lands_on_the_asked_apolune(apolune_height_m: float) -> None:
    r, v, _ = _on_the_hyperbola(5_000e3, inbound=True)
    plan = loi.plan_loi_finite(r, v, 8_200.0, 0.0, Engine(3_000.0, 3_090.0), dry_mass_kg=4_000.0,
                               apolune_radius_m=R_MOON_M + apolune_height_m)
    el = elements_from_rv(plan.result.r_mci_m, plan.result.v_mci_m_s, MU)
    assert el.a_m * (1.0 + el.e) - R_MOON_M == pytest.approx(apolune_height_m, abs=APOLUNE_TOL_M)


# --- the ascent's vertical rise --------------------------------------------------

#: Liftoff 2024-06-03 23:38:10 UTC (reference timeline row 19), whole mission seconds.
T_LIFTOFF_S = mission_s_from_utc("2024-06-03T23:38:10Z")


def test_the_vertical_rise_ends_at_vertical_rise_s_not_a_sub_step_later() -> None:
    """AscentConfig.vertical_rise_s: the ascender rises vertically for that long
    after liftoff, then pitches over: a step that starts exactly then is guided."""
    site_f = frames.moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M)
    t_pass = T_LIFTOFF_S + 200.0
    normal = loi.plane_normal_over_site(frames.mci_from_moon_fixed(site_f, t_pass),
                                        frames.moon_pole_mci(t_pass), math.radians(137.0))
    cfg = ag.AscentConfig(rotation=MoonRotation.at(T_LIFTOFF_S), target_normal_mci=normal)
    state = ag.AscentState.on_pad(T_LIFTOFF_S, cfg)
    for _ in range(10):
        state, _ = ag.step(state, 1.0, cfg)
    assert state.t_s == pytest.approx(T_LIFTOFF_S + cfg.vertical_rise_s, abs=1e-6)
    state = replace(state, t_s=T_LIFTOFF_S + cfg.vertical_rise_s)  # exactly then
    assert state.phase == "vertical_rise"
    state, out = ag.step(state, cfg.substep_s, cfg)
    assert out.events == ("pitch_over",) and out.phase == "powered_ascent"
    up = state.r_mci_m / np.linalg.norm(state.r_mci_m)
    assert float(out.thrust_dir_mci @ up) < 0.99  # tilted downrange, no longer vertical
