"""The in-process twin (services/local/inproc.py) is configured as the services
would be: one seed, warp and set of vehicles for all of them, the same defaults
as a service started alone. Nothing is started except where a test says so."""

from __future__ import annotations

import pytest

from services.kernel.config import VEHICLES, ServiceConfig
from services.kernel.vehicle import VehicleCore
from services.local.inproc import LocalTwin
from services.relay.vehicle import RelayCore
from tests.integration.twin_helpers import plan


def test_every_service_gets_the_seed_and_warp_given() -> None:
    seeds: list[int] = []

    def relay(seed: int) -> VehicleCore:
        seeds.append(seed)
        return RelayCore(seed)

    twin = LocalTwin("nats://127.0.0.1:1", "m", plan(), seed=9, warp=5.0,
                     cores={"relay": relay})
    assert seeds == [9]
    assert {rt.config.seed for rt in twin.all.values()} == {9}
    assert {rt.config.warp for rt in twin.all.values()} == {5.0}
    assert {rt.config.mission_id for rt in twin.all.values()} == {"m"}


def test_the_defaults_are_those_of_a_service_started_alone() -> None:
    twin = LocalTwin("nats://127.0.0.1:1", "m", plan())
    alone = ServiceConfig(service="ground", mission_id="m", insecure=True)
    assert twin.ground.config.seed == alone.seed  # the nominal mission's seed
    assert twin.ground.config.expect == alone.expect == VEHICLES


def test_ground_expects_exactly_the_vehicles_flown() -> None:
    twin = LocalTwin("nats://127.0.0.1:1", "m", plan(), vehicles=("orbiter", "relay"))
    assert twin.ground.config.expect == ("orbiter", "relay")
    assert list(twin.all) == ["ground", "orbiter", "relay"]
    assert twin.all["ground"] is twin.ground


async def test_waiting_for_a_mission_that_never_runs_times_out() -> None:
    twin = LocalTwin("nats://127.0.0.1:1", "m", plan())
    with pytest.raises(TimeoutError):
        await twin.wait_finished(timeout_s=0.05)
