"""The CCSDS gateway: what ground hears, as Space Packets over UDP, and the
telecommands of a mission control system (Yamcs, COSMOS), uplinked through
ground.

The gateway takes no part in the lock-step: it listens, and the mission's
clock never waits for it. It has a NATS identity of its own (``gateway``),
which may subscribe to the downlink and the events and may publish
nothing. A telecommand goes to ground's ``GroundStation.Uplink`` (gRPC, with
the gateway's own client certificate, operator role). Ground checks it, takes
it at its next step and sends it by the vehicle's path; a mission control
system never reaches a vehicle's subjects. Every packet's time is mission
time: the UTC of the instant it reports (services/gateway/packets.py).

Configuration (environment, docs/ccsds.md):

``TWIN_CCSDS_TM``  HOST:PORT  where telemetry packets go (UDP), required
``TWIN_CCSDS_TC``  HOST:PORT  where telecommand packets are received (UDP); unset: none
``TWIN_GROUND_GRPC`` HOST:PORT  ground's gRPC (needed with TWIN_CCSDS_TC)
and the services' TWIN_MISSION_ID, TWIN_NATS_URL, TWIN_GRPC_HOST/PORT (health
only), TWIN_METRICS_PORT, TWIN_LOG_LEVEL/FORMAT, TWIN_INSECURE, TWIN_PKI_DIR,
TWIN_NATS_CREDS.

Failures are loud: an exception in a handler is counted, logged, and stops
the gateway with exit status 70 (EXIT_SERVICE_FAILED). A malformed bus message
or telecommand is counted and logged, and the gateway goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import nats
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Counter

from services.gateway import packets
from services.gateway.ground_view import ACCEPTED, FAILED, GroundView
from services.kernel.config import MISSION_ID_RE, env_bool, env_int, env_path, host_port
from services.kernel.envelope import decode
from services.kernel.errors import ConfigError, EnvelopeError
from services.kernel.logs import setup_logging
from services.kernel.metrics import serve_metrics
from services.kernel.natsauth import GATEWAY, Publishers
from services.kernel.security import Security
from services.kernel.subjects import Subjects
from services.kernel.twin_pb import ground_pb2, ground_pb2_grpc

log = logging.getLogger("twin.gateway")

EXIT_SERVICE_FAILED = 70
EXIT_BAD_CONFIG = 2
#: How much lower than the services the gateway runs (os.nice): see run().
NICENESS = 10
#: Wall seconds an Uplink call may take before its command is reported failed.
UPLINK_TIMEOUT_S = 10.0


# --- configuration ------------------------------------------------------------------
def _address(env: Mapping[str, str], name: str, required: bool) -> tuple[str, int] | None:
    raw = env.get(name, "").strip()
    if not raw:
        if required:
            raise ConfigError(name, "", "not set", "give HOST:PORT, e.g. 127.0.0.1:10015")
        return None
    try:
        return host_port(raw)
    except ValueError:
        raise ConfigError(name, raw, "not HOST:PORT", "write it as host:port, e.g. "
                                                       "127.0.0.1:10015") from None


@dataclass(frozen=True)
class GatewayConfig:
    mission_id: str
    nats_urls: tuple[str, ...]
    tm: tuple[str, int]
    tc: tuple[str, int] | None
    ground: tuple[str, int] | None
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_port: int = -1
    log_level: str = "INFO"
    log_format: str = "json"
    security: Security = field(default_factory=Security.plaintext)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayConfig:
        mission = env.get("TWIN_MISSION_ID", "ce6")
        if not MISSION_ID_RE.fullmatch(mission):
            raise ConfigError("TWIN_MISSION_ID", mission, "not a valid mission id",
                              "use 1-32 lower-case letters, digits or '-'")
        tm = _address(env, "TWIN_CCSDS_TM", required=True)
        assert tm is not None
        tc = _address(env, "TWIN_CCSDS_TC", required=False)
        ground = _address(env, "TWIN_GROUND_GRPC", required=tc is not None)
        security = Security(insecure=env_bool(env, "TWIN_INSECURE", False),
                            pki_dir=env_path(env, "TWIN_PKI_DIR"),
                            nats_creds=env_path(env, "TWIN_NATS_CREDS"))
        grpc_port = env_int(env, "TWIN_GRPC_PORT", 0)
        metrics_port = env_int(env, "TWIN_METRICS_PORT", -1)
        return cls(mission, tuple(u.strip() for u in env.get(
            "TWIN_NATS_URL", "nats://127.0.0.1:4222").split(",")), tm, tc, ground,
            env.get("TWIN_GRPC_HOST", "127.0.0.1"), grpc_port, metrics_port,
            env.get("TWIN_LOG_LEVEL", "INFO").upper(), env.get("TWIN_LOG_FORMAT", "json"),
            security)


# --- metrics -----------------------------------------------------------------------------
class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, mission: str) -> None:
        labels = ("mission", "service")
        self.base = (mission, GATEWAY)
        self.packets = Counter("twin_gateway_packets", "CCSDS packets sent to mission control",
                               (*labels, "kind"), registry=registry)
        self.bytes = Counter("twin_gateway_bytes", "Octets of CCSDS packets sent", labels,
                             registry=registry)
        self.lost = Counter("twin_gateway_packets_lost", "Packets the UDP socket refused "
                            "(its buffer full, or no one listening)", labels, registry=registry)
        self.telecommands = Counter("twin_gateway_telecommands",
                                    "Telecommands received, by outcome", (*labels, "outcome"),
                                    registry=registry)
        self.decode_errors = Counter("twin_bus_decode_errors", "Malformed messages dropped",
                                     (*labels, "reason"), registry=registry)
        self.failures = Counter("twin_service_failures", "Exceptions that stopped the service",
                                (*labels, "where"), registry=registry)
        for kind in ("hk", "event", "ack", "links"):
            self.packets.labels(*self.base, kind)
        for outcome in ("accepted", "refused", "malformed"):
            self.telecommands.labels(*self.base, outcome)


_KIND_OF_ID = {1: "hk", 2: "event", 3: "ack", 4: "links"}
#: Where a TM packet's id lies: after the 6-octet primary and 6-octet CUC headers.
PACKET_ID_OCTET = 12


# --- the service ----------------------------------------------------------------------
def _tm_socket(address: tuple[str, int]) -> socket.socket:
    """A UDP socket connected to mission control's TM address, non-blocking."""
    family, kind, proto, _name, where = socket.getaddrinfo(*address, type=socket.SOCK_DGRAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    sock.connect(where)
    return sock


class _TcReceiver(asyncio.DatagramProtocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.gateway.telecommand(data)


class Gateway:
    def __init__(self, config: GatewayConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry, config.mission_id)
        self.subjects = Subjects(config.mission_id)
        self.publishers = Publishers(config.mission_id)
        self.view = GroundView()
        self.stopping = asyncio.Event()
        self.failure: BaseException | None = None
        self.nc: Client | None = None
        self._tm: socket.socket | None = None
        self._tc: asyncio.DatagramTransport | None = None
        self._grpc: grpc.aio.Server | None = None
        self._ground: grpc.aio.Channel | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._health = health.aio.HealthServicer()
        self.grpc_port = 0
        self.tc_port = 0
        # Bound once: a labels() lookup costs more than the packet it counts.
        m = self.metrics
        self._counted = defaultdict(lambda: m.packets.labels(*m.base, "other"),
                                    {pid: m.packets.labels(*m.base, kind)
                                     for pid, kind in _KIND_OF_ID.items()})
        self._bytes = m.bytes.labels(*m.base)
        self._lost = m.lost.labels(*m.base)
        self._tm_send: Callable[[bytes], None] = lambda packet: None

    # --- start and stop -------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        c = self.config
        self._tm = _tm_socket(c.tm)
        self._tm_send = self._send_one
        await self._start_grpc()
        if c.metrics_port >= 0:
            serve_metrics(c.metrics_port, c.grpc_host, self.registry)
        if c.tc is not None:
            assert c.ground is not None
            self._ground = grpc.aio.secure_channel(
                f"{c.ground[0]}:{c.ground[1]}", creds) if (
                creds := c.security.grpc_channel_credentials(GATEWAY)) is not None \
                else grpc.aio.insecure_channel(f"{c.ground[0]}:{c.ground[1]}")
            self._tc, _ = await loop.create_datagram_endpoint(lambda: _TcReceiver(self),
                                                              local_addr=c.tc)
            self.tc_port = int(self._tc.get_extra_info("sockname")[1])
        options = c.security.nats_options(c.mission_id, GATEWAY)
        self.nc = await nats.connect(servers=list(c.nats_urls), name=f"twin-gateway-{c.mission_id}",
                                     max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                     pending_size=64 * 1024 * 1024, **options)
        s = self.subjects
        await self.nc.subscribe(s.all_of("dl"), cb=self._guard(self._on_downlink))
        await self.nc.subscribe(s.all_of("evt"), cb=self._guard(self._on_event))
        await self.nc.flush()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("gateway ready", extra={"tm": f"{c.tm[0]}:{c.tm[1]}", "tc_port": self.tc_port,
                                         "grpc_port": self.grpc_port})

    async def _start_grpc(self) -> None:
        """Health only: the supervisor and Kubernetes ask it whether the gateway
        listens (SERVING once every subscription is in place)."""
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        creds = self.config.security.grpc_server_credentials(GATEWAY)
        address = f"{self.config.grpc_host}:{self.config.grpc_port}"
        self.grpc_port = (server.add_insecure_port(address) if creds is None
                          else server.add_secure_port(address, creds))
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._grpc = server

    async def stop(self) -> None:
        self.stopping.set()
        for task in list(self._tasks):
            task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        if self._tc is not None:
            self._tc.close()
        if self._tm is not None:
            self._tm.close()
        if self._ground is not None:
            await self._ground.close()
        if self._grpc is not None:
            await self._grpc.stop(1.0)

    def _send_one(self, packet: bytes) -> None:
        """One datagram, now. A plain non-blocking socket: asyncio's datagram
        transport cost ~40 us a packet, three quarters of the gateway's CPU in a
        mission (bench/bench_gateway.py); this costs a few. A full send buffer
        loses the datagram, as the network would, counted."""
        assert self._tm is not None
        try:
            self._tm.send(packet)
        except (BlockingIOError, ConnectionRefusedError):
            # Nobody listening yet (ICMP port unreachable) or the buffer is full.
            self._lost.inc()

    def fail(self, where: str, exc: BaseException) -> None:
        self.metrics.failures.labels(*self.metrics.base, where).inc()
        log.error("gateway failed, stopping", exc_info=exc, extra={"where": where})
        if self.failure is None:
            self.failure = exc
        self.stopping.set()

    # --- the bus ------------------------------------------------------------------------
    def _guard(self, handler: Any) -> Any:
        async def run(msg: Msg) -> None:
            try:
                env = decode(msg.data, mission=self.config.mission_id)
            except EnvelopeError as exc:
                self._malformed(exc.reason, msg.subject, str(exc))
                return
            if env.src not in self.publishers.of(msg.subject):
                self._malformed("foreign_source", msg.subject, env.src)
                return
            try:
                handler(env)
            except Exception as exc:  # loud: counted, logged, and the gateway stops
                self.fail(msg.subject, exc)
        return run

    def _malformed(self, reason: str, subject: str, detail: str) -> None:
        self.metrics.decode_errors.labels(*self.metrics.base, reason).inc()
        log.warning("dropped malformed message", extra={"subject": subject, "reason": reason,
                                                        "detail": detail[:200]})

    def _on_downlink(self, env: Any) -> None:
        self._send(self.view.on_downlink(env.body, env.t))

    def _on_event(self, env: Any) -> None:
        body = env.body
        self._send(self.view.on_event(env.src, env.seq, env.t, str(body.get("name", "")), body))

    def _send(self, out: list[bytes]) -> None:
        if not out:  # most messages deliver nothing (a frame still on its way)
            return
        send, counted, octets = self._tm_send, self._counted, 0
        for packet in out:
            send(packet)
            counted[packet[PACKET_ID_OCTET]].inc()
            octets += len(packet)
        self._bytes.inc(octets)

    # --- telecommands -----------------------------------------------------------------
    def telecommand(self, data: bytes) -> None:
        try:
            tc = packets.decode_tc(data)
        except packets.PacketError as exc:
            self.metrics.telecommands.labels(*self.metrics.base, "malformed").inc()
            log.warning("telecommand refused", extra={"reason": str(exc),
                                                      "octets": len(data)})
            return
        task = asyncio.get_running_loop().create_task(self._uplink(tc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _uplink(self, tc: packets.Telecommand) -> None:
        assert self._ground is not None
        stub = ground_pb2_grpc.GroundStationStub(self._ground)
        command = {"op": tc.op, **tc.args}
        request = ground_pb2.UplinkRequest(target=tc.target, command_id=tc.command_id,
                                           command_json=orjson.dumps(command).decode())
        try:
            reply = await stub.Uplink(request, timeout=UPLINK_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            self.metrics.telecommands.labels(*self.metrics.base, "refused").inc()
            log.warning("ground refused a telecommand", extra={
                "command_id": tc.command_id, "code": exc.code().name, "reason": exc.details()})
            self._send([self.view.ack(tc.command_id, FAILED,
                                      f"{exc.code().name}: {exc.details()}", self.view.t_s)])
            return
        self.metrics.telecommands.labels(*self.metrics.base, "accepted").inc()
        self._send([self.view.ack(tc.command_id, ACCEPTED, "", reply.mission_time_s)])


# --- process entry point ------------------------------------------------------------
def run() -> None:
    """``python -m services.gateway``: configure, run until SIGTERM/SIGINT."""
    try:
        config = GatewayConfig.from_env(os.environ)
        config.security.check(config.mission_id, GATEWAY, grpc_server=True)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    setup_logging(GATEWAY, config.mission_id, config.log_level, config.log_format)
    config.security.warn_if_insecure(log)
    # The mission's clock waits on every service and never on the gateway: on a
    # machine the services keep busy, the gateway takes what CPU they leave
    # (its packets go out a few ms later; their times are mission times).
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    try:  # as the services run: uvloop halves the event loop's cost per message
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    runner(_main(Gateway(config)))


async def _main(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stopping.set)
    try:
        await gateway.start()
        await gateway.stopping.wait()
    finally:
        with contextlib.suppress(Exception):
            await gateway.stop()
    if gateway.failure is not None:
        raise SystemExit(EXIT_SERVICE_FAILED)
