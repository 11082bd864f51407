"""The service runtime shared by all six services, written once: a service's
life (start, stop, failure), its part in the clock protocol (each tick taken by
the step rule, services/kernel/steprule.py, then published and acknowledged),
and its snapshot. Truth telemetry is services/kernel/telemetry.py, the gauges
services/kernel/gauges.py.

Start order: metrics endpoint, NATS (with the mission-log stream), bus
subscriptions, gRPC server (control + health + reflection; health alone, in
plaintext, on TWIN_HEALTH_PORT if set), hello to the clock, health SERVING.
Stop order is the reverse: health NOT_SERVING, gRPC stops with grace,
subscriptions and the NATS connection drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry

from services.kernel.bus import Bus, subject_matches
from services.kernel.config import ServiceConfig
from services.kernel.control import ControlServicer
from services.kernel.envelope import Envelope
from services.kernel.errors import (
    EXIT_BAD_CONFIG,
    EXIT_SERVICE_FAILED,
    ConfigError,
    TwinError,
)
from services.kernel.gauges import ServiceGauges
from services.kernel.grpcauth import RoleInterceptor
from services.kernel.inbox import Inbox
from services.kernel.linkmetrics import merge_downlink_values
from services.kernel.logs import setup_logging
from services.kernel.metrics import Metrics, serve_metrics
from services.kernel.natsauth import Publishers
from services.kernel.parameters import ParameterError, split_path
from services.kernel.security import security_of
from services.kernel.snapstore import SnapshotError, SnapStore, Stored
from services.kernel.steprule import take_step
from services.kernel.telemetry import TelemetryStream
from services.kernel.twin_pb import control_pb2, control_pb2_grpc
from services.kernel.vehicle import Outbox, VehicleCore, service_rng

log = logging.getLogger("twin.runtime")

#: Subject kind -> envelope kind.
ENVELOPE_KIND = {"evt": "event", "cmd": "command", "xfer": "transfer",
                 "dl": "downlink"}
#: Wall seconds a receiver waits for messages a tick says are on their way.
DELIVERY_TIMEOUT_S = 5.0
GRACE_S = 5.0
#: Wall seconds a vehicle waits at start for ground to create the streams.
STREAMS_TIMEOUT_S = 60.0


class ServiceRuntime:
    """One service process: a :class:`VehicleCore` wired to NATS, gRPC and metrics."""

    #: The service's gauges (ground's extend a vehicle's).
    gauges_type: type[ServiceGauges] = ServiceGauges

    def __init__(self, core: VehicleCore, config: ServiceConfig,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.core = core
        self.config = config
        self.name = config.service
        self.registry = registry
        apply_parameters(core, config)
        self.metrics = Metrics(config.mission_id, config.service, registry)
        self.bus = Bus(config.mission_id, config.service, self.metrics, self.fail)
        self.subjects = self.bus.subjects
        self.bus.run_id = config.run_id
        if not config.insecure:  # the envelope source check, beside NATS permissions
            self.bus.publishers = Publishers(config.mission_id)
        self.bus.on_reconnect = self.reconnected
        self.inbox = Inbox()
        self.outbox = Outbox()
        self.step = 0  # last step completed
        self.t_s = 0.0
        self.grpc_port = 0
        self.metrics_port = -1
        self.health_port = -1  # the plaintext health-only port, if TWIN_HEALTH_PORT asks
        self.stopping = asyncio.Event()
        #: Set by :meth:`fail`: the exception that stopped the service.
        self.failure: BaseException | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._inbound: list[str] = []
        self._mine: dict[str, bool] = {}  # subject -> is it one of my inbound subjects
        self.telemetry = TelemetryStream(self.bus, self.name, config)
        self.gauges = self.gauges_type(self.metrics, config)
        self._last_ack: bytes | None = None
        #: Rollbacks this service has joined: ticks of another epoch are ignored.
        self.epoch = 0
        self.snapstore: SnapStore | None = None
        #: This process's incarnation: a hello with another one is a restart.
        self.boot = uuid.uuid4().hex[:12]
        self.last_prompt = False  # did the last step publish a message to act on at once?
        self._stopped = False
        self._ack_subject = self.subjects.ack(self.name)

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
        security = security_of(self.config)
        security.warn_if_insecure(log)
        security.check(self.config.mission_id, self.name, grpc_server=True)
        await self.bus.connect(self.config.nats_urls, f"twin-{self.config.mission_id}-{self.name}",
                               **security.nats_options(self.config.mission_id, self.name))
        await self.ensure_streams()
        self.gauges.create(self.core.phase, self.t_s)
        self._inbound = self.inbound_subjects()
        for subject in self._inbound:
            await self.bus.subscribe(subject, self._on_inbound)
        await self.subscribe_clock()
        # The server has every subscription before anyone hears of this service
        # (its hello, its gRPC port): with the services now starting together,
        # a peer's first message must not race the subscription.
        await self.bus.flush(DELIVERY_TIMEOUT_S)
        await self._start_grpc()
        await self.say_hello()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("service started", extra={"grpc_port": self.grpc_port,
                                             "metrics_port": self.metrics_port,
                                             "health_port": self.health_port,
                                             "nats": ",".join(self.config.nats_urls)})

    async def ensure_streams(self) -> None:
        """Ground creates the mission log and snapshot streams; a vehicle may
        not (natsauth.JS_GRANTS), so it waits until they are there."""
        snapshots = bool(self.config.snapshot_every_steps and self.bus.js is not None)
        if snapshots:
            assert self.bus.js is not None
            self.snapstore = SnapStore(self.bus.js, self.subjects)
        if self.name == "ground":
            await self.bus.ensure_stream(self.config.js_replicas)
            if self.snapstore is not None:
                await self.snapstore.ensure(self.config.js_replicas, self.config.snapshot_keep)
            return
        names = (self.subjects.stream_name,
                 *((self.subjects.snapshot_stream,) if snapshots else ()))
        await self.bus.wait_for_streams(names, STREAMS_TIMEOUT_S)

    async def subscribe_clock(self) -> None:
        await self.bus.subscribe(self.subjects.tick, self._on_tick)
        await self.bus.subscribe(self.subjects.roll, self._on_roll)
        await self.bus.subscribe(self.subjects.restore, self._on_restore)

    async def _start_grpc(self) -> None:
        security = security_of(self.config)
        creds = security.grpc_server_credentials(self.name)
        interceptors = [] if creds is None else [RoleInterceptor(
            self.registry, base_labels={"mission": self.config.mission_id,
                                        "service": self.name})]
        server = grpc.aio.server(interceptors=interceptors)
        names = self.add_servicers(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for name in names:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        address = f"{self.config.grpc_host}:{self.config.grpc_port}"
        try:  # grpcio raises on a taken port; older releases returned 0
            self.grpc_port = (server.add_insecure_port(address) if creds is None
                              else server.add_secure_port(address, creds))
        except RuntimeError:
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise ConfigError("TWIN_GRPC_PORT", str(self.config.grpc_port), "port is taken",
                              "free the port or set TWIN_GRPC_PORT=0 for a free one")
        # Not serving until the service has said hello (start() sets it).
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._server = server
        await self._start_health_port()

    async def _start_health_port(self) -> None:
        """The same health statuses in plaintext on a port of their own, and
        nothing else there: the kubelet's gRPC probe cannot present a client
        certificate, and a status is all the port tells (no control, no
        reflection)."""
        if self.config.health_port < 0:
            return
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        address = f"{self.config.grpc_host}:{self.config.health_port}"
        try:
            self.health_port = server.add_insecure_port(address)
        except RuntimeError:
            self.health_port = 0
        if self.health_port == 0:
            raise ConfigError("TWIN_HEALTH_PORT", str(self.config.health_port), "port is taken",
                              "free the port or set TWIN_HEALTH_PORT=0 for a free one")
        await server.start()
        self._health_server = server

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
        self.inbox.close()  # a tick waiting on messages need not wait out its timeout
        await self._health.enter_graceful_shutdown()
        self.telemetry.close_watchers()
        if self._server is not None:
            await self._server.stop(GRACE_S)
        if self._health_server is not None:  # probes see NOT_SERVING until here
            await self._health_server.stop(None)
        try:
            await self.telemetry.publish()  # the last frames, before the connection goes
        except Exception:
            log.warning("last telemetry frames not published", exc_info=True)
        await self.bus.drain()
        log.info("service stopped", extra={"step": self.step, "t_s": self.t_s})

    # --- the clock protocol, participant side -------------------------------
    async def say_hello(self) -> None:
        await self.bus.send(self.subjects.hello(self.name), "hello",
                            {"step": self.step, "t": self.t_s, "grpc_port": self.grpc_port,
                             "epoch": self.epoch, "boot": self.boot},
                            self.t_s, self.step)

    async def _on_roll(self, env: Envelope, subject: str) -> None:
        await self.say_hello()

    async def reconnected(self) -> None:
        """Back on NATS after an outage, in which messages may have been lost: say
        hello, so a ground in the middle of a rollback sends its restore again."""
        await self.say_hello()

    def _on_inbound(self, env: Envelope, subject: str) -> None:
        if env.src != self.name and not self.inbox.add(env, subject):  # own: known already
            reason = "stale" if env.step <= self.inbox.floor else "duplicate"
            self.metrics.child("dropped", reason).inc()

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
        if body.get("epoch", 0) != self.epoch:
            return  # a tick from before a rollback, or one this service has not joined
        if step != self.step + 1:
            if step == self.step and self._last_ack is not None:
                await self.bus.resend(self._ack_subject, self._last_ack)
            return  # a tick sent again, or one a restarted service cannot take yet
        t_from, t_to = float(body["t_from"]), float(body["t_to"])
        expect = body.get("expect")
        ack: dict[str, Any] = {"step": step, "epoch": self.epoch}
        held: list[Envelope] = []
        if expect or self.inbox.held:  # most steps of a coast bring nothing
            held, missing = await self.collect(step - 1,
                                               self.expected_for_me(expect) if expect else {})
            if ack["epoch"] != self.epoch or self.stopping.is_set():
                return  # restored while it waited, or stopping: no step to take
            if missing:  # the step cannot be taken as it was: ground rolls back
                ack["missing"] = missing
                self._last_ack = await self.bus.send(self._ack_subject, "ack", ack, t_from,
                                                     step - 1)
                return
        if "snap" in body and self.snapstore is not None:
            ack["snap"] = (await self.store_snapshot(held)).to_json()
        max_dt = take_step(core, held, t_from, t_to, self.outbox)
        self.step, self.t_s = step, t_to
        pub = await self.flush_outbox(step, t_to)
        # The common ack is as small as the floor's; ``pub`` and ``prompt`` only
        # when there is something to say.
        ack["max_dt_s"] = max_dt
        if pub:
            ack["pub"] = pub
        if self.last_prompt:
            ack["prompt"] = True
        self._last_ack = await self.bus.send(self._ack_subject, "ack", ack, t_to, step)

    async def collect(self, last_step: int,
                      expect: dict[str, int]) -> tuple[list[Envelope], dict[str, int]]:
        """The messages published up to ``last_step`` (for the step rule to apply)
        once every one ``expect`` counts has arrived, and what never did."""
        missing: dict[str, int] = {}
        if expect:
            missing = await self.inbox.wait_for(last_step, expect, DELIVERY_TIMEOUT_S)
            if missing and not self.stopping.is_set():  # a stop ends the wait: not lost
                self.metrics.child("missing").inc(sum(missing.values()))
                log.error("messages never arrived", extra={"step": last_step, "missing": missing})
        return (self.inbox.take(last_step) if self.inbox.held else []), missing

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
            await self.telemetry.publish()
        return counts

    def _record_step(self, step: int, t: float, events: bool) -> bool:
        """The step's truth-telemetry frame and gauge refresh, each when due; True
        when the frames waiting fill a ``tm`` message."""
        core, telemetry, gauges = self.core, self.telemetry, self.gauges
        tm_due = telemetry.due(core, t)
        metrics_due = gauges.due(events, core.phase)
        if not (tm_due or metrics_due):
            return False
        summary = core.summary()
        if summary.central_body:  # the downlink's figures ride in telemetry too
            merge_downlink_values(core, summary.values)
        if metrics_due:
            gauges.refresh(summary, t)
        return tm_due and telemetry.add(summary, step, t)

    def snapshot(self, held: list[Envelope] | None = None) -> dict[str, Any]:
        """Everything needed to resume this service: its core, its protocol position,
        and ``held``, the messages it took for the next step and not yet applied."""
        return {"service": self.name, "mission": self.config.mission_id, "step": self.step,
                "t_s": self.t_s, "seq": self.bus.seq.last, "tm_seq": self.bus.tm_seq.last,
                "core": self.core.snapshot(), "held": [list(e) for e in held or ()]}

    def restore(self, snap: dict[str, Any], reseed: int | None = None) -> None:
        """Take ``snap`` as this service's state; ``reseed``: a fork's commit that
        asks for new random numbers from its branch on (services/ground/fork.py)
        gives each service a fresh stream of its seed."""
        if snap["service"] != self.name or snap["mission"] != self.config.mission_id:
            raise ValueError(f"snapshot of {snap['service']}/{snap['mission']} does not fit "
                             f"{self.name}/{self.config.mission_id}")
        self.step, self.t_s = int(snap["step"]), float(snap["t_s"])
        self.bus.seq.last = int(snap["seq"])
        self.bus.tm_seq.last = int(snap.get("tm_seq", 0))  # absent before tm had its own
        self.core.restore(snap["core"])
        if reseed is not None:
            self.core.rng = service_rng(int(reseed), self.name)
        self.outbox.drain()
        self.inbox.reset([Envelope(*raw) for raw in snap.get("held", ())], self.step)
        self._last_ack = None

    # --- coordinated snapshots and rollback (services/kernel/clock.py) -------
    async def store_snapshot(self, held: list[Envelope]) -> Stored:
        """Write the state at the end of the last step, with the messages taken for
        the next, to the snapshot stream."""
        assert self.snapstore is not None
        started = time.perf_counter()  # wall time for the metric only
        stored = await self.snapstore.put(self.name, self.snapshot(held))
        m = self.metrics
        m.child("snapshot_bytes").set(stored.size)
        m.child("snapshot_seconds").observe(time.perf_counter() - started)
        return stored

    async def _on_restore(self, env: Envelope, subject: str) -> None:
        """Ground rolls the mission back to a commit: restore this service's part
        of it, then say hello in the new epoch (ground waits for every one)."""
        epoch, commit = int(env.body["epoch"]), env.body["commit"]
        if epoch <= self.epoch:
            await self.say_hello()  # restored already: ground missed the hello
            return
        if self.snapstore is None:
            raise SnapshotError("a rollback was asked but snapshots are off here")
        where = Stored.from_json(commit["parts"][self.name])
        self.restore(await self.snapstore.get(self.name, where), commit.get("reseed"))
        self.epoch = epoch
        self.metrics.child("restores").inc()
        log.warning("restored a committed snapshot", extra={
            "step": self.step, "t_s": self.t_s, "epoch": epoch})
        await self.bus.record_ops("restored", self.t_s, self.step, epoch=epoch)
        await self.say_hello()

    def local_command(self, command: dict[str, Any]) -> None:
        """Queue a validated command for the start of the next step."""
        env = self.bus.envelope("command", command, self.t_s, self.step)
        self.inbox.add_local(env)


# --- process entry point ------------------------------------------------------


def run_service(service: str, make: Callable[[ServiceConfig], ServiceRuntime]) -> None:
    """``python -m services.<name>``: configure, run until SIGTERM/SIGINT, stop cleanly."""
    try:
        config = ServiceConfig.from_env(service, os.environ)
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
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
        raise SystemExit(EXIT_BAD_CONFIG) from None


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


def apply_parameters(core: VehicleCore, config: ServiceConfig) -> None:
    """Give ``core`` the values ``TWIN_PARAMETERS`` names for its vehicle (a
    ConfigError naming the path and the fix if it cannot take one)."""
    own = {name: value for path, value in config.parameters.items()
           for vehicle, name in (split_path(path),) if vehicle == core.name}
    try:
        core.set_parameters(own)
    except ParameterError as exc:
        raise ConfigError("TWIN_PARAMETERS", ",".join(sorted(config.parameters)), str(exc),
                          "give only the parameters the vehicles declare (twin parameters "
                          "lists them), each within its range") from None

