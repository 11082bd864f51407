"""On-board resources along a clock step: sunlight, power, battery, heat, ICUBE-Q images.

Sunlight is sampled at the midpoints of equal sub-intervals of the step
(at most ``SUN_SAMPLE_S`` long) on the two-body arc from the step's start
state, so a 30-minute coast step still sees a 45-minute lunar eclipse at
the right depth. Between samples everything is held constant.

ICUBE-Q imaging model (a simple one, as documented in ``design``): each of
its two cameras takes one image every ``ICUBEQ_IMAGE_INTERVAL_S`` while the
point of the Moon below it is in daylight (the Sun above its horizon).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.dynamics.constants import AU_M, GM_MOON_M3_S2, R_EARTH_EQ_M, R_MOON_M, R_SUN_M
from services.dynamics.ephemeris import get_fast_ephemeris
from services.dynamics.kepler import KeplerError, propagate_kepler
from services.dynamics.power import Battery, battery_step, hidden_fraction
from services.dynamics.propagate import ForceModel, kepler_ellipse, propagate
from services.orbiter import design
from services.orbiter.flight import Vec, vec

Vec3 = tuple[float, float, float]


def _t3(a: Vec) -> Vec3:
    return (float(a[0]), float(a[1]), float(a[2]))


def _sub(a: Vec3, b: Vec3) -> Vec3:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _norm(a: Vec3) -> float:
    return math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])


@dataclass
class Icubeq:
    """ICUBE-Q after release: a Kepler state about the Moon and its image count."""

    r0_mci_m: Vec
    v0_mci_m_s: Vec
    t0_s: float
    lit_time_s: float = 0.0

    def state(self, t_s: float) -> tuple[Vec, Vec]:
        r, v = self.state_floats(t_s)
        return vec(r), vec(v)

    def state_floats(self, t_s: float) -> tuple[Vec3, Vec3]:
        """Its Kepler ellipse (weeks of revolutions from release) in plain floats."""
        r0, v0 = self.r0_mci_m, self.v0_mci_m_s
        out = kepler_ellipse((float(r0[0]), float(r0[1]), float(r0[2])),
                             (float(v0[0]), float(v0[1]), float(v0[2])),
                             t_s - self.t0_s, GM_MOON_M3_S2)
        if out is None:  # not bound (never, at 1 m/s from a lunar orbit): the general solve
            r, v = propagate_kepler(r0, v0, t_s - self.t0_s, GM_MOON_M3_S2)
            return _t3(r), _t3(v)
        return out

    @property
    def images(self) -> int:
        per_camera = math.floor(self.lit_time_s / design.ICUBEQ_IMAGE_INTERVAL_S)
        return design.ICUBEQ_CAMERAS * per_camera


@dataclass
class Power:
    battery: Battery
    power_w: float = 0.0
    sunlit: float = 1.0
    temperature_c: float = design.TEMPERATURE_SUN_C
    unmet_wh: float = 0.0

    @classmethod
    def initial(cls) -> Power:
        return cls(Battery(design.BATTERY_CAPACITY_WH, design.BATTERY_CAPACITY_WH))


def sample_times(t_from: float, t_to: float) -> list[float]:
    n = max(1, math.ceil((t_to - t_from) / design.SUN_SAMPLE_S - 1e-9))
    h = (t_to - t_from) / n
    return [t_from + (k + 0.5) * h for k in range(n)]


def sunlit_fraction(r_eci_m: Vec3, moon_eci_m: Vec3, sun_eci_m: Vec3) -> float:
    """power.sun_visible_fraction with the ephemeris given (the Chebyshev refit,
    ~50x cheaper than DE421 per call); same disk-overlap model, plain floats."""
    sun = _sub(sun_eci_m, r_eci_m)
    sun_radius_rad = math.asin(R_SUN_M / _norm(sun))
    earth = (-r_eci_m[0], -r_eci_m[1], -r_eci_m[2])
    lit = 1.0 - hidden_fraction(sun, earth, R_EARTH_EQ_M, sun_radius_rad)
    return lit * (1.0 - hidden_fraction(sun, _sub(moon_eci_m, r_eci_m), R_MOON_M,
                                        sun_radius_rad))


def _two_body_position(r0_m: Vec3, v0_m_s: Vec3, dt_s: float, mu: float) -> Vec3:
    """Kepler position: the closed-form ellipse, else (the Moon-centred
    hyperbola after TEI-2) universal variables, integrated where `kepler`'s
    Newton ends in a rounding-level oscillation above its tolerance."""
    out = kepler_ellipse(r0_m, v0_m_s, dt_s, mu)
    if out is not None:
        return out[0]
    r0, v0 = vec(r0_m), vec(v0_m_s)
    try:
        return _t3(propagate_kepler(r0, v0, dt_s, mu)[0])
    except KeplerError:
        model = ForceModel("moon" if mu == GM_MOON_M3_S2 else "earth", j2=False,
                           third_bodies=())
        return _t3(propagate(r0, v0, 0.0, dt_s, model, rtol=1e-9)[0])


def update(power: Power, icubeq: Icubeq | None, central: str, r0_m: Vec, v0_m_s: Vec,
           mu: float, t_from: float, t_to: float) -> None:
    """Advance power, heat and ICUBE-Q imaging over [t_from, t_to] (arrays: solar wings)."""
    if t_to <= t_from:
        return
    times = sample_times(t_from, t_to)
    h = (t_to - t_from) / len(times)
    rows: list[list[float]] = get_fast_ephemeris().table(np.array(times)).tolist()  # one batch
    r0, v0 = _t3(r0_m), _t3(v0_m_s)
    for t, row in zip(times, rows, strict=True):
        moon: Vec3 = (row[0], row[1], row[2])
        sun: Vec3 = (row[3], row[4], row[5])
        r = _two_body_position(r0, v0, t - t_from, mu)
        r_eci = (r[0] + moon[0], r[1] + moon[1], r[2] + moon[2]) if central == "moon" else r
        lit = sunlit_fraction(r_eci, moon, sun)
        flux = (AU_M / _norm(_sub(sun, r_eci))) ** 2
        power.sunlit, power.power_w = lit, design.SOLAR_RATED_W * flux * lit
        step = battery_step(power.battery, power.power_w, design.LOAD_W, h)
        power.battery, power.unmet_wh = step.battery, power.unmet_wh + step.unmet_load_wh
        if icubeq is not None and t >= icubeq.t0_s:
            r_q, _ = icubeq.state_floats(t)
            to_sun = _sub(sun, moon)
            if r_q[0] * to_sun[0] + r_q[1] * to_sun[1] + r_q[2] * to_sun[2] > 0.0:
                icubeq.lit_time_s += h  # the Sun is above the sub-satellite point
    power.temperature_c = (design.TEMPERATURE_SHADOW_C
                           + (design.TEMPERATURE_SUN_C - design.TEMPERATURE_SHADOW_C)
                           * power.sunlit)
