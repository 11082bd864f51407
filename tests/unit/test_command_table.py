"""Each vehicle's command table: the ops a core accepts are exactly those it
has a handler for, each a method of that very core, built once."""

from __future__ import annotations

import importlib

import pytest

from services.ground.plan import load_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.vehicle import Outbox, VehicleCore
from services.orbiter.vehicle import OP_PHASES, OrbiterCore


def _core(name: str) -> VehicleCore:
    if name == "ground":
        return GroundCore(6, load_plan(None))
    module = importlib.import_module(f"services.{name}.vehicle")
    core: VehicleCore = getattr(module, name.capitalize() + "Core")(6)
    return core


@pytest.mark.parametrize("name", [*VEHICLES, "ground"])
def test_every_operation_has_a_handler_bound_to_the_core(name: str) -> None:
    core = _core(name)
    assert core.operations() == frozenset(core.command_handlers)
    for op, handler in core.command_handlers.items():
        assert getattr(handler, "__self__", None) is core, op


def test_every_orbiter_operation_but_set_mode_has_a_phase_rule() -> None:
    assert OrbiterCore(6).operations() == {"set_mode", *OP_PHASES}


def test_a_command_runs_the_handler_of_its_op() -> None:
    core = _core("lander")
    out = Outbox()
    core.execute({"op": "set_mode", "mode": "safe"}, 10.0, out)
    assert core.phase == "safe"
    assert [(i.body["name"], i.body["previous"]) for i in out.drain()] == [
        ("mode_changed", "stowed")]
