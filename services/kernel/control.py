"""The gRPC VehicleControl servicer every service serves: thin, delegating.

Commands are translated to a plain dict, validated by the vehicle core and
queued for the start of the next clock step; errors become gRPC statuses.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from services.dynamics.timescale import iso_utc
from services.kernel.config import ServiceConfig
from services.kernel.errors import CommandNotAllowed, InvalidCommand
from services.kernel.metrics import Metrics
from services.kernel.telemetry import TelemetryStream, state_from_summary
from services.kernel.twin_pb import common_pb2, control_pb2, control_pb2_grpc
from services.kernel.vehicle import VehicleCore

T = TypeVar("T")


class ControlledService(Protocol):
    """What the servicer needs of the service it controls (the runtime is one).

    A protocol, not the runtime class: the runtime builds this servicer, so
    naming it here would make the two modules import each other."""

    name: str
    config: ServiceConfig
    core: VehicleCore
    metrics: Metrics
    telemetry: TelemetryStream
    step: int
    t_s: float

    def local_command(self, command: dict[str, Any]) -> None: ...


def instrumented(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Count calls by method and status code, and time them."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        metrics = self.rt.metrics
        started = time.perf_counter()  # wall time for the latency metric only
        code = "OK"
        try:
            return await method(self, request, context)
        except BaseException:
            code_obj = context.code()
            code = code_obj.name if code_obj is not None else "UNKNOWN"
            raise
        finally:
            metrics.grpc_requests.labels(*metrics.labels(), name, code).inc()
            metrics.grpc_duration.labels(*metrics.labels(), name).observe(
                time.perf_counter() - started)

    return wrapper


def command_to_dict(request: control_pb2.SendCommandRequest) -> dict[str, Any]:
    """The oneof command as the plain dict the vehicle cores understand."""
    which = request.WhichOneof("command")
    if which is None:
        raise InvalidCommand("no command given: set one of impulsive_burn, finite_burn, "
                             "set_mode, deploy, start_operation")
    message = getattr(request, which)
    # Checked on the message: MessageToDict writes a non-finite double as the
    # string "Infinity" or "NaN", which a float check on the dict never sees.
    bad = _non_finite(message)
    if bad:
        raise InvalidCommand(f"{which}.{bad[0]} must be finite")
    args = MessageToDict(message, preserving_proto_field_name=True)
    op = {"impulsive_burn": "burn", "finite_burn": "finite_burn", "set_mode": "set_mode",
          "deploy": "deploy", "start_operation": "operation"}[which]
    return {"op": op, **args}


def _non_finite(message: Message, prefix: str = "") -> list[str]:
    """Dotted names of the set double fields (and double map values) of
    ``message`` that are inf or nan. Commands hold no repeated fields."""
    bad: list[str] = []
    for fd, value in message.ListFields():
        name = f"{prefix}{fd.name}"
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            bad.extend(f"{name}.{k}" for k, v in value.items()
                       if isinstance(v, float) and not math.isfinite(v))
        elif fd.message_type is not None:
            bad.extend(_non_finite(value, f"{name}."))
        elif isinstance(value, float) and not math.isfinite(value):
            bad.append(name)
    return bad


class ControlServicer(control_pb2_grpc.VehicleControlServicer):
    def __init__(self, rt: ControlledService) -> None:
        self.rt = rt
        self._fault_seq = 0

    @instrumented
    async def GetStatus(self, request: control_pb2.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.GetStatusResponse:
        rt, core = self.rt, self.rt.core
        await rt.telemetry.settle()  # telemetry up to this status is on the bus first
        s = core.summary()
        return control_pb2.GetStatusResponse(
            service=rt.name, mission_id=rt.config.mission_id, phase=core.phase,
            mission_time_s=rt.t_s, utc=iso_utc(rt.t_s), step=rt.step,
            state=state_from_summary(rt.name, s),
            faults=[_fault_pb(f) for _, f in sorted(core.faults.items())],
            info=s.info)

    @instrumented
    async def SendCommand(self, request: control_pb2.SendCommandRequest,
                          context: grpc.aio.ServicerContext) -> control_pb2.SendCommandResponse:
        try:
            command = command_to_dict(request)
            at_s = request.execute_at_mission_time_s
            if at_s and at_s < self.rt.t_s:
                raise InvalidCommand("execute_at_mission_time_s is in the past "
                                     f"(now {self.rt.t_s:.3f} s)")
            command["execute_at_s"] = request.execute_at_mission_time_s
            command["command_id"] = request.command_id
            self.rt.core.validate(command)
        except InvalidCommand as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        except CommandNotAllowed as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, exc.reason)
        self.rt.local_command(command)
        return control_pb2.SendCommandResponse(
            command_id=request.command_id, accepted=True, detail="queued for the next step",
            execute_at_mission_time_s=max(request.execute_at_mission_time_s, self.rt.t_s))

    @instrumented
    async def InjectFault(self, request: control_pb2.InjectFaultRequest,
                          context: grpc.aio.ServicerContext) -> control_pb2.InjectFaultResponse:
        try:
            fault = self.rt.core.inject_fault(
                f"{self.rt.name}-{request.kind}-{self._fault_seq + 1}", request.kind,
                magnitude=request.magnitude, duration_s=request.duration_s,
                subsystem=request.target)
        except InvalidCommand as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.reason)
        self._fault_seq += 1
        return control_pb2.InjectFaultResponse(fault=_fault_pb(fault))

    @instrumented
    async def ClearFault(self, request: control_pb2.ClearFaultRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.ClearFaultResponse:
        if self.rt.core.clear_fault(request.fault_id):
            return control_pb2.ClearFaultResponse(cleared=True)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"no active fault {request.fault_id!r}")
        raise AssertionError("unreachable")  # pragma: no mutate

    # grpc.aio takes a coroutine that writes with context.write for a
    # server-streaming method; the generated stub knows only iterators.
    async def WatchTelemetry(  # type: ignore[override]
            self, request: control_pb2.WatchTelemetryRequest,
            context: grpc.aio.ServicerContext) -> None:
        """Stream frames as the steps make them, written with ``context.write``:
        a coroutine rather than an async generator, so an abort is an ordinary
        raise and wrappers (metrics, mutation tools) see a plain call."""
        if request.min_interval_s < 0 or not math.isfinite(request.min_interval_s):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "min_interval_s must be >= 0")
        metrics = self.rt.metrics
        metrics.grpc_requests.labels(*metrics.labels(), "WatchTelemetry", "OK").inc()
        queue: asyncio.Queue[control_pb2.TelemetryFrame | None] = asyncio.Queue(maxsize=10_000)
        self.rt.telemetry.watchers.append(queue)
        sent, last_t = 0, -math.inf
        try:
            while True:
                frame = await queue.get()
                if frame is None:
                    return
                if frame.mission_time_s - last_t < request.min_interval_s:
                    continue
                last_t = frame.mission_time_s
                await context.write(frame)
                sent += 1
                if request.max_frames and sent >= request.max_frames:
                    return
        finally:
            self.rt.telemetry.watchers.remove(queue)


def _fault_pb(f: dict[str, Any]) -> common_pb2.Fault:
    return common_pb2.Fault(fault_id=f["fault_id"], kind=f["kind"], target=f["target"],
                            magnitude=f["magnitude"], since_mission_time_s=f["since"],
                            duration_s=f["duration_s"])
