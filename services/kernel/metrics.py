"""Prometheus metrics of one service process (catalog: docs/contract.md).

Every metric carries ``mission`` and ``service`` labels; other labels come
from small fixed sets (phase, vehicle, body, link, kind, reason, method, code).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BASE = ("mission", "service")
_STEP_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)


class Metrics:
    """All metric families of a process, bound to its mission and service."""

    def __init__(self, mission: str, service: str,
                 registry: CollectorRegistry = DEFAULT_REGISTRY) -> None:
        self.mission, self.service = mission, service
        r = registry

        def g(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, _BASE + labels, registry=r)

        def c(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, _BASE + labels, registry=r)

        self.mission_time = g("twin_mission_time_seconds", "Mission time since launch")
        self.phase = g("twin_mission_phase", "1 for the current mission phase", "phase")
        self.warp = g("twin_clock_warp_ratio", "Clock warp factor, 0 = as fast as possible")
        self.paused = g("twin_clock_paused", "1 while the clock is paused")
        self.steps = c("twin_clock_steps", "Lock-step steps completed")
        self.step_rate = g("twin_clock_step_rate_per_second", "Steps per wall second")
        self.step_duration = Histogram("twin_clock_step_duration_seconds",
                                       "Wall time from tick to the last acknowledgement",
                                       _BASE, buckets=_STEP_BUCKETS, registry=r)
        self.ack_latency = Histogram("twin_clock_ack_latency_seconds",
                                     "Wall time from tick to one peer's acknowledgement",
                                     (*_BASE, "peer"), buckets=_STEP_BUCKETS, registry=r)
        self.ack_overdue = g("twin_clock_ack_overdue", "1 while a peer's ack is overdue", "peer")
        v = ("vehicle",)
        self.distance = g("twin_vehicle_distance_meters", "Distance from body centre", *v, "body")
        self.altitude = g("twin_vehicle_altitude_meters", "Height above body radius", *v, "body")
        self.speed = g("twin_vehicle_speed_meters_per_second", "Speed rel. central body", *v)
        self.mass = g("twin_vehicle_mass_grams", "Vehicle mass", *v)
        self.propellant = g("twin_vehicle_propellant_grams", "Propellant remaining", *v)
        self.propellant_reserve = g("twin_vehicle_propellant_reserve_grams",
                                    "Propellant reserve floor", *v)
        self.thrust = g("twin_vehicle_thrust_newtons", "Current thrust", *v)
        self.power = g("twin_vehicle_power_watts", "Solar power generated", *v)
        self.battery = g("twin_vehicle_battery_ratio", "Battery state of charge", *v)
        self.temperature = g("twin_vehicle_temperature_celsius", "Modelled temperature", *v)
        self.sample = g("twin_vehicle_sample_mass_grams", "Lunar sample mass owned", *v)
        self.acceleration = g("twin_vehicle_acceleration_meters_per_second_squared",
                              "Sensed non-gravitational acceleration", *v)
        self.heat_flux = g("twin_vehicle_heat_flux_watts_per_square_meter",
                           "Stagnation-point heat flux", *v)
        self.link_up = g("twin_link_up", "1 while the link path exists", "link")
        self.light_time = g("twin_link_light_time_seconds", "One-way light time", "link")
        self.backlog = g("twin_recorder_backlog_frames", "Frames waiting on board", *v)
        self.frames_sent = c("twin_frames_sent", "Telemetry frames sent live", *v)
        self.frames_received = c("twin_frames_received", "Frames received by ground", *v)
        self.frames_played_back = c("twin_frames_played_back", "Frames sent from recorder", *v)
        self.frames_lost = c("twin_frames_lost", "Frames never delivered", *v)
        self.bus_in = c("twin_bus_messages_in", "Envelopes received", "kind")
        self.bus_out = c("twin_bus_messages_out", "Envelopes published", "kind")
        self.decode_errors = c("twin_bus_decode_errors", "Malformed messages dropped", "reason")
        self.reconnects = c("twin_bus_reconnects", "NATS reconnects")
        self.grpc_requests = c("twin_grpc_requests", "gRPC calls", "method", "code")
        self.grpc_duration = Histogram("twin_grpc_request_duration_seconds",
                                       "gRPC handling time", (*_BASE, "method"), registry=r)
        self.events = c("twin_mission_events", "Mission events published", "event")
        self._phase_now: str | None = None
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self) -> tuple[str, str]:
        return (self.mission, self.service)

    def child(self, name: str, *extra: str) -> Any:
        """The labelled child of a family, cached: ``labels()`` is costly per step."""
        key = (name, *extra)
        found = self._children.get(key)
        if found is None:
            found = getattr(self, name).labels(self.mission, self.service, *extra)
            self._children[key] = found
        return found

    def set_phase(self, phase: str) -> None:
        if phase == self._phase_now:
            return
        if self._phase_now is not None:
            self.phase.labels(self.mission, self.service, self._phase_now).set(0)
        self.phase.labels(self.mission, self.service, phase).set(1)
        self._phase_now = phase


def serve_metrics(port: int, host: str, registry: CollectorRegistry = DEFAULT_REGISTRY) -> int:
    """Start the ``/metrics`` HTTP endpoint; return the bound port (-1 if off)."""
    if port < 0:
        return -1
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
