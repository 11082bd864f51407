"""The service runtime shared by all six services, written once.

Start order: metrics endpoint, NATS (with the mission-log stream), bus
subscriptions, gRPC server (control + health + reflection), hello to the
clock, health SERVING. Stop order is the reverse: health NOT_SERVING, gRPC stops
with grace, subscriptions and the NATS connection drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry

from services.kernel.bus import Bus, subject_matches
from services.kernel.config import ServiceConfig
from services.kernel.control import ControlServicer, frame_from_summary
from services.kernel.downlink import LinkMetrics, merge_downlink_values
from services.kernel.envelope import Envelope
from services.kernel.errors import ConfigError, TwinError
from services.kernel.inbox import Inbox
from services.kernel.logs import setup_logging
from services.kernel.metrics import Metrics, serve_metrics
from services.kernel.steprule import take_step
from services.kernel.twin_pb import control_pb2, control_pb2_grpc
from services.kernel.vehicle import Outbox, VehicleCore

log = logging.getLogger("twin.runtime")

#: Subject kind -> envelope kind.
ENVELOPE_KIND = {"evt": "event", "cmd": "command", "xfer": "transfer",
                 "dl": "downlink"}
#: Wall seconds a receiver waits for messages a tick says are on their way.
DELIVERY_TIMEOUT_S = 5.0
GRACE_S = 5.0
#: Wall seconds between metric refreshes while nothing happens (Prometheus
#: scrapes every second or so; events and phase changes refresh at once).
METRICS_REFRESH_S = 0.1


class ServiceRuntime:
    """One service process: a :class:`VehicleCore` wired to NATS, gRPC and metrics."""

    def __init__(self, core: VehicleCore, config: ServiceConfig,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.core = core
        self.config = config
        self.name = config.service
        self.registry = registry
        self.metrics = Metrics(config.mission_id, config.service, registry)
        self.bus = Bus(config.mission_id, config.service, self.metrics, self.fail)
        self.subjects = self.bus.subjects
        self.inbox = Inbox()
        self.outbox = Outbox()
        self.step = 0  # last step completed
        self.t_s = 0.0
        self.grpc_port = 0
        self.metrics_port = -1
        self.watchers: list[asyncio.Queue[control_pb2.TelemetryFrame | None]] = []
        self.stopping = asyncio.Event()
        #: Set by :meth:`fail`: the exception that stopped the service.
        self.failure: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._inbound: list[str] = []
        self._mine: dict[str, bool] = {}  # subject -> is it one of my inbound subjects
        self._last_tm_t = -1e30
        # Truth telemetry not yet published: frames encoded when made (the core's
        # state moves on), with the step and time of the last one.
        self._tm_frames: list[bytes] = []
        self._tm_last = (0, 0.0)
        self._tm_timer: asyncio.TimerHandle | None = None
        self._tm_tasks: set[asyncio.Task[None]] = set()
        self._last_ack: bytes | None = None
        self.last_prompt = False  # did the last step publish a message to act on at once?
        self._gauges: dict[str, Any] | None = None
        self._metrics_wall = -1e9
        self._metrics_phase = ""
        self.link_metrics = LinkMetrics()
        self._stopped = False
        self._ack_subject = self.subjects.ack(self.name)
        self._tm_subject = self.subjects.telemetry(self.name)

    # --- wiring hooks (ground overrides) ------------------------------------
    def inbound_subjects(self) -> list[str]:
        """Subjects whose messages go into the inbox."""
        return [self.subjects.command(self.name), self.subjects.transfer(self.name),
                *getattr(self.core, "extra_subjects", lambda s: [])(self.subjects)]

    def add_servicers(self, server: grpc.aio.Server) -> list[str]:
        control_pb2_grpc.add_VehicleControlServicer_to_server(ControlServicer(self), server)
        return [control_pb2.DESCRIPTOR.services_by_name["VehicleControl"].full_name]

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        self.metrics_port = serve_metrics(self.config.metrics_port, self.config.grpc_host,
                                          self.registry)
        await self.bus.connect(self.config.nats_urls, f"twin-{self.config.mission_id}-{self.name}")
        await self.bus.ensure_stream(self.config.js_replicas)
        self.init_metrics()
        self._inbound = self.inbound_subjects()
        for subject in self._inbound:
            await self.bus.subscribe(subject, self._on_inbound)
        await self.subscribe_clock()
        await self._start_grpc()
        await self.say_hello()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("service started", extra={"grpc_port": self.grpc_port,
                                             "metrics_port": self.metrics_port,
                                             "nats": ",".join(self.config.nats_urls)})

    def init_metrics(self) -> None:
        """Create label sets up front so every series exists before its first change."""
        m = self.metrics
        m.reconnects.labels(*m.labels())
        m.mission_time.labels(*m.labels()).set(self.t_s)
        m.set_phase(self.core.phase)
        self.init_own_metrics()

    def init_own_metrics(self) -> None:
        """A vehicle's series (ground, the clock authority, overrides this)."""
        # Quantities that are zero until a vehicle flies (no thrust, no air).
        for gauge in ("thrust", "acceleration", "heat_flux", "backlog"):
            self.metrics.child(gauge, self.name).set(0.0)

    async def subscribe_clock(self) -> None:
        await self.bus.subscribe(self.subjects.tick, self._on_tick)
        await self.bus.subscribe(self.subjects.roll, self._on_roll)

    async def _start_grpc(self) -> None:
        server = grpc.aio.server()
        names = self.add_servicers(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for name in names:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{self.config.grpc_host}:{self.config.grpc_port}"
        self.grpc_port = server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise ConfigError("TWIN_GRPC_PORT", str(self.config.grpc_port), "port is taken",
                              "free the port or set TWIN_GRPC_PORT=0 for a free one")
        await server.start()
        self._server = server

    def fail(self, where: str, exc: BaseException) -> None:
        """An exception escaped a handler or the clock: count it, keep the first,
        and stop the service. Its state may be half-updated, so stepping on
        would run the mission on wrong; the process exits non-zero
        (EXIT_SERVICE_FAILED) and the supervisor names it."""
        self.metrics.failures.labels(*self.metrics.labels(), where).inc()
        log.error("service failed, stopping", exc_info=exc, extra={"where": where})
        if self.failure is None:
            self.failure = exc
        self.stopping.set()

    async def stop(self) -> None:
        """Stop in reverse order of start; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        await self._health.enter_graceful_shutdown()
        for q in self.watchers:
            q.put_nowait(None)
        if self._server is not None:
            await self._server.stop(GRACE_S)
        try:
            await self.publish_telemetry()  # the last frames, before the connection goes
        except Exception:
            log.warning("last telemetry frames not published", exc_info=True)
        await self.bus.drain()
        log.info("service stopped", extra={"step": self.step, "t_s": self.t_s})

    # --- the clock protocol, participant side -------------------------------
    async def say_hello(self) -> None:
        await self.bus.send(self.subjects.hello(self.name), "hello",
                            {"step": self.step, "t": self.t_s, "grpc_port": self.grpc_port},
                            self.t_s, self.step)

    async def _on_roll(self, env: Envelope, subject: str) -> None:
        await self.say_hello()

    def _on_inbound(self, env: Envelope, subject: str) -> None:
        if env.src != self.name:  # a service knows what it published itself
            self.inbox.add(env, subject)

    def expected_for_me(self, expect: dict[str, int]) -> dict[str, int]:
        mine = self._mine
        out = {}
        for s, n in expect.items():
            hit = mine.get(s)
            if hit is None:
                hit = mine[s] = any(subject_matches(p, s) for p in self._inbound)
            if hit:
                out[s] = n
        return out

    async def _on_tick(self, env: Envelope, subject: str) -> None:
        body, core = env.body, self.core
        step = int(body["step"])
        if core.faults and "stall_clock" in core.faults:
            return  # fault injection: behave as a service that stopped answering
        if step <= self.step:
            if step == self.step and self._last_ack is not None:
                await self.bus.resend(self._ack_subject, self._last_ack)
            return
        t_from, t_to = float(body["t_from"]), float(body["t_to"])
        expect = body.get("expect")
        held = (await self.collect(step - 1, self.expected_for_me(expect) if expect else {})
                if expect or self.inbox.held else ())  # most steps of a coast bring nothing
        max_dt = take_step(core, held, t_from, t_to, self.outbox)
        self.step, self.t_s = step, t_to
        pub = await self.flush_outbox(step, t_to)
        # The common ack is as small as the floor's; ``pub`` and ``prompt`` only
        # when there is something to say.
        ack: dict[str, Any] = {"step": step, "max_dt_s": max_dt}
        if pub:
            ack["pub"] = pub
        if self.last_prompt:
            ack["prompt"] = True
        self._last_ack = await self.bus.send(self._ack_subject, "ack", ack, t_to, step)

    async def collect(self, last_step: int, expect: dict[str, int]) -> list[Envelope]:
        """The messages published up to ``last_step`` (for the step rule to apply),
        once every one ``expect`` counts has arrived."""
        if expect:
            missing = await self.inbox.wait_for(last_step, expect, DELIVERY_TIMEOUT_S)
            if missing:
                log.error("messages never arrived", extra={"step": last_step, "missing": missing})
        return self.inbox.take(last_step) if self.inbox.held else []

    async def flush_outbox(self, step: int, t: float) -> dict[str, int]:
        """Publish what the step wrote and add the step's truth-telemetry frame to
        the next ``tm`` message; return counts per subject (telemetry not counted:
        it feeds no inbox, nothing waits for it)."""
        counts: dict[str, int] = {}
        events = self.last_prompt = False
        if self.outbox.items:  # most steps of a coast write nothing
            for item in self.outbox.drain():
                subject = self.subjects.of(item.kind, item.target)
                await self.bus.send(subject, ENVELOPE_KIND[item.kind], item.body, item.t, step,
                                    durable=item.kind == "evt")
                counts[subject] = counts.get(subject, 0) + 1
                self.last_prompt = self.last_prompt or item.prompt
                if item.kind == "evt":
                    events = True
                    self.metrics.child("events", str(item.body["name"])).inc()
                    log.info("event", extra={"event": item.body["name"], "t_s": item.t})
        if self._record_step(step, t, events):
            await self.publish_telemetry()
        return counts

    def _record_step(self, step: int, t: float, events: bool) -> bool:
        """The step's truth-telemetry frame and metric refresh, each when due; True
        when the frames waiting fill a ``tm`` message."""
        core = self.core
        tm_due = (t - self._last_tm_t >= max(core.telemetry_interval_s(), self.config.tm_interval_s)
                  and "drop_telemetry" not in core.faults)
        # Metrics are scraped about once a wall second: refreshing them on every
        # step (thousands a second) is waste, except when something happened.
        now = time.monotonic()  # wall time gates metric refreshes only
        metrics_due = (events or core.phase != self._metrics_phase
                       or now - self._metrics_wall >= METRICS_REFRESH_S)
        if not (tm_due or metrics_due):
            return False
        summary = core.summary()
        if summary.central_body:  # the downlink's figures ride in telemetry too
            merge_downlink_values(core, summary.values)
        if metrics_due:
            self.update_metrics(summary, t)
            self._metrics_wall, self._metrics_phase = now, core.phase
        if not tm_due:
            return False
        frames = self._tm_frames
        frames.append(orjson.dumps(telemetry_frame(summary, step, t),
                                   option=orjson.OPT_SERIALIZE_NUMPY))
        self._tm_last, self._last_tm_t = (step, t), t
        if self.watchers:
            self._feed_watchers(summary, step, t)
        if len(frames) >= self.config.tm_batch:
            return True
        if self._tm_timer is None:  # the first frame waiting: send by the deadline
            self._tm_timer = asyncio.get_running_loop().call_later(
                self.config.tm_delay_s, self._telemetry_waited)
        return False

    async def publish_telemetry(self) -> bool:
        """Publish the pending truth-telemetry frames as one ``tm`` message (its
        envelope stamped with the last frame's time and step); False if none."""
        if self._tm_timer is not None:
            self._tm_timer.cancel()
            self._tm_timer = None
        frames = self._tm_frames
        if not frames or self.bus.nc is None or self.bus.nc.is_closed:
            return False
        self._tm_frames = []
        step, t = self._tm_last
        await self.bus.send(self._tm_subject, "telemetry",
                            {"fields": _TM_FIELDS_JSON,
                             "frames": orjson.Fragment(b"[" + b",".join(frames) + b"]")},
                            t, step)
        return True

    async def settle_telemetry(self, timeout_s: float = 2.0) -> None:
        """Publish the pending frames and wait until nats-server holds them: whoever
        reads the status next, then the telemetry, finds every frame up to it."""
        if await self.publish_telemetry():
            assert self.bus.nc is not None
            try:
                await self.bus.nc.flush(timeout=max(1, math.ceil(timeout_s)))
            except Exception as exc:  # a status answer must not fail on a slow bus
                log.warning("telemetry flush failed", extra={"error": repr(exc)})

    def _telemetry_waited(self) -> None:
        """The oldest pending frame has waited ``tm_delay_s``: send what there is."""
        self._tm_timer = None
        task = asyncio.ensure_future(self._publish_telemetry_logged())
        self._tm_tasks.add(task)
        task.add_done_callback(self._tm_tasks.discard)

    async def _publish_telemetry_logged(self) -> None:
        try:
            await self.publish_telemetry()
        except Exception:
            log.warning("telemetry frames not published", exc_info=True)

    # --- telemetry, metrics ---------------------------------------------------
    def update_metrics(self, s: Any, t: float) -> None:
        m, g = self.metrics, self._gauges
        if g is None:  # labelled children, bound once: this runs every step
            g = self._gauges = {name: m.child(name, self.name) for name in (
                "speed", "mass", "propellant", "sample",
                *(gauge for _, gauge, _ in _VALUE_GAUGES))}
            g["mission_time"] = m.child("mission_time")
        g["mission_time"].set(t)
        m.set_phase(s.phase)
        self.update_own_metrics(s, g)

    def update_own_metrics(self, s: Any, g: dict[str, Any]) -> None:
        """A vehicle's gauges from its summary (ground overrides this)."""
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
        for key, gauge, scale in _VALUE_GAUGES:
            if key in values:
                g[gauge].set(values[key] * scale)

    def _feed_watchers(self, s: Any, step: int, t: float) -> None:
        """One frame to every WatchTelemetry stream (the caller checks there is one)."""
        frame = frame_from_summary(self.name, s, step, t)
        for q in self.watchers:
            if not q.full():  # a slow watcher misses frames rather than stalling the clock
                q.put_nowait(frame)

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume this service: its core plus its protocol position."""
        return {"service": self.name, "mission": self.config.mission_id, "step": self.step,
                "t_s": self.t_s, "seq": self.bus.seq.last, "tm_seq": self.bus.tm_seq.last,
                "core": self.core.snapshot()}

    def restore(self, snap: dict[str, Any]) -> None:
        if snap["service"] != self.name or snap["mission"] != self.config.mission_id:
            raise ValueError(f"snapshot of {snap['service']}/{snap['mission']} does not fit "
                             f"{self.name}/{self.config.mission_id}")
        self.step, self.t_s = int(snap["step"]), float(snap["t_s"])
        self.bus.seq.last = int(snap["seq"])
        self.bus.tm_seq.last = int(snap.get("tm_seq", 0))  # absent before tm had its own
        self.core.restore(snap["core"])

    def local_command(self, command: dict[str, Any]) -> None:
        """Queue a validated command for the start of the next step."""
        env = self.bus.envelope("command", command, self.t_s, self.step)
        self.inbox.add_local(env)


#: (summary.values key, Metrics attribute, scale to the metric's unit)
_VALUE_GAUGES = (
    ("thrust_n", "thrust", 1.0),
    ("power_w", "power", 1.0),
    ("battery_soc_ratio", "battery", 1.0),
    ("temperature_c", "temperature", 1.0),
    ("propellant_reserve_kg", "propellant_reserve", 1000.0),
    ("sensed_accel_m_s2", "acceleration", 1.0),
    ("heat_flux_w_m2", "heat_flux", 1.0),
    ("backlog_frames", "backlog", 1.0),
)


#: The fields of a truth-telemetry frame, in the order every frame lists them.
#: A ``tm`` message is ``{"fields": TM_FIELDS, "frames": [[...], ...]}``: the
#: names once a message, not once a frame (naming them in each frame made a
#: third of a vehicle's per-step work in the idle kernel; bench_instr).
TM_FIELDS = ("step", "t", "phase", "frame", "body", "r_m", "v_m_s", "alt_m", "speed_m_s",
             "mass_kg", "propellant_kg", "sample_mass_g", "values")
_TM_FIELDS_JSON = orjson.Fragment(orjson.dumps(TM_FIELDS))


def telemetry_frame(s: Any, step: int, t: float) -> list[Any]:
    """One truth-telemetry frame, in :data:`TM_FIELDS` order: the state at the
    end of ``step`` (mission time ``t``)."""
    return [step, t, s.phase, s.frame, s.central_body, s.r_m, s.v_m_s, s.altitude_m,
            s.speed_m_s, s.mass_kg, s.propellant_kg, s.sample_mass_g, s.values]


# --- process entry point ------------------------------------------------------
#: Exit status of a service stopped by an exception (BSD sysexits EX_SOFTWARE).
EXIT_SERVICE_FAILED = 70


def run_service(service: str, make: Callable[[ServiceConfig], ServiceRuntime]) -> None:
    """``python -m services.<name>``: configure, run until SIGTERM/SIGINT, stop cleanly."""
    try:
        config = ServiceConfig.from_env(service, os.environ)
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(config.service, config.mission_id, config.log_level, config.log_format)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        runner(_main(make(config)))
    except TwinError as exc:
        print(f"{service}: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _main(rt: ServiceRuntime) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, rt.stopping.set)
    started = time.monotonic()  # wall time only to report start-up duration
    try:
        await rt.start()
        log.info("ready", extra={"startup_s": round(time.monotonic() - started, 3)})
        await rt.stopping.wait()
    finally:
        with contextlib.suppress(Exception):
            await rt.stop()
    if rt.failure is not None:
        raise SystemExit(EXIT_SERVICE_FAILED)
