"""The downlink's figures as Prometheus link metrics (catalog: docs/contract.md).

Called from ``ServiceGauges.refresh`` (services/kernel/gauges.py) when due: a vehicle's link
gauges and frame counters from its summary values, ground's frames received
per vehicle from its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.kernel.recorder import downlink_values

#: (summary value, counter family): the vehicle's totals, counted by their increase.
_COUNTERS = (("frames_sent_live", "frames_sent"), ("frames_played_back", "frames_played_back"),
             ("frames_dropped", "frames_lost"))


@dataclass
class LinkMetrics:
    """Turns the downlink's summary values into the catalog's link metrics.

    Counters get the increase since the last step. A vehicle's ``link`` label
    is its own name (its path to ground, whichever it is); the series is removed
    while the vehicle has no body of its own, so a stowed or finished vehicle
    never reads as a lost link."""

    last: dict[str, float] = field(default_factory=dict)
    linked: bool = False

    def update(self, m: Any, service: str, values: dict[str, float]) -> None:
        """A vehicle's link gauges from its summary values."""
        if "link_up" not in values:
            if self.linked:
                m.link_up.remove(m.mission, m.service, service)
                m.light_time.remove(m.mission, m.service, service)
                self.linked = False
            return
        self.linked = True
        m.link_up.labels(m.mission, m.service, service).set(values["link_up"])
        m.light_time.labels(m.mission, m.service, service).set(values["link_light_time_s"])
        for key, family in _COUNTERS:
            self._inc(m, family, key, service, values.get(key, 0.0))

    def update_ground(self, m: Any, values: dict[str, float]) -> None:
        """Ground's frame counters per vehicle, from ground's summary values."""
        prefix = "frames_received_"
        for key, value in values.items():
            if key.startswith(prefix):
                self._inc(m, "frames_received", key, key[len(prefix):], value)

    def _inc(self, m: Any, family: str, key: str, vehicle: str, value: float) -> None:
        delta = value - self.last.get(key, 0.0)
        counter = m.child(family, vehicle)  # the series exists from the first step, at 0
        if delta > 0.0:
            counter.inc(delta)
        self.last[key] = max(value, self.last.get(key, 0.0))


def merge_downlink_values(core: Any, values: dict[str, float]) -> None:
    """Add a core's downlink values to its summary values (the core's own win)."""
    for key, value in downlink_values(core.downlink).items():
        values.setdefault(key, value)
