"""What a step publishes and what a vehicle reports: the outbox and the summary.

Kept apart from :mod:`services.kernel.vehicle` so the on-board downlink, which
writes to the outbox and reads summaries, need not import the vehicle core
that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.kernel.messages import TRANSFERS, Transfer, encode

__all__ = ["PROMPT_STEP_S", "PROMPT_TYPES", "Outbox", "Outgoing", "Summary"]


#: Messages a receiver acts on at once (a command, a hand-over, an ack). The
#: length of the step that follows was agreed before the receiver saw them, so
#: after one the clock takes a short step and the receiver's own limit applies
#: from then on: a hand-over is accepted within a second, not at the end of a
#: half-hour coast step.
PROMPT_TYPES = frozenset(cls.TYPE for cls in TRANSFERS if cls.PROMPT)
PROMPT_STEP_S = 1.0


@dataclass
class Outgoing:
    kind: str  # subject kind: "evt", "cmd", "xfer", "dl"
    target: str  # service part of the subject (own name for evt)
    body: dict[str, Any]
    t: float

    @property
    def prompt(self) -> bool:
        """Whether the receiver must act on it at once (see PROMPT_TYPES)."""
        return self.kind == "cmd" or self.body.get("type") in PROMPT_TYPES


@dataclass
class Outbox:
    """What a step wants published, in the order it was written."""

    items: list[Outgoing] = field(default_factory=list)

    def event(self, source: str, name: str, t: float, **values: Any) -> None:
        self.items.append(Outgoing("evt", source, {"name": name, **values}, t))

    def send(self, kind: str, target: str, t: float, body: dict[str, Any]) -> None:
        self.items.append(Outgoing(kind, target, body, t))

    def transfer(self, target: str, t: float, message: Transfer) -> None:
        """Send a typed message to ``target`` on ``xfer.<target>``."""
        self.items.append(Outgoing("xfer", target, encode(message), t))

    def drain(self) -> list[Outgoing]:
        items, self.items = self.items, []
        return items


@dataclass
class Summary:
    """What status and telemetry report; SI units in the names."""

    phase: str
    frame: str = ""
    central_body: str = ""
    r_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    v_m_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    altitude_m: float = 0.0
    speed_m_s: float = 0.0
    mass_kg: float = 0.0
    propellant_kg: float = 0.0
    sample_mass_g: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
