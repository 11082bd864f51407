"""What a simulated descent reports, measured again from its final state, and
the configurations the descent refuses."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from services.dynamics.burns import Engine
from services.dynamics.constants import MISSION_EPOCH_UTC
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import descent as d
from tests.authorities import (
    GM_MOON_M3_S2,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
    central_angle_rad,
)

# Powered descent start 2024-06-01 22:09 UTC (reference timeline row 13).
T_PDI_S = (datetime(2024, 6, 1, 22, 9, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()
MISS_TOL_M = 0.01
ROTATION = MoonRotation.at(T_PDI_S)


@pytest.fixture(scope="module")
def flown(nominal_start: tuple[d.DescentState, d.DescentConfig], nominal_result: d.DescentResult,
          ) -> tuple[d.DescentState, d.DescentConfig, d.DescentResult]:
    """The nominal descent (flown once per session, conftest.py)."""
    return *nominal_start, nominal_result


def test_ignition_state_starts_braking_at_its_own_time() -> None:
    state = d.DescentState.at_ignition(T_PDI_S, [1.75e6, 0.0, 0.0], [0.0, 1_700.0, 0.0], 3_000.0)
    assert (state.t_s, state.phase_start_s, state.ignition_s) == (T_PDI_S, T_PDI_S, T_PDI_S)
    assert state.phase == "braking" and state.mass_kg == 3_000.0
    assert state.r_mci_m.dtype == np.float64 and state.v_mci_m_s.dtype == np.float64


def test_nominal_ignition_is_near_the_perilune_before_the_site(
        flown: tuple[d.DescentState, d.DescentConfig, d.DescentResult]) -> None:
    state, _, _ = flown
    # Within a minute of the planned 22:09 (reference timeline row 13).
    assert abs(state.t_s - T_PDI_S) < 60.0
    assert state.t_s == state.ignition_s == state.phase_start_s


def test_duration_and_steps_are_those_of_the_flight(
        flown: tuple[d.DescentState, d.DescentConfig, d.DescentResult]) -> None:
    start, cfg, result = flown
    final = result.final
    assert final.phase == "landed"
    assert result.duration_s == pytest.approx(final.phase_start_s - start.t_s, abs=1e-9)
    # One 1 s step (the default) per second of flight, the last one ending on the ground.
    assert result.steps == math.ceil(result.duration_s)
    assert result.propellant_left_kg == pytest.approx(final.mass_kg - cfg.dry_mass_kg, abs=1e-9)
    assert result.touchdown_v_m_s == final.touchdown_v_m_s
    first_t_s, first = result.events[0]
    assert first == "ignition" and first_t_s == pytest.approx(start.t_s + 1.0)
    assert result.events[-1][1] == "touchdown"


def test_miss_distance_is_the_arc_from_the_touchdown_point_to_the_site(
        flown: tuple[d.DescentState, d.DescentConfig, d.DescentResult]) -> None:
    _, _, result = flown
    assert result.final.landed_fixed_m is not None
    x, y, z = result.final.landed_fixed_m
    lat = math.degrees(math.atan2(z, math.hypot(x, y)))
    lon = math.degrees(math.atan2(y, x))
    arc = central_angle_rad(lat, lon, LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG)
    assert result.miss_distance_m > 1.0  # the hazard avoidance moved it off the site
    assert result.miss_distance_m == pytest.approx(
        (R_MOON_M + LANDING_SITE_HEIGHT_M) * arc, abs=MISS_TOL_M)


def test_no_touchdown_in_time_is_an_error(
        flown: tuple[d.DescentState, d.DescentConfig, d.DescentResult]) -> None:
    start, cfg, _ = flown
    with pytest.raises(RuntimeError, match=r"no touchdown within 20(\.0)? s \(phase braking\)"):
        d.simulate_descent(start, cfg, max_duration_s=20.0)


@pytest.mark.parametrize(("changes", "field"), [
    ({"braking_accel_fraction": 0.0}, "braking_accel_fraction"),
    ({"braking_accel_fraction": 1.01}, "braking_accel_fraction"),
    ({"cutoff_height_m": 0.0}, "hover_height_m > avoidance_end_height_m > cutoff_height_m"),
    ({"avoidance_end_height_m": 2.0}, "hover_height_m > avoidance_end_height_m"),
    ({"hover_height_m": 30.0}, "hover_height_m > avoidance_end_height_m"),
    ({"substep_s": 0.0}, "substep_s"),
    ({"substep_s": 0.6}, "substep_s"),
])
def test_config_refuses_what_the_descent_cannot_fly(changes: dict[str, float],
                                                    field: str) -> None:
    with pytest.raises(ValueError, match=field):
        d.DescentConfig(rotation=ROTATION, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("changes", [
    {"braking_accel_fraction": 1.0}, {"cutoff_height_m": 0.5}, {"substep_s": 0.5}])
def test_config_accepts_the_edges(changes: dict[str, float]) -> None:
    d.DescentConfig(rotation=ROTATION, **changes)  # type: ignore[arg-type]


#: A lander 5 m up sinking at 30 m/s, engine lit at a tenth of its thrust:
#: it cannot stop, and hits the ground inside its first 0.2 s sub-step.
CRASH_HEIGHT_M, CRASH_SINK_M_S = 5.0, 30.0
WEAK_THRUST_N, LANDER_V_E_M_S, CRASH_MASS_KG = 750.0, 3_100.0, 1_600.0


def test_a_lit_engine_that_cannot_stop_hits_the_ground_where_and_when_it_falls() -> None:
    cfg = d.DescentConfig(rotation=ROTATION, dry_mass_kg=1_500.0,
                          engine=Engine(WEAK_THRUST_N, LANDER_V_E_M_S, 0.0))
    site_f = cfg.site_fixed_m
    up = site_f / np.linalg.norm(site_f)
    r_f = up * (cfg.site_radius_m + CRASH_HEIGHT_M)
    r, v = ROTATION.mci_state(r_f, -CRASH_SINK_M_S * up, T_PDI_S)
    state = d.DescentState(T_PDI_S, r, v, CRASH_MASS_KG, "vertical_descent",
                           T_PDI_S - 10.0, T_PDI_S - 700.0)
    landed, out = d.step(state, 1.0, cfg)
    # 1-D: h(t) = 5 - 30 t - (g - F/m) t^2 / 2 under full (upward) thrust.
    net_g = GM_MOON_M3_S2 / cfg.site_radius_m**2 - WEAK_THRUST_N / CRASH_MASS_KG
    t_hit = (-CRASH_SINK_M_S + math.sqrt(CRASH_SINK_M_S**2 + 2.0 * net_g * CRASH_HEIGHT_M)) / net_g
    assert landed.phase == "landed" and out.events == ("touchdown",)
    # The instant is interpolated linearly over the sub-step: good to 1 ms here.
    assert landed.phase_start_s == pytest.approx(T_PDI_S + t_hit, abs=1e-3)
    assert landed.touchdown_v_m_s is not None and landed.landed_fixed_m is not None
    vertical, horizontal = landed.touchdown_v_m_s
    assert vertical == pytest.approx(CRASH_SINK_M_S + net_g * t_hit, abs=0.01)
    assert horizontal < 0.01
    assert landed.mass_kg == pytest.approx(
        CRASH_MASS_KG - WEAK_THRUST_N / LANDER_V_E_M_S * t_hit, abs=1e-3)
    np.testing.assert_allclose(landed.landed_fixed_m, site_f, atol=0.01)
