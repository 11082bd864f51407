"""Two-body motion: universal-variable Kepler propagation and classical elements.

The universal-variable formulation (Bate, Mueller & White 1971, ch. 4;
Vallado 2013, alg. 8) covers ellipses, parabolas and hyperbolas with one
equation, so a coast never has to know its conic in advance. Newton's method
on the universal anomaly converges in a handful of iterations from the
Vallado starting guesses; a bisection bracket keeps it safe on extreme cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Elements",
    "KeplerError",
    "elements_from_rv",
    "period_s",
    "propagate_kepler",
    "rv_from_elements",
    "stumpff_c2_c3",
]

Vec = NDArray[np.float64]
_TWO_PI = 2.0 * math.pi
# Below this eccentricity/inclination the node or periapsis is undefined and
# the angle is folded into the next one (Vallado 2013, alg. 9 special cases).
_SMALL = 1e-11


class KeplerError(ArithmeticError):
    """Kepler's equation did not converge for the given state and interval."""

    def __init__(self, dt_s: float, alpha_1_m: float) -> None:
        super().__init__(f"universal Kepler solve failed: dt={dt_s} s, 1/a={alpha_1_m} 1/m")
        self.dt_s = dt_s
        self.alpha_1_m = alpha_1_m


@dataclass(frozen=True)
class Elements:
    """Classical orbital elements; a_m < 0 for hyperbolas, angles in radians."""

    a_m: float
    e: float
    i_rad: float
    raan_rad: float
    argp_rad: float
    nu_rad: float


def stumpff_c2_c3(psi: float) -> tuple[float, float]:
    """Stumpff functions c2(psi), c3(psi), with series near psi = 0."""
    if psi > 1e-6:
        sq = math.sqrt(psi)
        return (1.0 - math.cos(sq)) / psi, (sq - math.sin(sq)) / (psi * sq)
    if psi < -1e-6:
        sq = math.sqrt(-psi)
        return (math.cosh(sq) - 1.0) / -psi, (math.sinh(sq) - sq) / (-psi * sq)
    return 0.5 - psi / 24.0 + psi * psi / 720.0, 1.0 / 6.0 - psi / 120.0 + psi * psi / 5040.0


def _initial_chi(r0: float, rv0: float, alpha: float, dt: float, mu: float) -> float:
    """Vallado's starting guess for the universal anomaly chi (sqrt(m))."""
    sqmu = math.sqrt(mu)
    if alpha > 1e-12:  # ellipse
        return sqmu * dt * alpha
    if alpha < -1e-12:  # hyperbola
        a = 1.0 / alpha
        sign = math.copysign(1.0, dt)
        arg = (-2.0 * mu * alpha * dt) / (rv0 + sign * math.sqrt(-mu * a) * (1.0 - r0 * alpha))
        # The log guess is for long arcs; for short ones (arg <= 1) it has the
        # wrong sign, and the first-order guess below is the better start.
        if arg > 1.0:
            return sign * math.sqrt(-a) * math.log(arg)
    return sqmu * dt / r0  # near-parabolic or short arc: first-order guess


def _solve_chi(
    r0: float, rv0: float, alpha: float, dt: float, mu: float
) -> tuple[float, float, float, float]:
    """Solve the universal Kepler equation; returns (chi, psi, c2, c3, r)."""
    sqmu = math.sqrt(mu)
    chi = _initial_chi(r0, rv0, alpha, dt, mu)
    for _ in range(60):
        psi = chi * chi * alpha
        c2, c3 = stumpff_c2_c3(psi)
        chi2 = chi * chi
        r = chi2 * c2 + rv0 / sqmu * chi * (1.0 - psi * c3) + r0 * (1.0 - psi * c2)
        t_chi = chi2 * chi * c3 + rv0 / sqmu * chi2 * c2 + r0 * chi * (1.0 - psi * c3)
        step = (sqmu * dt - t_chi) / r
        chi += step
        if abs(step) <= 1e-13 * max(1.0, abs(chi)):
            break
    else:
        # Newton can dither at rounding level just above the tolerance (seen by
        # hypothesis on a 10 s arc of a high Earth orbit), or wander on very
        # eccentric orbits; t(chi) is monotonic, so bisection always converges.
        if not abs(step) <= 1e-9 * max(1.0, abs(chi)):
            chi = _bisect_chi(r0, rv0, alpha, dt, mu)
    psi = chi * chi * alpha
    c2, c3 = stumpff_c2_c3(psi)
    return chi, psi, c2, c3


def _time_of_chi(chi: float, r0: float, rv0: float, alpha: float, mu: float) -> float:
    """sqrt(mu) * t as a function of the universal anomaly (increasing in chi)."""
    psi = chi * chi * alpha
    c2, c3 = stumpff_c2_c3(psi)
    return chi**3 * c3 + rv0 / math.sqrt(mu) * chi * chi * c2 + r0 * chi * (1.0 - psi * c3)


def _bisect_chi(r0: float, rv0: float, alpha: float, dt: float, mu: float) -> float:
    target = math.sqrt(mu) * dt
    lo, hi = 0.0, math.copysign(max(abs(math.sqrt(mu) * dt / r0), 1.0), dt)
    if dt < 0:
        lo, hi = hi, lo
    for _ in range(200):  # widen until the root is bracketed
        if _time_of_chi(lo, r0, rv0, alpha, mu) <= target <= _time_of_chi(hi, r0, rv0, alpha, mu):
            break
        lo, hi = (lo * 2.0, hi) if dt < 0 else (lo, hi * 2.0)
    else:
        raise KeplerError(dt, alpha)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _time_of_chi(mid, r0, rv0, alpha, mu) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def propagate_kepler(
    r_m: ArrayLike, v_m_s: ArrayLike, dt_s: float, mu_m3_s2: float
) -> tuple[Vec, Vec]:
    """Two-body state after ``dt_s`` (any sign, any conic) via f and g functions."""
    r0_vec = np.asarray(r_m, dtype=np.float64)
    v0_vec = np.asarray(v_m_s, dtype=np.float64)
    if dt_s == 0.0:
        return r0_vec.copy(), v0_vec.copy()
    mu = float(mu_m3_s2)
    r0 = float(np.linalg.norm(r0_vec))
    rv0 = float(r0_vec @ v0_vec)
    alpha = 2.0 / r0 - float(v0_vec @ v0_vec) / mu  # 1/a
    dt = float(dt_s)
    if alpha > 1e-12:
        # An ellipse repeats: solve over the arc within one period. Over many
        # revolutions chi and psi grow large and Newton loses digits to
        # cancellation in the Stumpff functions (hypothesis found a 20-rev arc).
        dt = math.fmod(dt, _TWO_PI * math.sqrt(1.0 / (alpha**3 * mu)))
        if dt == 0.0:
            return r0_vec.copy(), v0_vec.copy()
    chi, psi, c2, c3 = _solve_chi(r0, rv0, alpha, dt, mu)
    sqmu = math.sqrt(mu)
    chi2 = chi * chi
    f = 1.0 - chi2 / r0 * c2
    g = dt - chi2 * chi / sqmu * c3
    r_vec = f * r0_vec + g * v0_vec
    r = float(np.linalg.norm(r_vec))
    g_dot = 1.0 - chi2 / r * c2
    f_dot = sqmu / (r * r0) * chi * (psi * c3 - 1.0)
    return r_vec, f_dot * r0_vec + g_dot * v0_vec


def period_s(a_m: float, mu: float) -> float:
    """Orbital period of an ellipse with semi-major axis ``a_m``."""
    if a_m <= 0.0:
        raise ValueError(f"period needs a > 0 (ellipse), got a_m={a_m}")
    return _TWO_PI * math.sqrt(a_m**3 / mu)


def _angle(cos_val: float, positive: bool) -> float:
    ang = math.acos(max(-1.0, min(1.0, cos_val)))
    return ang if positive else _TWO_PI - ang


def elements_from_rv(r_m: ArrayLike, v_m_s: ArrayLike, mu: float) -> Elements:
    """Classical elements of a state (Vallado 2013, alg. 9).

    Circular orbits put the argument of latitude (or true longitude for
    equatorial ones) in ``nu_rad`` with ``argp_rad`` = 0; equatorial orbits
    put the longitude of periapsis in ``argp_rad`` with ``raan_rad`` = 0, so
    :func:`rv_from_elements` always recovers the state.
    """
    r_vec = np.asarray(r_m, dtype=np.float64)
    v_vec = np.asarray(v_m_s, dtype=np.float64)
    r = float(np.linalg.norm(r_vec))
    h_vec = np.cross(r_vec, v_vec)
    h = float(np.linalg.norm(h_vec))
    n_vec = np.array([-h_vec[1], h_vec[0], 0.0])
    n = float(np.linalg.norm(n_vec))
    e_vec = ((v_vec @ v_vec - mu / r) * r_vec - (r_vec @ v_vec) * v_vec) / mu
    e = float(np.linalg.norm(e_vec))
    energy = float(v_vec @ v_vec) / 2.0 - mu / r
    a = -mu / (2.0 * energy) if abs(e - 1.0) > 1e-12 else math.inf
    i = math.acos(max(-1.0, min(1.0, h_vec[2] / h)))
    equatorial = n < _SMALL * h
    circular = e < _SMALL
    raan = 0.0 if equatorial else _angle(n_vec[0] / n, n_vec[1] >= 0.0)
    if circular:
        argp = 0.0
        if equatorial:  # true longitude, measured from x
            nu = _angle(r_vec[0] / r, (r_vec[1] >= 0.0) == (h_vec[2] >= 0.0))
        else:  # argument of latitude
            nu = _angle(float(n_vec @ r_vec) / (n * r), r_vec[2] >= 0.0)
    else:
        if equatorial:  # longitude of periapsis
            argp = _angle(e_vec[0] / e, (e_vec[1] >= 0.0) == (h_vec[2] >= 0.0))
        else:
            argp = _angle(float(n_vec @ e_vec) / (n * e), e_vec[2] >= 0.0)
        nu = _angle(float(e_vec @ r_vec) / (e * r), float(r_vec @ v_vec) >= 0.0)
    return Elements(a_m=a, e=e, i_rad=i, raan_rad=raan, argp_rad=argp, nu_rad=nu)


def rv_from_elements(el: Elements, mu: float) -> tuple[Vec, Vec]:
    """State from classical elements (perifocal frame rotated by 3-1-3 angles)."""
    p = el.a_m * (1.0 - el.e * el.e)
    if not p > 0.0:
        raise ValueError(f"semi-latus rectum must be > 0, got {p} m from {el}")
    cnu, snu = math.cos(el.nu_rad), math.sin(el.nu_rad)
    r = p / (1.0 + el.e * cnu)
    r_pf = np.array([r * cnu, r * snu, 0.0])
    k = math.sqrt(mu / p)
    v_pf = np.array([-k * snu, k * (el.e + cnu), 0.0])
    rot = _perifocal_to_inertial(el.raan_rad, el.i_rad, el.argp_rad)
    return rot @ r_pf, rot @ v_pf


def _perifocal_to_inertial(raan: float, inc: float, argp: float) -> Vec:
    co, so = math.cos(raan), math.sin(raan)
    ci, si = math.cos(inc), math.sin(inc)
    cw, sw = math.cos(argp), math.sin(argp)
    return np.array(
        [
            [co * cw - so * sw * ci, -co * sw - so * cw * ci, so * si],
            [so * cw + co * sw * ci, -so * sw + co * cw * ci, -co * si],
            [sw * si, cw * si, ci],
        ]
    )
