"""Gravitational accelerations, vectorised over positions (SI units).

Formulas: point mass and zonal J2 (Vallado 2013, eq. 8-30 written with an
arbitrary pole unit vector), and the third-body perturbation of a body on a
spacecraft relative to the central body (direct minus indirect term,
Montenbruck & Gill 2000, eq. 3.37).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["j2_accel", "point_mass_accel", "third_body_accel"]

Vec = NDArray[np.float64]


def _norm(r: Vec) -> Vec:
    out: Vec = np.sqrt(np.einsum("...i,...i->...", r, r))[..., None]
    return out


def point_mass_accel(r_m: ArrayLike, mu_m3_s2: float) -> Vec:
    """-mu r / |r|^3."""
    r = np.asarray(r_m, dtype=np.float64)
    return -mu_m3_s2 * r / _norm(r) ** 3


def j2_accel(r_m: ArrayLike, mu_m3_s2: float, j2: float, radius_m: float, pole: ArrayLike) -> Vec:
    """Acceleration of the J2 zonal term for a body whose spin axis is ``pole``."""
    r = np.asarray(r_m, dtype=np.float64)
    p = np.asarray(pole, dtype=np.float64)
    rn = _norm(r)
    sin_lat = np.einsum("...i,...i->...", r, p)[..., None] / rn
    k = -1.5 * j2 * mu_m3_s2 * radius_m**2 / rn**4
    out: Vec = k * ((1.0 - 5.0 * sin_lat**2) * r / rn + 2.0 * sin_lat * p)
    return out


def third_body_accel(r_m: ArrayLike, r_body_m: ArrayLike, mu_body_m3_s2: float) -> Vec:
    """Perturbation by a body at ``r_body_m`` (both relative to the central body)."""
    r = np.asarray(r_m, dtype=np.float64)
    s = np.asarray(r_body_m, dtype=np.float64)
    d = s - r
    return mu_body_m3_s2 * (d / _norm(d) ** 3 - s / _norm(s) ** 3)
