"""The ascender's four phasing manoeuvres: each where and when the plan's
description puts it, the aim point reached to the millimetre in two-body, and
the time window and perilune floor that bound the choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dynamics.burns import ImpulsiveBurn, execute_impulsive
from services.dynamics.guidance import rendezvous as rz
from services.dynamics.kepler import Elements, propagate_kepler, rv_from_elements
from tests.authorities import GM_MOON_M3_S2, R_MOON_M

I_PARK_RAD = math.radians(137.0)
#: After ascent: 15 x 180 km; the orbiter on its 200 km circle ~0.6 rad ahead.
A_ASC_M = R_MOON_M + 0.5 * (15e3 + 180e3)
A_ORB_M = R_MOON_M + 200e3
#: Aim point (reference row 20): ~50 km ahead of and ~10 km above the orbiter.
AHEAD_M, ABOVE_M = 50e3, 10e3
R_AIM_M = math.hypot(A_ORB_M + ABOVE_M, AHEAD_M)
AIM_TOL_M = 0.01
TIME_TOL_S = 1e-3
Plan = tuple[list[ImpulsiveBurn], float]


def _period_s(a_m: float) -> float:
    return 2.0 * math.pi * math.sqrt(a_m**3 / GM_MOON_M3_S2)


def _sma_m(r: np.ndarray, v: np.ndarray) -> float:
    return -GM_MOON_M3_S2 / (2.0 * (0.5 * float(v @ v) - GM_MOON_M3_S2 / float(np.linalg.norm(r))))


ASC = rv_from_elements(Elements(A_ASC_M, 165e3 / (2 * A_ASC_M), I_PARK_RAD, 1.0, 0.3, 0.0),
                       GM_MOON_M3_S2)
ORB = rv_from_elements(Elements(A_ORB_M, 0.0, I_PARK_RAD, 1.0, 0.0, 0.9), GM_MOON_M3_S2)


def _plan(**kwargs: float) -> Plan:
    return rz.plan_phasing(*ASC, *ORB, 0.0, **kwargs)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return _plan()


def _after(burns: list[ImpulsiveBurn], t_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The ascender's state at ``t_s``, with the burns due up to then."""
    return execute_impulsive(*ASC, 0.0, [b for b in burns if b.t_s <= t_s], t_s)


def _rel_at_aim(plan: Plan) -> np.ndarray:
    burns, t_aim = plan
    ra, va = _after(burns, t_aim)
    ro, vo = propagate_kepler(*ORB, t_aim, GM_MOON_M3_S2)
    rel_r, _ = rz.lvlh_relative(ro, vo, ra, va)
    return rel_r


def test_lands_on_the_aim_point_to_the_millimetre(plan: Plan) -> None:
    np.testing.assert_allclose(_rel_at_aim(plan), [ABOVE_M, AHEAD_M, 0.0], atol=AIM_TOL_M)


def test_m1_at_the_ascenders_apolune(plan: Plan) -> None:
    (m1, *_), _ = plan
    assert m1.label == "phasing-1"
    # It starts at perilune: apolune is half a period later, 180 km up.
    assert m1.t_s == pytest.approx(0.5 * _period_s(A_ASC_M), abs=TIME_TOL_S)
    r, _ = _after([], m1.t_s)
    assert float(np.linalg.norm(r)) == pytest.approx(R_MOON_M + 180e3, abs=1.0)


def test_m2_whole_phasing_revolutions_later_then_m3_half_a_transfer(plan: Plan) -> None:
    (m1, m2, m3, m4), t_aim = plan
    r1, v1 = _after([m1], m1.t_s)
    revolutions = (m2.t_s - m1.t_s) / _period_s(_sma_m(r1, v1))
    assert round(revolutions) >= 1
    assert revolutions == pytest.approx(round(revolutions), abs=1e-9)
    r2, v2 = _after([m1, m2], m2.t_s)
    assert m3.t_s - m2.t_s == pytest.approx(0.5 * _period_s(_sma_m(r2, v2)), abs=TIME_TOL_S)
    r3, _ = _after([m1, m2], m3.t_s)
    assert float(np.linalg.norm(r3)) == pytest.approx(R_AIM_M, abs=1.0)
    t_c = _period_s(R_AIM_M)
    assert m4.t_s - m3.t_s == pytest.approx(0.2 * t_c, abs=TIME_TOL_S)
    assert t_aim - m4.t_s == pytest.approx(0.3 * t_c, abs=TIME_TOL_S)
    assert [m2.label, m3.label, m4.label] == ["phasing-2", "phasing-3", "phasing-4"]


def _phasing_perilune_m(m1: ImpulsiveBurn) -> float:
    r1, v1 = _after([m1], m1.t_s)
    return 2.0 * _sma_m(r1, v1) - float(np.linalg.norm(r1))  # M1 is at apolune


def test_phasing_perilune_respects_the_floor(plan: Plan) -> None:
    (m1, *_), _ = plan
    floor_m = R_MOON_M + 120e3
    assert _phasing_perilune_m(m1) < floor_m  # the cheapest plan dips below it
    (high_m1, *_), _ = _plan(min_perilune_radius_m=floor_m)
    assert _phasing_perilune_m(high_m1) >= floor_m - 1.0


def test_a_later_window_takes_the_next_aim_time(plan: Plan) -> None:
    _, t_aim = plan
    later = _plan(min_duration_s=t_aim + 1.0)
    orbiter_period = _period_s(A_ORB_M)
    assert t_aim + 1.0 <= later[1] < t_aim + 1.1 * orbiter_period
    np.testing.assert_allclose(_rel_at_aim(later), [ABOVE_M, AHEAD_M, 0.0], atol=AIM_TOL_M)


def test_other_aim_offsets_are_reached_too() -> None:
    plan = _plan(ahead_m=30e3, above_m=5e3)
    np.testing.assert_allclose(_rel_at_aim(plan), [5e3, 30e3, 0.0], atol=AIM_TOL_M)


def test_no_window_is_an_error(plan: Plan) -> None:
    _, t_aim = plan
    with pytest.raises(ValueError, match=r"^no phasing orbit fits"):
        _plan(max_duration_s=0.5 * t_aim)


def test_the_analytic_phasing_leaves_the_trim_almost_nothing(plan: Plan) -> None:
    """Against a circular orbiter the first three burns already put the
    ascender on the aim point's phase: M4 only mops up (two-body)."""
    (*_, m4), _ = plan
    assert m4.dv_m_s < 0.1  # m/s; a phase error of 1 deg would cost metres per second


def test_the_window_holds_the_aim_time(plan: Plan) -> None:
    _, t_aim = plan
    narrow = _plan(min_duration_s=t_aim - 1.0, max_duration_s=t_aim + 1.0)
    assert narrow[1] == pytest.approx(t_aim, abs=TIME_TOL_S)
    with pytest.raises(ValueError, match=r"^no phasing orbit fits"):
        _plan(min_duration_s=t_aim + 1.0, max_duration_s=t_aim + 2.0)


def test_a_later_start_shifts_the_plan_by_as_much() -> None:
    """The same geometry an hour later in mission time: every burn and the aim
    an hour later, the same delta-vs."""
    shift_s = 3_600.0
    burns, t_aim = _plan()
    later_burns, later_aim = rz.plan_phasing(*ASC, *ORB, shift_s)
    assert later_aim == pytest.approx(t_aim + shift_s, abs=TIME_TOL_S)
    for b, later in zip(burns, later_burns, strict=True):
        assert later.t_s == pytest.approx(b.t_s + shift_s, abs=TIME_TOL_S)
        np.testing.assert_allclose(later.dv_mci_m_s, b.dv_mci_m_s, atol=1e-6)


def test_the_trim_alone_aims_at_50_km_ahead_and_10_km_above(plan: Plan) -> None:
    (m1, m2, m3, m4), t_aim = plan
    r4, v4 = _after([m1, m2, m3], m4.t_s)
    ro4, vo4 = propagate_kepler(*ORB, m4.t_s, GM_MOON_M3_S2)
    trim = rz.plan_trim(r4, v4, ro4, vo4, m4.t_s, t_aim)  # the default offsets
    assert trim.label == "phasing-4" and trim.t_s == m4.t_s
    ra, va = execute_impulsive(r4, v4, m4.t_s, [trim], t_aim)
    ro, vo = propagate_kepler(*ORB, t_aim, GM_MOON_M3_S2)
    rel_r, _ = rz.lvlh_relative(ro, vo, ra, va)
    np.testing.assert_allclose(rel_r, [ABOVE_M, AHEAD_M, 0.0], atol=AIM_TOL_M)
