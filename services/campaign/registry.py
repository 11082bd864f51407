"""Every dispersible parameter of the six vehicles, by dotted path, and the plans.

The vehicle core classes declare their parameters (services/kernel/parameters.py);
this is the one place that gathers them, for the campaign file's checks and
``twin parameters``.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from services.ground.plan import NOMINAL_PLAN, FlightPlan, load_plan
from services.kernel.config import VEHICLES
from services.kernel.parameters import Parameter
from services.kernel.vehicle import VehicleCore

__all__ = ["PLANS_DIR", "core_class", "parameter_table", "plan_of", "plan_path"]

#: The packaged flight plans (``plan: nominal`` in a campaign file).
PLANS_DIR = NOMINAL_PLAN.parent


@cache
def core_class(vehicle: str) -> type[VehicleCore]:
    """The core class of ``vehicle`` (``services.<vehicle>.vehicle``)."""
    module = importlib.import_module(f"services.{vehicle}.vehicle")
    found = [c for c in vars(module).values()
             if isinstance(c, type) and issubclass(c, VehicleCore)
             and c.__module__ == module.__name__ and c.name == vehicle]
    if len(found) != 1:
        raise LookupError(f"services.{vehicle}.vehicle has {len(found)} cores named {vehicle}")
    return found[0]


@cache
def parameter_table() -> dict[str, Parameter]:
    """Dotted path -> parameter, for every vehicle, sorted by path."""
    table = {f"{v}.{p.name}": p for v in VEHICLES for p in core_class(v).PARAMETERS}
    return dict(sorted(table.items()))


def plan_path(plan: str) -> Path:
    """The file of a campaign's plan: a packaged plan's name, or a path."""
    return PLANS_DIR / f"{plan}.json" if "/" not in plan else Path(plan)


def plan_of(plan: str) -> FlightPlan:
    """A campaign's plan, loaded."""
    return load_plan(plan_path(plan))
