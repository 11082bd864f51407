"""Operators' queries must not change the mission.

gRPC GetStatus and WatchTelemetry call a core's summary() at wall-clock-
dependent moments. Any cache those calls fill (ephemeris segments, frame
rotations, link geometry) must give bit-identical physics whether or not it was
filled early. Two whole missions in the NATS-free loop, one with status
queries sprinkled over it, must publish identical events and end identical.
"""

from __future__ import annotations

import importlib
import random
from typing import Any

import pytest

from services.ground.plan import load_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.vehicle import VehicleCore
from services.local.simloop import SimLoop

pytestmark = pytest.mark.slow


def _cores(seed: int) -> dict[str, VehicleCore]:
    cores: dict[str, VehicleCore] = {}
    for name in VEHICLES:
        module = importlib.import_module(f"services.{name}.vehicle")
        cores[name] = getattr(module, name.capitalize() + "Core")(seed)
    return cores


def _fly(seed: int, query_rng: random.Random | None) -> tuple[list[Any], dict[str, Any]]:
    cores = _cores(seed)
    loop = SimLoop(GroundCore(seed, load_plan(None)), cores)

    def query(sim: SimLoop) -> None:
        assert query_rng is not None
        if query_rng.random() < 0.05:
            for core in cores.values():
                core.summary()

    loop.run(on_step=query if query_rng else None)
    events = [(e.src, e.seq, e.t, e.body) for e in loop.events]
    finals = {name: core.snapshot() for name, core in cores.items()}
    return events, finals


def test_status_queries_do_not_change_the_mission() -> None:
    plain = _fly(6, None)
    queried = _fly(6, random.Random(2024))
    assert plain[0] == queried[0]
    assert plain[1] == queried[1]
