"""Prometheus metrics of one service process (catalog: docs/contract.md).

Every metric carries ``mission`` and ``service`` labels; other labels come
from small fixed sets (phase, vehicle, body, link, kind, reason, method, code).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_BASE = ("mission", "service")
#: Step and ack latency buckets: fine around the lock-step's 0.2-2 ms, so a p99
#: read from them is within a quarter millisecond of the truth there.
_STEP_BUCKETS = (0.0001, 0.0002, 0.0003, 0.0005, 0.0007, 0.001, 0.0015, 0.002, 0.003, 0.005,
                 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)


#: Where an exception can stop a service: a bus message handler (a tick, a
#: command, a transfer) or ground's clock loop.
FAILURE_PLACES = ("handler", "clock")


class HotCounter:
    """A counter for the per-message hot path, with at most one label of its own.

    ``inc`` is one dict update keyed by the label's value (no lock, no child
    object, no label tuple); the registry reads the values when it is scraped.
    The lock-step kernel counts a dozen messages per step at thousands of steps
    a second, where ``prometheus_client``'s locked values cost about a
    microsecond each.
    """

    def __init__(self, name: str, doc: str, base: tuple[str, str], label: str = "") -> None:
        self.name, self.doc, self.base = name, doc, base
        self.labelnames = (label,) if label else ()
        self.values: dict[str, float] = {}  # label value ("" without a label) -> count

    def inc(self, label: str = "") -> None:
        values = self.values
        values[label] = values.get(label, 0.0) + 1.0

    def touch(self, label: str = "") -> None:
        """Create the series at zero, so it exists before its first event."""
        self.values.setdefault(label, 0.0)

    def family(self) -> Metric:
        fam = CounterMetricFamily(self.name, self.doc, labels=[*_BASE, *self.labelnames])
        for label, value in list(self.values.items()):  # one C call: safe against the loop
            fam.add_metric([*self.base, label] if self.labelnames else [*self.base], value)
        return fam


class HotHistogram:
    """A labelled histogram for the per-step hot path, read at scrape time.

    Each series is one list: a count per bucket (the last is +Inf) and the sum,
    so a scrape copies it in one step and sees a consistent count and buckets.
    """

    def __init__(self, name: str, doc: str, base: tuple[str, str], buckets: tuple[float, ...],
                 *labels: str) -> None:
        self.name, self.doc, self.base, self.labelnames = name, doc, base, labels
        self.bounds = buckets
        # "le" labels as prometheus_client writes them ("0.0002", "+Inf").
        self._le = [str(floatToGoString(b)) for b in (*buckets, float("inf"))]  # type: ignore[no-untyped-call]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def cell(self, *labels: str) -> list[float]:
        """The series of one label set (bucket counts, then the sum); bind it once."""
        found = self.series.get(labels)
        if found is None:
            found = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        return found

    def observe(self, cell: list[float], value: float) -> None:
        cell[bisect_left(self.bounds, value)] += 1.0  # le is inclusive: first bound >= value
        cell[-1] += value

    def family(self) -> Metric:
        fam = HistogramMetricFamily(self.name, self.doc, labels=[*_BASE, *self.labelnames])
        for labels, cell in list(self.series.items()):
            counts = list(cell)  # one C call: a consistent copy
            cumulative, buckets = 0.0, []
            for le, n in zip(self._le, counts[:-1], strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            fam.add_metric([*self.base, *labels], buckets, counts[-1])
        return fam


class _HotCollector(Collector):
    def __init__(self, families: list[HotCounter | HotHistogram]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for fam in self.families:
            yield fam.family()

    def describe(self) -> Iterator[Metric]:
        for fam in self.families:
            metric = fam.family()
            metric.samples = []
            yield metric


#: Why ground rolls a mission back (services/kernel/clock.py request_rollback).
ROLLBACK_REASONS = ("restart", "missing", "reconnect", "resume")


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
        base = (mission, service)
        self.steps = HotCounter("twin_clock_steps", "Lock-step steps completed", base)
        self.step_rate = g("twin_clock_step_rate_per_second", "Steps per wall second")
        self.step_duration = HotHistogram("twin_clock_step_duration_seconds",
                                          "Wall time from tick to the last acknowledgement",
                                          base, _STEP_BUCKETS)
        self.ack_latency = HotHistogram("twin_clock_ack_latency_seconds",
                                        "Wall time from tick to one peer's acknowledgement",
                                        base, _STEP_BUCKETS, "peer")
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
        self.bus_in = HotCounter("twin_bus_messages_in", "Envelopes received", base, "kind")
        self.bus_out = HotCounter("twin_bus_messages_out", "Envelopes published", base, "kind")
        self.decode_errors = c("twin_bus_decode_errors", "Malformed messages dropped", "reason")
        self.reconnects = c("twin_bus_reconnects", "NATS reconnects")
        self.grpc_requests = c("twin_grpc_requests", "gRPC calls", "method", "code")
        self.grpc_duration = Histogram("twin_grpc_request_duration_seconds",
                                       "gRPC handling time", (*_BASE, "method"), registry=r)
        self.events = c("twin_mission_events", "Mission events published", "event")
        self.failures = c("twin_service_failures", "Exceptions that stopped the service",
                          "where")
        # Coordinated snapshots and rollback (services/kernel/snapstore.py, clock.py).
        self.snapshot_bytes = g("twin_snapshot_bytes", "Size of the last snapshot stored")
        self.snapshot_seconds = Histogram("twin_snapshot_duration_seconds",
                                          "Wall time to encode and store one snapshot", _BASE,
                                          registry=r)
        self.commits = c("twin_snapshot_commits", "Snapshot sets committed (ground)")
        self.rollbacks = c("twin_rollbacks", "Rollbacks to a committed snapshot (ground)",
                           "reason")
        self.restores = c("twin_restores", "Committed snapshots restored")
        # What-if forks (services/ground/fork.py): made of this mission, and the
        # parent of this one (1 on a fork's ground, labelled with its parent).
        self.forks = c("twin_forks", "What-if forks recorded of this mission (ground)")
        self.fork_of = g("twin_fork_info", "1 on a fork's ground; its parent mission", "parent")
        self.missing = c("twin_bus_messages_missing", "Expected messages that never arrived")
        self.dropped = c("twin_bus_messages_dropped",
                         "Stale or duplicate messages dropped after a rollback", "reason")
        # Exported at 0, so rates and alerts see the first one.
        for reason in ROLLBACK_REASONS:
            self.rollbacks.labels(mission, service, reason)
        for reason in ("stale", "duplicate"):
            self.dropped.labels(mission, service, reason)
        self.restores.labels(mission, service)
        self.missing.labels(mission, service)
        for where in FAILURE_PLACES:  # exported at 0, so an alert sees the first one
            self.failures.labels(mission, service, where)
        r.register(_HotCollector([self.steps, self.step_duration, self.ack_latency,
                                  self.bus_in, self.bus_out]))
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
