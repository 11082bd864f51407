"""Invariants under random inputs (hypothesis): frame round trips and two-body
conservation laws. Tolerances are in metres, m/s or relative, as named."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dynamics.constants import DAY_S, GM_MOON_M3_S2, R_MOON_M
from services.dynamics.frames import (
    ecef_from_eci,
    ecef_from_eci_state,
    ecef_from_geodetic,
    eci_from_ecef,
    eci_from_ecef_state,
    eci_from_mci,
    geodetic_from_ecef,
    mci_from_eci,
    mci_from_moon_fixed,
    mci_from_moon_fixed_state,
    moon_fixed_from_mci,
    moon_fixed_from_mci_state,
    moon_fixed_from_selenographic,
    selenographic_from_moon_fixed,
)
from services.dynamics.kepler import (
    Elements,
    elements_from_rv,
    propagate_kepler,
    rv_from_elements,
)

MU = GM_MOON_M3_S2
times = st.floats(min_value=-5.0 * DAY_S, max_value=60.0 * DAY_S)
coord = st.floats(min_value=-4e8, max_value=4e8)
vectors = st.tuples(coord, coord, coord).map(np.array)
speeds = st.tuples(*[st.floats(min_value=-3e3, max_value=3e3)] * 3).map(np.array)
SETTINGS = settings(max_examples=60, deadline=None)


@SETTINGS
@given(vectors, times)
def test_eci_mci_round_trip(r: np.ndarray, t_s: float) -> None:
    # Translation by ~4e8 m: float64 rounding allows ~1e-7 m.
    np.testing.assert_allclose(eci_from_mci(mci_from_eci(r, t_s), t_s), r, atol=1e-6)


@SETTINGS
@given(vectors, speeds, times)
def test_moon_fixed_round_trip(r: np.ndarray, v: np.ndarray, t_s: float) -> None:
    r_mf, v_mf = moon_fixed_from_mci_state(r, v, t_s)
    r2, v2 = mci_from_moon_fixed_state(r_mf, v_mf, t_s)
    np.testing.assert_allclose(r2, r, atol=1e-6)  # m
    np.testing.assert_allclose(v2, v, atol=1e-9)  # m/s
    # A rotation keeps lengths (relative 1e-14).
    assert math.isclose(
        float(np.linalg.norm(moon_fixed_from_mci(r, t_s))),
        float(np.linalg.norm(r)),
        rel_tol=1e-13,
        abs_tol=1e-6,
    )
    np.testing.assert_allclose(mci_from_moon_fixed(moon_fixed_from_mci(r, t_s), t_s), r, atol=1e-6)


@SETTINGS
@given(vectors, speeds, times)
def test_earth_fixed_round_trip(r: np.ndarray, v: np.ndarray, t_s: float) -> None:
    np.testing.assert_allclose(eci_from_ecef(ecef_from_eci(r, t_s), t_s), r, atol=1e-6)
    r_ef, v_ef = ecef_from_eci_state(r, v, t_s)
    r2, v2 = eci_from_ecef_state(r_ef, v_ef, t_s)
    np.testing.assert_allclose(r2, r, atol=1e-6)
    np.testing.assert_allclose(v2, v, atol=1e-9)


@SETTINGS
@given(
    st.floats(min_value=-89.9, max_value=89.9),
    st.floats(min_value=-179.9, max_value=179.9),
    st.floats(min_value=-10e3, max_value=1e6),
)
def test_geodetic_and_selenographic_round_trip(lat: float, lon: float, h: float) -> None:
    lat2, lon2, h2 = geodetic_from_ecef(ecef_from_geodetic(lat, lon, h))
    assert math.isclose(lat2, lat, abs_tol=1e-9) and math.isclose(lon2, lon, abs_tol=1e-9)
    assert math.isclose(h2, h, abs_tol=1e-5)  # 10 um
    lat3, lon3, h3 = selenographic_from_moon_fixed(moon_fixed_from_selenographic(lat, lon, h))
    assert math.isclose(lat3, lat, abs_tol=1e-9) and math.isclose(lon3, lon, abs_tol=1e-9)
    assert math.isclose(h3, h, abs_tol=1e-5)


orbits = st.builds(
    lambda rp_km, e, i, raan, argp, nu: (R_MOON_M + rp_km * 1e3, e, i, raan, argp, nu),
    st.floats(min_value=10.0, max_value=20_000.0),
    st.floats(min_value=0.0, max_value=3.0).filter(lambda e: abs(e - 1.0) > 1e-3),
    st.floats(min_value=0.01, max_value=math.pi - 0.01),
    st.floats(min_value=0.0, max_value=2 * math.pi),
    st.floats(min_value=0.0, max_value=2 * math.pi),
    st.floats(min_value=-1.5, max_value=1.5),
)


def _state(orbit: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    rp, e, i, raan, argp, nu = orbit
    return rv_from_elements(Elements(rp / (1.0 - e), e, i, raan, argp, nu), MU)


@SETTINGS
@given(orbits, st.floats(min_value=-2.0 * DAY_S, max_value=2.0 * DAY_S))
def test_kepler_conserves_energy_and_angular_momentum(
    orbit: tuple[float, ...], dt_s: float
) -> None:
    r0, v0 = _state(orbit)
    r1, v1 = propagate_kepler(r0, v0, dt_s, MU)
    e0 = float(v0 @ v0) / 2.0 - MU / float(np.linalg.norm(r0))
    e1 = float(v1 @ v1) / 2.0 - MU / float(np.linalg.norm(r1))
    scale = MU / float(np.linalg.norm(r0))  # energy scale, J/kg
    assert abs(e1 - e0) <= 1e-9 * scale
    h0, h1 = np.cross(r0, v0), np.cross(r1, v1)
    np.testing.assert_allclose(h1, h0, atol=1e-9 * float(np.linalg.norm(h0)))


@SETTINGS
@given(orbits)
def test_elements_round_trip(orbit: tuple[float, ...]) -> None:
    r0, v0 = _state(orbit)
    r1, v1 = rv_from_elements(elements_from_rv(r0, v0, MU), MU)
    np.testing.assert_allclose(r1, r0, atol=1e-6 * float(np.linalg.norm(r0)))
    np.testing.assert_allclose(v1, v0, atol=1e-6 * float(np.linalg.norm(v0)))
