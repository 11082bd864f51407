"""Which communication path a vehicle has at an instant: direct, relay or none.

Built on the geometry of `comms` (stations, masks, Queqiao-2's orbit, Moon
and Earth occlusion) but evaluated per call in plain floats against a small
per-instant cache, because every vehicle asks once per clock step for the
whole 53-day mission: a call costs tens of microseconds, not the
milliseconds of `comms.visible_stations`.

Paths, in order of preference:

* ``direct``: a ground station sees the vehicle above its elevation mask and
  the Moon is not in the way (Kashgar, Jiamusi, Neuquen; plus, for vehicles
  within ``RECOVERY_RANGE_M`` of the landing zone, the Siziwang recovery
  network, see below);
* ``relay``: Queqiao-2 sees the vehicle (Moon not in the way, the vehicle
  within ``RELAY_MAX_RANGE_M``; a lunar surface user needs Queqiao-2 above
  ``SURFACE_RELAY_MASK_DEG``) and a station sees Queqiao-2;
* ``none``.

Light time is the straight-line distance over c, per leg. Data rates are not
published for CE-6 (reference "Open questions" 8); the chosen figures and
their reasoning are next to ``DIRECT_RATE_BPS`` and ``RELAY_RATE_BPS``.

Accuracy of the fast geometry: the Moon comes from the Chebyshev refit of
DE421 (< 1 mm); station positions rotate the full IAU 2006 Earth-fixed matrix
of the start of each 6 h span by the Earth rotation angle since (precession and
nutation drift < 2e-7 rad in the 6 h between full evaluations); Queqiao-2 is the same Kepler ellipse
as `comms.queqiao2_state_mci`. Tests compare all three with `comms`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from services.dynamics import comms, frames
from services.dynamics.change6 import SIZIWANG_LAT_DEG, SIZIWANG_LON_DEG
from services.dynamics.constants import (
    C_M_S,
    DAY_S,
    GM_MOON_M3_S2,
    HOUR_S,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.dynamics.ephemeris import get_fast_ephemeris

__all__ = [
    "DIRECT_RATE_BPS",
    "NO_LINK",
    "RELAY_GROUND_RATE_BPS",
    "RELAY_MAX_RANGE_M",
    "RELAY_RATE_BPS",
    "SURFACE_RELAY_MASK_DEG",
    "Link",
    "eci_from_ecef_state_fast",
    "link_for",
    "moon_eci_m",
    "queqiao2_eci_m",
    "relay_ground_link",
]

Vec3 = tuple[float, float, float]

# --- Data rates (chosen; the reference has no CE-6 figures) ------------------
# Direct to the CDSN 35 m / 4 x 35 m antennas. Orbiter (and the stacks it
# flies): X-band at lunar distance, 2 Mbit/s, the class of lunar orbiters'
# X-band science downlinks to 35 m dishes (CE-2's was 3 Mbit/s). The lander's
# and ascender's own direct links (in lunar orbit, before landing / after
# liftoff) are low-gain: 256 / 64 kbit/s. The returner's is an S-band beacon
# and TT&C link, 64 kbit/s. Queqiao-2 to ground: S-band TT&C <= 6 Mbit/s
# (reference: "S-band fallback for data <= 6 Mbit/s").
DIRECT_RATE_BPS: dict[str, float] = {
    "orbiter": 2.0e6,
    "lander": 256.0e3,
    "ascender": 64.0e3,
    "reentry": 64.0e3,
    "relay": 6.0e6,
}
DEFAULT_DIRECT_RATE_BPS = 64.0e3
# Proximity X-band to Queqiao-2's 4.2 m dish. The lander, with its directional
# antenna deployed after landing (reference row 15), 2 Mbit/s; the ascender's
# small antenna 512 kbit/s; the orbiter 1 Mbit/s. Chosen so that a day of
# surface telemetry never outruns a pass, like the reference's "> 21 h/day"
# coverage implies for operations that were commanded through the relay.
RELAY_RATE_BPS: dict[str, float] = {"lander": 2.0e6, "ascender": 512.0e3, "orbiter": 1.0e6}
DEFAULT_RELAY_RATE_BPS = 512.0e3
# Queqiao-2's Ka-band payload downlink, ~100 Mbit/s average (reference (d)):
# the rate at which it plays back frames it stored while it saw no station.
RELAY_GROUND_RATE_BPS = 100.0e6

# A relay user must be in the lunar neighbourhood: beyond ~60,000 km (the
# Earth-Moon L2 distance) the X-band budget of a small probe antenna to the
# 4.2 m dish closes no more. Chosen; it only matters for the stack in cruise.
RELAY_MAX_RANGE_M = 60_000_000.0
# A surface user needs Queqiao-2 above its local horizon: the site then sees
# it 21.6 h/day at touchdown (comms), CCTV's "> 21 h/day"; with the need for a
# station to see Queqiao-2 as well (23.5 h/day) the relay path is up ~21 h on
# the landing day and ~20.5 h two days later (the frozen ellipse drifts
# against the site by the Moon's rotation). A mask > 0 deg would need a
# terrain model the reference does not give.
SURFACE_RELAY_MASK_DEG = 0.0

# The landing-zone network (tracking radars and the recovery helicopters'
# beacon receivers around Siziwang) sees the returner under the canopy and on
# the ground. Modelled as one receiver on a 2 km high vantage with a -1 deg
# mask (a radio horizon, not a dish's mask), for vehicles within 1,500 km.
RECOVERY_STATION = comms.GroundStation(
    "Siziwang", SIZIWANG_LAT_DEG, SIZIWANG_LON_DEG, 2_000.0, mask_deg=-1.0
)
RECOVERY_RANGE_M = 1_500_000.0
_NEAR_EARTH_M = R_EARTH_EQ_M + 100_000_000.0  # beyond this no recovery check
_SURFACE_BAND_M = comms.SURFACE_BAND_M


@dataclass(frozen=True, slots=True)
class Link:
    """The path a vehicle has at one instant."""

    path: str  # "direct" | "relay" | "none"
    station: str = ""  # ground station of the Earth end ("" if none)
    light_time_s: float = 0.0  # one way, vehicle to station (both legs for relay)
    rate_bps: float = 0.0
    vehicle_to_relay_s: float = 0.0  # relay only: first leg
    relay_to_station_s: float = 0.0  # relay only: second leg

    @property
    def up(self) -> bool:
        return self.path != "none"


NO_LINK = Link("none")


# --- Per-instant geometry ------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Station:
    name: str
    pos: Vec3  # ECI, m
    up: Vec3  # geodetic zenith in ECI
    sin_mask: float


@dataclass(frozen=True, slots=True)
class _Geometry:
    t_s: float
    moon: Vec3  # ECI, m
    stations: tuple[_Station, ...]
    recovery: _Station
    relay: Vec3  # Queqiao-2, ECI, m


_ALL_STATIONS = (*comms.STATIONS.values(), RECOVERY_STATION)
_ECEF = np.array([s.ecef_m for s in _ALL_STATIONS])
_UP_ECEF = np.array([s.up_ecef for s in _ALL_STATIONS])
_ERA_RATE_RAD_S = 2.0 * math.pi * 1.002_737_811_911_354_48 / DAY_S  # IERS 2010 eq. 5.15


# The full IAU 2006 matrix is evaluated every MATRIX_SPAN_S and turned by the
# Earth's spin in between: precession-nutation and UT1 drift over 6 h stay
# below 2e-7 rad (~1 m at a station), a 0.00001 deg elevation error.
MATRIX_SPAN_S = 6.0 * HOUR_S


@lru_cache(maxsize=64)
def _span_matrix(span: int) -> np.ndarray:
    """Earth-fixed matrix at the start of a span."""
    return frames.earth_fixed_matrix(span * MATRIX_SPAN_S)


def _eci_from_ecef_matrix(t_s: float) -> np.ndarray:
    """ECEF -> ECI rotation: the span's full matrix turned by the Earth's spin since."""
    span = math.floor(t_s / MATRIX_SPAN_S)
    m0 = _span_matrix(span)
    a = _ERA_RATE_RAD_S * (t_s - span * MATRIX_SPAN_S)
    c, s = math.cos(a), math.sin(a)
    # M(t) = Rz(a) M0 (passive); ECI = M(t)^T ecef = M0^T (active rotation by +a) ecef
    spin = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    out: np.ndarray = m0.T @ spin
    return out


def _stations_eci(t_s: float) -> tuple[np.ndarray, np.ndarray]:
    rot = _eci_from_ecef_matrix(t_s)
    return _ECEF @ rot.T, _UP_ECEF @ rot.T


def eci_from_ecef_state_fast(r_ecef_m: Sequence[float], v_ecef_m_s: Sequence[float],
                             t_s: float) -> tuple[Vec3, Vec3]:
    """`frames.eci_from_ecef_state` to ~1 cm, in microseconds (for per-step summaries)."""
    rot = _eci_from_ecef_matrix(t_s)
    x, y, z = r_ecef_m
    w = _ERA_RATE_RAD_S
    r = rot @ np.array([x, y, z])
    v = rot @ np.array([v_ecef_m_s[0] - w * y, v_ecef_m_s[1] + w * x, v_ecef_m_s[2]])
    return _t3(r), _t3(v)


def ephemeris_row(t_s: float) -> np.ndarray:
    """Moon (0:3) and Sun (3:6) in ECI from the DE421 Chebyshev refit at one instant."""
    start, length, coef = get_fast_ephemeris().table.window(t_s)
    tau = min(1.0, max(-1.0, 2.0 * (t_s - start) / length - 1.0))
    basis = np.cos(np.arange(coef.shape[0]) * math.acos(tau))  # T_k(tau)
    out: np.ndarray = basis @ coef
    return out


@lru_cache(maxsize=16)
def moon_eci_m(t_s: float) -> Vec3:
    """Moon centre in ECI from the DE421 Chebyshev refit, as plain floats."""
    v = ephemeris_row(t_s)
    return (float(v[0]), float(v[1]), float(v[2]))


def _queqiao2_mci_m(t_s: float) -> Vec3:
    """Scalar form of `comms.queqiao2_state_mci` (position only)."""
    el = comms.QUEQIAO2_ELEMENTS
    n = math.sqrt(GM_MOON_M3_S2 / el.a_m**3)
    m = (comms.QUEQIAO2_MEAN_ANOMALY_RAD + n * (t_s - comms.QUEQIAO2_EPOCH_S)) % (2.0 * math.pi)
    e = el.e
    ecc = math.pi
    for _ in range(50):
        step = (ecc - e * math.sin(ecc) - m) / (1.0 - e * math.cos(ecc))
        ecc -= step
        if abs(step) < 1e-14:
            break
    x_pf = el.a_m * (math.cos(ecc) - e)
    y_pf = el.a_m * math.sqrt(1.0 - e * e) * math.sin(ecc)
    p, q = comms._queqiao2_basis()  # the same perifocal axes as comms
    return (
        x_pf * float(p[0]) + y_pf * float(q[0]),
        x_pf * float(p[1]) + y_pf * float(q[1]),
        x_pf * float(p[2]) + y_pf * float(q[2]),
    )


def queqiao2_eci_m(t_s: float) -> Vec3:
    return _add(_queqiao2_mci_m(t_s), moon_eci_m(t_s))


@lru_cache(maxsize=16)
def _geometry(t_s: float) -> _Geometry:
    """Everything about an instant that does not depend on the vehicle."""
    pos, up = _stations_eci(t_s)
    sts = tuple(
        _Station(s.name, _t3(pos[i]), _t3(up[i]), math.sin(math.radians(s.mask_deg)))
        for i, s in enumerate(_ALL_STATIONS)
    )
    moon = moon_eci_m(t_s)
    return _Geometry(t_s, moon, sts[:-1], sts[-1], _add(_queqiao2_mci_m(t_s), moon))


# --- Small vector helpers (floats are faster than numpy for 3-vectors) -------------
def _t3(a: np.ndarray) -> Vec3:
    return (float(a[0]), float(a[1]), float(a[2]))


def _add(a: Vec3, b: Vec3) -> Vec3:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _sub(a: Vec3, b: Vec3) -> Vec3:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _norm(a: Vec3) -> float:
    return math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])


def _blocked(a: Vec3, b: Vec3, centre: Vec3, radius_m: float, sin_mask: float = 0.0) -> bool:
    """Does the sphere block the path a-b? Surface users test their horizon plane
    (raised by a mask), as `comms` does."""
    pa, pb = _sub(a, centre), _sub(b, centre)
    for p, q in ((pa, pb), (pb, pa)):
        rp = _norm(p)
        if rp < radius_m + _SURFACE_BAND_M:
            d = _sub(q, p)
            return _dot(d, p) < sin_mask * _norm(d) * rp
    d = _sub(pb, pa)
    dd = _dot(d, d)
    s = 0.0 if dd == 0.0 else min(1.0, max(0.0, -_dot(pa, d) / dd))
    c = (pa[0] + s * d[0], pa[1] + s * d[1], pa[2] + s * d[2])
    return _dot(c, c) < radius_m * radius_m


def _sees(st: _Station, r: Vec3, moon: Vec3) -> float:
    """Sine of the target's elevation if the station sees it, else -2."""
    d = _sub(r, st.pos)
    dn = _norm(d)
    if dn == 0.0:
        return 1.0
    sin_el = _dot(d, st.up) / dn
    if sin_el < st.sin_mask or _blocked(st.pos, r, moon, R_MOON_M):
        return -2.0
    return sin_el


def _best_station(r: Vec3, g: _Geometry, previous: str) -> tuple[_Station | None, float]:
    """Visible station: keep the previous one while it sees the target (no
    needless hand-overs), else the highest; returns (station, distance m)."""
    best: _Station | None = None
    best_sin = -1.5
    candidates = list(g.stations)
    if _norm(r) < _NEAR_EARTH_M and _norm(_sub(r, g.recovery.pos)) < RECOVERY_RANGE_M:
        candidates.append(g.recovery)
    for st in candidates:
        sin_el = _sees(st, r, g.moon)
        if sin_el < -1.5:
            continue
        if st.name == previous:
            return st, _norm(_sub(r, st.pos))
        if sin_el > best_sin:
            best, best_sin = st, sin_el
    return best, (0.0 if best is None else _norm(_sub(r, best.pos)))


def _relay_sees(r: Vec3, g: _Geometry) -> float:
    """Distance vehicle-Queqiao-2 if they see each other, else -1."""
    d = _norm(_sub(r, g.relay))
    if d > RELAY_MAX_RANGE_M:
        return -1.0
    sin_mask = math.sin(math.radians(SURFACE_RELAY_MASK_DEG))
    if _blocked(r, g.relay, g.moon, R_MOON_M, sin_mask):
        return -1.0
    return d


def link_for(vehicle: str, r_eci_m: Sequence[float] | NDArray[np.float64], t_s: float,
             previous: Link = NO_LINK) -> Link:
    """The path from a vehicle at ``r_eci_m`` to the ground at ``t_s``.

    ``previous`` (the vehicle's last link) only keeps the station choice
    steady. Queqiao-2 itself (``vehicle == "relay"``) has only direct links."""
    g = _geometry(float(t_s))
    r = (float(r_eci_m[0]), float(r_eci_m[1]), float(r_eci_m[2]))
    st, dist = _best_station(r, g, previous.station if previous.path == "direct" else "")
    if st is not None:
        rate = DIRECT_RATE_BPS.get(vehicle, DEFAULT_DIRECT_RATE_BPS)
        return Link("direct", st.name, dist / C_M_S, rate)
    if vehicle == "relay":
        return NO_LINK
    leg1 = _relay_sees(r, g)
    if leg1 < 0.0:
        return NO_LINK
    ground = relay_ground_link(t_s, previous.station if previous.path == "relay" else "")
    if not ground.up:
        return NO_LINK
    rate = min(RELAY_RATE_BPS.get(vehicle, DEFAULT_RELAY_RATE_BPS), RELAY_GROUND_RATE_BPS)
    return Link("relay", ground.station, leg1 / C_M_S + ground.light_time_s, rate,
                leg1 / C_M_S, ground.light_time_s)


def relay_ground_link(t_s: float, previous_station: str = "") -> Link:
    """Queqiao-2's own link to a ground station (its Ka-band playback rate)."""
    g = _geometry(float(t_s))
    st, dist = _best_station(g.relay, g, previous_station)
    if st is None:
        return NO_LINK
    return Link("direct", st.name, dist / C_M_S, RELAY_GROUND_RATE_BPS)
