"""US Standard Atmosphere 1976 (US76), 0-1000 km geometric altitude.

Source: NOAA/NASA/USAF, *U.S. Standard Atmosphere, 1976*, NASA TM-X-74335
(NOAA-S/T 76-1562), sections 1.2-1.3 and tables I-IV.

* 0-86 km: the exact layered model, with molecular-scale temperature linear
  in geopotential altitude and hydrostatic pressure in closed form (eqs. 23,
  33a, 33b); kinetic temperature from the M/M0 ratio of table 8 (80-86 km).
* 86-1000 km: kinetic temperature from the exact US76 formulas (eqs. 25-31);
  density and pressure are a natural cubic spline in log(value) through the
  published table values below (the full model integrates the diffusion
  equations of six species, which the twin does not need). The tests check
  the spline at table altitudes that are *not* nodes.
* Speed of sound: US76 defines it only below 86 km (eq. 50). Above, it is
  computed with gamma = 1.4 and the mean molecular weight implied by
  p, rho and T, and is indicative only.

`density_fast_kg_m3` is a scalar hot path for the entry integrator: linear
interpolation of log(density) on a 100 m grid sampled from the model above.
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.dynamics.constants import G0_M_S2

# --- US76 constants (TM-X-74335, table 2 and section 1.2) -------------------
R_STAR_J_KMOL_K = 8_314.32  # gas constant used by US76, J/(kmol K)
M0_KG_KMOL = 28.9644  # sea-level mean molecular weight
R_EARTH_US76_M = 6_356_766.0  # effective Earth radius for geopotential altitude
T0_K = 288.15
P0_PA = 101_325.0
GAMMA_AIR = 1.40
MAX_ALTITUDE_M = 1_000_000.0

# Layers below 86 km: base geopotential altitude (m') and lapse rate (K/m').
_LAYER_BASE_GEOPOT_M = (0.0, 11_000.0, 20_000.0, 32_000.0, 47_000.0, 51_000.0, 71_000.0)
_LAYER_LAPSE_K_M = (-6.5e-3, 0.0, 1.0e-3, 2.8e-3, 0.0, -2.8e-3, -2.0e-3)
_Z86_M = 86_000.0
# M/M0 between 80 and 86 km, every 0.5 km (US76 table 8); 1 below 80 km.
_M_RATIO_Z_M = tuple(80_000.0 + 500.0 * i for i in range(13))
_M_RATIO = (
    1.0,
    0.999996,
    0.999989,
    0.999971,
    0.999941,
    0.999909,
    0.999870,
    0.999829,
    0.999786,
    0.999741,
    0.999694,
    0.999641,
    0.999579,
)

# Published US76 values above 86 km (table I, geometric altitude):
# altitude km, pressure Pa, density kg/m^3. Used as spline nodes.
_UPPER_TABLE: tuple[tuple[float, float, float], ...] = (
    (86.0, 3.7338e-1, 6.958e-6),
    (90.0, 1.8359e-1, 3.416e-6),
    (100.0, 3.2011e-2, 5.604e-7),
    (115.0, 4.0096e-3, 4.289e-8),
    (120.0, 2.5382e-3, 2.222e-8),
    (130.0, 1.2505e-3, 8.152e-9),
    (150.0, 4.5422e-4, 2.076e-9),
    (175.0, 1.7936e-4, 6.339e-10),
    (200.0, 8.4736e-5, 2.541e-10),
    (250.0, 2.4767e-5, 6.073e-11),
    (300.0, 8.7704e-6, 1.916e-11),
    (400.0, 1.4518e-6, 2.803e-12),
    (500.0, 3.0236e-7, 5.215e-13),
    (600.0, 8.2130e-8, 1.137e-13),
    (700.0, 3.1908e-8, 3.070e-14),
    (800.0, 1.7036e-8, 1.136e-14),
    (900.0, 1.0873e-8, 5.759e-15),
    (1000.0, 7.5138e-9, 3.561e-15),
)


@dataclass(frozen=True, slots=True)
class AtmosphereState:
    """Air properties at one geometric altitude."""

    altitude_m: float
    temperature_k: float
    pressure_pa: float
    density_kg_m3: float
    speed_of_sound_m_s: float


def _layer_base_values() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Temperature and pressure at the base of each layer, computed once."""
    temps = [T0_K]
    pressures = [P0_PA]
    for i in range(len(_LAYER_BASE_GEOPOT_M) - 1):
        t, p = _in_layer(i, _LAYER_BASE_GEOPOT_M[i + 1], temps[i], pressures[i])
        temps.append(t)
        pressures.append(p)
    return tuple(temps), tuple(pressures)


def _in_layer(i: int, h_geopot_m: float, t_base_k: float, p_base_pa: float) -> tuple[float, float]:
    """US76 eqs. 23, 33a/33b inside layer i."""
    lapse = _LAYER_LAPSE_K_M[i]
    dh = h_geopot_m - _LAYER_BASE_GEOPOT_M[i]
    k = G0_M_S2 * M0_KG_KMOL / R_STAR_J_KMOL_K
    if lapse == 0.0:
        return t_base_k, p_base_pa * math.exp(-k * dh / t_base_k)
    t = t_base_k + lapse * dh
    return t, p_base_pa * (t_base_k / t) ** (k / lapse)


_BASE_T_K, _BASE_P_PA = _layer_base_values()


def _lower(alt_m: float) -> tuple[float, float]:
    """Temperature and pressure below 86 km."""
    h_geopot = R_EARTH_US76_M * alt_m / (R_EARTH_US76_M + alt_m)
    i = max(0, bisect.bisect_right(_LAYER_BASE_GEOPOT_M, h_geopot) - 1)
    return _in_layer(i, h_geopot, _BASE_T_K[i], _BASE_P_PA[i])


def upper_temperature_k(alt_m: float) -> float:
    """US76 kinetic temperature above 86 km (eqs. 25-31, segments 7-10)."""
    z_km = alt_m / 1000.0
    if z_km <= 91.0:
        return 186.8673
    if z_km <= 110.0:
        # elliptical segment, eq. 27
        return 263.1905 - 76.3232 * math.sqrt(max(0.0, 1.0 - ((z_km - 91.0) / 19.9429) ** 2))
    if z_km <= 120.0:
        return 240.0 + 12.0 * (z_km - 110.0)
    r0_km = R_EARTH_US76_M / 1000.0
    xi = (z_km - 120.0) * (r0_km + 120.0) / (r0_km + z_km)
    return 1000.0 - 640.0 * math.exp(-0.01875 * xi)


_UPPER_Z_M = np.array([row[0] * 1000.0 for row in _UPPER_TABLE])


class _NaturalCubicSpline:
    """Natural cubic spline (zero second derivative at both ends) through
    (x, y), evaluated for scalars or arrays inside [x0, xn].

    The same spline as scipy's ``CubicSpline(bc_type="natural")``, written
    out because importing ``scipy.interpolate`` cost the reentry process
    0.45 s of CPU for 18 nodes."""

    def __init__(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> None:
        h = np.diff(x)
        n = len(x)
        # second derivatives m[1..n-2] (m[0] = m[n-1] = 0): the tridiagonal system
        a = np.zeros((n - 2, n - 2))
        for i in range(1, n - 1):
            a[i - 1, i - 1] = 2.0 * (h[i - 1] + h[i])
            if i > 1:
                a[i - 1, i - 2] = h[i - 1]
            if i < n - 2:
                a[i - 1, i] = h[i]
        slope = np.diff(y) / h
        m = np.zeros(n)
        m[1:-1] = np.linalg.solve(a, 6.0 * np.diff(slope))
        self._x = x
        self._y = y[:-1]
        self._b = slope - h * (2.0 * m[:-1] + m[1:]) / 6.0
        self._c = 0.5 * m[:-1]
        self._d = np.diff(m) / (6.0 * h)

    def __call__(self, z: float | NDArray[np.float64]) -> NDArray[np.float64]:
        i = np.clip(np.searchsorted(self._x, z, side="right") - 1, 0, len(self._x) - 2)
        t = np.asarray(z) - self._x[i]
        out: NDArray[np.float64] = self._y[i] + t * (self._b[i] + t * (self._c[i] + t * self._d[i]))
        return out


@functools.cache
def _upper_splines() -> tuple[_NaturalCubicSpline, _NaturalCubicSpline]:
    """Log-pressure and log-density splines above 86 km, built on first use."""
    log_p = _NaturalCubicSpline(_UPPER_Z_M, np.log([row[1] for row in _UPPER_TABLE]))
    log_rho = _NaturalCubicSpline(_UPPER_Z_M, np.log([row[2] for row in _UPPER_TABLE]))
    return log_p, log_rho


def us76(altitude_m: float) -> AtmosphereState:
    """Air properties at a geometric altitude; clamped to [-5 km, 1000 km]."""
    alt_m = min(max(altitude_m, -5_000.0), MAX_ALTITUDE_M)
    if alt_m < _Z86_M:
        tm_k, p_pa = _lower(alt_m)  # molecular-scale temperature
        rho = p_pa * M0_KG_KMOL / (R_STAR_J_KMOL_K * tm_k)
        t_k = tm_k * float(np.interp(alt_m, _M_RATIO_Z_M, _M_RATIO))
        molar_mass = rho * R_STAR_J_KMOL_K * t_k / p_pa
    else:
        t_k = upper_temperature_k(alt_m)
        log_p, log_rho = _upper_splines()
        p_pa = float(np.exp(log_p(alt_m)))
        rho = float(np.exp(log_rho(alt_m)))
        molar_mass = rho * R_STAR_J_KMOL_K * t_k / p_pa
    a = math.sqrt(GAMMA_AIR * R_STAR_J_KMOL_K * t_k / molar_mass)
    return AtmosphereState(altitude_m, t_k, p_pa, rho, a)


# --- Fast scalar density for the integrator --------------------------------
_FAST_STEP_M = 100.0
_FAST_MIN_M = -5_000.0
_FAST_GRID_M = np.arange(_FAST_MIN_M, MAX_ALTITUDE_M + _FAST_STEP_M / 2, _FAST_STEP_M)
_FAST_N = len(_FAST_GRID_M)


@functools.cache
def _fast_log_rho() -> list[float]:
    """log(density) on the grid: the US76 layers below 86 km and the spline
    above, each evaluated for the whole grid at once (was 10,051 us76 calls)."""
    z = _FAST_GRID_M
    lower = z < _Z86_M
    log_rho = np.empty_like(z)
    tm_k, p_pa = _lower_array(z[lower])
    log_rho[lower] = np.log(p_pa * M0_KG_KMOL / (R_STAR_J_KMOL_K * tm_k))
    log_rho[~lower] = _upper_splines()[1](z[~lower])
    _FAST_TABLE.extend(log_rho.tolist())
    return _FAST_TABLE


def _lower_array(alt_m: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`_lower` for an array of altitudes below 86 km."""
    h_geopot = R_EARTH_US76_M * alt_m / (R_EARTH_US76_M + alt_m)
    base = np.asarray(_LAYER_BASE_GEOPOT_M)
    i = np.maximum(0, np.searchsorted(base, h_geopot, side="right") - 1)
    lapse = np.asarray(_LAYER_LAPSE_K_M)[i]
    t_base, p_base = np.asarray(_BASE_T_K)[i], np.asarray(_BASE_P_PA)[i]
    dh = h_geopot - base[i]
    k = G0_M_S2 * M0_KG_KMOL / R_STAR_J_KMOL_K
    isothermal = lapse == 0.0
    safe_lapse = np.where(isothermal, 1.0, lapse)
    t = np.where(isothermal, t_base, t_base + lapse * dh)
    p = np.where(isothermal, p_base * np.exp(-k * dh / t_base),
                 p_base * (t_base / t) ** (k / safe_lapse))
    return t, p


# the table once built (read directly: the entry predictor asks ~10^5 times)
_FAST_TABLE: list[float] = []


def density_fast_kg_m3(altitude_m: float) -> float:
    """Density (kg/m^3) from a 100 m log-linear table; 0 above 1000 km."""
    if altitude_m >= MAX_ALTITUDE_M:
        return 0.0
    x = (max(altitude_m, _FAST_MIN_M) - _FAST_MIN_M) / _FAST_STEP_M
    i = min(int(x), _FAST_N - 2)
    frac = x - i
    table = _FAST_TABLE or _fast_log_rho()
    return math.exp(table[i] + frac * (table[i + 1] - table[i]))


def density_kg_m3(altitude_m: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vectorised density on the fast table (kg/m^3)."""
    alt = np.clip(np.asarray(altitude_m, dtype=float), _FAST_MIN_M, MAX_ALTITUDE_M)
    rho = np.exp(np.interp(alt, _FAST_GRID_M, np.asarray(_fast_log_rho())))
    return np.where(np.asarray(altitude_m) >= MAX_ALTITUDE_M, 0.0, rho)
