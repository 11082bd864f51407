"""The ascent's engine: the vertical rise on the rocket equation, the cut-off on
the target orbit's energy, propellant exhaustion, and what each step reports."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from services.dynamics import frames
from services.dynamics.burns import Engine
from services.dynamics.constants import MISSION_EPOCH_UTC
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import ascent as a
from services.dynamics.guidance.loi import plane_normal_over_site
from tests.authorities import (
    GM_MOON_M3_S2,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)

# Liftoff 2024-06-03 23:38:10 UTC (reference timeline row 19).
T_LIFTOFF_S = (datetime(2024, 6, 3, 23, 38, 10, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()
THRUST_N = 3_000.0  # reference (b)
#: The module's stated assumptions: Isp ~315 s, 750 kg wet, 330 kg dry.
V_E_M_S = 3_090.0
WET_KG, DRY_KG = 750.0, 330.0
MDOT_KG_S = THRUST_N / V_E_M_S
#: Target orbit 15 x 180 km above the 1,737.4 km sphere (module docstring).
PERILUNE_M, APOLUNE_M = 15e3, 180e3
TARGET_SMA_M = R_MOON_M + 0.5 * (PERILUNE_M + APOLUNE_M)
HEIGHT_TOL_M = 0.5
ENERGY_TOL_J_KG = 5.0  # ~7 m of semi-major axis
TIME_TOL_S = 1e-6


def _config(pass_offset_s: float = 200.0, **changes: float) -> a.AscentConfig:
    """Orbiter plane (137 deg) over the site ``pass_offset_s`` after liftoff."""
    site_f = frames.moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M)
    t = T_LIFTOFF_S + pass_offset_s
    normal = plane_normal_over_site(
        frames.mci_from_moon_fixed(site_f, t), frames.moon_pole_mci(t), math.radians(137.0))
    return a.AscentConfig(rotation=MoonRotation.at(T_LIFTOFF_S), target_normal_mci=normal,
                          **changes)  # type: ignore[arg-type]


def _energy_j_kg(r: np.ndarray, v: np.ndarray) -> float:
    return 0.5 * float(v @ v) - GM_MOON_M3_S2 / float(np.linalg.norm(r))


def _apsides_height_m(r: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Perilune and apolune heights from energy and angular momentum (two-body)."""
    sma = -GM_MOON_M3_S2 / (2.0 * _energy_j_kg(r, v))
    h = float(np.linalg.norm(np.cross(r, v)))
    e = math.sqrt(max(0.0, 1.0 - h * h / (GM_MOON_M3_S2 * sma)))
    return sma * (1.0 - e) - R_MOON_M, sma * (1.0 + e) - R_MOON_M


@pytest.fixture(scope="module")
def nominal() -> a.AscentResult:
    cfg = _config()
    return a.simulate_ascent(a.AscentState.on_pad(T_LIFTOFF_S, cfg), cfg)


def test_config_derives_the_insertion_point_from_the_target_orbit() -> None:
    cfg = _config()
    r_p = R_MOON_M + PERILUNE_M
    assert cfg.insertion_radius_m == r_p
    # Vis-viva at perilune.
    assert cfg.insertion_speed_m_s == pytest.approx(
        math.sqrt(GM_MOON_M3_S2 * (2.0 / r_p - 1.0 / TARGET_SMA_M)), rel=1e-12)
    assert cfg.target_energy_j_kg == pytest.approx(-GM_MOON_M3_S2 / (2.0 * TARGET_SMA_M))
    assert cfg.site_radius_m == R_MOON_M + LANDING_SITE_HEIGHT_M


@pytest.mark.parametrize(("changes", "field"), [
    ({"perilune_height_m": 0.0}, "^need 0 < perilune_height_m <= apolune_height_m, got 0.0"),
    ({"perilune_height_m": 200e3}, "^need 0 < perilune_height_m"),
    ({"substep_s": 0.0}, r"^substep_s must be in \(0, 0.5\] s, got 0.0"),
    ({"substep_s": 1.0}, "^substep_s"),
])
def test_config_refuses_an_impossible_orbit_or_substep(changes: dict[str, float],
                                                        field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _config(**changes)


@pytest.mark.parametrize("changes", [
    {"perilune_height_m": 0.5}, {"perilune_height_m": 180e3}, {"substep_s": 0.5}])
def test_config_accepts_the_edges(changes: dict[str, float]) -> None:
    _config(**changes)  # a 0.5 m perilune, a circular orbit, the largest sub-step


def test_step_refuses_negative_time_and_a_zero_step_changes_nothing() -> None:
    cfg = _config()
    pad = a.AscentState.on_pad(T_LIFTOFF_S, cfg)
    with pytest.raises(ValueError, match="dt_s must be >= 0"):
        a.step(pad, -1.0, cfg)
    state, out = a.step(pad, 0.0, cfg)
    assert state.t_s == pad.t_s and state.mass_kg == WET_KG
    assert out.events == ("liftoff",)
    assert out.altitude_m == pytest.approx(0.0, abs=1e-6)
    assert out.thrust_n == 0.0 and out.throttle == 0.0  # no time, no burn
    assert out.thrust_dir_mci.shape == (3,) and not out.thrust_dir_mci.any()


def _vertical_rise_height_m(t_s: float) -> float:
    """1-D rocket equation against the site's gravity, by small steps."""
    g = GM_MOON_M3_S2 / (R_MOON_M + LANDING_SITE_HEIGHT_M) ** 2
    h = v = 0.0
    dt = 1e-3
    for k in range(round(t_s / dt)):
        m = WET_KG - MDOT_KG_S * (k + 0.5) * dt
        acc = THRUST_N / m - g
        h, v = h + v * dt + 0.5 * acc * dt * dt, v + acc * dt
    return h


def test_vertical_rise_climbs_on_the_rocket_equation() -> None:
    cfg = _config()
    state, out = a.step(a.AscentState.on_pad(T_LIFTOFF_S, cfg), 0.5, cfg)
    for _ in range(19):
        state, out = a.step(state, 0.5, cfg)
    assert out.t_s == pytest.approx(T_LIFTOFF_S + 10.0, abs=TIME_TOL_S)
    assert out.phase == "vertical_rise" and out.events == ()
    assert out.thrust_n == THRUST_N and out.throttle == 1.0
    assert out.propellant_kg == pytest.approx(WET_KG - DRY_KG - MDOT_KG_S * 10.0, abs=1e-6)
    up = state.r_mci_m / np.linalg.norm(state.r_mci_m)
    assert float(out.thrust_dir_mci @ up) == pytest.approx(1.0, abs=1e-9)
    # The site turns with the Moon (~1 m/s here), so the rise is ~1-D.
    assert out.altitude_m == pytest.approx(_vertical_rise_height_m(10.0), abs=HEIGHT_TOL_M)
    state, out = a.step(state, 1.0, cfg)
    assert out.events == ("pitch_over",) and out.phase == "powered_ascent"


def test_cutoff_is_on_the_target_orbit_energy(nominal: a.AscentResult) -> None:
    final = nominal.final
    assert final.phase == "coast"
    assert _energy_j_kg(final.r_mci_m, final.v_mci_m_s) == pytest.approx(
        -GM_MOON_M3_S2 / (2.0 * TARGET_SMA_M), abs=ENERGY_TOL_J_KG)


def test_result_reports_the_orbit_it_reached(nominal: a.AscentResult) -> None:
    final = nominal.final
    assert final.cutoff_s is not None
    assert nominal.burn_s == pytest.approx(final.cutoff_s - T_LIFTOFF_S, abs=TIME_TOL_S)
    # One step of 1 s (the default) per second of burn, the last one cut short.
    assert nominal.steps == math.ceil(nominal.burn_s)
    assert final.t_s - final.cutoff_s < 1.0
    peri, apo = _apsides_height_m(final.r_mci_m, final.v_mci_m_s)
    assert nominal.perilune_height_m == pytest.approx(peri, abs=1.0)
    assert nominal.apolune_height_m == pytest.approx(apo, abs=1.0)
    assert nominal.propellant_left_kg == pytest.approx(final.mass_kg - DRY_KG, abs=1e-9)
    assert nominal.propellant_left_kg == pytest.approx(
        WET_KG - DRY_KG - MDOT_KG_S * nominal.burn_s, abs=1e-6)


def test_the_climb_costs_about_the_ascent_delta_v(nominal: a.AscentResult) -> None:
    # The module's budget: ~1.85 km/s for the ascent (orbital speed plus
    # gravity losses); a guidance that flies a worse path burns more.
    dv_m_s = V_E_M_S * math.log(WET_KG / nominal.final.mass_kg)
    assert 1_700.0 < dv_m_s < 1_900.0


def test_no_cutoff_in_time_is_an_error() -> None:
    cfg = _config()
    with pytest.raises(RuntimeError, match="no engine cutoff within 30"):
        a.simulate_ascent(a.AscentState.on_pad(T_LIFTOFF_S, cfg), cfg, max_duration_s=30.0)


@pytest.fixture(scope="module")
def starved() -> tuple[a.AscentResult, list[str], a.AscentConfig]:
    """50 kg of propellant, 51.5 s of burn: exhausted long before orbit, with
    the orbiter's plane ~5 km off the site (it passes 2 h later)."""
    cfg = _config(7_200.0, dry_mass_kg=WET_KG - 50.0)
    state = a.AscentState.on_pad(T_LIFTOFF_S, cfg)
    events: list[str] = []
    while state.phase != "coast":
        t_end = state.t_s + 1.0
        state, out = a.step(state, 1.0, cfg)
        events += out.events
        # The exhausting sub-step is cut short, never stretched past the step.
        assert out.t_s == pytest.approx(t_end, abs=1e-9)
    assert out.thrust_n == 0.0 and out.throttle == 0.0 and out.propellant_kg == 0.0
    return a.simulate_ascent(a.AscentState.on_pad(T_LIFTOFF_S, cfg), cfg), events, cfg


def test_exhaustion_cuts_the_engine_when_the_propellant_runs_out(
        starved: tuple[a.AscentResult, list[str], a.AscentConfig]) -> None:
    result, events, _ = starved
    assert events == ["liftoff", "pitch_over", "propellant_exhausted", "engine_cutoff"]
    assert result.burn_s == pytest.approx(50.0 / MDOT_KG_S, abs=TIME_TOL_S)
    assert result.final.mass_kg == pytest.approx(WET_KG - 50.0, abs=1e-9)
    assert result.propellant_left_kg == pytest.approx(0.0, abs=1e-9)


def test_plane_error_is_the_angle_between_the_orbit_and_the_target_plane(
        starved: tuple[a.AscentResult, list[str], a.AscentConfig]) -> None:
    result, _, cfg = starved
    h = np.cross(result.final.r_mci_m, result.final.v_mci_m_s)
    angle_deg = math.degrees(math.acos(float(h @ cfg.target_normal_mci) / np.linalg.norm(h)))
    assert angle_deg > 0.01  # the short burn could not close the 5 km
    assert result.plane_error_deg == pytest.approx(angle_deg, abs=1e-9)


#: E-guidance targets the insertion radius with zero radial speed and re-plans
#: every sub-step: it inserts within metres of the 15 x 180 km target.
INSERTION_TOL_M = 5.0
APOLUNE_TOL_M = 10.0
RADIAL_SPEED_TOL_M_S = 1.0


@pytest.mark.parametrize("pass_offset_s", [200.0, 7_200.0])
def test_insertion_is_on_the_target_perilune_with_no_radial_speed(pass_offset_s: float) -> None:
    cfg = _config(pass_offset_s)
    result = a.simulate_ascent(a.AscentState.on_pad(T_LIFTOFF_S, cfg), cfg)
    r, v = result.final.r_mci_m, result.final.v_mci_m_s
    up = r / np.linalg.norm(r)
    assert abs(float(v @ up)) < RADIAL_SPEED_TOL_M_S
    assert float(np.linalg.norm(r)) - R_MOON_M == pytest.approx(PERILUNE_M, abs=INSERTION_TOL_M)
    assert result.perilune_height_m == pytest.approx(PERILUNE_M, abs=INSERTION_TOL_M)
    assert result.apolune_height_m == pytest.approx(APOLUNE_M, abs=APOLUNE_TOL_M)


def test_a_weak_engine_saturates_the_climb_but_keeps_thrust_downrange() -> None:
    """At 1,200 N (1.6 m/s^2 on the pad, lunar gravity's worth) the climb asks
    for more than the engine has: the law gives it 98 % (in square) of the
    thrust and keeps the rest downrange, and still reaches the orbit."""
    engine = Engine(1_200.0, V_E_M_S, 1_200.0)
    cfg = _config(7_200.0, engine=engine)  # type: ignore[arg-type]
    state = a.AscentState.on_pad(T_LIFTOFF_S, cfg)
    lateral_sq: list[float] = []
    while state.phase != "coast":
        up_before = state.r_mci_m / np.linalg.norm(state.r_mci_m)
        state, out = a.step(state, cfg.substep_s, cfg)  # one sub-step: one thrust direction
        if out.phase == "powered_ascent":
            d = out.thrust_dir_mci
            lateral_sq.append(float(d @ up_before) ** 2 + float(d @ cfg.target_normal_mci) ** 2)
    # 1e-4: the site lies off the target plane, so "up" and the plane's normal
    # are not quite square to each other.
    assert max(lateral_sq) == pytest.approx(0.98, abs=1e-4)
    assert sum(x > 0.98 - 1e-4 for x in lateral_sq) > 100  # saturated for a good while
    assert float(np.linalg.norm(state.r_mci_m)) - R_MOON_M == pytest.approx(
        PERILUNE_M, abs=INSERTION_TOL_M)


def test_coasting_reports_no_thrust_and_no_direction(nominal: a.AscentResult) -> None:
    state, out = a.step(nominal.final, 5.0, _config())
    assert state.phase == "coast" and out.events == ()
    assert out.thrust_n == 0.0 and out.throttle == 0.0
    assert out.thrust_dir_mci.shape == (3,) and not out.thrust_dir_mci.any()
