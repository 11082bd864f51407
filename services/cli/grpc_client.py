"""Small typed helpers to call the twin's gRPC services from the CLI.

gRPC errors are translated here, at the boundary, into two errors that carry
the service they concern::

    TwinRpcError
    ├── ServiceUnreachable   nothing answered (down, wrong port, deadline)
    ├── ServiceRejected      it answered with an error status (bad argument...)
    └── WaitTimedOut         a wait (RunUntil with wait) outlived its deadline
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.kernel.config import DEFAULT_PORTS, SERVICE_NAMES
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc, control_pb2, control_pb2_grpc

__all__ = [
    "ClockClient",
    "Endpoint",
    "ServiceRejected",
    "ServiceUnreachable",
    "TwinChannels",
    "TwinRpcError",
    "WaitTimedOut",
    "local_endpoints",
]

CLOCK_SERVICE = "ground"
_UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Reconnect backoff of the CLI's channels, wall ms. gRPC's default (1 s, then
# x1.6 up to 120 s, +-20 % jitter) is made for servers far away; the CLI mostly
# waits for services still importing on this machine, and with the default
# saw them SERVING 1-2 s after they were. A refused connect on loopback costs
# next to nothing, so try again every ~0.1 s. (grpc.min_reconnect_backoff_ms,
# the time one connect attempt is given, keeps its 20 s default.)
_RECONNECT_BACKOFF_MS = 50, 100  # initial, most
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[0]),
    ("grpc.max_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[1]),
)
# Wall seconds between health watches of a service that answered but is not
# serving yet, or whose watch broke (the server went away while starting).
_WATCH_AGAIN_S = 0.05


class TwinRpcError(Exception):
    """Base of the CLI's gRPC errors; `service` names the one concerned."""

    def __init__(self, service: str, target: str, detail: str) -> None:
        self.service = service
        self.target = target
        self.detail = detail
        super().__init__(f"{service} at {target}: {detail}")


class ServiceUnreachable(TwinRpcError):
    pass


class ServiceRejected(TwinRpcError):
    def __init__(self, service: str, target: str, code: str, detail: str) -> None:
        self.code = code
        super().__init__(service, target, f"{code}: {detail}")


class WaitTimedOut(TwinRpcError):
    """The deadline of a waiting call passed before its target was reached."""


@dataclass(frozen=True)
class Endpoint:
    service: str
    host: str
    port: int

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def local_endpoints(
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    services: Sequence[str] = SERVICE_NAMES,
) -> dict[str, Endpoint]:
    """Endpoints of `services` on `host`; ports default to the contract's."""
    chosen = ports or {}
    return {
        name: Endpoint(name, host, chosen.get(name, DEFAULT_PORTS[name][0])) for name in services
    }


def _translate(endpoint: Endpoint, exc: grpc.aio.AioRpcError) -> TwinRpcError:
    code = exc.code()
    if code in _UNREACHABLE_CODES:
        detail = f"{code.name}: {exc.details()}"
        return ServiceUnreachable(endpoint.service, endpoint.target, detail)
    return ServiceRejected(endpoint.service, endpoint.target, code.name, str(exc.details()))


class TwinChannels:
    """One aio channel per service endpoint; an async context manager."""

    def __init__(self, endpoints: Mapping[str, Endpoint], timeout_s: float = 3.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        """``credentials``: TLS with a client certificate (Security.grpc_channel_credentials);
        None for the plaintext mode."""
        self.endpoints = dict(endpoints)
        self.timeout_s = timeout_s
        self.credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            target = self.endpoints[service].target
            self._channels[service] = (
                grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
                if self.credentials is None else
                grpc.aio.secure_channel(target, self.credentials, options=CHANNEL_OPTIONS))
        return self._channels[service]

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(ch.close() for ch in channels))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, service: str, method: Any, request: Any, timeout_s: float | None) -> Any:
        """Call `method` with the timeout, translating gRPC errors."""
        try:
            return await method(request, timeout=timeout_s or self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _translate(self.endpoints[service], exc) from exc

    async def wait_serving(self, service: str) -> None:
        """Return as soon as the service's overall health is SERVING.

        Waits for ever, through the service not listening yet (wait_for_ready:
        the call goes out when the channel connects) and through its not
        serving yet (the health watch streams each change); the caller bounds it.
        """
        stub = health_pb2_grpc.HealthStub(self.channel(service))
        request = health_pb2.HealthCheckRequest(service="")
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for reply in stub.Watch(request, wait_for_ready=True):
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            await asyncio.sleep(_WATCH_AGAIN_S)

    async def get_status(
        self, service: str, timeout_s: float | None = None
    ) -> control_pb2.GetStatusResponse:
        stub = control_pb2_grpc.VehicleControlStub(self.channel(service))
        reply: control_pb2.GetStatusResponse = await self._call(
            service, stub.GetStatus, control_pb2.GetStatusRequest(), timeout_s
        )
        return reply

    async def all_statuses(
        self, timeout_s: float | None = None
    ) -> dict[str, control_pb2.GetStatusResponse | TwinRpcError]:
        """Every service's status, or the error that stood in its way."""
        names = list(self.endpoints)
        replies = await asyncio.gather(
            *(self.get_status(name, timeout_s) for name in names), return_exceptions=True
        )
        out: dict[str, control_pb2.GetStatusResponse | TwinRpcError] = {}
        for name, reply in zip(names, replies, strict=True):
            if isinstance(reply, BaseException) and not isinstance(reply, TwinRpcError):
                raise reply
            out[name] = reply
        return out

    def clock(self) -> ClockClient:
        return ClockClient(self, CLOCK_SERVICE)


class ClockClient:
    """Thin wrappers of twin.v1.MissionClock, served by ground."""

    def __init__(self, channels: TwinChannels, service: str = CLOCK_SERVICE) -> None:
        self._channels = channels
        self._service = service
        self._stub = clock_pb2_grpc.MissionClockStub(channels.channel(service))

    async def _call(
        self, method: Any, request: Any, timeout_s: float | None = None
    ) -> clock_pb2.ClockState:
        reply: clock_pb2.ClockState = await self._channels._call(
            self._service, method, request, timeout_s
        )
        return reply

    async def get_time(self, timeout_s: float | None = None) -> clock_pb2.ClockState:
        return await self._call(self._stub.GetTime, clock_pb2.GetTimeRequest(), timeout_s)

    async def pause(self) -> clock_pb2.ClockState:
        return await self._call(self._stub.Pause, clock_pb2.PauseRequest())

    async def resume(self) -> clock_pb2.ClockState:
        return await self._call(self._stub.Resume, clock_pb2.ResumeRequest())

    async def set_warp(self, warp: float | None) -> clock_pb2.ClockState:
        """`warp=None` means as fast as possible."""
        request = (
            clock_pb2.SetWarpRequest(as_fast_as_possible=True)
            if warp is None
            else clock_pb2.SetWarpRequest(warp=warp)
        )
        return await self._call(self._stub.SetWarp, request)

    async def step(self, steps: int) -> clock_pb2.ClockState:
        return await self._call(self._stub.Step, clock_pb2.StepRequest(steps=steps))

    async def run_until(
        self,
        *,
        utc: str | None = None,
        event: str | None = None,
        mission_time_s: float | None = None,
        timeout_s: float | None = None,
    ) -> clock_pb2.ClockState:
        """Set the target (exactly one of a UTC instant, an event or a mission
        time) and answer at once: the clock running toward it."""
        request = _run_until_request(utc, event, mission_time_s, wait=False)
        return await self._call(self._stub.RunUntil, request, timeout_s)

    async def wait_until(
        self,
        *,
        utc: str | None = None,
        event: str | None = None,
        mission_time_s: float | None = None,
        timeout_s: float | None,
    ) -> clock_pb2.ClockState:
        """Set the target and return when it is reached. `timeout_s` bounds the
        whole wait (None: no limit): past it, WaitTimedOut, the clock still
        running toward the target (ground set it before waiting)."""
        request = _run_until_request(utc, event, mission_time_s, wait=True)
        try:
            reply: clock_pb2.ClockState = await self._stub.RunUntil(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            endpoint = self._channels.endpoints[self._service]
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise WaitTimedOut(endpoint.service, endpoint.target,
                                   f"not reached within {timeout_s} s") from exc
            raise _translate(endpoint, exc) from exc
        return reply

    async def fork(self, request: clock_pb2.ForkRequest,
                   timeout_s: float | None = None) -> clock_pb2.ForkReply:
        """Ask ground for a what-if fork of its mission (services/ground/fork.py)."""
        reply: clock_pb2.ForkReply = await self._channels._call(
            self._service, self._stub.Fork, request, timeout_s)
        return reply

    async def list_targets(
        self, timeout_s: float | None = None
    ) -> clock_pb2.ListTargetsResponse:
        """Plan item ids and event names RunUntil accepts, with when each was seen."""
        reply: clock_pb2.ListTargetsResponse = await self._channels._call(
            self._service, self._stub.ListTargets, clock_pb2.ListTargetsRequest(), timeout_s
        )
        return reply


def _run_until_request(
    utc: str | None, event: str | None, mission_time_s: float | None, *, wait: bool
) -> clock_pb2.RunUntilRequest:
    request = clock_pb2.RunUntilRequest(wait=wait)
    if utc is not None:
        request.utc = utc
    elif event is not None:
        request.event = event
    elif mission_time_s is not None:
        request.mission_time_s = mission_time_s
    else:
        raise ValueError("run_until needs one of utc, event or mission_time_s")
    return request
