"""The lander's descent hooks, flown from the end of the approach: fast enough
for the mutation run's per-mutant budget (docs/mutation.md), where the whole
descents of tests/unit/mission/test_fault_hooks.py (about a second each) are
left out.

The core is put where the approach hands over to the hover (reference (c): a
hover at ~100 m above the site) and stepped as the runtime steps it
(``steprule.advance``, 1 s steps) to touchdown, about 85 s.

Authorities: the events contract (docs/mission.md, "Events": each published by
its vehicle, stamped in the step it happened in, with ``lat_deg``, ``lon_deg``,
``alt_m``, ``speed_m_s``, ``mass_kg`` where they apply; the touchdown is
``lunar_touchdown``) and the fault contract (README.md, table of fault kinds):
``hazard_sensor_bias`` moves the spot the hover scan chooses east by its
magnitude, 20 m when unset (0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from services.dynamics import frames
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import descent as dg
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.steprule import advance
from services.kernel.vehicle import Outbox, Outgoing
from services.lander.vehicle import LanderCore
from tests.authorities import (
    HOVER_HEIGHT_M,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
    REAL_UTC,
)

#: Powered descent start (reference timeline row 13).
T_PDI_S = mission_s_from_utc("2024-06-01T22:09:00Z")
#: The hover begins about a minute and a half before the published touchdown.
T_HOVER_S = mission_s_from_utc(REAL_UTC["lunar_touchdown"]) - 90.0
#: Assumption: the stack after braking, with ~300 kg of propellant left.
MASS_KG = 1_800.0
#: The hover ends on a settled point: within this of the ~100 m hover height.
HOVER_TOL_M = 10.0
#: Published lat/lon are rounded to 1e-6 deg (3 cm); vertical descent holds its
#: aim to well within this.
SPOT_TOL_M = 0.5
BIAS_DEFAULT_M = 20.0
EVENT_VALUES = {"lat_deg", "lon_deg", "alt_m", "speed_m_s", "mass_kg"}


@dataclass
class Flight:
    """Events as (t_from, t_to, item) of the step that published them."""

    events: list[tuple[float, float, Outgoing]] = field(default_factory=list)

    def named(self, name: str) -> list[tuple[float, float, Outgoing]]:
        return [e for e in self.events if e[2].body["name"] == name]

    def touchdown(self) -> dict[str, Any]:
        [(_, _, item)] = self.named("lunar_touchdown")
        return item.body


def _at_the_hover(bias_m: float | None) -> LanderCore:
    """The lander at rest 100 m over the LROC site, its approach's time-to-go run out."""
    core = LanderCore(6)
    site_f = frames.moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M + HOVER_HEIGHT_M)
    r, v = MoonRotation.at(T_PDI_S).mci_state(site_f, np.zeros(3), T_HOVER_S)
    core.t_s, core.phase, core.t_pdi_s = T_HOVER_S, "powered_descent", T_PDI_S
    core.mass_kg = MASS_KG
    core.descent = dg.DescentState(T_HOVER_S, r, v, MASS_KG, "approach", T_HOVER_S - 100.0,
                                   T_PDI_S, tgo_s=0.5)
    core.restored()  # what a restored snapshot rebuilds from t_pdi_s
    if bias_m is not None:
        core.inject_fault("lander-hazard_sensor_bias-1", "hazard_sensor_bias", magnitude=bias_m)
    return core


def _fly(bias_m: float | None = None) -> Flight:
    core, flight, t = _at_the_hover(bias_m), Flight(), T_HOVER_S
    for _ in range(300):
        out = Outbox()
        advance(core, t, t + 1.0, out)
        flight.events += [(t, t + 1.0, i) for i in out.drain() if i.kind == "evt"]
        t += 1.0
        if core.phase == "surface":
            return flight
    raise AssertionError(f"no touchdown by {t - T_HOVER_S} s after the hover")


@pytest.fixture(scope="module")
def nominal() -> Flight:
    return _fly()


def test_the_hover_and_each_later_phase_are_published_in_their_step(nominal: Flight) -> None:
    [hover] = nominal.named("hover_start")
    phases = nominal.named("descent_phase")
    # The touchdown is published once, as lunar_touchdown, not also as a phase.
    assert [item.body["phase"] for _, _, item in phases] == [
        "avoidance_start", "vertical_descent_start", "engine_cutoff"]
    assert len(nominal.named("lunar_touchdown")) == 1
    for t_from, t_to, item in [hover, *phases]:
        assert item.target == "lander"
        assert item.t == t_to and t_from < item.t
    body = hover[2].body
    assert set(body) >= EVENT_VALUES
    assert body["alt_m"] == pytest.approx(LANDING_SITE_HEIGHT_M + HOVER_HEIGHT_M, abs=HOVER_TOL_M)


def _east_north_m(spot: dict[str, Any], origin: dict[str, Any]) -> tuple[float, float]:
    """East and north of ``origin`` along the sphere through ``spot`` (tens of
    metres: the tangent plane and the sphere differ by far less than a mm)."""
    r = R_MOON_M + float(spot["alt_m"])
    d_lon = math.radians(spot["lon_deg"] - origin["lon_deg"])
    return (r * math.cos(math.radians(origin["lat_deg"])) * d_lon,
            r * math.radians(spot["lat_deg"] - origin["lat_deg"]))


@pytest.mark.parametrize(("magnitude", "east_m"), [(15.0, 15.0), (0.0, BIAS_DEFAULT_M)])
def test_a_hazard_sensor_bias_moves_the_chosen_spot_east(nominal: Flight, magnitude: float,
                                                         east_m: float) -> None:
    east, north = _east_north_m(_fly(magnitude).touchdown(), nominal.touchdown())
    assert east == pytest.approx(east_m, abs=SPOT_TOL_M)
    assert north == pytest.approx(0.0, abs=SPOT_TOL_M)
