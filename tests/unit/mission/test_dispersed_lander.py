"""The lander's dispersible parameters, each judged by what the lander then flies.

Every flight starts at separation (the LA stack of tests/unit/mission/test_lander.py,
3,320 kg), plans the descent for 22:09 UTC and lands, through the step rule
(Drive), with parameters given as a run gives them (``set_parameters`` before
the first step). Each is compared with the same flight given none.

Physics written here: the rocket equation (a burn of dv from mass m takes
m (1 - exp(-dv / v_e)); a descent's dv is v_e ln(m0 / m1)); an engine's mass flow
is its thrust over its exhaust velocity; constant-gravity free fall
(v^2 = v0^2 + 2 g h; the extra drop takes (v - v0) / g); offsets on the Moon
measured on a sphere (haversine distance and initial bearing). Figures:
tests/authorities.py (7,500 N engine, LROC site and its +-30 m height, GM and
radius of the Moon).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from services.kernel.parameters import ParameterError
from services.lander.vehicle import LanderCore
from tests.authorities import (
    GM_MOON_M3_S2,
    LANDER_ENGINE_THRUST_N,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
    central_angle_rad,
)
from tests.unit.mission.driver import Drive
from tests.unit.mission.test_lander import LA_STACK_KG, T_PLAN, T_SEP, la_stack_handover

#: LROC: the site's height is known to +-30 m (reference row 14).
LROC_HEIGHT_UNCERTAINTY_M = 30.0
R_SITE_M = R_MOON_M + LANDING_SITE_HEIGHT_M
#: Gravity at the site (point mass).
G_SITE_M_S2 = GM_MOON_M3_S2 / R_SITE_M**2

#: A thrust setting is compared to a newton.
THRUST_TOL_N = 1.0
#: Published lat/lon are rounded to 1e-6 deg (3 cm); the vertical descent holds
#: its aim to centimetres.
SPOT_TOL_M = 0.1
#: A mass flow at full thrust is the engine's figure: the same to rounding.
FLOW_REL_TOL = 1e-6
#: Event figures are rounded to 1e-4 (m/s, kg): a burn's exhaust velocity
#: worked out from a ~8 kg, ~7 m/s burn is good to ~2e-5.
BURN_V_E_REL_TOL = 1e-4
#: A dispersed descent is not the same flight: the guidance rides the engine's
#: ceiling longer or shorter, and the dv it needs moves by up to ~0.2 % (a
#: stronger engine loses less to gravity).
DESCENT_DV_REL_TOL = 3e-3
#: ...which moves the ~1.6 t landed by up to ~1 kg.
LANDED_MASS_TOL_KG = 1.5
#: Touchdown speeds are published to 1e-4 m/s: v^2 to ~1e-3.
SPEED_TOL_M_S = 1e-3
TIME_TOL_S = 1e-3
#: A lit contact at the held descent rate, against the nominal flight sampled
#: each 1 s step (linear in between: the rate is held steady there).
LIT_SPEED_TOL_M_S = 1e-3
LIT_TIME_TOL_S = 1e-3
#: Four times a soft touchdown (a few m/s, CE-3/5 legs): a crash, not a landing.
HARD_CONTACT_M_S = 10.0


@dataclass(frozen=True)
class Powered:
    """One step of powered descent as the lander ends it."""

    t_s: float
    thrust_n: float
    mass_kg: float
    height_m: float  # above the map height of the site
    v_up_m_s: float


@dataclass
class Landing:
    events: list[tuple[float, str, dict[str, Any]]]
    powered: list[Powered] = field(default_factory=list)

    def one(self, name: str) -> dict[str, Any]:
        [hit] = [{"t": t, **v} for t, n, v in self.events if n == name]
        return hit

    def all(self, name: str) -> list[dict[str, Any]]:
        return [{"t": t, **v} for t, n, v in self.events if n == name]

    def phases(self) -> list[str]:
        return [v["phase"] for _, n, v in self.events if n == "descent_phase"]

    def ceiling_n(self) -> float:
        return max(p.thrust_n for p in self.powered)

    def steps_at(self, thrust_n: float) -> list[tuple[Powered, Powered]]:
        """Consecutive steps both ending at ``thrust_n``: a whole step at it."""
        return [(a, b) for a, b in itertools.pairwise(self.powered)
                if min(a.thrust_n, b.thrust_n) >= thrust_n - THRUST_TOL_N]

    def flow_at_ceiling_kg_s(self) -> float:
        flows = {round((a.mass_kg - b.mass_kg) / (b.t_s - a.t_s), 9)
                 for a, b in self.steps_at(self.ceiling_n())}
        assert len(flows) == 1, flows  # one engine setting, one mass flow
        return flows.pop()

    def descent_log_mass_ratio(self) -> float:
        """ln(m0 / m1) of the powered descent: its dv over the exhaust velocity."""
        start = self.one("powered_descent_start")["mass_kg"]
        return math.log(start / self.one("lunar_touchdown")["mass_kg"])


def _record(d: Drive, into: list[Powered]) -> None:
    core = d.core
    assert isinstance(core, LanderCore)
    if core.phase == "powered_descent" and core.descent is not None:
        r, v = core.descent.r_mci_m, core.descent.v_mci_m_s
        radius = float(np.linalg.norm(r))
        # The spin's velocity is horizontal: the radial speed is the same in MCI.
        into.append(Powered(d.t_s, core.thrust_n, core.mass_kg, radius - R_SITE_M,
                            float(r @ v) / radius))


def _land(**parameters: float) -> Landing:
    core = LanderCore(6)
    core.set_parameters(parameters)
    d = Drive(core, T_SEP)
    d.deliver("transfer", la_stack_handover(120.0), src="orbiter")
    d.step()
    d.until_t(T_PLAN)
    d.deliver("command", {"op": "plan_descent", "pdi_utc": "2024-06-01T22:09:00Z",
                          "plan_id": "descent_plan"})
    powered: list[Powered] = []
    d.until(lambda x: "lunar_touchdown" in x.names(), each=lambda x: _record(x, powered))
    return Landing(d.events, powered)


@pytest.fixture(scope="module")
def nominal() -> Landing:
    return _land()


def _east_north_m(spot: dict[str, Any], origin: dict[str, Any]) -> tuple[float, float]:
    """East and north of ``origin`` to ``spot`` along the sphere: haversine
    distance, initial bearing."""
    lat1, lat2 = math.radians(origin["lat_deg"]), math.radians(spot["lat_deg"])
    d_lon = math.radians(spot["lon_deg"] - origin["lon_deg"])
    bearing = math.atan2(math.sin(d_lon) * math.cos(lat2),
                         math.cos(lat1) * math.sin(lat2)
                         - math.sin(lat1) * math.cos(lat2) * math.cos(d_lon))
    dist = (R_MOON_M + spot["alt_m"]) * central_angle_rad(
        origin["lat_deg"], origin["lon_deg"], spot["lat_deg"], spot["lon_deg"])
    return dist * math.sin(bearing), dist * math.cos(bearing)


# --- every parameter at once, and the ranges ---------------------------------------


ALL_NOMINAL = {"engine.thrust_scale": 1.0, "engine.isp_scale": 1.0, "mass_offset_kg": 0.0,
               "navigation.bias_east_m": 0.0, "navigation.bias_north_m": 0.0,
               "terrain.height_error_m": 0.0}


def test_every_parameter_given_its_nominal_value_flies_the_nominal_descent(
        nominal: Landing) -> None:
    """Each parameter's code path runs (the values are given) and changes nothing:
    the applied values are announced in the first step, and the touchdown is
    the nominal's."""
    f = _land(**ALL_NOMINAL)
    [(t, applied)] = [(t, v) for t, n, v in f.events if n == "parameters_applied"]
    assert t == T_SEP
    assert applied["parameters"] == {f"lander.{k}": v for k, v in ALL_NOMINAL.items()}
    td, td0 = f.one("lunar_touchdown"), nominal.one("lunar_touchdown")
    for key in ("lat_deg", "lon_deg", "alt_m", "speed_m_s", "mass_kg", "miss_m"):
        assert td[key] == pytest.approx(td0[key], abs=1e-6), key
    assert td["t"] == pytest.approx(td0["t"], abs=1e-6)
    assert not nominal.all("parameters_applied")  # none given, none announced


@pytest.mark.parametrize(("name", "value", "bounds"), [
    ("terrain.height_error_m", LROC_HEIGHT_UNCERTAINTY_M + 1.0, "[-30, 30] m"),
    ("engine.thrust_scale", 0.5, "[0.95, 1.05] 1"),
])
def test_a_value_no_real_lander_could_have_is_refused_with_its_range(
        name: str, value: float, bounds: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(f"lander.{name} = {value!r} is outside "
                                                       f"what the vehicle can have: {bounds}")):
        LanderCore(6).set_parameters({name: value})


# --- the engine ---------------------------------------------------------------------


def test_a_weaker_engine_is_held_at_its_lower_ceiling_for_longer(nominal: Landing) -> None:
    """5 % less thrust: the braking needs the engine's maximum for minutes rather
    than about one, and burns 5 % less per second there (same exhaust velocity:
    mass flow = thrust / v_e); the descent needs the same dv and lands on the
    same spot, softly."""
    f = _land(**{"engine.thrust_scale": 0.95})
    assert nominal.ceiling_n() == pytest.approx(LANDER_ENGINE_THRUST_N, abs=THRUST_TOL_N)
    assert f.ceiling_n() == pytest.approx(0.95 * LANDER_ENGINE_THRUST_N, abs=THRUST_TOL_N)
    assert len(f.steps_at(f.ceiling_n())) > 3 * len(nominal.steps_at(nominal.ceiling_n()))
    assert f.flow_at_ceiling_kg_s() == pytest.approx(0.95 * nominal.flow_at_ceiling_kg_s(),
                                                     rel=FLOW_REL_TOL)
    assert f.descent_log_mass_ratio() == pytest.approx(nominal.descent_log_mass_ratio(),
                                                       rel=DESCENT_DV_REL_TOL)
    east, north = _east_north_m(f.one("lunar_touchdown"), nominal.one("lunar_touchdown"))
    assert math.hypot(east, north) < SPOT_TOL_M
    assert f.one("lunar_touchdown")["speed_m_s"] < 4.0


def test_a_stronger_engine_gives_the_braking_more_than_the_nominal_ceiling(
        nominal: Landing) -> None:
    """5 % more: the braking asks more than 7,500 N where the nominal engine sat
    at its maximum, and gets it, never more than 1.05 x 7,500 N."""
    f = _land(**{"engine.thrust_scale": 1.05})
    assert f.ceiling_n() > LANDER_ENGINE_THRUST_N + THRUST_TOL_N
    assert f.ceiling_n() <= 1.05 * LANDER_ENGINE_THRUST_N + THRUST_TOL_N
    assert f.descent_log_mass_ratio() == pytest.approx(nominal.descent_log_mass_ratio(),
                                                       rel=DESCENT_DV_REL_TOL)


def _burn_v_e_m_s(f: Landing) -> dict[str, float]:
    """Each orbital burn's exhaust velocity from its dv and propellant (rocket
    equation), the mass before it followed from the hand-over."""
    mass_kg = f.one("handover_accepted")["mass_kg"]
    out = {}
    for burn in f.all("burn_end"):
        used = burn["propellant_kg"]
        out[burn["burn"]] = burn["dv_m_s"] / -math.log(1.0 - used / mass_kg)
        mass_kg -= used
    return out


def test_a_lower_exhaust_velocity_costs_propellant_by_the_rocket_equation(
        nominal: Landing) -> None:
    """4 % lower: every burn of the lander's engine, phasing to touchdown, shows
    it. The orbital burns' dv and propellant give 0.96 of the nominal exhaust
    velocity; at full thrust it burns 1/0.96 as much per second; the powered
    descent flies the same dv, so ln(m0 / m1) is 1/0.96 of the nominal's, and
    less is left at touchdown."""
    isp = 0.96
    f = _land(**{"engine.isp_scale": isp})
    burns, burns0 = _burn_v_e_m_s(f), _burn_v_e_m_s(nominal)
    assert list(burns) == ["descent-phasing-1", "descent-phasing-2", "descent-orbit-lowering"]
    for label, v_e in burns.items():
        assert v_e / burns0[label] == pytest.approx(isp, rel=BURN_V_E_REL_TOL), label
    assert f.flow_at_ceiling_kg_s() == pytest.approx(nominal.flow_at_ceiling_kg_s() / isp,
                                                     rel=FLOW_REL_TOL)
    assert isp * f.descent_log_mass_ratio() == pytest.approx(nominal.descent_log_mass_ratio(),
                                                             rel=DESCENT_DV_REL_TOL)
    assert f.one("lunar_touchdown")["propellant_kg"] < nominal.one("lunar_touchdown")[
        "propellant_kg"]


@pytest.mark.parametrize("offset_kg", [80.0, -80.0])
def test_propellant_loaded_off_the_nominal_is_carried_to_the_surface_in_proportion(
        nominal: Landing, offset_kg: float) -> None:
    """The same burns take the same fraction of any mass (rocket equation): the
    stack reaches ignition with the nominal's fraction of its separation mass,
    and lands with it, so the extra propellant left is the offset times the
    nominal's landed fraction."""
    f = _land(mass_offset_kg=offset_kg)
    assert f.one("handover_accepted")["mass_kg"] == pytest.approx(LA_STACK_KG + offset_kg)
    fraction = f.one("powered_descent_start")["mass_kg"] / (LA_STACK_KG + offset_kg)
    assert fraction == pytest.approx(nominal.one("powered_descent_start")["mass_kg"]
                                     / LA_STACK_KG, rel=1e-6)
    assert f.descent_log_mass_ratio() == pytest.approx(nominal.descent_log_mass_ratio(),
                                                       rel=DESCENT_DV_REL_TOL)
    landed_fraction = nominal.one("lunar_touchdown")["mass_kg"] / LA_STACK_KG
    extra_kg = f.one("lunar_touchdown")["propellant_kg"] - nominal.one("lunar_touchdown")[
        "propellant_kg"]
    assert extra_kg == pytest.approx(offset_kg * landed_fraction, abs=LANDED_MASS_TOL_KG)


# --- where it lands -----------------------------------------------------------------


@pytest.mark.parametrize(("bias_east_m", "bias_north_m"), [(300.0, -200.0), (-1_000.0, 1_000.0)])
def test_a_navigation_bias_moves_the_touchdown_by_minus_the_bias(
        nominal: Landing, bias_east_m: float, bias_north_m: float) -> None:
    """The lander believes itself ``bias`` east/north of where it is (estimate
    minus truth) and flies its belief to the site: it lands ``-bias`` from the
    nominal touchdown, measured on the sphere, as softly."""
    f = _land(**{"navigation.bias_east_m": bias_east_m, "navigation.bias_north_m": bias_north_m})
    td, td0 = f.one("lunar_touchdown"), nominal.one("lunar_touchdown")
    east, north = _east_north_m(td, td0)
    assert east == pytest.approx(-bias_east_m, abs=SPOT_TOL_M)
    assert north == pytest.approx(-bias_north_m, abs=SPOT_TOL_M)
    site = {"lat_deg": LANDING_SITE_LAT_DEG, "lon_deg": LANDING_SITE_LON_DEG, "alt_m": td["alt_m"]}
    assert td["miss_m"] == pytest.approx(math.hypot(*_east_north_m(td, site)), abs=SPOT_TOL_M)
    assert td["speed_m_s"] == pytest.approx(td0["speed_m_s"], abs=0.05)


def test_ground_lower_than_the_map_is_a_longer_free_fall(nominal: Landing) -> None:
    """10 m lower: the engine is cut 2 m above the map as before, the drop is
    10 m longer: v^2 = v_nominal^2 + 2 g 10 m, (v - v_nominal) / g later, on
    the real ground under the same spot."""
    lower_m = 10.0
    f = _land(**{"terrain.height_error_m": -lower_m})
    td, td0 = f.one("lunar_touchdown"), nominal.one("lunar_touchdown")
    assert f.phases() == nominal.phases()  # the engine cut as over the map
    v0 = td0["vertical_speed_m_s"]
    v = math.sqrt(v0 * v0 + 2.0 * G_SITE_M_S2 * lower_m)
    assert td["vertical_speed_m_s"] == pytest.approx(v, abs=SPEED_TOL_M_S)
    assert v > HARD_CONTACT_M_S / 2.0  # ~6.3 m/s: hard for landing legs
    assert td["t"] - td0["t"] == pytest.approx((v - v0) / G_SITE_M_S2, abs=TIME_TOL_S)
    assert td["alt_m"] == pytest.approx(LANDING_SITE_HEIGHT_M - lower_m, abs=1e-3)
    assert (td["lat_deg"], td["lon_deg"]) == (td0["lat_deg"], td0["lon_deg"])
    assert td["miss_m"] == td0["miss_m"]  # from the site on the real ground


def _crossing(powered: list[Powered], height_m: float) -> tuple[float, float]:
    """(time, vertical speed) at which a descent passed ``height_m`` above the map."""
    for a, b in itertools.pairwise(powered):
        if a.height_m >= height_m > b.height_m:
            k = (a.height_m - height_m) / (a.height_m - b.height_m)
            return a.t_s + k * (b.t_s - a.t_s), a.v_up_m_s + k * (b.v_up_m_s - a.v_up_m_s)
    raise AssertionError(f"never passed {height_m} m")


def test_ground_above_the_cut_off_height_is_met_with_the_engine_lit(nominal: Landing) -> None:
    """20 m higher: the lander meets the ground while still descending under
    power, 18 m above its cut-off, when and as fast as the nominal lander
    passed 20 m above the map; no engine cut."""
    higher_m = 20.0
    f = _land(**{"terrain.height_error_m": higher_m})
    assert "engine_cutoff" not in f.phases() and "engine_cutoff" in nominal.phases()
    assert f.powered[-1].thrust_n > 0.0  # lit in the last step before the contact
    td = f.one("lunar_touchdown")
    t_pass, v_up = _crossing(nominal.powered, higher_m)
    assert td["t"] == pytest.approx(t_pass, abs=LIT_TIME_TOL_S)
    assert td["vertical_speed_m_s"] == pytest.approx(-v_up, abs=LIT_SPEED_TOL_M_S)
    assert td["alt_m"] == pytest.approx(LANDING_SITE_HEIGHT_M + higher_m, abs=1e-3)
