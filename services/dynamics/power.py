"""Resources: propellant bookkeeping, sunlight, solar power and the battery.

Sunlight: the visible fraction of the solar disk seen from a point, with the
Earth and the Moon as occulting spheres (disk-overlap model, Montenbruck &
Gill 2000, sec. 3.4.2). A point within ``SURFACE_BAND_M`` of a body is a
surface user: the body's limb is its local horizon plane, which gives lunar
day and night at a landing site with a partially risen Sun at dawn and dusk.

The Sun and Moon come from the Chebyshev refit of DE421 (`ephemeris`,
< 1 mm from DE421, ~50x cheaper per call: surface cores ask every step).

All state types are frozen dataclasses: a transition returns a new value, so
vehicle code can keep a history and tests can compare states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.constants import AU_M, R_EARTH_EQ_M, R_MOON_M, R_SUN_M
from services.dynamics.ephemeris import get_fast_ephemeris

__all__ = [
    "SURFACE_BAND_M",
    "Battery",
    "BatteryStep",
    "PropellantError",
    "PropellantTank",
    "battery_step",
    "solar_power_w",
    "sun_direction_eci",
    "sun_visible_fraction",
]

Vec = NDArray[np.float64]
SURFACE_BAND_M = 30_000.0


# --- Propellant -------------------------------------------------------------------


class PropellantError(ValueError):
    """A draw asked for more propellant than the tank may give."""

    def __init__(self, tank: str, requested_kg: float, available_kg: float) -> None:
        super().__init__(
            f"{tank}: requested {requested_kg:.3f} kg, only {available_kg:.3f} kg available"
        )
        self.tank = tank
        self.requested_kg = requested_kg
        self.available_kg = available_kg


@dataclass(frozen=True)
class PropellantTank:
    """Usable propellant with a reserve that ordinary draws may not touch."""

    name: str
    capacity_kg: float
    mass_kg: float
    reserve_kg: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mass_kg <= self.capacity_kg:
            raise ValueError(
                f"{self.name}: mass {self.mass_kg} kg outside 0..{self.capacity_kg} kg"
            )
        if not 0.0 <= self.reserve_kg <= self.capacity_kg:
            raise ValueError(
                f"{self.name}: reserve {self.reserve_kg} kg outside 0..{self.capacity_kg} kg"
            )

    def available_kg(self, use_reserve: bool = False) -> float:
        """Mass that a draw may take now."""
        return self.mass_kg if use_reserve else max(0.0, self.mass_kg - self.reserve_kg)

    def can_draw(self, kg: float, use_reserve: bool = False) -> bool:
        return 0.0 <= kg <= self.available_kg(use_reserve)

    def draw(self, kg: float, use_reserve: bool = False) -> PropellantTank:
        """The tank after using ``kg``; raises PropellantError if it would break the reserve."""
        if kg < 0.0:
            raise ValueError(f"{self.name}: draw must be >= 0 kg, got {kg}")
        if not self.can_draw(kg, use_reserve):
            raise PropellantError(self.name, kg, self.available_kg(use_reserve))
        return replace(self, mass_kg=self.mass_kg - kg)

    @property
    def in_reserve(self) -> bool:
        return self.mass_kg <= self.reserve_kg


# --- Sunlight -----------------------------------------------------------------------


def _disk_overlap_fraction(a: float, b: float, c: float) -> float:
    """Fraction of a disk of radius a hidden by a disk of radius b, centres c apart (rad)."""
    if c >= a + b:
        return 0.0
    if c <= b - a:
        return 1.0
    if c <= a - b:
        return (b / a) ** 2
    x = (c * c + a * a - b * b) / (2.0 * c * a)
    y = (c * c + b * b - a * a) / (2.0 * c * b)
    k = math.sqrt(max(0.0, (-c + a + b) * (c + a - b) * (c - a + b) * (c + a + b)))
    area = a * a * math.acos(x) + b * b * math.acos(y) - 0.5 * k
    return area / (math.pi * a * a)


def _horizon_hidden_fraction(sin_elev: float, sun_radius_rad: float) -> float:
    """Fraction of the Sun below a flat horizon (circular segment, small-angle disk)."""
    x = math.asin(max(-1.0, min(1.0, sin_elev))) / sun_radius_rad
    if x >= 1.0:
        return 0.0
    if x <= -1.0:
        return 1.0
    return (math.acos(x) - x * math.sqrt(1.0 - x * x)) / math.pi


def _hidden_by(sun: Vec, body: Vec, radius_m: float, sun_radius_rad: float) -> float:
    """Fraction of the solar disk hidden by one body (vectors from the observer)."""
    return hidden_fraction((float(sun[0]), float(sun[1]), float(sun[2])),
                           (float(body[0]), float(body[1]), float(body[2])),
                           radius_m, sun_radius_rad)


def hidden_fraction(
    sun: tuple[float, float, float], body: tuple[float, float, float], radius_m: float,
    sun_radius_rad: float,
) -> float:
    """:func:`_hidden_by` in plain floats (called for every sunlight sample)."""
    d_body = math.sqrt(body[0] * body[0] + body[1] * body[1] + body[2] * body[2])
    d_sun = math.sqrt(sun[0] * sun[0] + sun[1] * sun[1] + sun[2] * sun[2])
    sun_dot_body = sun[0] * body[0] + sun[1] * body[1] + sun[2] * body[2]
    if d_body < radius_m + SURFACE_BAND_M:
        return _horizon_hidden_fraction(-sun_dot_body / d_body / d_sun, sun_radius_rad)
    body_radius_rad = math.asin(radius_m / d_body)
    cos_sep = sun_dot_body / (d_sun * d_body)
    sep = math.acos(max(-1.0, min(1.0, cos_sep)))
    return _disk_overlap_fraction(sun_radius_rad, body_radius_rad, sep)


def sun_direction_eci(r_eci_m: ArrayLike, t_s: float) -> Vec:
    """Unit vector from the point to the Sun (geometric, ICRF axes)."""
    sun = get_fast_ephemeris().sun_eci_m(t_s) - np.asarray(r_eci_m, dtype=np.float64)
    out: Vec = sun / np.linalg.norm(sun)
    return out


def sun_visible_fraction(r_eci_m: ArrayLike, t_s: float) -> float:
    """Visible fraction of the solar disk (0 umbra/night .. 1 full Sun)."""
    r = np.asarray(r_eci_m, dtype=np.float64)
    eph = get_fast_ephemeris()
    sun = eph.sun_eci_m(t_s) - r
    sun_radius_rad = math.asin(R_SUN_M / float(np.linalg.norm(sun)))
    lit = 1.0
    for centre, radius in ((np.zeros(3), R_EARTH_EQ_M), (eph.moon_eci_m(t_s), R_MOON_M)):
        # Two simultaneous occultations are treated as independent (they
        # never overlap during the mission; the product is then exact).
        lit *= 1.0 - _hidden_by(sun, centre - r, radius, sun_radius_rad)
    return lit


def solar_power_w(
    rated_w: float, r_eci_m: ArrayLike, t_s: float, cos_incidence: float = 1.0
) -> float:
    """Array output: rating at 1 AU and normal incidence, scaled by 1/d^2, cos and sunlight."""
    r = np.asarray(r_eci_m, dtype=np.float64)
    d_sun_m = float(np.linalg.norm(get_fast_ephemeris().sun_eci_m(t_s) - r))
    flux_ratio = (AU_M / d_sun_m) ** 2
    return rated_w * flux_ratio * max(0.0, cos_incidence) * sun_visible_fraction(r, t_s)


# --- Battery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Battery:
    """State of a battery in watt-hours, with one-way conversion efficiencies."""

    capacity_wh: float
    charge_wh: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0.0:
            raise ValueError(f"battery capacity must be > 0 Wh, got {self.capacity_wh}")
        if not 0.0 <= self.charge_wh <= self.capacity_wh:
            raise ValueError(f"charge {self.charge_wh} Wh outside 0..{self.capacity_wh} Wh")
        for name in ("charge_efficiency", "discharge_efficiency"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")

    @property
    def soc(self) -> float:
        """State of charge, 0..1."""
        return self.charge_wh / self.capacity_wh


@dataclass(frozen=True)
class BatteryStep:
    """Outcome of one step: the new battery and the energy that did not fit."""

    battery: Battery
    unmet_load_wh: float  # load the battery could not carry (brown-out if > 0)
    spilled_wh: float  # surplus the full battery could not take (shunted)


def battery_step(battery: Battery, power_in_w: float, load_w: float, dt_s: float) -> BatteryStep:
    """Advance the battery by ``dt_s`` with constant generation and load."""
    if dt_s < 0.0:
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    net_wh = (power_in_w - load_w) * dt_s / 3_600.0
    charge = battery.charge_wh
    unmet = spilled = 0.0
    if net_wh >= 0.0:
        room_wh = battery.capacity_wh - charge
        stored = net_wh * battery.charge_efficiency
        spilled = max(0.0, stored - room_wh) / battery.charge_efficiency
        charge = min(battery.capacity_wh, charge + stored)
    else:
        drawn = -net_wh / battery.discharge_efficiency
        unmet = max(0.0, drawn - charge) * battery.discharge_efficiency
        charge = max(0.0, charge - drawn)
    return BatteryStep(replace(battery, charge_wh=charge), unmet, spilled)
