"""Ascent from the CE-6 site to a stable lunar orbit in the orbiter's plane."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from services.dynamics import frames
from services.dynamics.constants import MISSION_EPOCH_UTC
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import ascent as a
from services.dynamics.guidance.loi import plane_normal_over_site
from tests.authorities import LANDING_SITE_HEIGHT_M, LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG

# Liftoff 2024-06-03 23:38:10 UTC (reference timeline row 19).
T_LIFTOFF_S = (datetime(2024, 6, 3, 23, 38, 10, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()


def _config(pass_offset_s: float) -> a.AscentConfig:
    """Orbiter plane (137 deg) over the site ``pass_offset_s`` after liftoff."""
    site_f = frames.moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M
    )
    t = T_LIFTOFF_S + pass_offset_s
    normal = plane_normal_over_site(
        frames.mci_from_moon_fixed(site_f, t), frames.moon_pole_mci(t), math.radians(137.0)
    )
    return a.AscentConfig(rotation=MoonRotation.at(T_LIFTOFF_S), target_normal_mci=normal)


@pytest.fixture(scope="module")
def result() -> a.AscentResult:
    cfg = _config(200.0)
    return a.simulate_ascent(a.AscentState.on_pad(T_LIFTOFF_S, cfg), cfg)


def test_reaches_a_stable_orbit(result: a.AscentResult) -> None:
    assert result.perilune_height_m >= 10e3  # perilune >= 10 km
    assert result.perilune_height_m == pytest.approx(15e3, abs=1e3)
    assert result.apolune_height_m == pytest.approx(180e3, abs=5e3)


def test_burn_lasts_about_6_minutes(result: a.AscentResult) -> None:
    # Reference (b): 3,000 N engine, ~6 min to the preset orbit.
    assert 5 * 60 <= result.burn_s <= 7 * 60


def test_orbit_lies_in_the_orbiter_plane(result: a.AscentResult) -> None:
    assert result.plane_error_deg < 0.05
    assert result.propellant_left_kg > 0.0


def test_site_off_the_plane_is_corrected() -> None:
    # Lifting off 2 h before the plane passes over the site leaves the site
    # ~5 km out of plane (the Moon turns under the orbit); the crossrange
    # channel steers the ascender onto the plane anyway.
    cfg = _config(7_200.0)
    state = a.AscentState.on_pad(T_LIFTOFF_S, cfg)
    assert abs(float(state.r_mci_m @ cfg.target_normal_mci)) > 4e3
    res = a.simulate_ascent(state, cfg)
    assert res.plane_error_deg < 0.05
    assert res.perilune_height_m >= 10e3


def test_events_and_engine_off_after_cutoff() -> None:
    cfg = _config(200.0)
    state = a.AscentState.on_pad(T_LIFTOFF_S, cfg)
    events: list[str] = []
    for _ in range(420):
        state, out = a.step(state, 1.0, cfg)
        events += out.events
    assert events == ["liftoff", "pitch_over", "engine_cutoff"]
    assert out.thrust_n == 0.0 and out.phase == "coast"
    assert float(np.linalg.norm(state.r_mci_m)) > 1_737_400.0  # still in orbit after coasting
