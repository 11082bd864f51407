"""Reference frames: ECI, MCI, Moon-fixed, Earth-fixed, and surface coordinates.

* ECI: Earth-centred, ICRF axes (the DE421 axes; the GCRS for our purposes).
* MCI: Moon-centred, ICRF axes. ECI <-> MCI is a translation by DE421's
  Moon position (and velocity for states).
* Moon-fixed: the IAU WGCCRE 2009 rotation model of the Moon (Archinal et
  al. 2011, Celest. Mech. Dyn. Astron. 109:101, table 2). It approximates the
  mean-Earth/polar-axis (ME) frame, which is the frame of LROC and LOLA
  coordinates such as the landing site, to ~150 m at the surface; the
  DE421 principal-axis (PA) frame differs from ME by ~860 m (NASA LRO
  project white paper "A standardized lunar coordinate system", 2008). The
  PA libration angles are not in the DE421 .bsp, so the IAU model is used.
* Earth-fixed: ITRS without polar motion (< 15 m at the surface in 2024),
  built as R3(GAST) . N . P . B with IAU 2006 precession (Fukushima-Williams
  angles, Capitaine et al. 2003 / IERS Conventions 2010 eq. 5.40), the
  leading terms of the IAU 2000 nutation series (truncation error ~1 m at the
  surface), the Earth rotation angle (IERS 2010 eq. 5.15) and UT1 - UTC
  from IERS finals2000A shipped with skyfield-data.
* Selenographic: spherical latitude/longitude and height above the IAU mean
  radius R_MOON_M. Geodetic: WGS 84 ellipsoid (Bowring/Newton inversion).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.constants import DAY_S, F_EARTH, R_EARTH_EQ_M, R_MOON_M
from services.dynamics.ephemeris import get_ephemeris
from services.dynamics.timescale import J2000_JD, tdb_s_past_j2000, tt_jd, ut1_jd

__all__ = [
    "earth_fixed_matrix",
    "earth_rotation_angle_rad",
    "ecef_from_eci",
    "ecef_from_eci_state",
    "ecef_from_geodetic",
    "eci_from_ecef",
    "eci_from_ecef_state",
    "eci_from_mci",
    "eci_from_mci_state",
    "geodetic_from_ecef",
    "mci_from_eci",
    "mci_from_eci_state",
    "mci_from_moon_fixed",
    "mci_from_moon_fixed_state",
    "moon_fixed_from_mci",
    "moon_fixed_from_mci_state",
    "moon_fixed_from_selenographic",
    "moon_fixed_matrix",
    "moon_pole_mci",
    "selenographic_from_moon_fixed",
]

Vec = NDArray[np.float64]
_ARCSEC_RAD = math.pi / (180.0 * 3600.0)
_DEG = math.pi / 180.0
_JULIAN_CENTURY_D = 36_525.0
# WGS 84 derived figures.
_E2_EARTH = F_EARTH * (2.0 - F_EARTH)
_B_EARTH_M = R_EARTH_EQ_M * (1.0 - F_EARTH)
# Earth rotation rate in rad per UT1 second (IERS 2010 eq. 5.15 ERA rate).
_ERA_RATE_RAD_S = 2.0 * math.pi * 1.002_737_811_911_354_48 / DAY_S


def _vec(x: ArrayLike) -> Vec:
    return np.asarray(x, dtype=np.float64)


def _apply(mat: Vec, r: Vec) -> Vec:
    """mat (3,3) or (n,3,3) applied to r (3,) or (n,3)."""
    out: Vec = np.einsum("...ij,...j->...i", mat, r)
    return out


def _apply_t(mat: Vec, r: Vec) -> Vec:
    out: Vec = np.einsum("...ji,...j->...i", mat, r)
    return out


def _rot(axis: int, ang: ArrayLike) -> Vec:
    """Passive (frame) rotation matrices about axis 0/1/2, shape (..., 3, 3)."""
    a = np.asarray(ang, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    one, zero = np.ones_like(a), np.zeros_like(a)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, s], [zero, -s, c]]
    elif axis == 1:
        rows = [[c, zero, -s], [zero, one, zero], [s, zero, c]]
    else:
        rows = [[c, s, zero], [-s, c, zero], [zero, zero, one]]
    return np.moveaxis(np.array(rows, dtype=np.float64), (0, 1), (-2, -1))


# --- Earth-centred <-> Moon-centred ----------------------------------------


def mci_from_eci(r_eci_m: ArrayLike, t_s: ArrayLike) -> Vec:
    """Moon-centred position from an Earth-centred one (same ICRF axes)."""
    return _vec(r_eci_m) - get_ephemeris().moon_eci_m(t_s)


def eci_from_mci(r_mci_m: ArrayLike, t_s: ArrayLike) -> Vec:
    return _vec(r_mci_m) + get_ephemeris().moon_eci_m(t_s)


def mci_from_eci_state(r_eci_m: ArrayLike, v_eci_m_s: ArrayLike, t_s: ArrayLike) -> tuple[Vec, Vec]:
    r_moon, v_moon = get_ephemeris().moon_state_eci(t_s)
    return _vec(r_eci_m) - r_moon, _vec(v_eci_m_s) - v_moon


def eci_from_mci_state(r_mci_m: ArrayLike, v_mci_m_s: ArrayLike, t_s: ArrayLike) -> tuple[Vec, Vec]:
    r_moon, v_moon = get_ephemeris().moon_state_eci(t_s)
    return _vec(r_mci_m) + r_moon, _vec(v_mci_m_s) + v_moon


# --- Moon orientation (IAU WGCCRE 2009) --------------------------------------


# (deg at J2000, deg/day) of the IAU 2009 lunar arguments E1..E13.
_MOON_ARGS_DEG = (
    (125.045, -0.052_992_1), (250.089, -0.105_984_2), (260.008, 13.012_000_9),
    (176.625, 13.340_715_4), (357.529, 0.985_600_3), (311.589, 26.405_708_4),
    (134.963, 13.064_993_0), (276.617, 0.328_714_6), (34.226, 1.748_487_7),
    (15.134, -0.158_976_3), (119.743, 0.003_609_6), (239.961, 0.164_357_3),
    (25.053, 12.959_008_8),
)  # fmt: skip


def _moon_angles_rad(t_s: ArrayLike) -> tuple[Vec, Vec, Vec]:
    """(alpha0, delta0, W) of the Moon's pole and prime meridian, radians."""
    d = np.asarray(tdb_s_past_j2000(np.asarray(t_s, dtype=np.float64))) / DAY_S
    cy = d / _JULIAN_CENTURY_D
    e = np.radians(
        np.array(
            [
                125.045 - 0.052_992_1 * d,
                250.089 - 0.105_984_2 * d,
                260.008 + 13.012_000_9 * d,
                176.625 + 13.340_715_4 * d,
                357.529 + 0.985_600_3 * d,
                311.589 + 26.405_708_4 * d,
                134.963 + 13.064_993_0 * d,
                276.617 + 0.328_714_6 * d,
                34.226 + 1.748_487_7 * d,
                15.134 - 0.158_976_3 * d,
                119.743 + 0.003_609_6 * d,
                239.961 + 0.164_357_3 * d,
                25.053 + 12.959_008_8 * d,
            ]
        )
    )
    s, c = np.sin(e), np.cos(e)
    alpha, delta, w = _moon_series_deg(d, cy, s, c)
    return np.radians(alpha), np.radians(delta), np.radians(np.mod(w, 360.0))


def _moon_series_deg(d: Any, cy: Any, s: Any, c: Any) -> tuple[Any, Any, Any]:
    """IAU WGCCRE 2009 Moon pole and prime meridian (deg) from the days ``d``
    and centuries ``cy`` past J2000 (TDB) and the sines/cosines ``s``, ``c`` of
    the arguments E1..E13; works on floats and on numpy arrays alike."""
    alpha = (
        269.9949 + 0.0031 * cy - 3.8787 * s[0] - 0.1204 * s[1] + 0.0700 * s[2] - 0.0172 * s[3]
        + 0.0072 * s[5] - 0.0052 * s[9] + 0.0043 * s[12]
    )  # fmt: skip
    delta = (
        66.5392 + 0.0130 * cy + 1.5419 * c[0] + 0.0239 * c[1] - 0.0278 * c[2] + 0.0068 * c[3]
        - 0.0029 * c[5] + 0.0009 * c[6] + 0.0008 * c[9] - 0.0009 * c[12]
    )  # fmt: skip
    w = (
        38.3213 + 13.176_358_15 * d - 1.4e-12 * d * d + 3.5610 * s[0] + 0.1208 * s[1]
        - 0.0642 * s[2] + 0.0158 * s[3] + 0.0252 * s[4] - 0.0066 * s[5] - 0.0047 * s[6]
        - 0.0046 * s[7] + 0.0028 * s[8] + 0.0052 * s[9] + 0.0040 * s[10] + 0.0019 * s[11]
        - 0.0044 * s[12]
    )  # fmt: skip
    return alpha, delta, w


def moon_fixed_matrix(t_s: ArrayLike) -> Vec:
    """Rotation MCI -> Moon-fixed: R3(W) R1(90 deg - delta0) R3(90 deg + alpha0)."""
    if np.ndim(t_s) == 0:
        return _moon_fixed_matrix_scalar(float(t_s))  # type: ignore[arg-type]
    alpha, delta, w = _moon_angles_rad(t_s)
    return _rot(2, w) @ _rot(0, 0.5 * math.pi - delta) @ _rot(2, 0.5 * math.pi + alpha)


def _moon_angles_scalar_rad(t_s: float) -> tuple[float, float, float]:
    """:func:`_moon_angles_rad` for one instant in plain floats (~10x cheaper:
    surface states and event values ask for one matrix at a time)."""
    d = float(tdb_s_past_j2000(t_s)) / DAY_S
    cy = d / _JULIAN_CENTURY_D
    rad = math.radians
    e = [rad(c0 + c1 * d) for c0, c1 in _MOON_ARGS_DEG]
    s = [math.sin(x) for x in e]
    c = [math.cos(x) for x in e]
    alpha, delta, w = _moon_series_deg(d, cy, s, c)
    return rad(alpha), rad(delta), rad(w % 360.0)


def _moon_fixed_matrix_scalar(t_s: float) -> Vec:
    """R3(W) R1(b) R3(a) multiplied out (a = 90 deg + alpha0, b = 90 deg - delta0)."""
    alpha, delta, w = _moon_angles_scalar_rad(t_s)
    ca, sa = math.cos(0.5 * math.pi + alpha), math.sin(0.5 * math.pi + alpha)
    cb, sb = math.cos(0.5 * math.pi - delta), math.sin(0.5 * math.pi - delta)
    cw, sw = math.cos(w), math.sin(w)
    n0 = (ca, sa, 0.0)  # rows of R1(b) R3(a)
    n1 = (-cb * sa, cb * ca, sb)
    n2 = (sb * sa, -sb * ca, cb)
    return np.array([
        [cw * n0[0] + sw * n1[0], cw * n0[1] + sw * n1[1], cw * n0[2] + sw * n1[2]],
        [-sw * n0[0] + cw * n1[0], -sw * n0[1] + cw * n1[1], -sw * n0[2] + cw * n1[2]],
        n2,
    ])


def moon_pole_mci(t_s: ArrayLike) -> Vec:
    """Unit vector of the Moon's north pole in ICRF axes."""
    alpha, delta, _ = _moon_angles_rad(t_s)
    cd = np.cos(delta)
    return np.moveaxis(np.array([cd * np.cos(alpha), cd * np.sin(alpha), np.sin(delta)]), 0, -1)


def _moon_rate_rad_s(t_s: ArrayLike, m_mid: Vec | None = None) -> Vec:
    """Angular velocity of the Moon-fixed frame, expressed in Moon-fixed axes.

    The W rate dominates; the librations' rates (< 1e-3 of it) are included
    by differencing the matrix over 60 s, which is exact enough for surface
    velocities (error < 1 mm/s)."""
    half_s = 30.0
    t = np.asarray(t_s, dtype=np.float64)
    m_plus, m_minus = moon_fixed_matrix(t + half_s), moon_fixed_matrix(t - half_s)
    m_dot = (m_plus - m_minus) / (2.0 * half_s)
    if m_mid is None:
        m_mid = moon_fixed_matrix(t)
    skew = m_dot @ np.swapaxes(m_mid, -1, -2)  # = -[omega]x in fixed axes
    return np.stack([skew[..., 1, 2], skew[..., 2, 0], skew[..., 0, 1]], axis=-1)


def moon_fixed_from_mci(r_mci_m: ArrayLike, t_s: ArrayLike) -> Vec:
    return _apply(moon_fixed_matrix(t_s), _vec(r_mci_m))


def mci_from_moon_fixed(r_mf_m: ArrayLike, t_s: ArrayLike) -> Vec:
    return _apply_t(moon_fixed_matrix(t_s), _vec(r_mf_m))


def moon_fixed_from_mci_state(
    r_mci_m: ArrayLike, v_mci_m_s: ArrayLike, t_s: ArrayLike
) -> tuple[Vec, Vec]:
    """Position and velocity relative to the rotating Moon-fixed frame."""
    m = moon_fixed_matrix(t_s)
    r_mf = _apply(m, _vec(r_mci_m))
    v_rot = _apply(m, _vec(v_mci_m_s))
    return r_mf, v_rot - np.cross(_moon_rate_rad_s(t_s, m), r_mf)


def mci_from_moon_fixed_state(
    r_mf_m: ArrayLike, v_mf_m_s: ArrayLike, t_s: ArrayLike
) -> tuple[Vec, Vec]:
    r_mf, v_mf = _vec(r_mf_m), _vec(v_mf_m_s)
    m = moon_fixed_matrix(t_s)
    v_inertial_mf = v_mf + np.cross(_moon_rate_rad_s(t_s, m), r_mf)
    return _apply_t(m, r_mf), _apply_t(m, v_inertial_mf)


def selenographic_from_moon_fixed(r_mf_m: ArrayLike) -> tuple[float, float, float]:
    """(lat_deg, lon_deg east in -180..180, height above R_MOON_M in m)."""
    x, y, z = (float(c) for c in _vec(r_mf_m))
    rho = math.hypot(x, y)
    return (
        math.degrees(math.atan2(z, rho)),
        math.degrees(math.atan2(y, x)),
        math.hypot(rho, z) - R_MOON_M,
    )


def moon_fixed_from_selenographic(lat_deg: float, lon_deg: float, h_m: float) -> Vec:
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    r = R_MOON_M + h_m
    return np.array(
        [r * math.cos(lat) * math.cos(lon), r * math.cos(lat) * math.sin(lon), r * math.sin(lat)]
    )


# --- Earth orientation ------------------------------------------------------

# Leading IAU 2000 nutation terms: multipliers of (l, l', F, D, Omega) and
# (dpsi sin, dpsi sin * T, deps cos, deps cos * T) in arcsec. These 20 terms
# carry all amplitudes >= 5 mas (IERS Conventions 2010 table 5.3a/b); the
# omitted ones sum to ~25 mas, < 1 m at the Earth's surface.
_NUT_TERMS = np.array(
    [
        [0, 0, 0, 0, 1, -17.2064161, -0.0174666, 9.2052331, 0.0009086],
        [0, 0, 2, -2, 2, -1.3170906, -0.0001675, 0.5730336, -0.0003015],
        [0, 0, 2, 0, 2, -0.2276413, -0.0000234, 0.0978459, -0.0000485],
        [0, 0, 0, 0, 2, 0.2074554, 0.0000207, -0.0897492, 0.0000470],
        [0, 1, 0, 0, 0, 0.1475877, -0.0003633, 0.0073871, -0.0000184],
        [0, 1, 2, -2, 2, -0.0516821, 0.0001226, 0.0224386, -0.0000677],
        [1, 0, 0, 0, 0, 0.0711159, 0.0000073, -0.0006750, 0.0],
        [0, 0, 2, 0, 1, -0.0387298, -0.0000367, 0.0200728, 0.0000018],
        [1, 0, 2, 0, 2, -0.0301461, -0.0000036, 0.0129025, -0.0000063],
        [0, -1, 2, -2, 2, 0.0215829, -0.0000494, -0.0095929, 0.0000299],
        [0, 0, 2, -2, 1, 0.0128227, 0.0000137, -0.0068982, -0.0000009],
        [-1, 0, 2, 0, 2, 0.0123457, 0.0000011, -0.0053311, 0.0000032],
        [-1, 0, 0, 2, 0, 0.0156994, 0.0000010, -0.0001235, 0.0],
        [1, 0, 0, 0, 1, 0.0063110, 0.0000063, -0.0033228, 0.0],
        [-1, 0, 0, 0, 1, -0.0057976, -0.0000063, 0.0031429, 0.0],
        [-1, 0, 2, 2, 2, -0.0059641, -0.0000011, 0.0025543, -0.0000011],
        [1, 0, 2, 0, 1, -0.0051613, -0.0000042, 0.0026366, 0.0],
        [-2, 0, 2, 0, 1, 0.0045893, 0.0000050, -0.0024236, -0.0000010],
        [0, 0, 0, 2, 0, 0.0063384, 0.0000011, -0.0001220, 0.0],
        [0, 0, 2, 2, 2, -0.0038571, -0.0000001, 0.0016452, -0.0000011],
    ]
)


def _delaunay_rad(cy: Vec) -> Vec:
    """Fundamental arguments l, l', F, D, Omega (IERS 2010 eq. 5.43), radians."""
    arcsec = np.array(
        [
            485_868.249_036 + 1_717_915_923.2178 * cy + 31.8792 * cy**2,
            1_287_104.793_05 + 129_596_581.0481 * cy - 0.5532 * cy**2,
            335_779.526_232 + 1_739_527_262.8478 * cy - 12.7512 * cy**2,
            1_072_260.703_69 + 1_602_961_601.2090 * cy - 6.3706 * cy**2,
            450_160.398_036 - 6_962_890.5431 * cy + 7.4722 * cy**2,
        ]
    )
    out: Vec = np.mod(arcsec, 1_296_000.0) * _ARCSEC_RAD
    return out


def _nutation_rad(cy: Vec) -> tuple[Vec, Vec]:
    """(dpsi, deps) from the truncated IAU 2000 series."""
    args = np.einsum("kj,j...->k...", _NUT_TERMS[:, :5], _delaunay_rad(cy))
    tm = _NUT_TERMS
    shape = (-1,) + (1,) * np.ndim(cy)
    dpsi = ((tm[:, 5].reshape(shape) + tm[:, 6].reshape(shape) * cy) * np.sin(args)).sum(0)
    deps = ((tm[:, 7].reshape(shape) + tm[:, 8].reshape(shape) * cy) * np.cos(args)).sum(0)
    return dpsi * _ARCSEC_RAD, deps * _ARCSEC_RAD


def _poly_arcsec(coeffs: tuple[float, ...], cy: Vec) -> Vec:
    out = np.zeros_like(cy)
    for c in reversed(coeffs):
        out = out * cy + c
    return out * _ARCSEC_RAD


def earth_rotation_angle_rad(t_s: ArrayLike) -> Vec:
    """ERA (IERS 2010 eq. 5.15) from UT1."""
    du = np.asarray(ut1_jd(np.asarray(t_s, dtype=np.float64))) - J2000_JD
    frac = np.mod(du, 1.0)
    return 2.0 * math.pi * np.mod(frac + 0.779_057_273_2640 + 0.002_737_811_911_354_48 * du, 1.0)


def earth_fixed_matrix(t_s: ArrayLike) -> Vec:
    """Rotation GCRS (ECI) -> ITRS without polar motion (ECEF)."""
    if np.ndim(t_s) == 0:
        return _earth_fixed_matrix_at(float(t_s))  # type: ignore[arg-type]
    return _earth_fixed_matrix(t_s)


@lru_cache(maxsize=64)
def _earth_fixed_matrix_at(t_s: float) -> Vec:
    """One instant, kept (read-only): solvers ask for the same instant hundreds of
    times (the entry-interface time of every targeting residual)."""
    out = _earth_fixed_matrix(t_s)
    out.setflags(write=False)
    return out


def _earth_fixed_matrix(t_s: ArrayLike) -> Vec:
    t = np.asarray(t_s, dtype=np.float64)
    cy = (np.asarray(tt_jd(t)) - J2000_JD) / _JULIAN_CENTURY_D
    # IAU 2006 Fukushima-Williams angles incl. frame bias (IERS 2010 eq. 5.40).
    gamb = _poly_arcsec((-0.052928, 10.556378, 0.4932044, -0.00031238, -2.788e-6, 2.60e-8), cy)
    phib = _poly_arcsec((84381.412819, -46.811016, 0.0511268, 0.00053289, -4.40e-7, -1.76e-8), cy)
    psib = _poly_arcsec((-0.041775, 5038.481484, 1.5584175, -0.00018522, -2.6452e-5, -1.48e-8), cy)
    eps_a = _poly_arcsec((84381.406, -46.836769, -0.0001831, 0.00200340, -5.76e-7, -4.34e-8), cy)
    dpsi, deps = _nutation_rad(cy)
    npb = _rot(0, -(eps_a + deps)) @ _rot(2, -(psib + dpsi)) @ _rot(0, phib) @ _rot(2, gamb)
    # GMST (IAU 2006, IERS 2010 eq. 5.32) plus the equation of the equinoxes.
    gmst = earth_rotation_angle_rad(t) + _poly_arcsec(
        (0.014506, 4612.156534, 1.3915817, -4.4e-7, -2.9956e-5, -3.68e-8), cy
    )
    gast = gmst + dpsi * np.cos(eps_a)
    return _rot(2, gast) @ npb


def ecef_from_eci(r_eci_m: ArrayLike, t_s: ArrayLike) -> Vec:
    return _apply(earth_fixed_matrix(t_s), _vec(r_eci_m))


def eci_from_ecef(r_ecef_m: ArrayLike, t_s: ArrayLike) -> Vec:
    return _apply_t(earth_fixed_matrix(t_s), _vec(r_ecef_m))


def _earth_omega_ecef(t_s: ArrayLike) -> Vec:
    # Precession-nutation rates are ~1e-4 of the spin; the spin alone gives
    # surface velocities right to ~0.05 mm/s.
    w = np.zeros((*np.shape(t_s), 3))
    w[..., 2] = _ERA_RATE_RAD_S
    return w


def ecef_from_eci_state(
    r_eci_m: ArrayLike, v_eci_m_s: ArrayLike, t_s: ArrayLike
) -> tuple[Vec, Vec]:
    r_ef = ecef_from_eci(r_eci_m, t_s)
    return r_ef, ecef_from_eci(v_eci_m_s, t_s) - np.cross(_earth_omega_ecef(t_s), r_ef)


def eci_from_ecef_state(
    r_ecef_m: ArrayLike, v_ecef_m_s: ArrayLike, t_s: ArrayLike
) -> tuple[Vec, Vec]:
    r_ef, v_ef = _vec(r_ecef_m), _vec(v_ecef_m_s)
    return eci_from_ecef(r_ef, t_s), eci_from_ecef(
        v_ef + np.cross(_earth_omega_ecef(t_s), r_ef), t_s
    )


def geodetic_from_ecef(r_ecef_m: ArrayLike) -> tuple[float, float, float]:
    """WGS 84 (lat_deg, lon_deg, h_m) by Newton iteration on latitude (< 1 nm)."""
    x, y, z = (float(c) for c in _vec(r_ecef_m))
    p = math.hypot(x, y)
    lat = math.atan2(z, p * (1.0 - _E2_EARTH))
    for _ in range(10):
        sl = math.sin(lat)
        n = R_EARTH_EQ_M / math.sqrt(1.0 - _E2_EARTH * sl * sl)
        new_lat = math.atan2(z + _E2_EARTH * n * sl, p)
        if abs(new_lat - lat) < 1e-14:
            lat = new_lat
            break
        lat = new_lat
    sl, cl = math.sin(lat), math.cos(lat)
    n = R_EARTH_EQ_M / math.sqrt(1.0 - _E2_EARTH * sl * sl)
    # Height via the projection that stays well-conditioned at the poles.
    h = p * cl + z * sl - R_EARTH_EQ_M**2 / n
    return math.degrees(lat), math.degrees(math.atan2(y, x)), h


def ecef_from_geodetic(lat_deg: float, lon_deg: float, h_m: float) -> Vec:
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    sl, cl = math.sin(lat), math.cos(lat)
    n = R_EARTH_EQ_M / math.sqrt(1.0 - _E2_EARTH * sl * sl)
    return np.array(
        [
            (n + h_m) * cl * math.cos(lon),
            (n + h_m) * cl * math.sin(lon),
            (n * (1.0 - _E2_EARTH) + h_m) * sl,
        ]
    )
