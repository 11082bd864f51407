"""Placeholder motion for vehicles whose physics is not wired yet.

A circular orbit about a body, closed form, so that telemetry and metrics
carry plausible moving numbers. Real flight dynamics replaces it per vehicle.
"""

from __future__ import annotations

import math

from services.kernel.vehicle import COAST_STEP_S, Outbox, Summary, VehicleCore


class CircularOrbitCore(VehicleCore):
    body = "moon"
    mu_m3_s2 = 4.9028e12
    radius_m = 1_737_400.0
    altitude_m = 200_000.0
    mass_kg = 1000.0

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return COAST_STEP_S

    def summary(self) -> Summary:
        r = self.radius_m + self.altitude_m
        n = math.sqrt(self.mu_m3_s2 / r**3)
        ang = n * self.t_s
        v = n * r
        return Summary(
            phase=self.phase, frame="MCI" if self.body == "moon" else "ECI",
            central_body=self.body,
            r_m=(r * math.cos(ang), r * math.sin(ang), 0.0),
            v_m_s=(-v * math.sin(ang), v * math.cos(ang), 0.0),
            altitude_m=self.altitude_m, speed_m_s=v, mass_kg=self.mass_kg)
