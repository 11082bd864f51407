"""Dispersible vehicle parameters: what a Monte Carlo case may change, by name.

Each vehicle core declares the physical quantities a campaign may disperse
(``PARAMETERS``: engine thrust and specific-impulse scale factors, mass
offsets, burn execution errors, navigation and terrain errors, the
atmosphere's density scale, ...), each with its nominal value, its unit and
the range a physical vehicle could have. A run gives values for some of them
(``TWIN_PARAMETERS``, ``twin run --parameters FILE``, a campaign case) by
dotted path, ``<vehicle>.<name>``; every other one keeps its nominal value, so
a run given none is the nominal mission exactly.

The values a vehicle applied are state (snapshotted with the rest), and it
announces them in its first step as a ``parameters_applied`` event: the
mission log records what actually reached each vehicle, which is what a
campaign checks (a dispersion that never reaches the vehicle it names is the
classic silent Monte Carlo bug, Basilisk#1164).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["PARAMETERS_EVENT", "Parameter", "ParameterError", "check_values", "split_path"]

#: The event a vehicle publishes in its first step with the values it applied.
PARAMETERS_EVENT = "parameters_applied"


class ParameterError(ValueError):
    """A parameter path or value a vehicle cannot take; the message says what to fix."""


@dataclass(frozen=True)
class Parameter:
    """One dispersible quantity of a vehicle.

    ``name`` is dotted within the vehicle (``engine.thrust_scale``); ``unit``
    is the unit of the value itself ("1" for a dimensionless scale factor);
    ``low``/``high`` bound what a real vehicle could have (a value outside is
    refused, not clipped); ``doc`` says where in the physics it acts."""

    name: str
    nominal: float
    unit: str
    low: float
    high: float
    doc: str

    def __post_init__(self) -> None:
        if not (self.low <= self.nominal <= self.high):
            raise ValueError(f"{self.name}: nominal {self.nominal} outside [{self.low}, "
                             f"{self.high}]")


def split_path(path: str) -> tuple[str, str]:
    """``"lander.engine.thrust_scale"`` -> ``("lander", "engine.thrust_scale")``."""
    vehicle, dot, name = path.partition(".")
    if not dot or not vehicle or not name:
        raise ParameterError(f"parameter path {path!r} is not <vehicle>.<name> "
                             "(e.g. lander.engine.thrust_scale)")
    return vehicle, name


def check_values(vehicle: str, declared: Iterable[Parameter],
                 values: Mapping[str, float]) -> dict[str, float]:
    """``values`` (names within ``vehicle``) checked against ``declared``: every
    name known, every value a finite number in its range. Returns them as floats,
    sorted by name; raises :class:`ParameterError` naming the first problem."""
    known = {p.name: p for p in declared}
    out: dict[str, float] = {}
    for name in sorted(values):
        param = known.get(name)
        if param is None:
            choices = ", ".join(f"{vehicle}.{n}" for n in sorted(known)) or "none"
            raise ParameterError(f"unknown parameter {vehicle}.{name}; {vehicle} has: {choices}")
        raw = values[name]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ParameterError(f"{vehicle}.{name} must be a number, not {raw!r}")
        value = float(raw)
        if not math.isfinite(value) or not param.low <= value <= param.high:
            raise ParameterError(f"{vehicle}.{name} = {raw!r} is outside what the vehicle "
                                 f"can have: [{param.low:g}, {param.high:g}] {param.unit}")
        out[name] = value
    return out
