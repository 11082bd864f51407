"""The closing approach's CW legs: the burns each leg plans, when they fall, and
what flying them (two-body) does to the chaser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dynamics.burns import ImpulsiveBurn, execute_impulsive
from services.dynamics.guidance import rendezvous as rz
from services.dynamics.kepler import propagate_kepler
from tests.authorities import GM_MOON_M3_S2, R_MOON_M

T0_S = 50_000.0
R_T_M = R_MOON_M + 200e3
PERIOD_S = 2.0 * math.pi * math.sqrt(R_T_M**3 / GM_MOON_M3_S2)
R_T = np.array([R_T_M, 0.0, 0.0])
V_T = np.array([0.0, math.sqrt(GM_MOON_M3_S2 / R_T_M), 0.0])
#: The chaser 50 km behind and 10 km below the target, at rest in its LVLH.
CHASER = rz.inertial_from_lvlh(R_T, V_T, (-10e3, -50e3, 0.0), (0.0, 0.0, 0.0))
TIME_TOL_S = 1e-6
#: CW is linear: over a 1 km leg the two-body residual is about a metre.
SHORT_LEG_TOL_M = 2.0


def _rel_after(burns: list[ImpulsiveBurn], t_s: float) -> tuple[np.ndarray, np.ndarray]:
    rc, vc = execute_impulsive(*CHASER, T0_S, [b for b in burns if b.t_s <= t_s], t_s)
    rt, vt = propagate_kepler(R_T, V_T, t_s - T0_S, GM_MOON_M3_S2)
    return rz.lvlh_relative(rt, vt, rc, vc)


def test_a_leg_departs_now_and_arrives_on_its_hold_point_after_its_time() -> None:
    start = rz.inertial_from_lvlh(R_T, V_T, (0.0, -1_000.0, 0.0), (0.0, 0.0, 0.0))
    tof = 0.3 * PERIOD_S
    depart, arrive = rz.plan_closing_leg(R_T, V_T, *start, T0_S, (0.0, -100.0, 0.0), tof)
    assert (depart.label, arrive.label) == ("closing-departure", "closing-arrival")
    assert depart.t_s == T0_S
    assert arrive.t_s == pytest.approx(T0_S + tof, abs=TIME_TOL_S)
    rc, vc = execute_impulsive(*start, T0_S, [depart, arrive], arrive.t_s)
    rt, vt = propagate_kepler(R_T, V_T, tof, GM_MOON_M3_S2)
    rel_r, rel_v = rz.lvlh_relative(rt, vt, rc, vc)
    np.testing.assert_allclose(rel_r, [0.0, -100.0, 0.0], atol=SHORT_LEG_TOL_M)
    assert float(np.linalg.norm(rel_v)) < 0.01  # the arrival burn all but stopped it


@pytest.fixture(scope="module")
def closing() -> tuple[float, tuple[np.ndarray, ...], list[ImpulsiveBurn]]:
    t_end, states, burns = rz.fly_closing_legs(R_T, V_T, *CHASER, T0_S)
    return t_end, states, burns


def test_three_legs_take_one_target_period(
        closing: tuple[float, tuple[np.ndarray, ...], list[ImpulsiveBurn]]) -> None:
    t_end, _, burns = closing
    assert [b.label for b in burns] == ["closing-departure", "closing-arrival"] * 3
    # Legs of 0.45, 0.3 and 0.25 of the target's period, back to back.
    times = [T0_S + f * PERIOD_S for f in (0.0, 0.45, 0.45, 0.75, 0.75, 1.0)]
    assert [b.t_s for b in burns] == pytest.approx(times, abs=TIME_TOL_S)
    assert t_end == pytest.approx(T0_S + PERIOD_S, abs=TIME_TOL_S)


def test_the_burns_returned_are_the_burns_flown(
        closing: tuple[float, tuple[np.ndarray, ...], list[ImpulsiveBurn]]) -> None:
    t_end, (rt, _, rc, vc), burns = closing
    flown_r, flown_v = execute_impulsive(*CHASER, T0_S, burns, t_end)
    np.testing.assert_allclose(flown_r, rc, atol=1e-3)
    np.testing.assert_allclose(flown_v, vc, atol=1e-6)
    rt_check, _ = propagate_kepler(R_T, V_T, t_end - T0_S, GM_MOON_M3_S2)
    np.testing.assert_allclose(rt, rt_check, atol=1e-3)


def test_each_leg_stops_on_the_real_state_and_misses_less(
        closing: tuple[float, tuple[np.ndarray, ...], list[ImpulsiveBurn]]) -> None:
    _, _, burns = closing
    holds = [(0.0, -5_000.0, 0.0), (0.0, -1_000.0, 0.0), (0.0, -100.0, 0.0)]
    misses_m = []
    for k, hold in enumerate(holds):
        # Up to this leg's stop, not the next leg's departure at the same instant.
        rel_r, rel_v = _rel_after(burns[: 2 * k + 2], burns[2 * k + 1].t_s)
        assert float(np.linalg.norm(rel_v)) < 1e-6
        misses_m.append(float(np.linalg.norm(rel_r - hold)))
    # CW is linear: the 10 km radial start costs kilometres, the last leg a metre.
    assert misses_m[0] > misses_m[1] > misses_m[2]
    assert misses_m[2] < 1.0


def test_hold_points_and_leg_times_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="zip"):
        rz.fly_closing_legs(R_T, V_T, *CHASER, T0_S, leg_fractions=(0.5, 0.5))
