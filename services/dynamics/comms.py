"""Communications geometry: occlusion, ground stations, light time, Queqiao-2.

Occlusion treats the Earth and the Moon as spheres (Earth: WGS 84 equatorial
radius, so paths grazing the poles are judged ~21 km conservatively; Moon:
IAU mean radius). A point within ``SURFACE_BAND_M`` of a body's reference
sphere is a surface user of that body: it sees whatever is above its local
horizon plane, which is exact for a sphere and avoids the ambiguity of a
landing site that lies below the reference sphere (the CE-6 site is at
-5,256 m).

Queqiao-2 (reference (c), "Queqiao-2 mission orbit"): the published sets
conflict. We fly the Meng Zhanfeng 2024 mean elements (Acta Aeronautica et
Astronautica Sinica 45(18):210-225, as transcribed in the Aequatio-Space/
Queqiao2-visibility repo): a = 10,004.059 km, e = 0.782359, i = 119.202 deg,
argp = 90 deg (RAAN below). Why this set: it is the only one that is
self-consistent with a ~24 h period (Kepler 24.94 h; the 24.84 h TT&C repeat
includes Earth perturbations) and that puts apolune over the southern
hemisphere (argp 90 deg with i > 90 deg gives apolune at 60.8 deg S), where
the far-side landing site needs it; the Wikipedia 200 x 16,000 km, 62.4 deg
set has no stated argument of periapsis, and 300 x 8,600 km is the later
12 h orbit. The elements are referred to the Moon's equator of the epoch
(IAU pole) with x along the projection of ICRF x. The paper's RAAN
(115.9 deg) is tied to its own epoch and frame, which we cannot reproduce;
we apply its stated design rule instead, RAAN = site longitude - 90 deg,
which puts apolune on the landing site's meridian at touchdown
(2024-06-01T22:23:16Z; RAAN comes out at ~306.8 deg in our frame). The
mean anomaly is not published for CE-6: M = 215 deg (middle of the paper's
210-220 deg) at touchdown. With that, the site sees the relay 21.6 h/day
above 0 deg (21.0 h above 10 deg) over the surface phase, matching CCTV's
"> 21 h/day". The orbit is a fixed Kepler ellipse: a frozen orbit's mean
elements stay put by design, and the short-period perturbations (~160 km at
perilune per the paper) change coverage by minutes at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.constants import (
    C_M_S,
    GM_MOON_M3_S2,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.dynamics.ephemeris import get_ephemeris
from services.dynamics.frames import (
    ecef_from_eci,
    ecef_from_geodetic,
    eci_from_ecef,
    mci_from_moon_fixed,
    moon_fixed_from_mci,
    moon_fixed_from_selenographic,
    moon_pole_mci,
)
from services.dynamics.kepler import Elements, period_s
from services.dynamics.timescale import mission_s_from_utc

__all__ = [
    "DEFAULT_MASK_DEG",
    "QUEQIAO2_ELEMENTS",
    "QUEQIAO2_EPOCH_S",
    "STATIONS",
    "SURFACE_BAND_M",
    "GroundStation",
    "landing_site_mci_m",
    "light_time_s",
    "line_of_sight",
    "queqiao2_period_s",
    "queqiao2_state_mci",
    "relay_coverage_hours_per_day",
    "site_elevation_deg",
    "station_elevation_deg",
    "visible_stations",
]

Vec = NDArray[np.float64]

# A 10 deg elevation mask: the usual planning mask of deep-space stations
# (multipath and atmosphere below it); CE-6-specific masks are not published.
DEFAULT_MASK_DEG = 10.0
SURFACE_BAND_M = 30_000.0


@dataclass(frozen=True)
class GroundStation:
    """A deep-space ground station on the WGS 84 ellipsoid."""

    name: str
    lat_deg: float
    lon_deg: float
    h_m: float = 0.0
    mask_deg: float = DEFAULT_MASK_DEG

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat_deg <= 90.0 or not -180.0 <= self.lon_deg <= 180.0:
            raise ValueError(f"{self.name}: lat/lon out of range ({self.lat_deg}, {self.lon_deg})")

    @property
    def ecef_m(self) -> Vec:
        return ecef_from_geodetic(self.lat_deg, self.lon_deg, self.h_m)

    @property
    def up_ecef(self) -> Vec:
        """Geodetic zenith unit vector."""
        lat, lon = math.radians(self.lat_deg), math.radians(self.lon_deg)
        return np.array(
            [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)]
        )


# Reference (d) "Ground": coordinates from Wikipedia CDSN / Espacio Lejano.
# Heights are not in the reference; approximate site elevations are given,
# an error of 1 km moves elevation angles of the Moon by < 0.01 deg.
STATIONS: dict[str, GroundStation] = {
    s.name: s
    for s in (
        GroundStation("Kashgar", 38.42, 76.71, 1_300.0),
        GroundStation("Jiamusi", 46.49, 130.77, 100.0),
        GroundStation("Neuquen", -38.19, -70.15, 1_000.0),
    )
}


# --- Occlusion and light time -------------------------------------------------


def _blocked(a: Vec, b: Vec, centre: Vec, radius_m: float) -> bool:
    """Does the sphere (centre, radius) block the straight path a-b?"""
    pa, pb = a - centre, b - centre
    ra, rb = float(np.linalg.norm(pa)), float(np.linalg.norm(pb))
    for p, q, r in ((pa, pb, ra), (pb, pa, rb)):
        if r < radius_m + SURFACE_BAND_M:  # surface user: horizon plane test
            return float((q - p) @ p) < 0.0
    d = pb - pa
    dd = float(d @ d)
    s = 0.0 if dd == 0.0 else min(1.0, max(0.0, -float(pa @ d) / dd))
    closest = pa + s * d
    return float(closest @ closest) < radius_m * radius_m


def line_of_sight(a_eci_m: ArrayLike, b_eci_m: ArrayLike, t_s: float) -> bool:
    """True if neither the Earth nor the Moon blocks the path from a to b."""
    a = np.asarray(a_eci_m, dtype=np.float64)
    b = np.asarray(b_eci_m, dtype=np.float64)
    moon = get_ephemeris().moon_eci_m(t_s)
    return not (_blocked(a, b, np.zeros(3), R_EARTH_EQ_M) or _blocked(a, b, moon, R_MOON_M))


def light_time_s(a_m: ArrayLike, b_m: ArrayLike) -> float:
    """One-way light time over the straight distance (no aberration or Shapiro delay)."""
    d = np.asarray(a_m, dtype=np.float64) - np.asarray(b_m, dtype=np.float64)
    return float(np.linalg.norm(d)) / C_M_S


# --- Ground stations -------------------------------------------------------------


def station_elevation_deg(station: GroundStation | str, r_eci_m: ArrayLike, t_s: float) -> float:
    """Elevation of a target above the station's geodetic horizon, degrees."""
    st = STATIONS[station] if isinstance(station, str) else station
    d = ecef_from_eci(np.asarray(r_eci_m, dtype=np.float64), t_s) - st.ecef_m
    return math.degrees(math.asin(float(d @ st.up_ecef) / float(np.linalg.norm(d))))


def visible_stations(r_eci_m: ArrayLike, t_s: float) -> list[str]:
    """Stations that see the target above their mask with the Moon out of the way."""
    r = np.asarray(r_eci_m, dtype=np.float64)
    moon = get_ephemeris().moon_eci_m(t_s)
    out: list[str] = []
    for st in STATIONS.values():
        if station_elevation_deg(st, r, t_s) < st.mask_deg:
            continue
        st_eci = eci_from_ecef(st.ecef_m, t_s)
        if not _blocked(st_eci, r, moon, R_MOON_M):
            out.append(st.name)
    return out


# --- Queqiao-2 ---------------------------------------------------------------------

QUEQIAO2_EPOCH_S = mission_s_from_utc("2024-06-01T22:23:16Z")
QUEQIAO2_MEAN_ANOMALY_RAD = math.radians(215.0)


def _equator_basis(t_s: float) -> tuple[Vec, Vec, Vec]:
    """Lunar equator of date: x along the projection of ICRF x, z the IAU pole."""
    pole = moon_pole_mci(t_s)
    x_ref = np.array([1.0, 0.0, 0.0]) - pole[0] * pole
    e1 = x_ref / np.linalg.norm(x_ref)
    return e1, np.cross(pole, e1), pole


def _raan_apolune_over_site_rad() -> float:
    """RAAN that puts apolune on the landing site's meridian at the epoch.

    With argp = 90 deg and i > 90 deg, apolune lies at longitude RAAN + 90 deg
    in the equator frame, so RAAN = lambda_site - 90 deg (the design rule
    noted with Meng 2024's elements)."""
    e1, e2, _ = _equator_basis(QUEQIAO2_EPOCH_S)
    site_mf = moon_fixed_from_selenographic(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, 0.0)
    site = mci_from_moon_fixed(site_mf, QUEQIAO2_EPOCH_S)
    lam = math.atan2(float(site @ e2), float(site @ e1))
    return (lam - 0.5 * math.pi) % (2.0 * math.pi)


QUEQIAO2_ELEMENTS = Elements(
    a_m=10_004_059.0,
    e=0.782_359,
    i_rad=math.radians(119.202),
    raan_rad=_raan_apolune_over_site_rad(),
    argp_rad=math.radians(90.0),
    nu_rad=0.0,  # unused: the phase is QUEQIAO2_MEAN_ANOMALY_RAD at QUEQIAO2_EPOCH_S
)


def queqiao2_period_s() -> float:
    return period_s(QUEQIAO2_ELEMENTS.a_m, GM_MOON_M3_S2)


@lru_cache(maxsize=1)
def _queqiao2_basis() -> tuple[Vec, Vec]:
    """Perifocal unit vectors P, Q in ICRF axes (lunar equator of the epoch)."""
    e1, e2, pole = _equator_basis(QUEQIAO2_EPOCH_S)
    el = QUEQIAO2_ELEMENTS
    co, so = math.cos(el.raan_rad), math.sin(el.raan_rad)
    cw, sw = math.cos(el.argp_rad), math.sin(el.argp_rad)
    ci, si = math.cos(el.i_rad), math.sin(el.i_rad)
    p_vec = e1 * (co * cw - so * sw * ci) + e2 * (so * cw + co * sw * ci) + pole * (sw * si)
    q_vec = e1 * (-co * sw - so * cw * ci) + e2 * (-so * sw + co * cw * ci) + pole * (cw * si)
    return p_vec, q_vec


def queqiao2_state_mci(t_s: ArrayLike) -> tuple[Vec, Vec]:
    """Queqiao-2 position and velocity relative to the Moon (ICRF axes), Kepler.

    Vectorised: ``t_s`` scalar gives (3,), an array gives (n, 3)."""
    el = QUEQIAO2_ELEMENTS
    n_rad_s = 2.0 * math.pi / queqiao2_period_s()
    if np.ndim(t_s) == 0:
        return _queqiao2_state_scalar(float(t_s), n_rad_s)  # type: ignore[arg-type]
    t = np.asarray(t_s, dtype=np.float64)
    m = QUEQIAO2_MEAN_ANOMALY_RAD + n_rad_s * (t - QUEQIAO2_EPOCH_S)
    ecc_anom = _solve_kepler_elliptic(np.mod(m, 2.0 * math.pi), el.e)
    ce, se = np.cos(ecc_anom), np.sin(ecc_anom)
    b = math.sqrt(1.0 - el.e * el.e)
    r_norm = el.a_m * (1.0 - el.e * ce)
    p_vec, q_vec = _queqiao2_basis()
    x_pf, y_pf = el.a_m * (ce - el.e), el.a_m * b * se
    k = math.sqrt(GM_MOON_M3_S2 * el.a_m) / r_norm
    vx_pf, vy_pf = -k * se, k * b * ce
    r = np.multiply.outer(x_pf, p_vec) + np.multiply.outer(y_pf, q_vec)
    v = np.multiply.outer(vx_pf, p_vec) + np.multiply.outer(vy_pf, q_vec)
    return r, v


def _queqiao2_state_scalar(t_s: float, n_rad_s: float) -> tuple[Vec, Vec]:
    """:func:`queqiao2_state_mci` at one instant in plain floats (the relay
    core asks every step; the array path costs ~10x more for one time)."""
    el = QUEQIAO2_ELEMENTS
    m = (QUEQIAO2_MEAN_ANOMALY_RAD + n_rad_s * (t_s - QUEQIAO2_EPOCH_S)) % (2.0 * math.pi)
    ecc = math.pi
    for _ in range(50):
        step = (ecc - el.e * math.sin(ecc) - m) / (1.0 - el.e * math.cos(ecc))
        ecc -= step
        if abs(step) < 1e-14:
            break
    ce, se = math.cos(ecc), math.sin(ecc)
    b = math.sqrt(1.0 - el.e * el.e)
    k = math.sqrt(GM_MOON_M3_S2 * el.a_m) / (el.a_m * (1.0 - el.e * ce))
    p_vec, q_vec = _queqiao2_basis()
    r: Vec = el.a_m * (ce - el.e) * p_vec + el.a_m * b * se * q_vec
    v: Vec = -k * se * p_vec + k * b * ce * q_vec
    return r, v


def _solve_kepler_elliptic(m_rad: Vec, e: float) -> Vec:
    """E - e sin E = M by Newton from E = pi (always converges for e < 1)."""
    ecc = np.full_like(m_rad, math.pi)
    for _ in range(50):
        step = (ecc - e * np.sin(ecc) - m_rad) / (1.0 - e * np.cos(ecc))
        ecc = ecc - step
        if float(np.max(np.abs(step))) < 1e-14:
            break
    return ecc


# --- Landing site and relay coverage -------------------------------------------


def landing_site_mci_m(t_s: ArrayLike) -> Vec:
    """CE-6 landing site (LROC, reference (c)) in MCI, shape (3,) or (n, 3)."""
    site_mf = moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M
    )
    t = np.asarray(t_s, dtype=np.float64)
    return mci_from_moon_fixed(np.broadcast_to(site_mf, (*t.shape, 3)), t)


def site_elevation_deg(target_mci_m: ArrayLike, t_s: ArrayLike) -> Vec:
    """Elevation of an MCI target above the landing site's local (spherical) horizon."""
    t = np.asarray(t_s, dtype=np.float64)
    target_mf = moon_fixed_from_mci(np.asarray(target_mci_m, dtype=np.float64), t)
    site_mf = moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M
    )
    d = target_mf - site_mf
    up = site_mf / np.linalg.norm(site_mf)
    sin_el = (d @ up) / np.linalg.norm(d, axis=-1)
    out: Vec = np.degrees(np.arcsin(sin_el))
    return out


def relay_coverage_hours_per_day(
    t0_s: float, days: float = 1.0, mask_deg: float = 0.0, step_s: float = 60.0
) -> float:
    """Hours per day that Queqiao-2 is above ``mask_deg`` at the landing site."""
    t = t0_s + np.arange(0.0, days * 86_400.0, step_s)
    r_relay, _ = queqiao2_state_mci(t)
    visible = site_elevation_deg(r_relay, t) >= mask_deg
    return float(visible.mean()) * 24.0
