"""US76 atmosphere against the published tables.

Authority: U.S. Standard Atmosphere, 1976 (NASA TM-X-74335), table I
(geometric altitude). Values below 86 km come from the exact layered model,
so they must match to the table's 5 significant figures (0.05 %); above
86 km the model is a spline through table nodes, and is checked at table
altitudes that are deliberately not nodes (5 %).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dynamics.atmosphere import (
    density_fast_kg_m3,
    density_kg_m3,
    upper_temperature_k,
    us76,
)

# altitude m, T K, p Pa, rho kg/m^3, speed of sound m/s (US76 table I)
LOWER = [
    (0.0, 288.15, 101_325.0, 1.2250, 340.29),
    (5_000.0, 255.68, 54_048.0, 0.73643, 320.55),
    (11_000.0, 216.77, 22_700.0, 0.36480, 295.15),
    (20_000.0, 216.65, 5_529.3, 0.088910, 295.07),
    (30_000.0, 226.51, 1_197.0, 0.018410, 301.71),
    (50_000.0, 270.65, 79.779, 1.0269e-3, 329.80),
    (80_000.0, 198.64, 1.0524, 1.8458e-5, 282.54),
]
LOWER_REL_TOL = 5e-4  # table printed to 5 significant figures

# altitude m, T K, p Pa, rho kg/m^3 at altitudes that are NOT spline nodes
UPPER_OFF_NODE = [
    (110_000.0, 240.00, 7.1042e-3, 9.708e-8),
    (140_000.0, 559.63, 7.2028e-4, 3.831e-9),
    (160_000.0, 696.29, 3.0395e-4, 1.233e-9),
    (180_000.0, 790.07, 1.5271e-4, 5.194e-10),
    (350_000.0, 990.06, 3.4498e-6, 7.014e-12),
    (450_000.0, 998.22, 6.4468e-7, 1.184e-12),
]
UPPER_REL_TOL = 0.05  # spline through 18 nodes, checked between nodes
UPPER_T_TOL_K = 0.1  # temperature is the exact US76 formula


@pytest.mark.parametrize(("alt_m", "t_k", "p_pa", "rho", "a_m_s"), LOWER)
def test_lower_atmosphere_matches_table(
    alt_m: float, t_k: float, p_pa: float, rho: float, a_m_s: float
) -> None:
    s = us76(alt_m)
    assert s.temperature_k == pytest.approx(t_k, rel=LOWER_REL_TOL)
    assert s.pressure_pa == pytest.approx(p_pa, rel=LOWER_REL_TOL)
    assert s.density_kg_m3 == pytest.approx(rho, rel=LOWER_REL_TOL)
    assert s.speed_of_sound_m_s == pytest.approx(a_m_s, rel=LOWER_REL_TOL)


@pytest.mark.parametrize(("alt_m", "t_k", "p_pa", "rho"), UPPER_OFF_NODE)
def test_upper_atmosphere_between_nodes(alt_m: float, t_k: float, p_pa: float, rho: float) -> None:
    s = us76(alt_m)
    assert s.temperature_k == pytest.approx(t_k, abs=UPPER_T_TOL_K)
    assert s.pressure_pa == pytest.approx(p_pa, rel=UPPER_REL_TOL)
    assert s.density_kg_m3 == pytest.approx(rho, rel=UPPER_REL_TOL)


def test_temperature_is_continuous_at_segment_joins() -> None:
    # US76 segments 7-10 join at 91, 110 and 120 km; 86 km joins the lower model
    for z_m in (91_000.0, 110_000.0, 120_000.0):
        assert upper_temperature_k(z_m - 1e-3) == pytest.approx(
            upper_temperature_k(z_m + 1e-3), abs=1e-3
        )
    assert us76(85_999.0).temperature_k == pytest.approx(us76(86_001.0).temperature_k, abs=0.05)


def test_density_falls_monotonically_to_1000_km() -> None:
    z = np.arange(0.0, 1_000_001.0, 500.0)
    rho = density_kg_m3(z)
    assert np.all(np.diff(rho) < 0.0)
    assert rho[-1] == pytest.approx(3.561e-15, rel=0.01)  # table I at 1000 km


@pytest.mark.parametrize("alt_m", [123.0, 11_050.0, 59_950.0, 86_050.0, 121_337.0, 640_010.0])
def test_fast_density_agrees_with_model(alt_m: float) -> None:
    # 100 m log-linear table: error ~ (dz)^2/8 * curvature, far below 0.1 %
    assert density_fast_kg_m3(alt_m) == pytest.approx(us76(alt_m).density_kg_m3, rel=1e-3)


def test_no_air_above_the_model() -> None:
    assert density_fast_kg_m3(1_000_001.0) == 0.0
    assert math.isfinite(us76(2_000_000.0).density_kg_m3)
