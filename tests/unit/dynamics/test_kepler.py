"""Two-body propagation and elements against analytic results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dynamics.comms import QUEQIAO2_ELEMENTS
from services.dynamics.constants import GM_EARTH_M3_S2, GM_MOON_M3_S2, HOUR_S, R_MOON_M
from services.dynamics.kepler import (
    Elements,
    elements_from_rv,
    period_s,
    propagate_kepler,
    rv_from_elements,
)

MU = GM_MOON_M3_S2


def test_period_200_km_circular_lunar_orbit() -> None:
    # Reference (c): ~2.13 h (= 127.5 min) for a 200 km lunar orbit.
    assert period_s(R_MOON_M + 200e3, MU) / HOUR_S == pytest.approx(2.13, abs=0.01)


def test_period_200_by_8600_km() -> None:
    # Reference (c): CE-6 first lunar orbit 200 x 8,600 km, ~12 h.
    a_m = R_MOON_M + (200e3 + 8_600e3) / 2.0
    assert period_s(a_m, MU) / HOUR_S == pytest.approx(12.0, abs=0.3)


def test_period_queqiao2() -> None:
    # Reference (c): a 24 h orbit; Meng 2024's elements give 24.94 h (Kepler).
    assert period_s(QUEQIAO2_ELEMENTS.a_m, MU) / HOUR_S == pytest.approx(24.94, abs=0.01)


def test_period_rejects_hyperbola() -> None:
    with pytest.raises(ValueError, match="a > 0"):
        period_s(-1e7, MU)


def test_circular_quarter_orbit_is_exact() -> None:
    a_m = R_MOON_M + 100e3
    v_circ = math.sqrt(MU / a_m)
    r, v = propagate_kepler([a_m, 0.0, 0.0], [0.0, v_circ, 0.0], period_s(a_m, MU) / 4.0, MU)
    np.testing.assert_allclose(r, [0.0, a_m, 0.0], atol=1e-6)  # 1 um
    np.testing.assert_allclose(v, [-v_circ, 0.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("e", [0.0, 0.3, 0.782359, 0.99, 1.5, 4.0])
def test_forward_back_round_trip(e: float) -> None:
    rp_m = R_MOON_M + 100e3
    a_m = rp_m / (1.0 - e) if e != 1.0 else math.inf
    el = Elements(a_m, e, 0.7, 1.1, 0.4, 0.2)
    r0, v0 = rv_from_elements(el, MU)
    r1, v1 = propagate_kepler(r0, v0, 7_777.0, MU)
    r2, v2 = propagate_kepler(r1, v1, -7_777.0, MU)
    # Round-trip error relative to |r0| (~1.8e6 m): 1e-8, i.e. < 2 cm.
    np.testing.assert_allclose(r2, r0, atol=1e-8 * float(np.linalg.norm(r0)))
    np.testing.assert_allclose(v2, v0, rtol=0, atol=1e-8 * float(np.linalg.norm(v0)))


def test_elements_round_trip_earth_orbit() -> None:
    el = Elements(7_000e3, 0.01, math.radians(41.0), 2.0, 1.0, 3.0)
    r, v = rv_from_elements(el, GM_EARTH_M3_S2)
    back = elements_from_rv(r, v, GM_EARTH_M3_S2)
    assert back.a_m == pytest.approx(el.a_m, rel=1e-12)
    for name in ("e", "i_rad", "raan_rad", "argp_rad", "nu_rad"):
        assert getattr(back, name) == pytest.approx(getattr(el, name), abs=1e-9)


def test_parabola_escape_speed() -> None:
    # Parabolic orbit: v = sqrt(2 mu / r) at every point (energy zero).
    r0 = np.array([R_MOON_M + 100e3, 0.0, 0.0])
    v0 = np.array([0.0, math.sqrt(2.0 * MU / r0[0]), 0.0])
    r, v = propagate_kepler(r0, v0, 3_600.0, MU)
    assert float(v @ v) / 2.0 - MU / float(np.linalg.norm(r)) == pytest.approx(0.0, abs=1e-6)
