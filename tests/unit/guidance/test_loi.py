"""LOI and orbit adjustments against reference (c) periods and analytic Hohmann."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from services.dynamics import frames
from services.dynamics.burns import Engine, execute_impulsive
from services.dynamics.constants import GM_MOON_M3_S2, MISSION_EPOCH_UTC, R_MOON_M
from services.dynamics.guidance import loi
from services.dynamics.kepler import Elements, elements_from_rv, period_s, rv_from_elements
from tests.authorities import LANDING_SITE_HEIGHT_M, LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG

MU = GM_MOON_M3_S2
HOUR_S = 3_600.0
# LOI on 2024-05-08 02:12 UTC (reference timeline row 7).
T_LOI_S = (datetime(2024, 5, 8, 2, 12, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()


def _approach(v_inf_m_s: float = 850.0, inc_deg: float = 120.0) -> tuple[np.ndarray, np.ndarray]:
    """Hyperbolic approach with a 200 km perilune, 100 deg before perilune."""
    rp = R_MOON_M + 200e3
    el = Elements(
        -MU / v_inf_m_s**2,
        1 + rp * v_inf_m_s**2 / MU,
        math.radians(inc_deg),
        0.3,
        0.5,
        math.radians(-100),
    )
    return rv_from_elements(el, MU)


def _apsides_km(r: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    el = elements_from_rv(r, v, MU)
    return (el.a_m * (1 - el.e) - R_MOON_M) / 1e3, (el.a_m * (1 + el.e) - R_MOON_M) / 1e3


def test_reference_periods() -> None:
    # Reference (c): 200 km circular 2.13 h; 200 x 8,600 km ~12 h (Kepler 11.99 h).
    assert period_s(R_MOON_M + 200e3, MU) / HOUR_S == pytest.approx(2.13, abs=0.005)
    a = R_MOON_M + 0.5 * (200e3 + 8_600e3)
    assert period_s(a, MU) / HOUR_S == pytest.approx(11.99, abs=0.01)


def test_impulsive_capture_into_the_12_hour_orbit() -> None:
    r, v = _approach()
    (burn,) = loi.plan_loi(r, v, T_LOI_S)
    assert burn.dv_m_s == pytest.approx(340.0, abs=10.0)  # v_p(hyperbola) - v_p(ellipse)
    r1, v1 = execute_impulsive(r, v, T_LOI_S, [burn], burn.t_s + 60.0)
    peri_km, apo_km = _apsides_km(r1, v1)
    assert peri_km == pytest.approx(200.0, abs=0.01)
    assert apo_km == pytest.approx(8_600.0, abs=0.01)
    el = elements_from_rv(r1, v1, MU)
    assert period_s(el.a_m, MU) / HOUR_S == pytest.approx(12.0, abs=0.05)


def test_finite_capture_with_the_3000_n_engine_reaches_the_apolune() -> None:
    r, v = _approach()
    stack = Engine(3_000.0, 3_090.0)
    plan = loi.plan_loi_finite(r, v, 8_200.0, T_LOI_S, stack, dry_mass_kg=4_000.0)
    peri_km, apo_km = _apsides_km(plan.result.r_mci_m, plan.result.v_mci_m_s)
    assert apo_km == pytest.approx(8_600.0, abs=1.0)
    # A ~15 min burn centred on perilune loses some perilune height to the arc.
    assert peri_km == pytest.approx(200.0, abs=20.0)
    assert 10 * 60 < plan.duration_s < 20 * 60  # Queqiao-2's LOI lasted 19 min (ref. Q2)
    assert plan.result.dv_m_s > 340.0  # gravity losses cost extra over the impulse


def test_sequence_to_the_137_deg_parking_orbit() -> None:
    r, v = _approach(inc_deg=120.0)
    (capture,) = loi.plan_loi(r, v, T_LOI_S)
    t1 = capture.t_s + 60.0
    r1, v1 = execute_impulsive(r, v, T_LOI_S, [capture], t1)
    target_n = loi.orbit_normal(math.radians(137.0), 0.3)
    (plane,) = loi.plan_plane_change(r1, v1, t1, target_n)
    t2 = plane.t_s + 60.0
    r2, v2 = execute_impulsive(r1, v1, t1, [plane], t2)
    (circ,) = loi.plan_circularisation(r2, v2, t2, at="perilune")
    r3, v3 = execute_impulsive(r2, v2, t2, [circ], circ.t_s + 600.0)
    el = elements_from_rv(r3, v3, MU)
    assert (el.a_m - R_MOON_M) / 1e3 == pytest.approx(200.0, abs=0.01)
    assert el.e < 1e-6
    assert math.degrees(el.i_rad) == pytest.approx(137.0, abs=1e-6)
    # The plane change sits at the slow node: far cheaper than at perilune.
    assert plane.dv_m_s < 0.5 * 2 * 2_060 * math.sin(math.radians(17 / 2))


def test_hohmann_matches_the_analytic_delta_v() -> None:
    r1m, r2m = R_MOON_M + 200e3, R_MOON_M + 100e3
    r, v = rv_from_elements(Elements(r1m, 0.0, 2.4, 0.2, 0.0, 0.1), MU)
    burns = loi.plan_hohmann(r, v, 0.0, r2m)
    a_t = 0.5 * (r1m + r2m)
    dv_analytic = abs(math.sqrt(MU / r1m) - math.sqrt(MU * (2 / r1m - 1 / a_t))) + abs(
        math.sqrt(MU * (2 / r2m - 1 / a_t)) - math.sqrt(MU / r2m)
    )
    assert sum(b.dv_m_s for b in burns) == pytest.approx(dv_analytic, abs=1e-6)
    rf, vf = execute_impulsive(r, v, 0.0, burns, burns[-1].t_s + 100.0)
    peri_km, apo_km = _apsides_km(rf, vf)
    assert (peri_km, apo_km) == pytest.approx((100.0, 100.0), abs=1e-3)


def test_descent_orbit_lowering_puts_a_15_km_perilune_uprange_of_the_site() -> None:
    site_f = frames.moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M
    )
    t_pass = (datetime(2024, 6, 1, 22, 20, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()
    site = frames.mci_from_moon_fixed(site_f, t_pass)
    n = loi.plane_normal_over_site(site, frames.moon_pole_mci(t_pass), math.radians(137.0))
    r_park = R_MOON_M + 200e3
    r0 = r_park * site / np.linalg.norm(site)
    v0 = math.sqrt(MU / r_park) * np.cross(n, site / np.linalg.norm(site))
    t0 = t_pass - 3 * HOUR_S
    from services.dynamics.kepler import propagate_kepler

    r1, v1 = propagate_kepler(r0, v0, t0 - t_pass, MU)
    lead = math.radians(20.0)
    (burn,) = loi.plan_descent_orbit_lowering(
        r1,
        v1,
        t0,
        lambda t: frames.mci_from_moon_fixed(site_f, t),
        site_reference_radius_m=R_MOON_M + LANDING_SITE_HEIGHT_M,
        lead_angle_rad=lead,
    )
    assert burn.dv_m_s == pytest.approx(41.0, abs=3.0)  # 200 km -> ~20 x 200 km Hohmann half
    r2, v2 = execute_impulsive(r1, v1, t0, [burn], burn.t_s + 1.0)
    dt = loi.time_to_true_anomaly_s(r2, v2, 0.0)
    rp, _ = propagate_kepler(r2, v2, dt, MU)
    # Perilune 15 km above the site's reference radius, to 1 m.
    assert float(np.linalg.norm(rp)) - (R_MOON_M + LANDING_SITE_HEIGHT_M) == pytest.approx(
        15e3, abs=1.0
    )
    # ... and 20 deg of arc before the site as it is at that moment (0.05 deg).
    site_then = frames.mci_from_moon_fixed(site_f, burn.t_s + 1.0 + dt)
    cos_arc = float(rp @ site_then) / (np.linalg.norm(rp) * np.linalg.norm(site_then))
    assert math.degrees(math.acos(cos_arc)) == pytest.approx(20.0, abs=0.05)
