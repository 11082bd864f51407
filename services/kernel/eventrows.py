"""A mission event as the mission log holds it, and the report's rows of them.

The report (services/cli/report.py), the mission-log reader and a campaign's
case (services/campaign/case.py) all turn events into the same rows, so that a
mission's digest is the same whether it was flown in-process or read back
from JetStream after a run of the six services.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.dynamics.timescale import iso_utc
from services.kernel.envelope import Envelope

__all__ = ["LoggedEvent", "event_from_envelope", "event_rows"]


@dataclass(frozen=True)
class LoggedEvent:
    """One mission event as published on `twin.<m>.evt.<vehicle>`."""

    name: str
    vehicle: str
    t_s: float
    step: int
    seq: int
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def order_key(self) -> tuple[float, str, int]:
        return (self.t_s, self.vehicle, self.seq)


def event_from_envelope(env: Envelope) -> LoggedEvent:
    values = {k: v for k, v in env.body.items() if k != "name"}
    return LoggedEvent(str(env.body.get("name", "")), env.src, env.t, env.step, env.seq, values)


def event_rows(events: Iterable[LoggedEvent]) -> list[dict[str, Any]]:
    """Events sorted by (mission time, vehicle, sequence), as report rows."""
    rows = []
    for ev in sorted(events, key=lambda e: e.order_key):
        row: dict[str, Any] = {"name": ev.name, "vehicle": ev.vehicle, "utc": iso_utc(ev.t_s),
                               "t_s": ev.t_s, "step": ev.step, "seq": ev.seq}
        for key in sorted(ev.values):
            if key not in row:
                row[key] = ev.values[key]
        rows.append(row)
    return rows
