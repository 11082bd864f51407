"""Mission facts come from the flight plan: move PDI by one orbit, land one orbit later.

The plan names powered-descent initiation once (`facts.pdi_utc`); the
orbiter's orbit adjustments aim the plane over the site at that instant and
the lander plans its descent for it. When the orbiter aimed at a PDI of its
own, a plan with PDI one orbit later still landed, but only because the
lander's descent-orbit lowering paid a plane change of ~13 m/s for the
~1.2 deg the Moon turns in an orbit: that cost is what this test watches.
"""

from __future__ import annotations

import importlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.ground.plan import NOMINAL_PLAN, parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.envelope import Envelope
from services.local.simloop import SimLoop
from tests.authorities import (
    GM_MOON_M3_S2,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    LAUNCH_UTC,
    R_MOON_M,
    central_angle_rad,
)

SEED = 6
#: The 200 km parking orbit (reference, "Parking orbit"): one revolution of
#: the stack about the DE421 Moon, 7,652 s.
PARKING_HEIGHT_M = 200_000.0
ORBIT_S = 2.0 * math.pi * math.sqrt((R_MOON_M + PARKING_HEIGHT_M) ** 3 / GM_MOON_M3_S2)
NOMINAL_PDI = datetime(2024, 6, 1, 22, 9, tzinfo=UTC)  # reference timeline row 13
FLY_UNTIL = datetime(2024, 6, 2, 12, 0, tzinfo=UTC)  # well after either touchdown
#: An in-plane lowering costs the same one orbit later; a plane change of the
#: Moon's ~1.2 deg turn costs ~13 m/s more.
DOI_SAME_M_S = 2.0
SITE_RADIUS_M = 100.0


def _fly(pdi: datetime) -> list[Envelope]:
    raw: dict[str, Any] = orjson.loads(NOMINAL_PLAN.read_bytes())
    raw["facts"]["pdi_utc"] = pdi.strftime("%Y-%m-%dT%H:%M:%SZ")
    cores = {name: getattr(importlib.import_module(f"services.{name}.vehicle"),
                           f"{name.capitalize()}Core")(SEED) for name in VEHICLES}
    loop = SimLoop(GroundCore(SEED, parse_plan(raw)), cores)
    launch = datetime.fromisoformat(LAUNCH_UTC)
    loop.run(until_s=(FLY_UNTIL - launch).total_seconds())
    return loop.events


def _one(events: list[Envelope], name: str) -> Envelope:
    (found,) = [e for e in events if e.body.get("name") == name]
    return found


@pytest.fixture(scope="module")
def flights() -> tuple[list[Envelope], list[Envelope]]:
    return _fly(NOMINAL_PDI), _fly(NOMINAL_PDI + timedelta(seconds=round(ORBIT_S)))


def test_pdi_one_orbit_later_lands_one_orbit_later_at_the_same_site(
        flights: tuple[list[Envelope], list[Envelope]]) -> None:
    nominal, later = flights
    shift_s = _one(later, "lunar_touchdown").t - _one(nominal, "lunar_touchdown").t
    assert shift_s == pytest.approx(round(ORBIT_S), abs=1.0)
    touchdown = _one(later, "lunar_touchdown").body
    miss_m = R_MOON_M * central_angle_rad(touchdown["lat_deg"], touchdown["lon_deg"],
                                          LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG)
    assert miss_m <= SITE_RADIUS_M


def test_the_orbiter_aims_at_the_plans_pdi_so_no_plane_change_is_left(
        flights: tuple[list[Envelope], list[Envelope]]) -> None:
    dv = [_one(events, "descent_orbit_lowering").body["dv_m_s"] for events in flights]
    assert abs(dv[1] - dv[0]) <= DOI_SAME_M_S, f"DOI {dv[0]:.1f} then {dv[1]:.1f} m/s"
