"""Impulsive and finite burns: rocket equation, frames, propellant limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dynamics.burns import (
    Engine,
    ImpulsiveBurn,
    PropellantExhausted,
    apply_impulse,
    burn_duration_s,
    execute_impulsive,
    finite_burn,
    inertial_from_rtn,
    mass_after_dv_kg,
    rtn_from_inertial,
    steer_inertial,
    steer_velocity,
)
from services.dynamics.constants import GM_MOON_M3_S2, R_MOON_M

R_LLO_M = R_MOON_M + 200e3
V_LLO_M_S = math.sqrt(GM_MOON_M3_S2 / R_LLO_M)
R0 = np.array([R_LLO_M, 0.0, 0.0])
V0 = np.array([0.0, V_LLO_M_S, 0.0])
ENGINE = Engine(3_000.0, 3_090.0)

vectors = st.lists(st.floats(-500.0, 500.0), min_size=3, max_size=3).map(np.array)
masses = st.floats(100.0, 10_000.0)
exhaust = st.floats(500.0, 4_500.0)


@given(dv=vectors, m0=masses, v_e=exhaust)
def test_impulse_never_adds_mass_and_follows_the_rocket_equation(
    dv: np.ndarray, m0: float, v_e: float
) -> None:
    # Tsiolkovsky: m1 = m0 exp(-|dv| / v_e), to double precision.
    _, m1 = apply_impulse(V0, m0, dv, v_e, dry_mass_kg=0.0)
    assert m1 <= m0
    assert m1 == pytest.approx(m0 * math.exp(-float(np.linalg.norm(dv)) / v_e), rel=1e-12)


@given(m0=st.floats(500.0, 5_000.0), duration=st.floats(0.0, 60.0), throttle=st.floats(0.1, 1.0))
@settings(max_examples=30, deadline=None)
def test_finite_burn_never_adds_mass(m0: float, duration: float, throttle: float) -> None:
    res = finite_burn(
        R0, V0, m0, 0.0, duration, ENGINE, steer_velocity(1.0), dry_mass_kg=0.0, throttle=throttle
    )
    assert res.mass_kg <= m0
    # Constant thrust: mass falls by thrust / v_e * t exactly (1 microgram).
    assert m0 - res.mass_kg == pytest.approx(throttle * 3_000.0 / 3_090.0 * duration, abs=1e-9)


def test_impulse_below_dry_mass_raises_with_its_numbers() -> None:
    with pytest.raises(PropellantExhausted) as info:
        apply_impulse(V0, 1_000.0, [3_000.0, 0.0, 0.0], 3_000.0, dry_mass_kg=800.0)
    assert info.value.available_kg == pytest.approx(200.0)
    assert info.value.needed_kg == pytest.approx(1_000.0 * (1 - math.exp(-1.0)))


def test_finite_burn_beyond_propellant_raises_before_burning() -> None:
    with pytest.raises(PropellantExhausted):
        finite_burn(R0, V0, 500.0, 0.0, 200.0, ENGINE, steer_velocity(), dry_mass_kg=400.0)


def test_rtn_round_trip_and_axes() -> None:
    # On a circular orbit T is the velocity direction and N the momentum.
    dv = inertial_from_rtn(R0, V0, [0.0, 10.0, 0.0])
    np.testing.assert_allclose(dv, [0.0, 10.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(inertial_from_rtn(R0, V0, [0, 0, 1]), [0, 0, 1], atol=1e-12)
    vec = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(rtn_from_inertial(R0, V0, inertial_from_rtn(R0, V0, vec)), vec)


def test_short_finite_burn_matches_the_impulse() -> None:
    # A 20 m/s burn of ~14 s in LLO: gravity turns the velocity by
    # n * t ~ 0.01 rad, so the finite result matches the impulse to ~0.2 m/s.
    m0 = 700.0
    duration = burn_duration_s(m0, 20.0, ENGINE)
    res = finite_burn(R0, V0, m0, 0.0, duration, ENGINE, steer_inertial([0, 1, 0]), dry_mass_kg=0.0)
    assert res.dv_m_s == pytest.approx(20.0, abs=1e-9)
    assert res.mass_kg == pytest.approx(mass_after_dv_kg(m0, 20.0, 3_090.0), rel=1e-12)
    speed_gain = float(np.linalg.norm(res.v_mci_m_s)) - V_LLO_M_S
    assert speed_gain == pytest.approx(20.0, abs=0.2)


def test_execute_impulsive_refuses_burns_outside_the_interval() -> None:
    burn = ImpulsiveBurn(100.0, np.array([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="outside"):
        execute_impulsive(R0, V0, 0.0, [burn], 50.0)
