"""The process entry point, ``python -m services.<name>``, run in this process.

``run_service`` builds the configuration from the environment, sets up the
logs and runs the runtime until SIGTERM or SIGINT; ``_main`` starts it, waits,
stops it and turns a failure into the exit status the supervisor reads
(services/kernel/errors.py: EXIT_BAD_CONFIG is never restarted, neither is
EXIT_SERVICE_FAILED). The subprocess tests (test_failures_loud.py, the CLI)
run the same code, but mutation testing cannot see what a subprocess calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from services.kernel.config import ServiceConfig
from services.kernel.errors import EXIT_BAD_CONFIG, EXIT_SERVICE_FAILED
from services.kernel.natsd import NatsServer
from services.kernel.runtime import ServiceRuntime, run_service
from services.orbiter.service import make as make_orbiter
from tests.integration.twin_helpers import create_mission_streams


class Signalled(ServiceRuntime):
    """An orbiter that, once started, is sent ``signum`` as by a supervisor."""

    signum = signal.SIGTERM

    async def start(self) -> None:
        await super().start()
        os.kill(os.getpid(), self.signum)


class FailsOnStart(ServiceRuntime):
    """An orbiter whose handler fails once it is up, and whose stop then fails too."""

    async def start(self) -> None:
        await super().start()
        self.fail("handler", ZeroDivisionError("a bug in the physics"))

    async def stop(self) -> None:
        await super().stop()
        raise OSError("the connection was gone already")


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch, nats_server: NatsServer,
                mission_id: str) -> dict[str, str]:
    """The environment of one service process on the test's nats-server."""
    for name in list(os.environ):
        if name.startswith("TWIN_"):
            monkeypatch.delenv(name)
    env = {"TWIN_NATS_URL": nats_server.url, "TWIN_MISSION_ID": mission_id,
           "TWIN_GRPC_PORT": "0", "TWIN_METRICS_PORT": "-1", "TWIN_LOG_FORMAT": "json",
           "TWIN_LOG_LEVEL": "INFO", "TWIN_INSECURE": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Ground's part, as it is not here: the streams a vehicle waits for.
    asyncio.run(create_mission_streams(nats_server.url, mission_id))
    return env


@pytest.fixture(autouse=True)
def process_state() -> Iterator[None]:
    """What run_service sets for the whole process, put back: its log handler on
    the root logger, and the signal handlers its event loop leaves behind."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    signals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for signum, handler in signals.items():
        signal.signal(signum, handler)


def _made(runtime_type: type[ServiceRuntime], made: list[ServiceRuntime]) -> Any:
    def make(config: ServiceConfig) -> ServiceRuntime:
        rt = runtime_type(make_orbiter(config, CollectorRegistry()).core, config,
                          CollectorRegistry())
        made.append(rt)
        return rt

    return make


def _log_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(orjson.loads(line))
    return out


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("TWIN_GRPC_PORT", "fifty", "TWIN_GRPC_PORT='fifty': not an integer; give a whole number"),
    ("TWIN_MISSION_ID", "CE6!", "TWIN_MISSION_ID='CE6!': not a valid mission id; use 1-32 "
                                "lower-case letters"),
])
def test_a_bad_configuration_exits_saying_what_to_fix(
        service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], variable: str, value: str, says: str) -> None:
    monkeypatch.setenv(variable, value)
    made: list[ServiceRuntime] = []
    with pytest.raises(SystemExit) as stopped:
        run_service("orbiter", _made(ServiceRuntime, made))
    assert stopped.value.code == EXIT_BAD_CONFIG
    out, err = capsys.readouterr()
    assert err.startswith(f"orbiter: configuration error: {says}")
    assert out == ""
    assert made == []  # nothing was started


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_service_runs_until_a_signal_and_stops_cleanly(
        service_env: dict[str, str], capsys: pytest.CaptureFixture[str],
        signum: signal.Signals) -> None:
    made: list[ServiceRuntime] = []
    runtime = type("SignalledHere", (Signalled,), {"signum": signum})
    began = time.monotonic()  # wall time only to bound what the service reports
    run_service("orbiter", _made(runtime, made))  # returns: a clean stop exits 0
    took_s = time.monotonic() - began
    (rt,) = made
    assert rt.config.service == "orbiter"
    assert rt.config.mission_id == service_env["TWIN_MISSION_ID"]
    assert rt.config.nats_urls == (service_env["TWIN_NATS_URL"],)
    assert rt.grpc_port > 0  # it was started ...
    assert rt.stopping.is_set() and rt.failure is None
    assert rt.bus.nc is not None and rt.bus.nc.is_closed  # ... and stopped
    lines = _log_lines(capsys.readouterr().err)
    ready = [line for line in lines if line["msg"] == "ready"]
    assert len(ready) == 1
    assert ready[0]["service"] == "orbiter"
    assert ready[0]["mission"] == service_env["TWIN_MISSION_ID"]
    assert ready[0]["level"] == "info"
    assert 0.0 <= ready[0]["startup_s"] <= took_s
    assert any(line["msg"] == "service stopped" for line in lines)


def test_a_service_that_failed_exits_with_service_failed(
        service_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    made: list[ServiceRuntime] = []
    with pytest.raises(SystemExit) as stopped:
        run_service("orbiter", _made(FailsOnStart, made))
    assert stopped.value.code == EXIT_SERVICE_FAILED
    (rt,) = made
    assert isinstance(rt.failure, ZeroDivisionError)
    assert rt.bus.nc is not None and rt.bus.nc.is_closed  # stopped before exiting
    err = capsys.readouterr().err
    assert "service failed" in err and "ZeroDivisionError" in err


def test_a_runtime_that_cannot_be_made_exits_with_bad_config(
        service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"name": "no items"}')
    monkeypatch.setenv("TWIN_FLIGHT_PLAN", str(plan))
    from services.ground.service import make as make_ground

    with pytest.raises(SystemExit) as stopped:
        run_service("ground", lambda config: make_ground(config, CollectorRegistry()))
    assert stopped.value.code == EXIT_BAD_CONFIG
    err = capsys.readouterr().err
    assert f"ground: cannot start: flight plan {plan}: must be an object with an 'items'" in err


