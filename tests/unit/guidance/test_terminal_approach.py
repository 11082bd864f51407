"""The orbiter's terminal approach along V-bar: the thrust its velocity-tracking
law asks for, the cap on it, capture, and riding together after capture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dynamics.guidance import rendezvous as rz
from tests.authorities import GM_MOON_M3_S2, R_MOON_M

R_T_M = R_MOON_M + 200e3
V_T_M_S = math.sqrt(GM_MOON_M3_S2 / R_T_M)
N_RAD_S = math.sqrt(GM_MOON_M3_S2 / R_T_M**3)
#: Target on +x moving +y: its LVLH axes are the MCI axes at t0.
R_T, V_T = np.array([R_T_M, 0.0, 0.0]), np.array([0.0, V_T_M_S, 0.0])
MASS_KG = 2_500.0
CFG = rz.ApproachConfig()  # 100 N; gains 0.01 (closing), 0.02 (lateral), 0.2 (velocity)
THRUST_TOL_N = 1e-6


def _state(rel_r: tuple[float, float, float],
           rel_v: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> rz.ApproachState:
    r_c, v_c = rz.inertial_from_lvlh(R_T, V_T, rel_r, rel_v)
    return rz.ApproachState(0.0, R_T, V_T, r_c, v_c, MASS_KG)


def _expected_accel(rel_r: np.ndarray, rel_v: np.ndarray, closing_m_s: float) -> np.ndarray:
    """Track (lateral gain x offset, closing speed along +y) with gain 0.2 /s,
    less the HCW accelerations x'' = 3n^2 x + 2n y', y'' = -2n x', z'' = -n^2 z."""
    v_ref = np.array([-0.02 * rel_r[0], closing_m_s, -0.02 * rel_r[2]])
    natural = np.array([3 * N_RAD_S**2 * rel_r[0] + 2 * N_RAD_S * rel_v[1],
                        -2 * N_RAD_S * rel_v[0], -N_RAD_S**2 * rel_r[2]])
    result: np.ndarray = 0.2 * (v_ref - rel_v) - natural
    return result


def test_state_is_placed_where_asked() -> None:
    rel_r, rel_v = rz.lvlh_relative(R_T, V_T, *rz.inertial_from_lvlh(R_T, V_T, (1.0, -2.0, 3.0),
                                                                      (0.1, 0.2, -0.3)))
    np.testing.assert_allclose(rel_r, [1.0, -2.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(rel_v, [0.1, 0.2, -0.3], atol=1e-9)


@pytest.mark.parametrize(("rel_r", "rel_v", "closing_m_s"), [
    # 2 m behind: 0.01 x 2 = 0.02 m/s is below the 0.03 m/s floor.
    ((0.0, -2.0, 0.0), (0.0, 0.0, 0.0), 0.03),
    # ... already closing at it: only the CW terms are left, a fraction of a newton.
    ((0.0, -2.0, 0.0), (0.0, 0.03, 0.0), 0.03),
    # ~20 m away, off the axis and moving: 0.01 x range, between floor and cap.
    ((1.5, -20.0, -1.0), (0.01, 0.15, -0.02), 0.01 * math.sqrt(1.5**2 + 20.0**2 + 1.0)),
    # 2 m and half a metre past the target: back off at the floor speed.
    ((0.0, 2.0, 0.5), (0.0, 0.0, 0.0), -0.03),
    ((0.2, 0.5, 0.0), (0.0, 0.0, 0.0), -0.03),
])
def test_thrust_is_the_velocity_tracking_law_with_the_cw_terms_cancelled(
        rel_r: tuple[float, float, float], rel_v: tuple[float, float, float],
        closing_m_s: float) -> None:
    _, out = rz.approach_step(_state(rel_r, rel_v), 1.0, CFG)
    accel = _expected_accel(np.array(rel_r), np.array(rel_v), closing_m_s)
    assert out.events == () and out.phase == "closing"
    assert out.thrust_n == pytest.approx(MASS_KG * float(np.linalg.norm(accel)), abs=THRUST_TOL_N)
    np.testing.assert_allclose(out.thrust_dir_mci, accel / np.linalg.norm(accel), atol=1e-6)


def test_thrust_is_capped_at_the_thrusters_100_n_in_the_asked_direction() -> None:
    # 100 m behind: 0.01 x 100 = 1 m/s, capped at 0.5 m/s; 0.2 x 0.5 m/s^2 x 2,500 kg
    # asks for 250 N.
    _, out = rz.approach_step(_state((0.0, -100.0, 0.0)), 1.0, CFG)
    assert out.thrust_n == pytest.approx(100.0, abs=THRUST_TOL_N)
    np.testing.assert_allclose(out.thrust_dir_mci, [0.0, 1.0, 0.0], atol=1e-9)


def test_capture_holds_the_chaser_to_the_target() -> None:
    state, out = rz.approach_step(_state((0.0, -0.2, 0.05), (0.0, 0.03, 0.0)), 5.0, CFG)
    assert out.events == ("capture",) and state.phase == "captured"
    assert out.thrust_n == 0.0
    assert out.thrust_dir_mci.shape == (3,) and not out.thrust_dir_mci.any()
    assert state.capture_rel_m is not None
    np.testing.assert_allclose(state.capture_rel_m[0], [0.0, -0.2, 0.05], atol=1e-6)
    np.testing.assert_allclose(state.capture_rel_m[1], [0.0, 0.03, 0.0], atol=1e-9)
    assert state.t_s == 5.0 and state.chaser_mass_kg == MASS_KG
    np.testing.assert_allclose(state.r_chaser_m, state.r_target_m, atol=1e-9)
    # The target coasted on its circular orbit for 5 s.
    np.testing.assert_allclose(np.linalg.norm(state.r_target_m), R_T_M, atol=1e-3)
    # One body from then on: no second capture, no thrust.
    state, out = rz.approach_step(state, 1.0, CFG)
    assert out.events == () and out.thrust_n == 0.0
    np.testing.assert_allclose(out.rel_r_m, np.zeros(3), atol=1e-9)


def test_approach_from_20_m_captures_and_counts_its_steps() -> None:
    state, out, steps = rz.simulate_approach(_state((0.0, -20.0, 0.0)), CFG, dt_s=2.0)
    assert "capture" in out.events and state.phase == "captured"
    assert steps == math.ceil(state.t_s / 2.0)
    assert state.capture_rel_m is not None
    assert rz.capture_ok(*state.capture_rel_m)


def test_no_capture_in_time_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"no capture within 30(\.0)? s"):
        rz.simulate_approach(_state((0.0, -200.0, 0.0)), CFG, max_duration_s=30.0)


def test_a_zero_step_changes_nothing_and_thrusts_nothing() -> None:
    state = _state((0.0, -20.0, 0.0))
    after, out = rz.approach_step(state, 0.0, CFG)
    assert after == state and out.thrust_n == 0.0 and out.events == ()
    assert out.thrust_dir_mci.shape == (3,) and not out.thrust_dir_mci.any()


def test_the_default_step_is_one_second() -> None:
    state, _, steps = rz.simulate_approach(_state((0.0, -2.0, 0.0)), CFG)
    assert steps == math.ceil(state.t_s - 0.0)


def test_a_step_ends_on_its_time_uses_propellant_and_reports_the_end_state() -> None:
    start = rz.ApproachState(100.0, R_T, V_T, *rz.inertial_from_lvlh(R_T, V_T, (0.0, -100.0, 0.0),
                                                                      (0.0, 0.0, 0.0)), MASS_KG)
    state, out = rz.approach_step(start, 2.5, CFG)  # sub-steps of 1, 1 and 0.5 s
    assert state.t_s == out.t_s == pytest.approx(102.5, abs=1e-9)
    # Capped at 100 N all along: the rocket equation with v_e = 2,800 m/s.
    assert state.chaser_mass_kg == pytest.approx(MASS_KG - 100.0 * 2.5 / 2_800.0, abs=1e-6)
    rel_r, rel_v = rz.lvlh_relative(state.r_target_m, state.v_target_m_s,
                                    state.r_chaser_m, state.v_chaser_m_s)
    np.testing.assert_allclose(out.rel_r_m, rel_r, atol=1e-9)
    np.testing.assert_allclose(out.rel_v_m_s, rel_v, atol=1e-12)
    assert rel_v[1] > 0.0  # it closes
