"""What the orbiter holds between steps besides its trajectory: the burns it has
queued, the finite burn it is flying, the rendezvous leg it is on, the next
change of central body, what it still carries, and its counters.

Plain dataclasses, so a snapshot is written from their fields
(services/kernel/state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.orbiter.flight import Vec


@dataclass
class QueuedBurn:
    """An impulsive burn due at ``t_s``, announced as ``event`` with ``values``."""

    t_s: float
    dv: Vec | None  # in the flight's frame then; None: planned when due (avoidance)
    label: str
    event: str
    values: dict[str, Any] = field(default_factory=dict)  # extra event values


@dataclass
class Steer:
    """An operator's finite burn: a fixed direction in RTN, or inertial (MCI/ECI)."""

    frame: str
    direction: Vec


@dataclass
class FiniteBurn:
    """A finite burn planned or under way (LOI, or an operator's ``finite_burn``)."""

    label: str
    t_start_s: float
    t_end_s: float
    planned_dv_m_s: float
    late_s: float = 0.0  # LOI: how late the command came for the planned start
    steer: Steer | None = None  # None: LOI, retrograde along the velocity
    throttle: float = 1.0
    started: bool = False
    m0_kg: float = 0.0  # mass at ignition, set when it starts


@dataclass
class Rendezvous:
    """The closing approach: the next hold-point leg and when it is due."""

    leg: int
    next_s: float
    arrived: bool = False  # at a hold point: stop there before the next leg


@dataclass(frozen=True)
class Recentring:
    """The next switch of the flight's central body (``moon`` or ``earth``)."""

    t_s: float
    central: str


@dataclass(frozen=True)
class PeriluneAim:
    """The approach perilune the cruise corrections aim at (set by the first)."""

    t_s: float
    alt_m: float


@dataclass
class Carried:
    """What is still attached to the orbiter."""

    la_stack: bool = True
    icubeq: bool = True
    returner: bool = True


@dataclass
class Counts:
    steps: int = 0
    burns: int = 0
    ignored_acks: int = 0  # hand-over acks for no pending hand-over
