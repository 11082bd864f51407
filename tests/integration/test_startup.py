"""Start-up as the CLI runs it: the health wait over real gRPC servers, the
supervisor over the six real services, and children that run the CLI's own code
whatever the current directory holds."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import orjson
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.cli.grpc_client import Endpoint, TwinChannels
from services.cli.supervisor import RunConfig, ServiceDied, ServicesNotHealthy, Supervisor
from services.kernel.config import SERVICE_NAMES
from services.kernel.security import Security

# Wall-clock allowances: generous, because they bound a hang, not a speed.
HANG_S = 30.0
RUN_DEADLINE_S = 180.0
NOT_UP_S = 0.5  # wall s a server stays down (or NOT_SERVING) while the CLI waits on it
TWIN = Path(sys.executable).parent / "twin"  # the installed CLI, not `python -m` from a cwd

SHORT_PLAN = {
    "name": "startup-test",
    "description": "Half an hour after launch, nothing in it; written by test_startup.py.",
    "end": {"at": "2024-05-03T09:57:29Z"},
    "items": [],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _health_server(port: int, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType,
                         ) -> AsyncIterator[health.aio.HealthServicer]:
    servicer = health.aio.HealthServicer()
    await servicer.set("", status)
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    await server.start()
    try:
        yield servicer
    finally:
        await server.stop(None)


async def test_wait_serving_sees_a_server_that_starts_listening_after_the_wait_began() -> None:
    port = _free_port()
    async with TwinChannels({"x": Endpoint("x", "127.0.0.1", port)}) as channels:
        wait = asyncio.create_task(channels.wait_serving("x"))
        await asyncio.sleep(NOT_UP_S)
        assert not wait.done()  # nothing listens: it waits, it does not give up
        async with _health_server(port, health_pb2.HealthCheckResponse.SERVING):
            await asyncio.wait_for(wait, HANG_S)


async def test_wait_serving_waits_through_not_serving() -> None:
    port = _free_port()
    async with (_health_server(port, health_pb2.HealthCheckResponse.NOT_SERVING) as servicer,
                TwinChannels({"x": Endpoint("x", "127.0.0.1", port)}) as channels):
        wait = asyncio.create_task(channels.wait_serving("x"))
        await asyncio.sleep(NOT_UP_S)
        assert not wait.done()
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await asyncio.wait_for(wait, HANG_S)


async def test_the_health_wait_names_every_service_not_serving_at_its_deadline(
        tmp_path: Path, nats_url: str, mission_id: str) -> None:
    config = RunConfig(security=Security.plaintext(), state_dir=tmp_path, nats_url=nats_url,
                       mission_id=mission_id, free_ports=True, log_level="WARNING")
    async with Supervisor(config) as sup:
        with pytest.raises(ServicesNotHealthy) as late:
            await sup.wait_healthy(timeout_s=0.01)  # wall s: none has even imported by then
    assert sorted(late.value.services) == sorted(SERVICE_NAMES)


async def test_the_health_wait_reports_a_service_that_exits_while_starting(
        tmp_path: Path, nats_url: str, mission_id: str) -> None:
    config = RunConfig(security=Security.plaintext(), state_dir=tmp_path, nats_url=nats_url,
                       mission_id=mission_id, free_ports=True,
                       extra_env={"TWIN_LOG_LEVEL": "LOUD"})
    async with Supervisor(config) as sup:
        with pytest.raises(ServiceDied) as died:
            await asyncio.wait_for(sup.wait_healthy(timeout_s=HANG_S), HANG_S * 2)
    assert died.value.exit.exit_code == 2  # a bad setting: exit 2 naming it
    assert "TWIN_LOG_LEVEL" in died.value.exit.log_tail


@pytest.mark.slow
def test_run_from_a_directory_with_a_decoy_services_package_runs_the_cli_code(
        tmp_path: Path) -> None:
    """`python -m` puts the current directory first on sys.path: the children
    must import `services` from the CLI's installation, not from here."""
    decoy = tmp_path / "elsewhere" / "services"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text(
        'raise ImportError("decoy services package imported from the current directory")\n')
    plan = tmp_path / "plan.json"
    plan.write_bytes(orjson.dumps(SHORT_PLAN))
    state_dir, report = tmp_path / "state", tmp_path / "report.json"
    done = subprocess.run(
        [str(TWIN), "run", "--plan", str(plan), "--state-dir", str(state_dir),
         "--report", str(report), "--mission", "decoy"],
        cwd=decoy.parent, env={**os.environ, "COLUMNS": "200"}, capture_output=True,
        text=True, timeout=RUN_DEADLINE_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert orjson.loads(report.read_bytes())["clock"]["mode"] == "finished"
    for name in SERVICE_NAMES:
        assert "decoy" not in (state_dir / "logs" / f"{name}.log").read_text()
