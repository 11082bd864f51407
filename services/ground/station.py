"""gRPC GroundStation servicer: an operator's telecommands, uplinked by ground.

A mission control system (through services/gateway/) never publishes on a
vehicle's subjects: it asks ground, which checks the command, takes it at the
start of its next step and sends it by the target's path, as it sends its
plan's (services/ground/vehicle.py ``uplink``). The vehicle checks it again
on board; the events that follow carry the command's id.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc
import orjson

from services.dynamics.timescale import iso_utc
from services.ground.vehicle import UPLINK_OP, GroundCore
from services.kernel.config import VEHICLES
from services.kernel.control import instrumented
from services.kernel.faults import INJECT_FAULT_OP
from services.kernel.metrics import Metrics
from services.kernel.twin_pb import ground_pb2, ground_pb2_grpc


class GroundSide(Protocol):
    """What the servicer needs of ground's runtime."""

    core: GroundCore
    step: int
    t_s: float
    metrics: Metrics

    def local_command(self, command: dict[str, Any]) -> None: ...


class StationServicer(ground_pb2_grpc.GroundStationServicer):
    def __init__(self, rt: GroundSide) -> None:
        self.rt = rt  # @instrumented counts the calls in rt.metrics

    @instrumented
    async def Uplink(self, request: ground_pb2.UplinkRequest,
                     context: grpc.aio.ServicerContext) -> ground_pb2.UplinkReply:
        command = await self._checked(request, context)
        if self.rt.core.finished:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "the mission has finished: nothing is uplinked any more")
        self.rt.local_command({"op": UPLINK_OP, "target": request.target,
                               "command": {**command, "command_id": request.command_id}})
        return ground_pb2.UplinkReply(step=self.rt.step, mission_time_s=self.rt.t_s,
                                      utc=iso_utc(self.rt.t_s))

    @staticmethod
    async def _checked(request: ground_pb2.UplinkRequest,
                       context: grpc.aio.ServicerContext) -> dict[str, Any]:
        """The command, or the call aborted with INVALID_ARGUMENT and the reason."""
        reason = ""
        command: Any = None
        if request.target not in VEHICLES:
            reason = f"unknown target {request.target!r}: use one of {', '.join(VEHICLES)}"
        elif request.command_id == 0:
            reason = "command_id must be > 0: the events that follow the command name it"
        else:
            try:
                command = orjson.loads(request.command_json)
            except orjson.JSONDecodeError as exc:
                reason = f"command_json is not JSON: {exc}"
        if not reason and (not isinstance(command, dict)
                           or not isinstance(command.get("op"), str) or not command["op"]):
            reason = 'command_json must be an object with an "op", e.g. {"op": "set_mode", ' \
                     '"mode": "safe"}'
        if not reason and command["op"] in (INJECT_FAULT_OP, UPLINK_OP):
            reason = f"{command['op']!r} is not a telecommand (faults: InjectFault)"
        if reason:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
        out: dict[str, Any] = command
        return out
