"""The guidance's cheap Moon spin (MoonRotation) and E-guidance arcs (ArcGravity,
zem_zev_accel), each against the IAU model or the integral it stands for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from services.dynamics import frames
from services.dynamics.guidance import ArcGravity, MoonRotation, zem_zev, zem_zev_accel
from tests.authorities import LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, R_MOON_M

T_REF_S = 2_600_000.0  # late May 2024, the month of the landing
#: Sidereal month 27.321661 d (IAU); the libration moves the true rate by < 2 %.
SIDEREAL_RATE_RAD_S = 2.0 * math.pi / (27.321661 * 86_400.0)
POSITION_TOL_M = 1.0  # the class promises < 1 m against the IAU model over a powered phase
VELOCITY_TOL_M_S = 1e-3

ROTATION = MoonRotation.at(T_REF_S)
SITE_F = frames.moon_fixed_from_selenographic(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, 0.0)


@pytest.mark.parametrize("dt_s", [0.0, 600.0, -600.0])
def test_fixed_state_matches_the_iau_model(dt_s: float) -> None:
    t = T_REF_S + dt_s
    r_mci = np.array([1.2e6, -0.9e6, 0.8e6])
    v_mci = np.array([350.0, 1_200.0, -640.0])
    r_f, v_f = ROTATION.fixed_state(r_mci, v_mci, t)
    r_iau, v_iau = frames.moon_fixed_from_mci_state(r_mci, v_mci, t)
    assert np.linalg.norm(r_f - r_iau) < POSITION_TOL_M
    assert np.linalg.norm(v_f - v_iau) < VELOCITY_TOL_M_S


def test_a_point_fixed_on_the_surface_has_no_surface_relative_velocity() -> None:
    t = T_REF_S + 300.0
    r_mci, v_mci = ROTATION.mci_state(SITE_F, np.zeros(3), t)
    # Carried by the spin: |v| = omega r cos(lat) in the inertial frame.
    expected_m_s = SIDEREAL_RATE_RAD_S * R_MOON_M * math.cos(math.radians(LANDING_SITE_LAT_DEG))
    assert float(np.linalg.norm(v_mci)) == pytest.approx(expected_m_s, rel=0.02)
    r_f, v_f = ROTATION.fixed_state(r_mci, v_mci, t)
    assert np.linalg.norm(r_f - SITE_F) < POSITION_TOL_M
    assert np.linalg.norm(v_f) < VELOCITY_TOL_M_S


def test_a_point_at_rest_in_mci_drifts_westward_at_the_spin_rate() -> None:
    r_mci, _ = ROTATION.mci_state(SITE_F, np.zeros(3), T_REF_S)
    r_f, v_f = ROTATION.fixed_state(r_mci, np.zeros(3), T_REF_S)
    expected_m_s = SIDEREAL_RATE_RAD_S * R_MOON_M * math.cos(math.radians(LANDING_SITE_LAT_DEG))
    assert float(np.linalg.norm(v_f)) == pytest.approx(expected_m_s, rel=0.02)
    # Westward: against the local east, which is pole x r in fixed axes.
    east = np.cross([0.0, 0.0, 1.0], r_f)
    assert float(v_f @ east) < -0.99 * expected_m_s * float(np.linalg.norm(east))


def test_spin_rate_is_the_sidereal_month() -> None:
    rate = float(np.linalg.norm(ROTATION.omega_fixed_rad_s))
    assert rate == pytest.approx(SIDEREAL_RATE_RAD_S, rel=0.02)
    # About the Moon's pole, which is the fixed frame's +z.
    assert ROTATION.omega_fixed_rad_s[2] / rate == pytest.approx(1.0, abs=1e-6)


def _arc_up(c: float, d: float, inv_r: float, t_go: float, t: float) -> float:
    """Centrifugal relief v_h(s)^2 / r with v_h linear from c to d over t_go."""
    return inv_r * (c + (d - c) * t / t_go) ** 2


def test_arc_gravity_integrates_the_centrifugal_relief() -> None:
    g = np.array([0.0, 0.0, -1.62])
    c, d, r = 1_690.0, 40.0, 1_750_000.0
    t_go = 600.0
    dv, dr = ArcGravity(g, vh_now=c, vh_end=d, inv_r=1.0 / r).integrals(np.array([[t_go]]))
    dv_up, _ = quad(lambda s: _arc_up(c, d, 1.0 / r, t_go, s), 0.0, t_go)
    dr_up, _ = quad(lambda s: quad(lambda u: _arc_up(c, d, 1.0 / r, t_go, u), 0.0, s)[0],
                    0.0, t_go)
    assert dv[0] == pytest.approx([0.0, 0.0, -1.62 * t_go + dv_up], abs=1e-6)
    assert dr[0] == pytest.approx([0.0, 0.0, -0.81 * t_go**2 + dr_up], abs=1e-3)


def test_arc_gravity_without_a_radius_is_constant_gravity() -> None:
    g = np.array([0.1, 0.0, -1.62])
    dv, dr = ArcGravity(g, vh_now=1_000.0, vh_end=0.0).integrals(np.array([[10.0]]))
    assert dv[0] == pytest.approx([1.0, 0.0, -16.2])
    assert dr[0] == pytest.approx([5.0, 0.0, -81.0])


def test_zem_zev_are_the_misses_of_coasting() -> None:
    grav = ArcGravity(np.array([0.0, 0.0, -2.0]))
    zem, zev = zem_zev(np.array([0.0, 0.0, 100.0]), np.array([10.0, 0.0, 0.0]), grav,
                       np.array([50.0, 0.0, 0.0]), np.zeros(3), np.array([[5.0]]))
    # Coasting 5 s: x = 50 m, z = 100 - 25 = 75 m; v = (10, 0, -10) m/s.
    assert zem[0] == pytest.approx([0.0, 0.0, -75.0])
    assert zev[0] == pytest.approx([-10.0, 0.0, 10.0])


def test_e_guidance_is_six_zem_over_t_squared_less_two_zev_over_t() -> None:
    """The ZEM/ZEV law (Guo, Hawkins and Wie 2013, eq. 27) on numbers worked by hand."""
    grav = ArcGravity(np.array([0.0, 0.0, -2.0]))
    a = zem_zev_accel(np.array([0.0, 0.0, 100.0]), np.array([10.0, 0.0, 0.0]), grav,
                      np.array([50.0, 0.0, 0.0]), np.zeros(3), 5.0)
    # ZEM = (0, 0, -75) m, ZEV = (-10, 0, 10) m/s over 5 s (test above):
    # 6 ZEM / 25 - 2 ZEV / 5 = (4, 0, -18 - 4) m/s^2.
    assert a == pytest.approx([4.0, 0.0, -22.0])
