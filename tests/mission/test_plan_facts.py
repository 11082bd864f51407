"""Mission facts come from the flight plan: move PDI by one orbit, land one orbit later.

The plan names powered-descent initiation once (`facts.pdi_utc`); the
orbiter's orbit adjustments aim the plane over the site at that instant and
the lander plans its descent for it. When the orbiter aimed at a PDI of its
own, a plan with PDI one orbit later still landed, but only because the
lander's descent-orbit lowering paid a plane change of ~13 m/s for the
~1.2 deg the Moon turns in an orbit: that cost is what this test watches.

Likewise the entry interface (`facts.ei_utc`): the return-plane and TEI
commands carry it, and the mid-course correction aims at the EI the orbiter
was given. Moved an hour later, the correction aims an hour later and stays
as small as on the nominal return, which a TEI aimed at the old EI could not
leave it. And the lunar arrival (`facts.loi_utc`) has no default on board: a
separation command without it is refused.
"""

from __future__ import annotations

import importlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.dynamics import change6
from services.dynamics.guidance.loi import PARKING_HEIGHT_M as LOI_PARKING_HEIGHT_M
from services.dynamics.guidance.loi import PARKING_INCLINATION_DEG
from services.dynamics.targeting import parking_orbit_for_return
from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import NOMINAL_PLAN, parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.envelope import Envelope
from services.local.simloop import SimLoop
from services.orbiter.flight import Flight
from services.orbiter.vehicle import OrbiterCore
from tests.authorities import (
    EI_UTC,
    GM_MOON_M3_S2,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    LAUNCH_UTC,
    R_MOON_M,
    SEPARATION_UTC,
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

#: The entry interface moved this much later in the plan's facts.
EI_SHIFT = timedelta(hours=1)
#: The nominal plan's return items, flown from a parking orbit in the return
#: plane a day before the first of them (the orbit the adjustments leave).
RETURN_ITEMS = ("return_prep", "tei", "tcm3")
RETURN_FROM = datetime(2024, 6, 14, 0, 0, tzinfo=UTC)
RETURN_UNTIL = "2024-06-23T01:00:00Z"  # an hour after the correction
#: The return TCM of the orbiter's unit test is < 5 m/s (CE-5's: 2 x 25 N for
#: 8-28 s, well under 1 m/s); a TEI aimed an hour off leaves far more.
TCM_MAX_M_S = 5.0
#: The correction's EI is the plan's to the millisecond of an ISO instant.
EI_TIME_TOL_S = 1e-3


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


# --- the entry interface and the lunar arrival ------------------------------------------


def _nominal_raw() -> dict[str, Any]:
    raw: dict[str, Any] = orjson.loads(NOMINAL_PLAN.read_bytes())
    return raw


def _orbiter_in_the_return_plane(t_s: float) -> OrbiterCore:
    """The OR stack after undocking: 200 km circular, 137 deg, in the nominal
    return plane (what the adjustments and the return-plane burn give)."""
    core = OrbiterCore(SEED)
    core.phase = "lunar_orbit"
    core.carrying.la_stack = core.carrying.icubeq = False
    target = change6.entry_interface_target(mission_s_from_utc(EI_UTC))
    r, v = parking_orbit_for_return(target, t_s, PARKING_INCLINATION_DEG, LOI_PARKING_HEIGHT_M)
    core.flight = Flight("moon", r, v, t_s)
    return core


def _fly_return(ei: datetime) -> list[Envelope]:
    """The nominal plan's return items, with the plan's EI at ``ei``."""
    raw = _nominal_raw()
    raw["facts"]["ei_utc"] = ei.strftime("%Y-%m-%dT%H:%M:%SZ")
    raw["items"] = [x for x in raw["items"] if x["id"] in RETURN_ITEMS]
    raw["end"] = {"at": RETURN_UNTIL}
    t0 = (RETURN_FROM - datetime.fromisoformat(LAUNCH_UTC)).total_seconds()
    loop = SimLoop(GroundCore(SEED, parse_plan(raw)), {"orbiter": _orbiter_in_the_return_plane(t0)})
    loop.t_s = t0
    loop.run()
    return loop.events


@pytest.fixture(scope="module")
def returns() -> tuple[list[Envelope], list[Envelope]]:
    nominal = datetime.fromisoformat(EI_UTC)
    return _fly_return(nominal), _fly_return(nominal + EI_SHIFT)


def test_the_plans_ei_an_hour_later_moves_the_return_an_hour_later(
        returns: tuple[list[Envelope], list[Envelope]]) -> None:
    aims = [_one(events, "trajectory_correction").body["target_t_ei_s"] for events in returns]
    assert aims[0] == pytest.approx(mission_s_from_utc(EI_UTC), abs=EI_TIME_TOL_S)
    assert aims[1] - aims[0] == pytest.approx(EI_SHIFT.total_seconds(), abs=EI_TIME_TOL_S)
    for events in returns:  # the TEI plan itself aimed at the moved EI
        _one(events, "tei_planned")
        dv_m_s = _one(events, "trajectory_correction").body["dv_m_s"]
        assert dv_m_s <= TCM_MAX_M_S, f"TCM {dv_m_s:.1f} m/s"


def test_a_separation_without_the_plans_loi_is_refused_on_board() -> None:
    raw = _nominal_raw()
    (separation,) = [x for x in raw["items"] if x["id"] == "separation"]
    separation["command"].pop("loi_utc")
    raw["items"], raw["end"] = [separation], {"after": "separation", "offset_s": 600}
    loop = SimLoop(GroundCore(SEED, parse_plan(raw)), {"orbiter": OrbiterCore(SEED)})
    launch = datetime.fromisoformat(LAUNCH_UTC)
    loop.run(until_s=(datetime.fromisoformat(SEPARATION_UTC) - launch).total_seconds() + 600.0)
    rejected = _one(loop.events, "command_rejected").body
    assert rejected["op"] == "probe_separation" and "loi_utc" in rejected["reason"]
    assert "probe_separation" not in loop.event_names()
