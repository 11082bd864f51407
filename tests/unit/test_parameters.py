"""Dispersible vehicle parameters: declared, checked, applied, announced, snapshotted.

A probe core declares two parameters; what a run gives reaches ``param``,
is refused with a reason when it cannot be, is announced once in the first
step (``parameters_applied``), and survives a snapshot. TWIN_PARAMETERS is
read and refused as a configuration error naming the variable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from services.kernel.config import ServiceConfig
from services.kernel.errors import ConfigError
from services.kernel.outbox import Outbox
from services.kernel.parameters import (
    PARAMETERS_EVENT,
    Parameter,
    ParameterError,
    check_values,
    split_path,
)
from services.kernel.runtime import apply_parameters
from services.kernel.steprule import take_step
from services.kernel.vehicle import VehicleCore


class Probe(VehicleCore):
    name = "lander"  # a real vehicle name, so the config's path check accepts it
    PARAMETERS: ClassVar[tuple[Parameter, ...]] = (
        Parameter("engine.thrust_scale", 1.0, "1", 0.5, 1.5, "main engine thrust factor"),
        Parameter("terrain.height_error_m", 0.0, "m", -20.0, 20.0, "terrain above the map"),
    )

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return 60.0


def _events(out: Outbox) -> list[dict[str, Any]]:
    return [dict(item.body) for item in out.drain() if item.kind == "evt"]


def test_a_parameter_not_given_is_nominal_and_one_given_is_taken() -> None:
    core = Probe(6)
    assert core.param("engine.thrust_scale") == 1.0
    core.set_parameters({"engine.thrust_scale": 0.97})
    assert core.param("engine.thrust_scale") == 0.97
    assert core.param("terrain.height_error_m") == 0.0


@pytest.mark.parametrize(("values", "reason"), [
    ({"engine.thrust": 0.9}, "unknown parameter lander.engine.thrust; lander has: "
                             "lander.engine.thrust_scale, lander.terrain.height_error_m"),
    ({"engine.thrust_scale": 1.6}, r"lander.engine.thrust_scale = 1.6 is outside what the "
                                   r"vehicle can have: \[0.5, 1.5\] 1"),
    ({"engine.thrust_scale": float("nan")}, "outside what the vehicle can have"),
    ({"engine.thrust_scale": "0.9"}, "must be a number"),
    ({"engine.thrust_scale": True}, "must be a number"),
])
def test_a_value_the_vehicle_cannot_take_is_refused_with_the_reason(
        values: dict[str, Any], reason: str) -> None:
    with pytest.raises(ParameterError, match=reason):
        Probe(6).set_parameters(values)


def test_the_first_step_announces_what_was_applied_and_no_later_step_does() -> None:
    core = Probe(6)
    core.set_parameters({"terrain.height_error_m": -3.5, "engine.thrust_scale": 1.02})
    out = Outbox()
    take_step(core, [], 0.0, 1.0, out)
    assert PARAMETERS_EVENT == "parameters_applied"  # the name campaigns read the values by
    assert _events(out) == [{"name": "parameters_applied", "parameters": {
        "lander.engine.thrust_scale": 1.02, "lander.terrain.height_error_m": -3.5}}]
    take_step(core, [], 1.0, 2.0, out)
    assert _events(out) == []


def test_a_nominal_vehicle_announces_nothing() -> None:
    core = Probe(6)
    out = Outbox()
    take_step(core, [], 0.0, 1.0, out)
    assert _events(out) == []


def test_the_values_survive_a_snapshot() -> None:
    core = Probe(6)
    core.set_parameters({"engine.thrust_scale": 0.9})
    copy = Probe(6)
    copy.restore(core.snapshot())
    assert copy.param("engine.thrust_scale") == 0.9
    assert copy.params_announced is False  # restored before its first step: still to announce


def test_split_path_needs_a_vehicle_and_a_name() -> None:
    assert split_path("lander.engine.thrust_scale") == ("lander", "engine.thrust_scale")
    for bad in ("lander", "lander.", ".thrust"):
        with pytest.raises(ParameterError, match=r"is not <vehicle>\.<name>"):
            split_path(bad)


def test_check_values_returns_floats_sorted_by_name() -> None:
    got = check_values("lander", Probe.PARAMETERS,
                       {"terrain.height_error_m": 2, "engine.thrust_scale": 1})
    assert list(got.items()) == [("engine.thrust_scale", 1.0), ("terrain.height_error_m", 2.0)]
    assert all(type(v) is float for v in got.values())


def test_twin_parameters_is_read_from_the_environment() -> None:
    cfg = ServiceConfig.from_env("lander", {
        "TWIN_INSECURE": "true", "TWIN_PARAMETERS": '{"lander.engine.thrust_scale": 0.95}'})
    assert cfg.parameters == {"lander.engine.thrust_scale": 0.95}
    core = Probe(6)
    apply_parameters(core, cfg)
    assert core.param("engine.thrust_scale") == 0.95


@pytest.mark.parametrize(("raw", "problem"), [
    ("{not json", "not JSON"),
    ('["lander.engine.thrust_scale"]', "not an object of numbers"),
    ('{"lander.engine.thrust_scale": "high"}', "not an object of numbers"),
    ('{"moon.gravity_scale": 1.0}', "not a vehicle parameter path"),
    ('{"lander": 1.0}', "not a vehicle parameter path"),
])
def test_a_bad_twin_parameters_is_a_configuration_error(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        ServiceConfig.from_env("lander", {"TWIN_INSECURE": "true", "TWIN_PARAMETERS": raw})
    assert info.value.variable == "TWIN_PARAMETERS"


def test_a_parameter_the_vehicle_does_not_have_is_a_configuration_error() -> None:
    cfg = ServiceConfig("lander", insecure=True,
                        parameters={"lander.engine.thrust_scal": 0.9,
                                    "lander.engine.thrust_scale": 0.99})
    with pytest.raises(ConfigError, match=r"unknown parameter lander\.engine\.thrust_scal") as info:
        apply_parameters(Probe(6), cfg)
    assert info.value.variable == "TWIN_PARAMETERS"
    assert info.value.value == "lander.engine.thrust_scal,lander.engine.thrust_scale"
    assert "twin parameters lists them" in info.value.fix


def test_another_vehicle_s_parameters_are_left_to_it() -> None:
    cfg = ServiceConfig("lander", insecure=True, parameters={"orbiter.engine.isp_scale": 0.99})
    core = Probe(6)
    apply_parameters(core, cfg)
    assert core.params == {}
