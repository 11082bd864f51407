"""The orbiter's trajectory: a state about the Earth or the Moon, propagated step-wise.

Coasts use :class:`propagate.Propagator` with the full force model of
``targeting`` (so the flown trajectory is the one the solvers aimed), keeping
its step size between clock steps; the integrator's step hint is part of the
snapshot so a restored core continues bit for bit. The centre switches at the
times the solvers use (``targeting.MOON_SOI_SWITCH_S`` from perilune).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics import frames
from services.dynamics.constants import R_EARTH_EQ_M, R_MOON_M
from services.dynamics.kepler import Elements, elements_from_rv
from services.dynamics.propagate import ForceModel, Propagator
from services.dynamics.targeting import EARTH_MODEL, MOON_MODEL

Vec = NDArray[np.float64]
MODELS: dict[str, ForceModel] = {"earth": EARTH_MODEL, "moon": MOON_MODEL}


def vec(x: ArrayLike) -> Vec:
    return np.array(x, dtype=np.float64)


def unit(x: ArrayLike) -> Vec:
    a = vec(x)
    out: Vec = a / float(np.linalg.norm(a))
    return out


def triple(a: ArrayLike) -> tuple[float, float, float]:
    v = vec(a)
    return float(v[0]), float(v[1]), float(v[2])


@dataclass
class Flight:
    """Position and velocity of one body relative to ``central`` at ``t_s``."""

    central: str  # "earth" (ECI) or "moon" (MCI)
    r_m: Vec
    v_m_s: Vec
    t_s: float
    prop: Propagator = field(init=False)

    def __post_init__(self) -> None:
        self.prop = Propagator(MODELS[self.central])

    @property
    def frame(self) -> str:
        return "MCI" if self.central == "moon" else "ECI"

    @property
    def mu_m3_s2(self) -> float:
        return MODELS[self.central].mu_m3_s2

    def coast_to(self, t_s: float) -> None:
        if t_s > self.t_s:
            self.r_m, self.v_m_s = self.prop.step(self.r_m, self.v_m_s, self.t_s, t_s - self.t_s)
            self.t_s = t_s

    def recentre(self, central: str) -> None:
        """Express the state about the other body (same instant); restart the integrator."""
        if central == self.central:
            return
        convert = frames.mci_from_eci_state if central == "moon" else frames.eci_from_mci_state
        self.r_m, self.v_m_s = convert(self.r_m, self.v_m_s, self.t_s)
        self.central = central
        self.prop = Propagator(MODELS[central])

    def elements(self) -> Elements:
        return elements_from_rv(self.r_m, self.v_m_s, self.mu_m3_s2)

    def eci(self) -> tuple[Vec, Vec]:
        if self.central == "earth":
            return self.r_m.copy(), self.v_m_s.copy()
        return frames.eci_from_mci_state(self.r_m, self.v_m_s, self.t_s)

    def where(self) -> dict[str, float]:
        """Latitude, longitude, altitude and body-relative speed (event values)."""
        if self.central == "moon":
            r_f, v_f = frames.moon_fixed_from_mci_state(self.r_m, self.v_m_s, self.t_s)
            lat, lon, alt = frames.selenographic_from_moon_fixed(r_f)
        else:
            r_f, v_f = frames.ecef_from_eci_state(self.r_m, self.v_m_s, self.t_s)
            lat, lon, alt = frames.geodetic_from_ecef(r_f)
        return {"lat_deg": lat, "lon_deg": lon, "alt_m": alt,
                "speed_m_s": float(np.linalg.norm(v_f))}

    def altitude_m(self) -> float:
        radius = R_MOON_M if self.central == "moon" else R_EARTH_EQ_M
        return float(np.linalg.norm(self.r_m)) - radius

    # The integrator keeps its step size between clock steps: a restored flight
    # must continue with the same one, so the snapshot carries it.
    def snapshot(self) -> dict[str, Any]:
        return {"central": self.central, "r_m": self.r_m.tolist(), "v_m_s": self.v_m_s.tolist(),
                "t_s": self.t_s, "h_s": self.prop.step_hint_s, "steps": self.prop.steps}

    @classmethod
    def from_snapshot(cls, raw: dict[str, Any]) -> Flight:
        f = cls(str(raw["central"]), vec(raw["r_m"]), vec(raw["v_m_s"]), float(raw["t_s"]))
        f.prop.step_hint_s = None if raw["h_s"] is None else float(raw["h_s"])
        f.prop.steps = int(raw["steps"])
        return f


def apsides_km(el: Elements, body_radius_m: float = R_MOON_M) -> tuple[float, float]:
    """(periapsis, apoapsis) altitudes in km; apoapsis inf when unbound."""
    peri = (el.a_m * (1.0 - el.e) - body_radius_m) / 1e3
    apo = (el.a_m * (1.0 + el.e) - body_radius_m) / 1e3 if el.e < 1.0 else math.inf
    return peri, apo


def period_h(el: Elements, mu: float) -> float:
    return 2.0 * math.pi * math.sqrt(el.a_m**3 / mu) / 3_600.0 if el.e < 1.0 else math.inf
