"""Authenticated gRPC against a real grpc.aio server on a loopback port: mTLS
with the twin's private CA, and calls authorized by the role in the client's
certificate (or a bearer token). Refusals are counted and logged with the caller."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from services.kernel.grpcauth import (
    METHOD_ROLES,
    Caller,
    RoleInterceptor,
    TokenFileError,
    TokenTable,
    channel_credentials,
    decide,
    server_credentials,
)
from services.kernel.pki import Pki
from services.kernel.twin_pb import (
    clock_pb2,
    clock_pb2_grpc,
    control_pb2,
    control_pb2_grpc,
    ground_pb2,
    ground_pb2_grpc,
)

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto" / "twin" / "v1"
CALL_TIMEOUT_S = 5.0


class TinyVehicle(control_pb2_grpc.VehicleControlServicer):
    """Answers every VehicleControl RPC; counts the commands it was let through."""

    def __init__(self) -> None:
        self.commands = 0

    async def GetStatus(self, request: control_pb2.GetStatusRequest,
                        context: grpc.aio.ServicerContext) -> control_pb2.GetStatusResponse:
        return control_pb2.GetStatusResponse(service="lander", phase="surface")

    async def SendCommand(self, request: control_pb2.SendCommandRequest,
                          context: grpc.aio.ServicerContext) -> control_pb2.SendCommandResponse:
        self.commands += 1
        return control_pb2.SendCommandResponse(command_id=request.command_id, accepted=True)

    async def InjectFault(self, request: control_pb2.InjectFaultRequest,
                          context: grpc.aio.ServicerContext) -> control_pb2.InjectFaultResponse:
        self.commands += 1
        return control_pb2.InjectFaultResponse()

    async def ClearFault(self, request: control_pb2.ClearFaultRequest,
                         context: grpc.aio.ServicerContext) -> control_pb2.ClearFaultResponse:
        self.commands += 1
        return control_pb2.ClearFaultResponse(cleared=True)

    # Written like the real servicer's: a coroutine that writes the frames.
    async def WatchTelemetry(  # type: ignore[override]
            self, request: control_pb2.WatchTelemetryRequest,
            context: grpc.aio.ServicerContext) -> None:
        for step in range(request.max_frames):
            await context.write(control_pb2.TelemetryFrame(service="lander", step=step))


class TinyClock(clock_pb2_grpc.MissionClockServicer):
    def __init__(self) -> None:
        self.mode = "running"

    async def GetTime(self, request: clock_pb2.GetTimeRequest,
                      context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        return clock_pb2.ClockState(mode=self.mode)

    async def Pause(self, request: clock_pb2.PauseRequest,
                    context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        self.mode = "paused"
        return clock_pb2.ClockState(mode=self.mode)

    async def Resume(self, request: clock_pb2.ResumeRequest,
                     context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        return self._changed("running")

    async def SetWarp(self, request: clock_pb2.SetWarpRequest,
                      context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        return self._changed("warped")

    async def Step(self, request: clock_pb2.StepRequest,
                   context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        return self._changed("stepped")

    async def RunUntil(self, request: clock_pb2.RunUntilRequest,
                       context: grpc.aio.ServicerContext) -> clock_pb2.ClockState:
        return self._changed("running-until")

    async def ListTargets(self, request: clock_pb2.ListTargetsRequest,
                          context: grpc.aio.ServicerContext) -> clock_pb2.ListTargetsResponse:
        return clock_pb2.ListTargetsResponse()

    async def Fork(self, request: clock_pb2.ForkRequest,
                   context: grpc.aio.ServicerContext) -> clock_pb2.ForkReply:
        self.mode = "forked"
        return clock_pb2.ForkReply()

    def _changed(self, mode: str) -> clock_pb2.ClockState:
        self.mode = mode
        return clock_pb2.ClockState(mode=mode)


class TinyStation(ground_pb2_grpc.GroundStationServicer):
    def __init__(self) -> None:
        self.uplinked = 0

    async def Uplink(self, request: ground_pb2.UplinkRequest,
                     context: grpc.aio.ServicerContext) -> ground_pb2.UplinkReply:
        self.uplinked += 1
        return ground_pb2.UplinkReply()


@dataclass
class Served:
    port: int
    vehicle: TinyVehicle
    clock: TinyClock
    registry: CollectorRegistry

    def refused(self, method: str, role: str, code: str) -> float:
        value = self.registry.get_sample_value(
            "twin_grpc_refused_total", {"method": method, "role": role, "code": code})
        return value or 0.0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


async def _serve(pki: Pki, *, tokens: TokenTable | None = None) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    served = Served(0, TinyVehicle(), TinyClock(), registry)
    server = grpc.aio.server(interceptors=[RoleInterceptor(registry, tokens=tokens)])
    control_pb2_grpc.add_VehicleControlServicer_to_server(served.vehicle, server)
    clock_pb2_grpc.add_MissionClockServicer_to_server(served.clock, server)
    station = TinyStation()
    ground_pb2_grpc.add_GroundStationServicer_to_server(station, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    reflection.enable_server_reflection(["twin.v1.VehicleControl", "twin.v1.MissionClock",
                                         reflection.SERVICE_NAME], server)
    creds = server_credentials(pki.server("ground"), require_client_auth=tokens is None)
    served.port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        yield served
    finally:
        await server.stop(None)


@pytest.fixture
async def served(pki: Pki) -> AsyncIterator[Served]:
    async for s in _serve(pki):
        yield s


@pytest.fixture
async def token_served(pki: Pki) -> AsyncIterator[Served]:
    tokens = TokenTable.from_tokens({"op-secret": ("ops-bot", "operator"),
                                     "view-secret": ("dashboard", "viewer")})
    async for s in _serve(pki, tokens=tokens):
        yield s


def _channel(port: int, creds: grpc.ChannelCredentials) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = caught.value.code()
    return code


async def test_operator_may_pause_and_command(pki: Pki, served: Served) -> None:
    async with _channel(served.port, channel_credentials(pki.client("olga", "operator"))) as ch:
        state = await clock_pb2_grpc.MissionClockStub(ch).Pause(
            clock_pb2.PauseRequest(), timeout=CALL_TIMEOUT_S)
        reply = await control_pb2_grpc.VehicleControlStub(ch).SendCommand(
            control_pb2.SendCommandRequest(command_id="c1"), timeout=CALL_TIMEOUT_S)
    assert state.mode == "paused" and served.clock.mode == "paused"
    assert reply.accepted and served.vehicle.commands == 1


async def test_viewer_reads_but_may_not_control(pki: Pki, served: Served,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="twin.grpcauth")
    async with _channel(served.port, channel_credentials(pki.client("vic", "viewer"))) as ch:
        clock = clock_pb2_grpc.MissionClockStub(ch)
        vehicle = control_pb2_grpc.VehicleControlStub(ch)
        status = await vehicle.GetStatus(control_pb2.GetStatusRequest(), timeout=CALL_TIMEOUT_S)
        time = await clock.GetTime(clock_pb2.GetTimeRequest(), timeout=CALL_TIMEOUT_S)
        frames = [f async for f in vehicle.WatchTelemetry(
            control_pb2.WatchTelemetryRequest(max_frames=3), timeout=CALL_TIMEOUT_S)]
        health_reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        reflected = [r async for r in reflection_pb2_grpc.ServerReflectionStub(ch)
                     .ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                         list_services="")]), timeout=CALL_TIMEOUT_S)]

        with pytest.raises(grpc.aio.AioRpcError) as paused:
            await clock.Pause(clock_pb2.PauseRequest(), timeout=CALL_TIMEOUT_S)
        commanded = await _code(vehicle.SendCommand(control_pb2.SendCommandRequest(
            command_id="c2"), timeout=CALL_TIMEOUT_S))

    assert status.service == "lander" and time.mode == "running" and len(frames) == 3
    assert health_reply.status == health_pb2.HealthCheckResponse.SERVING
    names = {s.name for s in reflected[0].list_services_response.service}
    assert "twin.v1.MissionClock" in names
    assert paused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "role viewer may not call Pause" in (paused.value.details() or "")
    assert commanded == grpc.StatusCode.PERMISSION_DENIED
    # Refused before the servicer ran: nothing changed.
    assert served.clock.mode == "running" and served.vehicle.commands == 0
    assert served.refused("/twin.v1.MissionClock/Pause", "viewer", "PERMISSION_DENIED") == 1
    assert served.refused("/twin.v1.VehicleControl/SendCommand", "viewer",
                          "PERMISSION_DENIED") == 1
    assert served.refused("/twin.v1.MissionClock/GetTime", "viewer", "PERMISSION_DENIED") == 0
    logged = [r for r in caplog.records if r.name == "twin.grpcauth"]
    assert [(r.__dict__["caller"], r.__dict__["method"]) for r in logged] == [
        ("vic", "/twin.v1.MissionClock/Pause"), ("vic", "/twin.v1.VehicleControl/SendCommand")]
    assert "127.0.0.1" in logged[0].__dict__["peer"]


async def test_certificate_without_role_is_unauthenticated(pki: Pki, served: Served) -> None:
    # Same CA and clientAuth, so the handshake passes, but it names no role.
    async with _channel(served.port, channel_credentials(pki.nats_client("orbiter"))) as ch:
        code = await _code(clock_pb2_grpc.MissionClockStub(ch).GetTime(
            clock_pb2.GetTimeRequest(), timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert served.refused("/twin.v1.MissionClock/GetTime", "none", "UNAUTHENTICATED") == 1


async def test_client_without_certificate_cannot_connect(pki: Pki, served: Served) -> None:
    async with _channel(served.port, channel_credentials(None, ca_pem=pki.ca_pem())) as ch:
        code = await _code(clock_pb2_grpc.MissionClockStub(ch).GetTime(
            clock_pb2.GetTimeRequest(), timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_client_of_another_ca_cannot_connect(tmp_path: Path, served: Served) -> None:
    stranger = Pki(tmp_path / "elsewhere").client("mallory", "operator")
    async with _channel(served.port, channel_credentials(stranger)) as ch:
        code = await _code(clock_pb2_grpc.MissionClockStub(ch).Pause(
            clock_pb2.PauseRequest(), timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert served.clock.mode == "running"


async def test_plaintext_client_cannot_connect(served: Served) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as ch:
        code = await _code(clock_pb2_grpc.MissionClockStub(ch).GetTime(
            clock_pb2.GetTimeRequest(), timeout=CALL_TIMEOUT_S))
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_bearer_tokens_name_the_caller(pki: Pki, token_served: Served) -> None:
    ca = pki.ca_pem()

    async def pause(creds: grpc.ChannelCredentials) -> grpc.StatusCode:
        async with _channel(token_served.port, creds) as ch:
            try:
                await clock_pb2_grpc.MissionClockStub(ch).Pause(
                    clock_pb2.PauseRequest(), timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                code: grpc.StatusCode = exc.code()
                return code
        return grpc.StatusCode.OK

    assert await pause(channel_credentials(None, ca_pem=ca, token="view-secret")) \
        == grpc.StatusCode.PERMISSION_DENIED
    assert await pause(channel_credentials(None, ca_pem=ca, token="guess")) \
        == grpc.StatusCode.UNAUTHENTICATED
    assert await pause(channel_credentials(None, ca_pem=ca)) == grpc.StatusCode.UNAUTHENTICATED
    # This server asks for no certificate, so an (unverified) one confers nothing.
    assert await pause(channel_credentials(pki.client("olga", "operator"))) \
        == grpc.StatusCode.UNAUTHENTICATED
    assert token_served.clock.mode == "running"
    assert await pause(channel_credentials(None, ca_pem=ca, token="op-secret")) \
        == grpc.StatusCode.OK
    assert token_served.clock.mode == "paused"
    assert token_served.refused("/twin.v1.MissionClock/Pause", "none", "UNAUTHENTICATED") == 3


def test_decide_refuses_unlisted_methods_and_roleless_callers() -> None:
    operator = Caller("olga", "operator", "certificate")
    refusal = decide("/twin.v1.MissionClock/Rewind", operator)
    assert refusal is not None and refusal.code == grpc.StatusCode.PERMISSION_DENIED
    assert "not in the authorization table" in refusal.reason
    roleless = decide("/twin.v1.MissionClock/GetTime", Caller("orbiter", None, "certificate"))
    assert roleless is not None and roleless.code == grpc.StatusCode.UNAUTHENTICATED
    assert "carries no known role" in roleless.reason
    assert decide("/twin.v1.MissionClock/Step", operator) is None
    viewer = decide("/twin.v1.MissionClock/Step", Caller("vic", "viewer", "token"))
    assert viewer is not None
    assert viewer.reason == "role viewer may not call Step (it needs operator)"


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# identity role token\n"
                    "ops-bot operator op-secret\n"
                    "dashboard viewer sha256:"  # of "dash-secret"
                    "6658de93be5d39abd782e43398efb36371976f345ec417ff7ab806972588f8ef\n")
    table = TokenTable.load(path)
    op = table.caller("op-secret")
    assert op is not None and (op.identity, op.role, op.source) == ("ops-bot", "operator", "token")
    viewer = table.caller("dash-secret")
    assert viewer is not None and (viewer.identity, viewer.role) == ("dashboard", "viewer")
    assert table.caller("op-secre") is None
    path.write_text("ops-bot root op-secret\n")
    with pytest.raises(TokenFileError, match=r"tokens:1: unknown role 'root'"):
        TokenTable.load(path)


async def _call_every_rpc(port: int, creds: grpc.ChannelCredentials
                          ) -> dict[str, grpc.StatusCode]:
    """Call each twin RPC of the protos with an empty request, by path only."""
    codes: dict[str, grpc.StatusCode] = {}
    async with _channel(port, creds) as ch:
        for path, method in sorted(_proto_method_descriptors().items()):
            request = message_factory.GetMessageClass(method.input_type)()
            reply = message_factory.GetMessageClass(method.output_type)
            make = ch.unary_stream if method.server_streaming else ch.unary_unary
            call = make(path, request_serializer=type(request).SerializeToString,
                        response_deserializer=reply.FromString)(request, timeout=CALL_TIMEOUT_S)
            try:
                if method.server_streaming:
                    _ = [r async for r in call]
                else:
                    await call
            except grpc.aio.AioRpcError as exc:
                codes[path] = exc.code()
            else:
                codes[path] = grpc.StatusCode.OK
    return codes


async def test_each_role_calls_exactly_its_rpcs(pki: Pki, served: Served) -> None:
    viewer = await _call_every_rpc(served.port, channel_credentials(pki.client("vic", "viewer")))
    assert served.clock.mode == "running" and served.vehicle.commands == 0
    assert viewer == {path: grpc.StatusCode.OK if METHOD_ROLES[path] == "viewer"
                      else grpc.StatusCode.PERMISSION_DENIED for path in viewer}
    operator = await _call_every_rpc(served.port,
                                     channel_credentials(pki.client("olga", "operator")))
    assert set(operator.values()) == {grpc.StatusCode.OK} and len(operator) == len(viewer)
    assert served.vehicle.commands == 3


def _proto_method_descriptors() -> dict[str, MethodDescriptor]:
    """Every RPC of proto/twin/v1/*.proto, by path, from the generated descriptors."""
    methods: dict[str, MethodDescriptor] = {}
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        module = importlib.import_module(f"services.kernel.twin_pb.{proto.stem}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods |= {f"/{service.full_name}/{m.name}": m for m in service.methods}
    return methods


def _proto_methods() -> set[str]:
    return set(_proto_method_descriptors())


def test_every_proto_rpc_has_a_role() -> None:
    methods = _proto_methods()
    assert len(methods) >= 12  # the two services of today, at least
    assert sorted(methods - set(METHOD_ROLES)) == []
    # ... and the table names no RPC the protos no longer have.
    assert sorted(m for m in METHOD_ROLES if m.startswith("/twin.") and m not in methods) == []
    assert {m.rsplit("/", 1)[1] for m, r in METHOD_ROLES.items()
            if m.startswith("/twin.") and r == "viewer"} == {
        "GetStatus", "WatchTelemetry", "GetTime", "ListTargets"}
