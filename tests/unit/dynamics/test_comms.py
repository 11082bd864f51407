"""Communications geometry: occlusion, stations (vs skyfield), light time, Queqiao-2."""

from __future__ import annotations

import numpy as np
import pytest
from skyfield.api import load, wgs84
from skyfield.jpllib import SpiceKernel

from services.dynamics.comms import (
    QUEQIAO2_ELEMENTS,
    STATIONS,
    landing_site_mci_m,
    light_time_s,
    line_of_sight,
    queqiao2_state_mci,
    relay_coverage_hours_per_day,
    station_elevation_deg,
    visible_stations,
)
from services.dynamics.constants import C_M_S, DAY_S, GM_MOON_M3_S2, R_MOON_M
from services.dynamics.ephemeris import de421_path, get_ephemeris
from services.dynamics.frames import eci_from_mci
from services.dynamics.kepler import elements_from_rv
from services.dynamics.timescale import mission_s_from_utc, utc_from_mission_s

TOUCHDOWN_S = mission_s_from_utc("2024-06-01T22:23:16Z")
ASCENT_S = mission_s_from_utc("2024-06-03T23:38:10Z")


def test_earth_blocks_path_through_its_centre() -> None:
    t_s = 0.0
    a, b = np.array([1e8, 0.0, 0.0]), np.array([-1e8, 0.0, 0.0])
    assert not line_of_sight(a, b, t_s)
    assert line_of_sight(a, np.array([1e8, 1e7, 0.0]), t_s)


def test_moon_blocks_far_side_from_earth() -> None:
    # Reference (d) "Why a relay": the far-side site never sees the Earth.
    for t_s in np.linspace(TOUCHDOWN_S, ASCENT_S, 10):
        site = eci_from_mci(landing_site_mci_m(t_s), t_s)
        assert not line_of_sight(site, np.zeros(3), t_s)
        assert not visible_stations(site, t_s)


def test_queqiao2_links_site_and_earth_at_touchdown() -> None:
    r_relay_eci = eci_from_mci(queqiao2_state_mci(TOUCHDOWN_S)[0], TOUCHDOWN_S)
    site = eci_from_mci(landing_site_mci_m(TOUCHDOWN_S), TOUCHDOWN_S)
    assert line_of_sight(site, r_relay_eci, TOUCHDOWN_S)
    assert line_of_sight(r_relay_eci, np.zeros(3), TOUCHDOWN_S)


def test_light_time_earth_moon_and_relay_leg() -> None:
    # Reference (d): 1.19-1.36 s Earth-Moon; relay leg <= ~0.06 s.
    moon = get_ephemeris().moon_eci_m(TOUCHDOWN_S)
    assert 1.19 <= light_time_s(moon, np.zeros(3)) <= 1.36
    relay_mci = queqiao2_state_mci(TOUCHDOWN_S)[0]
    assert light_time_s(relay_mci, landing_site_mci_m(TOUCHDOWN_S)) <= 0.06
    assert light_time_s([C_M_S, 0.0, 0.0], [0.0, 0.0, 0.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(STATIONS))
def test_station_elevation_of_moon_matches_skyfield(name: str) -> None:
    # skyfield's geometric topocentric altitude of the Moon (no refraction,
    # light time or aberration, as ours). 0.005 deg = 33 km at the Moon.
    st = STATIONS[name]
    t = load.timescale(builtin=True).from_datetime(utc_from_mission_s(TOUCHDOWN_S))
    de421 = SpiceKernel(str(de421_path()))
    topo = de421["earth"] + wgs84.latlon(st.lat_deg, st.lon_deg, st.h_m)
    alt, _, _ = (de421["moon"] - topo).at(t).altaz()
    mine = station_elevation_deg(st, get_ephemeris().moon_eci_m(TOUCHDOWN_S), TOUCHDOWN_S)
    assert mine == pytest.approx(alt.degrees, abs=0.005)


def test_visible_stations_follow_the_mask() -> None:
    moon_s = np.linspace(TOUCHDOWN_S, TOUCHDOWN_S + DAY_S, 49)
    seen = set()
    for t_s in moon_s:
        moon = get_ephemeris().moon_eci_m(t_s)
        vis = visible_stations(moon, t_s)
        for name in vis:
            assert station_elevation_deg(name, moon, t_s) >= STATIONS[name].mask_deg
        seen.update(vis)
    # Over a day the Moon rises for both hemispheres' stations.
    assert seen == set(STATIONS)


def test_queqiao2_orbit_matches_meng_2024_elements() -> None:
    r, v = queqiao2_state_mci(TOUCHDOWN_S + 12_345.0)
    el = elements_from_rv(r, v, GM_MOON_M3_S2)
    assert el.a_m == pytest.approx(QUEQIAO2_ELEMENTS.a_m, rel=1e-9)
    assert el.e == pytest.approx(0.782359, abs=1e-9)
    # Apolune altitude ~16,093 km (Meng 2024 as transcribed, reference (c)).
    apolune_alt_km = (el.a_m * (1.0 + el.e) - R_MOON_M) / 1e3
    assert apolune_alt_km == pytest.approx(16_093.0, abs=5.0)
    rs, vs = queqiao2_state_mci(np.array([0.0, TOUCHDOWN_S]))
    np.testing.assert_allclose(rs[1], queqiao2_state_mci(TOUCHDOWN_S)[0], atol=1e-6)
    assert vs.shape == (2, 3)


@pytest.mark.parametrize("day", [0, 1, 2])
def test_queqiao2_covers_landing_site_over_20_h_per_day(day: int) -> None:
    # Reference (d): > 21 h/day relay coverage of CE-6 (CCTV); issue asks >= 20 h
    # with a 10 deg mask at the site, during the surface phase.
    t0_s = TOUCHDOWN_S + day * DAY_S
    assert relay_coverage_hours_per_day(t0_s, mask_deg=10.0) >= 20.0
