"""Campaign statistics: the success rate with its exact interval, percentiles, ellipses.

Pure functions of numbers and numpy arrays (no I/O), so each is checked
against an authority alone (tests/unit/campaign/test_stats.py):

* the success rate's interval is Clopper-Pearson's (1934), the "exact" one:
  it never covers less than its confidence whatever the true rate, which is
  the property a mission-success claim needs (Wald's interval undercovers
  badly near 100 %, exactly where a campaign's rate sits);
* percentiles are numpy's ``method="linear"``: Hyndman & Fan (1996)
  definition 7, R's default and Excel's PERCENTILE.INC;
* a dispersion ellipse is ``k`` standard deviations along the principal axes
  of the sample covariance (``k = 3`` holds 1 - exp(-k^2/2) = 98.9 % of a
  2-D Gaussian, the chi-square law with 2 degrees of freedom);
* local east/north coordinates are the azimuthal equidistant projection on a
  sphere: each point keeps its great-circle distance and its bearing from
  the centre, so a point's distance in the plane is its miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import binomtest

__all__ = [
    "CONFIDENCE",
    "ELLIPSE_K",
    "MIN_ELLIPSE_POINTS",
    "PERCENTILES",
    "PERCENTILE_METHOD",
    "Ellipse",
    "Spread",
    "StatsError",
    "SuccessRate",
    "dispersion_ellipse",
    "east_north_m",
    "ellipse_outline",
    "gaussian_share",
    "lat_lon_deg",
    "spread",
    "success_rate",
]

Vec = NDArray[np.float64]

#: The confidence of the success rate's interval and of its one-sided bound.
CONFIDENCE = 0.95
#: The percentiles reported of every margin and outcome.
PERCENTILES = (50.0, 90.0, 99.0)
#: numpy's name for Hyndman & Fan's definition 7 (its default, said out loud).
PERCENTILE_METHOD: Final = "linear"
#: Standard deviations along each principal axis of a dispersion ellipse.
ELLIPSE_K = 3.0
#: Fewer points than this give no ellipse: two points always fit a segment
#: (a covariance of rank one), which says nothing about the spread across it.
MIN_ELLIPSE_POINTS = 3


class StatsError(ValueError):
    """Input the statistics cannot take; the message says what to fix."""


# --- success rate ------------------------------------------------------------------


@dataclass(frozen=True)
class SuccessRate:
    """``successes`` of ``cases`` with the Clopper-Pearson bounds at ``confidence``:
    ``low``/``high`` two-sided, ``lower_one_sided`` the one-sided lower bound
    (the figure to quote for "succeeds at least this often")."""

    successes: int
    cases: int
    confidence: float
    low: float
    high: float
    lower_one_sided: float

    @property
    def rate(self) -> float:
        return self.successes / self.cases


def success_rate(successes: int, cases: int, confidence: float = CONFIDENCE) -> SuccessRate:
    """The success rate of ``cases`` runs with its exact (Clopper-Pearson) bounds."""
    if cases < 1:
        raise StatsError(f"a success rate needs at least one case, not {cases}")
    if not 0 <= successes <= cases:
        raise StatsError(f"successes must be between 0 and the {cases} cases, not {successes}")
    if not 0.0 < confidence < 1.0:
        raise StatsError(f"confidence must be strictly between 0 and 1, not {confidence}")
    two_sided = binomtest(successes, cases).proportion_ci(confidence_level=confidence,
                                                          method="exact")
    # alternative="greater" makes the interval [lower bound, 1]: the one-sided bound
    # puts all of 1 - confidence in the lower tail.
    one_sided = binomtest(successes, cases, alternative="greater").proportion_ci(
        confidence_level=confidence, method="exact")
    return SuccessRate(successes, cases, confidence, float(two_sided.low),
                       float(two_sided.high), float(one_sided.low))


# --- percentiles -------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Percentiles, minimum and maximum of the finite values of one quantity
    (``count`` of them; NaN everywhere when there are none)."""

    count: int
    percentiles: tuple[tuple[float, float], ...]  # (q in percent, value)
    minimum: float
    maximum: float

    def at(self, q: float) -> float:
        """The ``q``-th percentile, one of those computed."""
        for q_at, value in self.percentiles:
            if q_at == q:
                return value
        have = [q_at for q_at, _ in self.percentiles]
        raise StatsError(f"percentile {q} was not computed; have {have}")


def spread(values: ArrayLike, qs: tuple[float, ...] = PERCENTILES) -> Spread:
    """Percentiles ``qs`` (numpy "linear", Hyndman & Fan 7), min and max of the
    finite ``values``; NaN (an event that did not happen) is left out."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if not x.size:
        return Spread(0, tuple((q, math.nan) for q in qs), math.nan, math.nan)
    at = np.percentile(x, list(qs), method=PERCENTILE_METHOD)
    return Spread(int(x.size), tuple((float(q), float(v)) for q, v in zip(qs, at, strict=True)),
                  float(x.min()), float(x.max()))


# --- dispersion ellipses -----------------------------------------------------------


@dataclass(frozen=True)
class Ellipse:
    """The ``k``-sigma ellipse of ``count`` points in a local east/north plane.

    ``centre_east``/``centre_north`` is the points' mean (the offset from the
    plane's origin); the semi-axes are ``k`` times the square roots of the
    sample covariance's eigenvalues; ``orientation_deg`` is the major axis's
    direction in degrees from north towards east, in [0, 180)."""

    count: int
    k: float
    centre_east: float
    centre_north: float
    semi_major: float
    semi_minor: float
    orientation_deg: float

    @property
    def centre_offset(self) -> float:
        return math.hypot(self.centre_east, self.centre_north)

    @property
    def containment(self) -> float:
        return gaussian_share(self.k)


def gaussian_share(k: float) -> float:
    """The share of a 2-D Gaussian inside its ``k``-sigma ellipse: 1 - exp(-k^2 / 2)
    (the squared Mahalanobis distance is chi-square with 2 degrees of freedom)."""
    return 1.0 - math.exp(-k * k / 2.0)


def dispersion_ellipse(east: ArrayLike, north: ArrayLike, k: float = ELLIPSE_K) -> Ellipse:
    """The ``k``-sigma ellipse of the points (``east``, ``north``), from the
    eigen-decomposition of their sample covariance (divisor n - 1)."""
    e = np.asarray(east, dtype=np.float64).ravel()
    n = np.asarray(north, dtype=np.float64).ravel()
    if e.shape != n.shape:
        raise StatsError(f"east and north differ in length ({e.size} and {n.size})")
    keep = np.isfinite(e) & np.isfinite(n)
    e, n = e[keep], n[keep]
    if e.size < MIN_ELLIPSE_POINTS:
        raise StatsError(f"an ellipse needs at least {MIN_ELLIPSE_POINTS} points with both "
                         f"coordinates, not {e.size}")
    if not k > 0.0:
        raise StatsError(f"k must be positive, not {k}")
    cov = np.cov(np.vstack((e, n)), ddof=1)
    variances, axes = np.linalg.eigh(cov)  # ascending: the major axis is the last column
    major_e, major_n = axes[0, 1], axes[1, 1]
    orientation = math.degrees(math.atan2(major_e, major_n)) % 180.0
    return Ellipse(
        count=int(e.size), k=k, centre_east=float(e.mean()), centre_north=float(n.mean()),
        semi_major=k * math.sqrt(max(float(variances[1]), 0.0)),
        semi_minor=k * math.sqrt(max(float(variances[0]), 0.0)),  # round-off can give -0
        orientation_deg=orientation,
    )


def ellipse_outline(ellipse: Ellipse, points: int = 181) -> tuple[Vec, Vec]:
    """``points`` points (closed: the last is the first) around the ellipse, east and north."""
    t = np.linspace(0.0, 2.0 * np.pi, points)
    theta = math.radians(ellipse.orientation_deg)
    major = np.array([math.sin(theta), math.cos(theta)])  # (east, north) of the major axis
    minor = np.array([math.cos(theta), -math.sin(theta)])
    along, across = ellipse.semi_major * np.cos(t), ellipse.semi_minor * np.sin(t)
    east = ellipse.centre_east + along * major[0] + across * minor[0]
    north = ellipse.centre_north + along * major[1] + across * minor[1]
    return east, north


# --- local east/north on a sphere --------------------------------------------------


def _unit(lat_rad: Vec, lon_rad: Vec) -> Vec:
    return np.stack((np.cos(lat_rad) * np.cos(lon_rad), np.cos(lat_rad) * np.sin(lon_rad),
                     np.sin(lat_rad)), axis=-1)


def east_north_m(lat_deg: ArrayLike, lon_deg: ArrayLike, centre_lat_deg: float,
                 centre_lon_deg: float, radius_m: float) -> tuple[Vec, Vec]:
    """Points as east/north metres about a centre on a sphere of ``radius_m``
    (azimuthal equidistant: great-circle distance along the initial bearing).
    NaN in, NaN out."""
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    lat0, lon0 = math.radians(centre_lat_deg), math.radians(centre_lon_deg)
    r = _unit(lat, lon)
    east_hat = np.array([-math.sin(lon0), math.cos(lon0), 0.0])
    north_hat = np.array([-math.sin(lat0) * math.cos(lon0), -math.sin(lat0) * math.sin(lon0),
                          math.cos(lat0)])
    up_hat = np.array([math.cos(lat0) * math.cos(lon0), math.cos(lat0) * math.sin(lon0),
                       math.sin(lat0)])
    de, dn, du = r @ east_hat, r @ north_hat, r @ up_hat
    across = np.hypot(de, dn)
    # atan2 of the chord's across and along parts: accurate at any distance,
    # where arccos of the dot product loses half its digits near the centre.
    arc_m = radius_m * np.arctan2(across, du)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(across > 0.0, arc_m / np.where(across > 0.0, across, 1.0), 0.0)
    return de * scale, dn * scale


def lat_lon_deg(east_m: ArrayLike, north_m: ArrayLike, centre_lat_deg: float,
                centre_lon_deg: float, radius_m: float) -> tuple[Vec, Vec]:
    """The inverse of :func:`east_north_m`: latitude and longitude (deg) of
    east/north metres about the centre (to draw circles and ellipses on a map)."""
    e = np.asarray(east_m, dtype=np.float64)
    n = np.asarray(north_m, dtype=np.float64)
    delta = np.hypot(e, n) / radius_m  # the central angle
    bearing = np.arctan2(e, n)
    lat0, lon0 = math.radians(centre_lat_deg), math.radians(centre_lon_deg)
    sin_lat = (math.sin(lat0) * np.cos(delta)
               + math.cos(lat0) * np.sin(delta) * np.cos(bearing))
    lat = np.arcsin(np.clip(sin_lat, -1.0, 1.0))
    lon = lon0 + np.arctan2(np.sin(bearing) * np.sin(delta) * math.cos(lat0),
                            np.cos(delta) - math.sin(lat0) * sin_lat)
    return np.degrees(lat), (np.degrees(lon) + 180.0) % 360.0 - 180.0
