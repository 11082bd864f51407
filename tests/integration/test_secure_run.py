"""The secure default, wired end to end: `twin run` with no flag runs on mTLS and
per-service NATS identities; `--insecure` runs plaintext and says so; a service
refuses (and counts) an envelope whose ``src`` may not publish its subject.

In-process tests use a nats-server started with the configuration
security.provision writes (operator mode, ``tls { verify: true }``), and real
clients with the minted creds and certificates.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import nats
import orjson
import pytest

from services.kernel.envelope import encode_fields
from services.kernel.natsd import NatsServer
from services.kernel.security import INSECURE_WARNING, Security, StateLayout, provision
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc
from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import plan

REPO = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "services.cli.app"]
#: Wall seconds for a deadline (not a measure): something that should come at once.
WAIT_S = 5.0
RUN_DEADLINE_S = 180.0
#: Ninety minutes after launch, one command: a few steps (as tests/integration/test_cli.py).
SHORT_PLAN = {
    "name": "secure-test", "description": "written by test_secure_run.py",
    "end": {"at": "2024-05-03T10:57:29Z"},
    "items": [{"id": "cruise", "at": "2024-05-03T10:27:29Z", "target": "orbiter",
               "command": {"op": "set_mode", "mode": "cruise"},
               "phase": "earth_moon_transfer"}],
}


def _wrong_source(registry: object, mission: str, service: str) -> float:
    value = registry.get_sample_value(  # type: ignore[attr-defined]
        "twin_bus_decode_errors_total",
        {"mission": mission, "service": service, "reason": "wrong_source"})
    return float(value or 0.0)


async def _until(check: object, deadline_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not check():  # type: ignore[operator]
        assert loop.time() < end, "not reached in time"
        await asyncio.sleep(0.02)


async def test_a_forged_source_is_refused_counted_and_never_applied(
        secure_nats: NatsServer, secure_dir: Path, mission_id: str) -> None:
    security = provision(secure_dir, mission_id).security()
    async with LocalTwin(secure_nats.url, mission_id, plan(hours=4.0), start_paused=True,
                         security=security) as twin:
        # relay may publish cmd.lander (it forwards ground's commands), so NATS lets
        # this through; the envelope claims orbiter, which may not command anyone
        relay = await nats.connect(secure_nats.url, allow_reconnect=False,
                                   **security.nats_options(mission_id, "relay"))
        forged = encode_fields(mission_id, "orbiter", 1, 0.0, 0, "command",
                               {"op": "set_mode", "mode": "safe"})
        await relay.publish(f"twin.{mission_id}.cmd.lander", forged)
        await relay.flush()
        lander = twin.vehicles["lander"].registry
        await _until(lambda: _wrong_source(lander, mission_id, "lander") == 1.0)
        twin.ground.clock.resume()
        await twin.wait_finished(60)
        assert lander.get_sample_value("twin_bus_messages_in_total", {
            "mission": mission_id, "service": "lander", "kind": "command"}) in (None, 0.0)
        assert _wrong_source(lander, mission_id, "lander") == 1.0
        await relay.close()


async def test_the_secure_runtime_serves_grpc_by_role(
        secure_nats: NatsServer, secure_dir: Path, mission_id: str) -> None:
    security = provision(secure_dir, mission_id).security()
    async with LocalTwin(secure_nats.url, mission_id, plan(hours=4.0), start_paused=True,
                         security=security) as twin:
        target = f"127.0.0.1:{twin.ground.grpc_port}"
        viewer = security.grpc_channel_credentials("viewer")
        operator = security.grpc_channel_credentials("operator")
        assert viewer is not None and operator is not None
        async with grpc.aio.secure_channel(target, viewer) as ch:
            clock = clock_pb2_grpc.MissionClockStub(ch)
            await clock.GetTime(clock_pb2.GetTimeRequest())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await clock.Resume(clock_pb2.ResumeRequest())
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        async with grpc.aio.insecure_channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as plain:
                await clock_pb2_grpc.MissionClockStub(ch).GetTime(clock_pb2.GetTimeRequest(),
                                                                  timeout=WAIT_S)
            assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(target, operator) as ch:
            await clock_pb2_grpc.MissionClockStub(ch).Resume(clock_pb2.ResumeRequest())
        await twin.wait_finished(60)


async def test_a_client_without_certificate_or_creds_cannot_connect(
        secure_nats: NatsServer, secure_dir: Path, mission_id: str) -> None:
    security = provision(secure_dir, mission_id).security()
    options = security.nats_options(mission_id, "orbiter")
    with pytest.raises(Exception):  # noqa: B017 (nats-py raises several unrelated types)
        await nats.connect(secure_nats.url, allow_reconnect=False, connect_timeout=2)
    no_creds = {k: v for k, v in options.items() if k != "user_credentials"}
    with pytest.raises(Exception):  # noqa: B017
        await nats.connect(secure_nats.url, allow_reconnect=False, connect_timeout=2,
                           **no_creds)
    nc = await nats.connect(secure_nats.url, allow_reconnect=False, **options)
    await nc.close()


def test_security_needs_its_files_or_says_which(tmp_path: Path) -> None:
    from services.kernel.errors import ConfigError

    with pytest.raises(ConfigError) as missing:
        Security(pki_dir=tmp_path / "pki").check("m", "orbiter", grpc_server=True)
    assert missing.value.variable == "TWIN_PKI_DIR" and "TWIN_INSECURE=true" in str(missing.value)


# --- `twin run`, as a user runs it -------------------------------------------------
def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    plan_path = tmp_path / "plan.json"
    plan_path.write_bytes(orjson.dumps(SHORT_PLAN))
    state = tmp_path / "state"
    done = subprocess.run([*TWIN, "run", "--plan", str(plan_path), "--state-dir", str(state),
                           "--report", str(tmp_path / "report.json"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=RUN_DEADLINE_S,
                          check=False, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads((tmp_path / "report.json").read_bytes())
    assert report["clock"]["mode"] == "finished"
    return done, state


def _env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    return {**env, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def _service_logs(state: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((state / "logs").glob("*.log")))


def test_twin_run_is_secure_by_default(tmp_path: Path) -> None:
    done, state = _run(tmp_path)
    layout = StateLayout(state)
    assert (layout.pki_dir / "ca.crt").is_file()
    assert (layout.creds("ce6", "ground")).is_file()
    conf = layout.server_config.read_text()
    assert "operator:" in conf and "verify: true" in conf
    assert "mTLS" in done.stdout
    assert orjson.loads((state / "run.json").read_bytes())["insecure"] is False
    logs = _service_logs(state)
    assert "INSECURE" not in done.stdout + done.stderr + logs
    nats_log = (state / "nats" / "nats-server.log").read_text()
    assert "violation" not in nats_log.lower()  # every service within its permissions
    assert "wrong_source" not in logs


def test_twin_run_insecure_says_so_loudly(tmp_path: Path) -> None:
    done, state = _run(tmp_path, "--insecure")
    assert INSECURE_WARNING in " ".join(done.stdout.split())
    assert orjson.loads((state / "run.json").read_bytes())["insecure"] is True
    assert not StateLayout(state).pki_dir.exists()
    for name in ("ground", "orbiter", "relay"):
        assert "INSECURE MODE" in (state / "logs" / f"{name}.log").read_text(), name
