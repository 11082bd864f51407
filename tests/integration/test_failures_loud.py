"""An exception inside a service stops it, loudly: counted, logged, a non-zero exit.

Before, `Bus.subscribe` logged a handler's exception and went on: a vehicle
whose step raised never acknowledged it, its state half-updated, while the
service kept serving gRPC as if healthy. Now it stops, and the process exits
with EXIT_SERVICE_FAILED so the supervisor (or Kubernetes) names it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.ground.service import GroundRuntime
from services.kernel.config import VEHICLES, ServiceConfig
from services.kernel.errors import EXIT_SERVICE_FAILED
from services.kernel.outbox import Outbox
from services.kernel.vehicle import VehicleCore
from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import chatty, plan

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0  # a bound on a hang
FAIL_AT_STEP = 3


class Exploding(VehicleCore):
    """Fails in its third step, as a bug in a vehicle's physics would."""

    name = "orbiter"

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.steps = 0

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.steps += 1
        if self.steps == FAIL_AT_STEP:
            raise ZeroDivisionError("a bug in the physics")
        self.t_s = t_to
        return 60.0


def _failures(registry: CollectorRegistry, mission: str, where: str) -> float:
    value = registry.get_sample_value(
        "twin_service_failures_total", {"mission": mission, "service": "orbiter", "where": where})
    return value or 0.0


async def test_an_exception_in_a_step_stops_that_service_and_the_clock_waits_for_it(
        nats_url: str, mission_id: str) -> None:
    cores = {v: chatty(v) for v in VEHICLES if v != "orbiter"}
    cores["orbiter"] = Exploding
    async with LocalTwin(nats_url, mission_id, plan(hours=12.0), cores=cores,
                         ack_timeout_s=0.5) as twin:
        orbiter = twin.vehicles["orbiter"]
        await asyncio.wait_for(orbiter.stopping.wait(), WAIT_S)
        assert isinstance(orbiter.failure, ZeroDivisionError)
        assert _failures(orbiter.registry, mission_id, "handler") == 1.0
        # The mission does not run on without it: ground waits for its ack.
        await asyncio.sleep(1.5)
        clock = twin.ground.clock
        assert not clock.finished.is_set()
        assert "orbiter" in clock.status.waiting_for
        assert twin.ground.step == FAIL_AT_STEP - 1


_SERVICE_SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, sys.argv[1])
    from services.kernel.runtime import ServiceRuntime, run_service
    from tests.integration.test_failures_loud import Exploding
    run_service("orbiter", lambda config: ServiceRuntime(Exploding(config.seed), config))
''')


async def test_a_failed_service_process_exits_non_zero_saying_why(
        nats_url: str, mission_id: str, tmp_path: Path) -> None:
    base = ServiceConfig(service="ground", mission_id=mission_id, nats_urls=(nats_url,),
                         grpc_port=0, metrics_port=-1, expect=("orbiter",), insecure=True)
    ground = GroundRuntime(base, CollectorRegistry(), plan=plan(hours=12.0))
    env = {**os.environ, "TWIN_NATS_URL": nats_url, "TWIN_MISSION_ID": mission_id,
           "TWIN_GRPC_PORT": "0", "TWIN_METRICS_PORT": "0", "TWIN_LOG_FORMAT": "text",
           "TWIN_INSECURE": "true"}
    script = tmp_path / "exploding_orbiter.py"
    script.write_text(_SERVICE_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), str(REPO), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    await ground.start()
    try:
        code = await asyncio.wait_for(proc.wait(), WAIT_S)
        assert proc.stdout is not None
        log = (await proc.stdout.read()).decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await ground.stop()
    assert code == EXIT_SERVICE_FAILED, log[-3000:]
    assert "service failed" in log and "ZeroDivisionError" in log, log[-3000:]


@pytest.mark.parametrize("where", ["handler", "clock"])
def test_every_failure_place_is_exported_at_zero(where: str) -> None:
    from services.kernel.metrics import Metrics

    registry = CollectorRegistry()
    Metrics("m", "orbiter", registry)
    assert registry.get_sample_value("twin_service_failures_total", {
        "mission": "m", "service": "orbiter", "where": where}) == 0.0
