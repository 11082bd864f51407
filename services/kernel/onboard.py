"""On-board helpers shared by the vehicles flying about the Moon (lander, ascender).

Coasting under the full lunar force model with a step-keeping propagator,
time-tagged commands, selenographic event values, impulsive burns with
their propellant, and a Lambert arc shot through the perturbed force model.
All pure: no I/O, no wall clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics import frames
from services.dynamics.constants import GM_MOON_M3_S2
from services.dynamics.guidance.rendezvous import lambert
from services.dynamics.propagate import ForceModel, Propagator, propagate
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.errors import InvalidCommand

Vec = NDArray[np.float64]

#: Point mass, J2 and Earth/Sun third bodies: what the Moon really does to a coast.
MOON_MODEL = ForceModel("moon")
#: Step limits of docs/mission.md "Time steps" (mission seconds).
POWERED_STEP_S = 1.0
NEAR_EVENT_STEP_S = 60.0
NEAR_EVENT_WINDOW_S = 600.0
COAST_LIMIT_S = 1_800.0
#: A body at rest on the surface, or not yet (or no longer) flown by this core:
#: nothing changes fast, so it never holds the clock below the cruise steps.
IDLE_LIMIT_S = 3_600.0


def as_vec(x: ArrayLike) -> Vec:
    return np.asarray(x, dtype=np.float64)


def as_list(v: ArrayLike) -> list[float]:
    return [float(c) for c in np.asarray(v, dtype=np.float64)]


def vec3_arg(command: dict[str, Any], key: str) -> Vec:
    """A 3-vector argument of a command or message, or InvalidCommand."""
    raw = command.get(key)
    if not isinstance(raw, Sequence) or len(raw) != 3:
        raise InvalidCommand(f"{key!r} must be a list of 3 numbers")
    try:
        out = as_vec([float(c) for c in raw])
    except (TypeError, ValueError) as exc:
        raise InvalidCommand(f"{key!r} must be a list of 3 numbers") from exc
    if not np.all(np.isfinite(out)):
        raise InvalidCommand(f"{key!r} must be finite")
    return out


def utc_arg(command: dict[str, Any], key: str) -> float:
    try:
        return mission_s_from_utc(str(command[key]))
    except (KeyError, ValueError) as exc:
        raise InvalidCommand(f"{key!r} must be an ISO UTC instant, "
                             f"got {command.get(key)!r}") from exc


def step_limit(t_to: float, next_event_s: float | None, powered: bool,
               idle: bool = False) -> float:
    """Largest next step: 1 s powered, 60 s near an event, 1,800 s coasting
    (3,600 s idle), never past the next on-board event (the clock stops
    exactly on it)."""
    if powered:
        return POWERED_STEP_S
    limit = IDLE_LIMIT_S if idle else COAST_LIMIT_S
    if next_event_s is not None:
        to_go = next_event_s - t_to
        if to_go <= NEAR_EVENT_WINDOW_S:
            limit = NEAR_EVENT_STEP_S
        limit = min(limit, max(to_go, 1e-3))
    return limit


# --- where a body is, as events report it -----------------------------------


def event_values(r_mci_m: Vec, v_mci_m_s: Vec, t_s: float, mass_kg: float) -> dict[str, float]:
    """lat/lon (selenographic), height above the 1,737.4 km sphere, speed
    relative to the Moon's surface frame, mass."""
    r_f, v_f = frames.moon_fixed_from_mci_state(r_mci_m, v_mci_m_s, t_s)
    lat, lon, alt = frames.selenographic_from_moon_fixed(r_f)
    return {"lat_deg": round(lat, 6), "lon_deg": round(lon, 6), "alt_m": round(alt, 3),
            "speed_m_s": round(float(np.linalg.norm(v_f)), 4), "mass_kg": round(mass_kg, 4)}


class FixedPointState:
    """The MCI state of a point fixed on the Moon, kept for the last instant asked
    (the summary asks every step, usually at an instant already computed)."""

    def __init__(self) -> None:
        self._last: tuple[Vec, float, Vec, Vec] | None = None

    def at(self, r_fixed_m: ArrayLike, t_s: float) -> tuple[Vec, Vec]:
        last = self._last
        if last is None or last[1] != t_s or not np.array_equal(last[0], r_fixed_m):
            r, v = frames.mci_from_moon_fixed_state(r_fixed_m, np.zeros(3), t_s)
            last = self._last = (np.array(r_fixed_m, dtype=np.float64), t_s, r, v)
        return last[2], last[3]


# --- coasting ------------------------------------------------------------------


@dataclass
class Coast:
    """A body coasting under :data:`MOON_MODEL`; the propagator keeps its step."""

    r_mci_m: Vec
    v_mci_m_s: Vec
    t_s: float
    prop: Propagator = field(default_factory=lambda: Propagator(MOON_MODEL))

    def to(self, t_s: float) -> None:
        if t_s != self.t_s:
            self.r_mci_m, self.v_mci_m_s = self.prop.step(
                self.r_mci_m, self.v_mci_m_s, self.t_s, t_s - self.t_s)
            self.t_s = t_s

    def snapshot(self) -> dict[str, Any]:
        return {"r": as_list(self.r_mci_m), "v": as_list(self.v_mci_m_s), "t": self.t_s,
                "hint": self.prop.step_hint_s}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> Coast:
        coast = cls(as_vec(snap["r"]), as_vec(snap["v"]), float(snap["t"]))
        coast.prop.step_hint_s = None if snap["hint"] is None else float(snap["hint"])
        return coast


def predict(r_mci_m: Vec, v_mci_m_s: Vec, t_s: float, t_to_s: float) -> tuple[Vec, Vec]:
    """Where a coasting body will be (a fresh integration: deterministic)."""
    return propagate(r_mci_m, v_mci_m_s, t_s, t_to_s - t_s, MOON_MODEL)


def shoot_lambert(r_m: Vec, v_m_s: Vec, t_s: float, r_target_m: Vec, t_target_s: float,
                  iterations: int = 4) -> Vec:
    """Velocity now that reaches ``r_target_m`` at ``t_target_s`` under the
    perturbed model: a two-body Lambert arc whose aim point is moved by the
    miss the real force model leaves (J2 and the Earth move a 1-h arc by km)."""
    tof = t_target_s - t_s
    aim = r_target_m.copy()
    normal = np.cross(r_m, v_m_s)
    v_new = v_m_s
    for _ in range(iterations):
        v_new, _ = lambert(r_m, aim, tof, GM_MOON_M3_S2, normal)
        r_end, _ = propagate(r_m, v_new, t_s, tof, MOON_MODEL)
        miss = r_end - r_target_m
        if float(np.linalg.norm(miss)) < 1.0:
            break
        aim = aim - miss
    return v_new


# --- impulsive burns -----------------------------------------------------------


@dataclass(frozen=True)
class PlannedBurn:
    """An impulsive burn planned for ``t_s`` (MCI delta-v)."""

    t_s: float
    dv_mci_m_s: tuple[float, float, float]
    label: str

    @property
    def dv_m_s(self) -> float:
        return math.sqrt(sum(c * c for c in self.dv_mci_m_s))


def planned(t_s: float, dv: ArrayLike, label: str) -> PlannedBurn:
    d = as_list(dv)
    return PlannedBurn(t_s, (d[0], d[1], d[2]), label)


def propellant_for_dv_kg(mass_kg: float, dv_m_s: float, v_e_m_s: float) -> float:
    return mass_kg * (1.0 - math.exp(-dv_m_s / v_e_m_s))
