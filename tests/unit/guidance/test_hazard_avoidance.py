"""Hazard avoidance: the descent lands on the spot it chose, and that spot is safe.

For several seeded hazard maps the pure descent guidance is flown to
touchdown from the hover of the nominal descent (the seed is first read when
the hover ends; a test checks that such a branch is the whole flight). The
spot it chose (its aim after the hover scan) is checked against a brute-force
search written here, and the touchdown, converted to site east/north from its
Moon-fixed position with spherical geometry written here (never the
guidance's own ENU basis), is checked against
that spot and against every hazard of the map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest

from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import descent as d
from services.dynamics.timescale import mission_s_from_utc
from tests.unit.guidance.nominal_descent import Track

#: Powered descent start (reference timeline row 13).
T_PDI_S = mission_s_from_utc("2024-06-01T22:09:00Z")

#: Seed 6 is the mission's; the others all have hazards on the site itself (the
#: avoidance must move) and chosen spots east and west of it, so a mirrored
#: east/north would move the touchdown. On seeds 6 and 15 the spot mirrored
#: east-west lies inside a crater (2.5 and 3.5 m inside the rim).
SEEDS = (0, 4, 6, 11, 15)
#: The avoidance ends when the vehicle is within 0.5 m of its aim (the guidance's
#: own hand-over gate to vertical descent), and vertical descent holds that
#: point: the touchdown must fall within that same 0.5 m.
TOUCHDOWN_TOL_M = 0.5
#: Lander footprint radius (DescentConfig default): the avoidance promises a
#: clearance of two footprints from every hazard rim.
FOOTPRINT_M = 4.0
SAFE_CLEARANCE_M = 2.0 * FOOTPRINT_M
#: The hover scan looks 40 m around the site on a 1 m grid.
SEARCH_RADIUS_M = 40


@dataclass(frozen=True)
class Flown:
    hazards: tuple[d.Hazard, ...]
    chosen_en_m: tuple[float, float]
    touchdown_en_m: tuple[float, float]


def _east_north_m(fixed_m: tuple[float, float, float], lat0_deg: float,
                  lon0_deg: float) -> tuple[float, float]:
    """Moon-fixed point -> (east, north) metres from the site along the sphere
    through the point (arcs of 20-60 m: the tangent plane differs by < 1 mm)."""
    x, y, z = fixed_m
    r = math.sqrt(x * x + y * y + z * z)
    lat, lon = math.asin(z / r), math.atan2(y, x)
    d_lon = (lon - math.radians(lon0_deg) + math.pi) % math.tau - math.pi
    return r * math.cos(math.radians(lat0_deg)) * d_lon, r * (lat - math.radians(lat0_deg))


def _clearance_m(hazards: tuple[d.Hazard, ...], east_m: float, north_m: float) -> float:
    """Distance from a point to the nearest hazard rim (negative: inside it)."""
    return min(math.hypot(east_m - h.east_m, north_m - h.north_m) - h.radius_m for h in hazards)


def _nearest_safe_distance_m(hazards: tuple[d.Hazard, ...]) -> float:
    """Brute force over the scan grid: distance from the site to the nearest safe point."""
    best = math.inf
    for e in range(-SEARCH_RADIUS_M, SEARCH_RADIUS_M + 1):
        for n in range(-SEARCH_RADIUS_M, SEARCH_RADIUS_M + 1):
            dist = math.hypot(e, n)
            if (dist <= SEARCH_RADIUS_M and dist < best
                    and _clearance_m(hazards, e, n) >= SAFE_CLEARANCE_M):
                best = dist
    return best


def _fly_from(state: d.DescentState, cfg: d.DescentConfig) -> Flown:
    """Fly ``state`` to touchdown; the spot chosen is the aim when the avoidance starts."""
    assert cfg.footprint_radius_m == FOOTPRINT_M
    chosen: tuple[float, float] | None = None
    while state.phase != "landed" and state.t_s - state.ignition_s < 1_800.0:
        state, out = d.step(state, 1.0, cfg)
        if "avoidance_start" in out.events:
            chosen = state.aim_en_m
    assert chosen is not None and state.landed_fixed_m is not None, state.phase
    touchdown = _east_north_m(state.landed_fixed_m, cfg.site_lat_deg, cfg.site_lon_deg)
    return Flown(d.hazard_map(cfg.seed), chosen, touchdown)


def _branch(track: Track, seed: int) -> Flown:
    """The nominal descent from its hover on, with the hazard map of ``seed``."""
    return _fly_from(track.first_in("hover"), replace(track.cfg, seed=seed))


@pytest.fixture(scope="module", params=SEEDS)
def flown(request: pytest.FixtureRequest, nominal_track: Track) -> Flown:
    return _branch(nominal_track, int(request.param))


def test_a_branch_at_the_hover_flies_as_a_whole_descent_with_that_seed(
        nominal_track: Track) -> None:
    # The seed draws the hazard map, which the guidance reads when the hover
    # ends: up to the hover every seed flies the same, so branching there is
    # the whole flight. Seed 11 chooses a spot west of the site, the mission's
    # (6) one east.
    state = d.nominal_ignition_state(T_PDI_S)
    whole = _fly_from(state, d.DescentConfig(rotation=MoonRotation.at(state.t_s), seed=11))
    assert whole == _branch(nominal_track, 11)
    assert whole.chosen_en_m != _branch(nominal_track, 6).chosen_en_m


def test_the_site_itself_is_unsafe_so_the_avoidance_must_move(flown: Flown) -> None:
    assert _clearance_m(flown.hazards, 0.0, 0.0) < SAFE_CLEARANCE_M
    assert math.hypot(*flown.chosen_en_m) >= 1.0


def test_the_chosen_spot_is_the_nearest_safe_one(flown: Flown) -> None:
    east, north = flown.chosen_en_m
    assert _clearance_m(flown.hazards, east, north) >= SAFE_CLEARANCE_M
    assert math.hypot(east, north) == pytest.approx(_nearest_safe_distance_m(flown.hazards),
                                                    abs=1e-9)


def test_touches_down_on_the_chosen_spot(flown: Flown) -> None:
    east, north = flown.touchdown_en_m
    miss_m = math.hypot(east - flown.chosen_en_m[0], north - flown.chosen_en_m[1])
    assert miss_m < TOUCHDOWN_TOL_M, (flown.touchdown_en_m, flown.chosen_en_m)


def test_touches_down_clear_of_every_hazard(flown: Flown) -> None:
    # Within TOUCHDOWN_TOL_M of a spot two footprints from every rim: the
    # footprint itself is well outside every crater and boulder.
    clearance_m = _clearance_m(flown.hazards, *flown.touchdown_en_m)
    assert clearance_m >= SAFE_CLEARANCE_M - TOUCHDOWN_TOL_M
