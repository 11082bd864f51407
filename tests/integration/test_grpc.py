"""Every RPC called through a client that discovers it by server reflection;
health checks; invalid commands get the right status code and a reason."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.kernel.twin_pb import control_pb2, control_pb2_grpc
from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import plan

# One request per RPC, written as JSON: the client knows only names.
CALLS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "twin.v1.VehicleControl": [
        ("GetStatus", {}),
        ("SendCommand", {"command_id": "c1", "set_mode": {"mode": "checkout"}}),
        ("InjectFault", {"kind": "drop_telemetry"}),
        ("ClearFault", {"fault_id": "FAULT_ID"}),
        ("WatchTelemetry", {"max_frames": 2}),
    ],
    "twin.v1.MissionClock": [
        ("GetTime", {}),
        ("ListTargets", {}),
        ("Step", {"steps": 2}),
        ("SetWarp", {"warp": 1000000.0}),
        ("RunUntil", {"mission_time_s": "NOW+3600", "wait": True}),
        ("SetWarp", {"as_fast_as_possible": True}),
        ("Pause", {}),
        ("Resume", {}),
    ],
}


class ReflectionClient:
    """A generic client: services, methods and message types come from reflection."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel))

    def services(self) -> list[str]:
        db = ProtoReflectionDescriptorDatabase(self.channel)
        return sorted(db.get_services())

    def call(self, service: str, method: str, request_json: dict[str, Any]) -> list[dict[str, Any]]:
        sdesc = self.pool.FindServiceByName(service)
        mdesc = sdesc.methods_by_name[method]
        req_cls = message_factory.GetMessageClass(mdesc.input_type)
        resp_cls = message_factory.GetMessageClass(mdesc.output_type)
        request = json_format.ParseDict(request_json, req_cls())
        path = f"/{service}/{method}"
        if mdesc.server_streaming:
            stream = self.channel.unary_stream(path, request_serializer=req_cls.SerializeToString,
                                               response_deserializer=resp_cls.FromString)
            responses = list(stream(request, timeout=30))
        else:
            unary = self.channel.unary_unary(path, request_serializer=req_cls.SerializeToString,
                                             response_deserializer=resp_cls.FromString)
            responses = [unary(request, timeout=30)]
        return [json_format.MessageToDict(r) for r in responses]

    def close(self) -> None:
        self.channel.close()


async def test_every_rpc_through_reflection(nats_url: str, mission_id: str) -> None:
    async with LocalTwin(nats_url, mission_id, plan(hours=4.0), start_paused=True) as twin:
        await asyncio.sleep(0.3)
        ground = ReflectionClient(f"127.0.0.1:{twin.ground.grpc_port}")
        lander = ReflectionClient(f"127.0.0.1:{twin.vehicles['lander'].grpc_port}")
        try:
            # The clients are blocking: call them off the loop that serves them.
            assert {"twin.v1.VehicleControl", "twin.v1.MissionClock", "grpc.health.v1.Health",
                    "grpc.reflection.v1alpha.ServerReflection"} <= set(
                        await asyncio.to_thread(ground.services))
            assert "twin.v1.MissionClock" not in await asyncio.to_thread(lander.services)
            fault_id = ""
            for method, body in CALLS["twin.v1.VehicleControl"]:
                if method == "ClearFault":
                    body = {"fault_id": fault_id}
                call = asyncio.create_task(asyncio.to_thread(
                    lander.call, "twin.v1.VehicleControl", method, body))
                if method == "WatchTelemetry":  # frames flow only while the clock steps
                    await asyncio.sleep(0.3)
                    twin.ground.clock.request_steps(3)
                out = await call
                if method == "InjectFault":
                    fault_id = out[0]["fault"]["faultId"]
                if method == "GetStatus":
                    assert out[0]["service"] == "lander" and out[0]["missionId"] == mission_id
                if method == "ClearFault":
                    assert out[0] == {"cleared": True}
                if method == "WatchTelemetry":
                    assert len(out) == 2 and out[0]["service"] == "lander"
            assert twin.vehicles["lander"].core.phase == "checkout"  # the command ran
            for method, body in CALLS["twin.v1.MissionClock"]:
                target = twin.ground.t_s + 3600.0
                if body.get("mission_time_s") == "NOW+3600":
                    body = {**body, "mission_time_s": target}
                out = await asyncio.to_thread(ground.call, "twin.v1.MissionClock", method, body)
                if method == "ListTargets":  # names, not a clock state
                    assert {"name": "lunar_touchdown", "kind": "event"} in out[0]["targets"]
                    continue
                assert "mode" in out[0]
                if method == "RunUntil":
                    assert out[0]["missionTimeS"] == target
            await twin.wait_finished(60)
        finally:
            ground.close()
            lander.close()


async def test_health_serves_overall_and_per_service(nats_url: str, mission_id: str) -> None:
    async with LocalTwin(nats_url, mission_id, plan(hours=1.0), start_paused=True) as twin:
        for rt in twin.all.values():
            async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.grpc_port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                for name in ("", "twin.v1.VehicleControl"):
                    resp = await stub.Check(health_pb2.HealthCheckRequest(service=name))
                    assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_invalid_commands_get_status_codes_with_reasons(nats_url: str,
                                                              mission_id: str) -> None:
    async with LocalTwin(nats_url, mission_id, plan(hours=4.0), start_paused=True) as twin:
        rt = twin.vehicles["orbiter"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.grpc_port}") as ch:
            stub = control_pb2_grpc.VehicleControlStub(ch)

            async def code_of(req: Any, call: str = "SendCommand") -> tuple[Any, str]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await getattr(stub, call)(req)
                return info.value.code(), info.value.details() or ""

            code, why = await code_of(control_pb2.SendCommandRequest(command_id="x"))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "no command" in why
            code, why = await code_of(control_pb2.SendCommandRequest(
                set_mode=control_pb2.SetMode(mode="")))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "mode" in why
            code, why = await code_of(control_pb2.SendCommandRequest(
                deploy=control_pb2.Deploy(item="parachute")))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "no operation 'deploy'" in why
            code, why = await code_of(control_pb2.InjectFaultRequest(kind="gremlins"),
                                      "InjectFault")
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown fault kind" in why
            code, _ = await code_of(control_pb2.ClearFaultRequest(fault_id="nope"), "ClearFault")
            assert code == grpc.StatusCode.NOT_FOUND
            # Put the orbiter in an autonomous phase; ground may not command it then.
            await stub.SendCommand(control_pb2.SendCommandRequest(
                set_mode=control_pb2.SetMode(mode="entry")))
            twin.ground.clock.request_steps(1)
            await twin.ground.clock.wait_until(lambda: twin.ground.step >= 1)
            await asyncio.sleep(0.05)
            assert rt.core.phase == "entry"
            code, why = await code_of(control_pb2.SendCommandRequest(
                set_mode=control_pb2.SetMode(mode="coast")))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and "autonomous" in why
        requests = rt.registry.get_sample_value(
            "twin_grpc_requests_total", {"mission": mission_id, "service": "orbiter",
                                         "method": "SendCommand", "code": "FAILED_PRECONDITION"})
        assert requests == 1.0
