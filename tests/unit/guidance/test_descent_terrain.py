"""Real ground off the map height (``DescentConfig.terrain_error_m``).

The guidance flies to the map height of the site and cuts the engine 2 m above
it; the real ground lies ``terrain_error_m`` higher. Expected figures come from
constant-gravity kinematics written here: a drop of height h from a sink rate
v0 ends at v = sqrt(v0^2 + 2 g h) after (sqrt(v0^2 + 2 g h) - v0) / g; a
lander that meets the ground while it still holds its descent rate touches
down at that rate, the engine lit. Gravity is the point mass of
tests.authorities; frames are built here from latitude and longitude.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from services.dynamics.burns import Engine
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import descent as d
from services.dynamics.timescale import mission_s_from_utc
from tests.authorities import (
    GM_MOON_M3_S2,
    LANDER_ENGINE_THRUST_N,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)
from tests.unit.guidance.nominal_descent import Track

Vec = NDArray[np.float64]

T_S = mission_s_from_utc("2024-06-01T22:09:00Z")
ROTATION = MoonRotation.at(T_S)
#: The map's site radius: what the guidance flies to.
R_SITE_M = R_MOON_M + LANDING_SITE_HEIGHT_M
#: Engine cut-off height above the map (reference (c): "just above the surface").
CUTOFF_M = 2.0
#: The steady descent rate above 10 m (descent.py's stated 1.5 m/s).
DESCENT_RATE_M_S = 1.5
#: An engine whose exhaust velocity the test states (3,100 m/s), so the
#: propellant a lit contact burns is worked out here.
V_E_M_S = 3_100.0
CFG = d.DescentConfig(rotation=ROTATION, engine=Engine(LANDER_ENGINE_THRUST_N, V_E_M_S, 1_500.0),
                      dry_mass_kg=1_500.0, seed=6, cutoff_height_m=CUTOFF_M,
                      descent_rate_m_s=DESCENT_RATE_M_S, final_rate_below_m=10.0)
MASS_KG = 2_000.0

#: Constant g over a drop of tens of metres against the integrator's point mass
#: (g changes by 4e-5 over 30 m): well inside a millimetre per second.
SPEED_TOL_M_S = 1e-3
TIME_TOL_S = 1e-3
#: Where the lander stops: on the real ground's sphere, to the millimetre.
HEIGHT_TOL_M = 1e-3
#: A lit contact: the velocity loop (gravity fed forward) holds 1.5 m/s to
#: this once settled, so the contact comes within a millisecond of the time
#: the held rate says, and the burn within a thousandth of hovering's.
HELD_RATE_TOL_M_S = 1e-3
LIT_TIME_TOL_S = 1e-3
BURN_REL_TOL = 1e-3


def _site_enu() -> Vec:
    """Rows east, north, up at the site, Moon-fixed axes (spherical Moon)."""
    lat, lon = math.radians(LANDING_SITE_LAT_DEG), math.radians(LANDING_SITE_LON_DEG)
    return np.array([
        [-math.sin(lon), math.cos(lon), 0.0],
        [-math.sin(lat) * math.cos(lon), -math.sin(lat) * math.sin(lon), math.cos(lat)],
        [math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat)],
    ])  # fmt: skip


ENU = _site_enu()


def _over_site(height_m: float, v_up_m_s: float, phase: str) -> d.DescentState:
    """A lander ``height_m`` above the map height of the site, sinking or rising
    at ``v_up_m_s`` relative to the ground, in ``phase``, as an MCI state at T_S."""
    r_f = (R_SITE_M + height_m) * ENU[2]
    r, v = ROTATION.mci_state(r_f, v_up_m_s * ENU[2], T_S)
    return d.DescentState(T_S, r, v, MASS_KG, phase, T_S - 5.0, T_S - 800.0)


def _fly(state: d.DescentState, cfg: d.DescentConfig, dt_s: float = 1.0,
         max_steps: int = 60) -> tuple[d.DescentState, list[str]]:
    events: list[str] = []
    for _ in range(max_steps):
        if state.phase == "landed":
            break
        state, out = d.step(state, dt_s, cfg)
        events += out.events
    assert state.phase == "landed", state.phase
    return state, events


def _ground_height_m(landed: d.DescentState) -> float:
    assert landed.landed_fixed_m is not None
    return float(np.linalg.norm(landed.landed_fixed_m)) - R_SITE_M


@pytest.mark.parametrize("terrain_error_m", [-30.0, -10.0, 1.5])
def test_the_drop_from_the_cut_off_ends_on_the_real_ground_as_free_fall_says(
        terrain_error_m: float) -> None:
    """From the cut-off 2 m above the map, sinking at 1 m/s: ground 10 or 30 m
    lower is a longer drop (a hard contact), 1.5 m higher a shorter one."""
    v0 = 1.0
    drop_m = CUTOFF_M - terrain_error_m
    g = GM_MOON_M3_S2 / (R_SITE_M + terrain_error_m + drop_m / 2.0) ** 2  # at mid-drop
    v_hit = math.sqrt(v0 * v0 + 2.0 * g * drop_m)
    landed, events = _fly(_over_site(CUTOFF_M, -v0, "free_fall"),
                          replace(CFG, terrain_error_m=terrain_error_m))
    assert events == ["touchdown"]
    assert landed.touchdown_v_m_s is not None
    assert landed.touchdown_v_m_s[0] == pytest.approx(v_hit, abs=SPEED_TOL_M_S)
    assert landed.phase_start_s - T_S == pytest.approx((v_hit - v0) / g, abs=TIME_TOL_S)
    assert _ground_height_m(landed) == pytest.approx(terrain_error_m, abs=HEIGHT_TOL_M)


def test_ground_above_the_cut_off_height_is_met_with_the_engine_lit() -> None:
    """Ground 20 m above the map, the lander 25 m above the map holding 1.5 m/s:
    it meets the ground 5 m lower, after 5 / 1.5 s, at 1.5 m/s, before any
    engine cut, having burnt what holding against gravity takes."""
    ground_m, start_m = 20.0, 25.0
    state = _over_site(start_m, -DESCENT_RATE_M_S, "vertical_descent")
    landed, events = _fly(state, replace(CFG, terrain_error_m=ground_m), dt_s=0.5)
    assert events == ["touchdown"]  # no engine_cutoff: lit to the ground
    t_hit = (start_m - ground_m) / DESCENT_RATE_M_S
    assert landed.phase_start_s - T_S == pytest.approx(t_hit, abs=LIT_TIME_TOL_S)
    assert landed.touchdown_v_m_s is not None
    assert landed.touchdown_v_m_s[0] == pytest.approx(DESCENT_RATE_M_S, abs=HELD_RATE_TOL_M_S)
    assert _ground_height_m(landed) == pytest.approx(ground_m, abs=HEIGHT_TOL_M)
    # Holding the rate takes m g of thrust: dm/dt = m g / v_e (g at the start).
    g = GM_MOON_M3_S2 / (R_SITE_M + start_m) ** 2
    burnt_kg = MASS_KG * (1.0 - math.exp(-g * t_hit / V_E_M_S))
    assert MASS_KG - landed.mass_kg == pytest.approx(burnt_kg, rel=BURN_REL_TOL)


def test_the_engine_is_cut_2_m_above_the_map_whatever_the_ground(nominal_track: Track) -> None:
    """The nominal descent's last metres flown again over ground 10 m lower than
    the map: the engine is cut in the same step (the guidance flies the map),
    and the drop is 10 m longer: v^2 - v_nominal^2 = 2 g 10 m, and the touchdown
    comes (v - v_nominal) / g later."""
    lower_m = 10.0
    states = nominal_track.states
    last = max(i for i, s in enumerate(states) if s.phase == "vertical_descent")
    cfg = replace(nominal_track.cfg, terrain_error_m=-lower_m)
    state, cut_step = states[last], None
    for k in range(last + 1, last + 30):
        state, out = d.step(state, 1.0, cfg)
        if "engine_cutoff" in out.events:
            cut_step = k
        if state.phase == "landed":
            break
    nominal_cut = next(k + 1 for k, o in enumerate(nominal_track.outputs)
                       if "engine_cutoff" in o.events)
    assert cut_step == nominal_cut
    nominal = states[-1]
    assert nominal.touchdown_v_m_s is not None and state.touchdown_v_m_s is not None
    v_nominal, v = nominal.touchdown_v_m_s[0], state.touchdown_v_m_s[0]
    g = GM_MOON_M3_S2 / (R_SITE_M - lower_m / 2.0) ** 2
    assert v * v - v_nominal * v_nominal == pytest.approx(2.0 * g * lower_m, abs=2 * v *
                                                          SPEED_TOL_M_S)
    assert state.phase_start_s - nominal.phase_start_s == pytest.approx((v - v_nominal) / g,
                                                                         abs=TIME_TOL_S)
    assert _ground_height_m(state) == pytest.approx(-lower_m, abs=HEIGHT_TOL_M)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_terrain_error_that_is_not_a_number_of_metres_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"terrain_error_m must be a finite number of "
                                         r"metres, got (nan|inf|-inf)"):
        replace(CFG, terrain_error_m=bad)
