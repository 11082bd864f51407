"""Hohmann transfers and circularisation from a slightly eccentric orbit: each
burn at the apsis the textbook puts it, the end orbit circular at the target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dynamics import frames
from services.dynamics.burns import Engine, execute_impulsive
from services.dynamics.guidance import loi
from services.dynamics.kepler import Elements, propagate_kepler, rv_from_elements
from tests.authorities import (
    GM_MOON_M3_S2,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)

T0_S = 86_400.0  # plans start at a mission time that is not zero
A_M = R_MOON_M + 150e3
E = 0.01  # perilune ~131 km, apolune ~169 km
RADIUS_TOL_M = 1.0


def _state() -> tuple[np.ndarray, np.ndarray]:
    """Just past apolune (true anomaly 200 deg), on the 137 deg parking plane."""
    return rv_from_elements(Elements(A_M, E, math.radians(137.0), 0.3, 0.5, math.radians(200.0)),
                            GM_MOON_M3_S2)


def _apsides_m(r: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    energy = 0.5 * float(v @ v) - GM_MOON_M3_S2 / float(np.linalg.norm(r))
    sma = -GM_MOON_M3_S2 / (2.0 * energy)
    h = float(np.linalg.norm(np.cross(r, v)))
    e = math.sqrt(max(0.0, 1.0 - h * h / (GM_MOON_M3_S2 * sma)))
    return sma * (1.0 - e), sma * (1.0 + e)


def _radius_at(r: np.ndarray, v: np.ndarray, t_s: float) -> float:
    """Radius at mission time ``t_s`` (no burn planned before it)."""
    rf, _ = execute_impulsive(r, v, T0_S, [], t_s)
    return float(np.linalg.norm(rf))


@pytest.mark.parametrize(("target_m", "first_at_m"), [
    (R_MOON_M + 400e3, A_M * (1.0 - E)),  # raising: first burn at perilune
    (R_MOON_M + 50e3, A_M * (1.0 + E)),  # lowering: first burn at apolune
])
def test_hohmann_burns_at_the_apsis_then_circularises_at_the_target(
        target_m: float, first_at_m: float) -> None:
    r, v = _state()
    burns = loi.plan_hohmann(r, v, T0_S, target_m)
    assert [b.label for b in burns] == ["hohmann-1", "hohmann-2"]
    assert T0_S < burns[0].t_s < burns[1].t_s
    assert _radius_at(r, v, burns[0].t_s) == pytest.approx(first_at_m, abs=RADIUS_TOL_M)
    rf, vf = execute_impulsive(r, v, T0_S, burns, burns[1].t_s + 60.0)
    assert _apsides_m(rf, vf) == pytest.approx((target_m, target_m), abs=RADIUS_TOL_M)
    # The second burn is half a transfer orbit after the first.
    transfer_a = 0.5 * (first_at_m + target_m)
    half_period_s = math.pi * math.sqrt(transfer_a**3 / GM_MOON_M3_S2)
    assert burns[1].t_s - burns[0].t_s == pytest.approx(half_period_s, abs=1.0)


@pytest.mark.parametrize(("at", "radius_m"), [
    ("perilune", A_M * (1.0 - E)), ("apolune", A_M * (1.0 + E))])
def test_circularisation_at_an_apsis_keeps_its_radius(at: str, radius_m: float) -> None:
    r, v = _state()
    (burn,) = loi.plan_circularisation(r, v, T0_S, at)
    assert burn.label == at and burn.t_s > T0_S
    assert _radius_at(r, v, burn.t_s) == pytest.approx(radius_m, abs=RADIUS_TOL_M)
    rf, vf = execute_impulsive(r, v, T0_S, [burn], burn.t_s + 60.0)
    assert _apsides_m(rf, vf) == pytest.approx((radius_m, radius_m), abs=RADIUS_TOL_M)


def test_an_apsis_change_names_a_real_apsis() -> None:
    r, v = _state()
    with pytest.raises(ValueError, match="at must be 'perilune' or 'apolune', got 'node'"):
        loi.plan_apsis_change(r, v, T0_S, "node", A_M)


def _hyperbolic_approach() -> tuple[np.ndarray, np.ndarray]:
    """850 m/s at infinity, 200 km perilune, 100 deg before it (cf. test_loi)."""
    rp = R_MOON_M + 200e3
    v_inf = 850.0
    el = Elements(-GM_MOON_M3_S2 / v_inf**2, 1 + rp * v_inf**2 / GM_MOON_M3_S2,
                  math.radians(120.0), 0.3, 0.5, math.radians(-100.0))
    return rv_from_elements(el, GM_MOON_M3_S2)


def test_capture_burns_are_named_and_the_finite_one_is_centred_on_perilune() -> None:
    r, v = _hyperbolic_approach()
    (impulse,) = loi.plan_loi(r, v, T0_S)
    assert impulse.label == "loi"
    rp, _ = execute_impulsive(r, v, T0_S, [], impulse.t_s)
    assert float(np.linalg.norm(rp)) == pytest.approx(R_MOON_M + 200e3, abs=RADIUS_TOL_M)
    plan = loi.plan_loi_finite(r, v, 8_200.0, T0_S, Engine(3_000.0, 3_090.0),
                               dry_mass_kg=4_000.0)
    assert plan.t_start_s + 0.5 * plan.duration_s == pytest.approx(impulse.t_s, abs=1e-6)
    assert plan.result.t_end_s == pytest.approx(plan.t_start_s + plan.duration_s, abs=1e-6)


def test_circularisation_defaults_to_perilune() -> None:
    r, v = _state()
    (burn,) = loi.plan_circularisation(r, v, T0_S)
    assert burn.label == "perilune"
    assert _radius_at(r, v, burn.t_s) == pytest.approx(A_M * (1.0 - E), abs=RADIUS_TOL_M)


def test_plane_change_is_named_and_lands_on_the_plane() -> None:
    r, v = _state()
    target = loi.orbit_normal(math.radians(130.0), 0.35)
    (burn,) = loi.plan_plane_change(r, v, T0_S, 2.0 * target)  # any length of normal
    assert burn.label == "plane-change"
    rf, vf = execute_impulsive(r, v, T0_S, [burn], burn.t_s + 60.0)
    h = np.cross(rf, vf)
    assert float(h @ target) / float(np.linalg.norm(h)) == pytest.approx(1.0, abs=1e-12)


def _site_mci(t_s: float) -> np.ndarray:
    site_f = frames.moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M)
    return frames.mci_from_moon_fixed(site_f, t_s)


def _parking_over_the_site() -> tuple[np.ndarray, np.ndarray]:
    """200 km circular, 137 deg, over the site three hours after T0_S."""
    t_pass = T0_S + 3 * 3_600.0
    site = _site_mci(t_pass)
    n = loi.plane_normal_over_site(site, frames.moon_pole_mci(t_pass), math.radians(137.0))
    r_park = R_MOON_M + 200e3
    u = site / np.linalg.norm(site)
    r0, v0 = r_park * u, math.sqrt(GM_MOON_M3_S2 / r_park) * np.cross(n, u)
    return propagate_kepler(r0, v0, -3 * 3_600.0, GM_MOON_M3_S2)


def test_descent_orbit_lowering_puts_the_perilune_over_the_site_by_default() -> None:
    r, v = _parking_over_the_site()
    site_radius_m = R_MOON_M + LANDING_SITE_HEIGHT_M
    (burn,) = loi.plan_descent_orbit_lowering(r, v, T0_S, _site_mci,
                                              site_reference_radius_m=site_radius_m)
    assert burn.label == "descent-orbit-lowering"
    r1, v1 = execute_impulsive(r, v, T0_S, [], burn.t_s)
    v1 = v1 + burn.dv_mci_m_s
    t_peri = burn.t_s + loi.time_to_true_anomaly_s(r1, v1, 0.0)
    rp, _ = propagate_kepler(r1, v1, t_peri - burn.t_s, GM_MOON_M3_S2)
    assert float(np.linalg.norm(rp)) == pytest.approx(site_radius_m + 15e3, abs=RADIUS_TOL_M)
    site = _site_mci(t_peri)
    # Zero lead angle: the perilune lies over the site (out of plane aside).
    h = np.cross(r1, v1)
    h /= np.linalg.norm(h)
    in_plane = site - (site @ h) * h
    cos_lead = float(rp @ in_plane) / float(np.linalg.norm(rp) * np.linalg.norm(in_plane))
    assert math.degrees(math.acos(min(1.0, cos_lead))) < 0.05


def test_descent_orbit_lowering_waits_a_revolution_for_its_lead_time() -> None:
    r, v = _parking_over_the_site()
    site_radius_m = R_MOON_M + LANDING_SITE_HEIGHT_M
    (first,) = loi.plan_descent_orbit_lowering(r, v, T0_S, _site_mci,
                                               site_reference_radius_m=site_radius_m)
    (later,) = loi.plan_descent_orbit_lowering(r, v, T0_S, _site_mci,
                                               site_reference_radius_m=site_radius_m,
                                               min_lead_time_s=first.t_s - T0_S + 1.0)
    period_s = 2.0 * math.pi * math.sqrt((R_MOON_M + 200e3) ** 3 / GM_MOON_M3_S2)
    # A revolution later; the Moon turns ~1 deg meanwhile, moving it by ~20 s.
    assert later.t_s - first.t_s == pytest.approx(period_s, abs=60.0)


def test_orbit_normal_is_rotated_into_mci_by_the_frame_given() -> None:
    i, raan = math.radians(137.0), 0.3
    # 90 deg about z: equatorial x -> MCI y, y -> -x.
    frame_to_mci = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    n = loi.orbit_normal(i, raan)
    expected = [math.sin(i) * math.sin(raan), -math.sin(i) * math.cos(raan), math.cos(i)]
    np.testing.assert_allclose(n, expected, atol=1e-15)
    np.testing.assert_allclose(loi.orbit_normal(i, raan, frame_to_mci), [-n[1], n[0], n[2]],
                               atol=1e-15)
