"""A service's gauges (twin_vehicle_*, twin_mission_time_seconds, phase),
refreshed from its summary when due.

Prometheus scrapes about once a wall second while the lock-step makes
thousands of steps a second, so gauges are refreshed when something happened
(an event, a new phase) or every :data:`REFRESH_S` wall seconds, not every step.
"""

from __future__ import annotations

import time
from typing import Any

from services.kernel.config import ServiceConfig
from services.kernel.linkmetrics import LinkMetrics
from services.kernel.metrics import Metrics
from services.kernel.outbox import Summary

#: Wall seconds between refreshes while nothing happens.
REFRESH_S = 0.1

#: (summary.values key, Metrics attribute, scale to the metric's unit)
VALUE_GAUGES = (
    ("thrust_n", "thrust", 1.0),
    ("power_w", "power", 1.0),
    ("battery_soc_ratio", "battery", 1.0),
    ("temperature_c", "temperature", 1.0),
    ("propellant_reserve_kg", "propellant_reserve", 1000.0),
    ("sensed_accel_m_s2", "acceleration", 1.0),
    ("heat_flux_w_m2", "heat_flux", 1.0),
    ("backlog_frames", "backlog", 1.0),
)


class ServiceGauges:
    """A vehicle's gauges; ground's (services/ground/service.py) extend them."""

    def __init__(self, metrics: Metrics, config: ServiceConfig) -> None:
        self.metrics, self.name, self.config = metrics, config.service, config
        self.link_metrics = LinkMetrics()
        self._wall = -1e9  # when last refreshed
        self._phase = ""  # the phase last refreshed
        self._bound: dict[str, Any] | None = None

    def create(self, phase: str, t: float) -> None:
        """Create the label sets up front, so every series exists before its first change."""
        m = self.metrics
        m.reconnects.labels(*m.labels())
        m.mission_time.labels(*m.labels()).set(t)
        m.set_phase(phase)
        self.create_own()

    def create_own(self) -> None:
        # Quantities that are zero until a vehicle flies (no thrust, no air).
        for gauge in ("thrust", "acceleration", "heat_flux", "backlog"):
            self.metrics.child(gauge, self.name).set(0.0)

    def due(self, events: bool, phase: str) -> bool:
        """Whether the step that just ended refreshes the gauges."""
        now = time.monotonic()  # wall time gates metric refreshes only
        return events or phase != self._phase or now - self._wall >= REFRESH_S

    def refresh(self, s: Summary, t: float) -> None:
        self._wall, self._phase = time.monotonic(), s.phase
        m, g = self.metrics, self._bound
        if g is None:  # labelled children, bound once: this runs often
            g = self._bound = {name: m.child(name, self.name) for name in (
                "speed", "mass", "propellant", "sample",
                *(gauge for _, gauge, _ in VALUE_GAUGES))}
            g["mission_time"] = m.child("mission_time")
        g["mission_time"].set(t)
        m.set_phase(s.phase)
        self.refresh_own(s, g)

    def refresh_own(self, s: Summary, g: dict[str, Any]) -> None:
        """A vehicle's gauges from its summary."""
        m = self.metrics
        self.link_metrics.update(m, self.name, s.values)
        g["speed"].set(s.speed_m_s)
        g["mass"].set(s.mass_kg * 1000.0)
        g["propellant"].set(s.propellant_kg * 1000.0)
        g["sample"].set(s.sample_mass_g)
        if s.central_body:
            body = s.central_body
            m.child("altitude", self.name, body).set(s.altitude_m)
            r = s.r_m
            m.child("distance", self.name, body).set((r[0] ** 2 + r[1] ** 2 + r[2] ** 2) ** 0.5)
        values = s.values
        for key, gauge, scale in VALUE_GAUGES:
            if key in values:
                g[gauge].set(values[key] * scale)
