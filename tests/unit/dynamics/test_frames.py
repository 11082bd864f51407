"""Frames against skyfield (ITRS, WGS 84) and lunar libration bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skyfield.api import load, wgs84
from skyfield.framelib import itrs

from services.dynamics.constants import DAY_S, OMEGA_MOON_RAD_S, R_MOON_M
from services.dynamics.ephemeris import get_ephemeris
from services.dynamics.frames import (
    earth_fixed_matrix,
    ecef_from_eci,
    ecef_from_eci_state,
    ecef_from_geodetic,
    eci_from_ecef,
    eci_from_ecef_state,
    eci_from_mci_state,
    geodetic_from_ecef,
    mci_from_eci_state,
    mci_from_moon_fixed_state,
    moon_fixed_from_mci,
    moon_fixed_from_selenographic,
    moon_pole_mci,
    selenographic_from_moon_fixed,
)
from services.dynamics.timescale import mission_s_from_utc, utc_from_mission_s
from tests.authorities import LANDING_SITE_HEIGHT_M, LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG

EPOCHS = [
    "2024-05-03T09:27:29Z",
    "2024-05-20T00:00:00Z",
    "2024-06-01T22:23:16Z",
    "2024-06-25T06:07:00Z",
]
# Our truncated IAU 2000 nutation (20 terms) against skyfield's full
# IAU 2000A: < 1 m expected at the surface; measured ~6 cm.
SURFACE_TOL_M = 1.0


@pytest.mark.parametrize("iso", EPOCHS)
def test_earth_fixed_matches_skyfield_itrs(iso: str) -> None:
    t_s = mission_s_from_utc(iso)
    t = load.timescale(builtin=True).from_datetime(utc_from_mission_s(t_s))
    # skyfield's ITRS rotation (no polar motion table installed, as ours).
    ref = np.asarray(itrs.rotation_at(t))
    for lat, lon in ((38.42, 76.71), (-38.19, -70.15), (0.0, 0.0), (89.0, 10.0)):
        r_ecef = ecef_from_geodetic(lat, lon, 1_000.0)
        assert np.linalg.norm(eci_from_ecef(r_ecef, t_s) - ref.T @ r_ecef) < SURFACE_TOL_M
        # WGS 84 geodetic conversion against skyfield's wgs84 model.
        sky_eci = wgs84.latlon(lat, lon, 1_000.0).at(t).position.m
        assert np.linalg.norm(eci_from_ecef(r_ecef, t_s) - sky_eci) < SURFACE_TOL_M


def test_earth_fixed_matrix_is_a_rotation() -> None:
    m = earth_fixed_matrix(np.array([0.0, 1e6]))
    np.testing.assert_allclose(
        m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-14
    )


def test_ground_station_moves_at_earth_rotation_speed() -> None:
    # A point fixed on the equator moves at omega * a = 465.1 m/s in ECI (WGS 84).
    t_s = 1_000.0
    r_ecef = ecef_from_geodetic(0.0, 30.0, 0.0)
    _, v_eci = eci_from_ecef_state(r_ecef, np.zeros(3), t_s)
    assert np.linalg.norm(v_eci) == pytest.approx(465.1, abs=0.2)
    _, v_back = ecef_from_eci_state(eci_from_ecef(r_ecef, t_s), v_eci, t_s)
    np.testing.assert_allclose(v_back, 0.0, atol=1e-6)


def test_geodetic_known_point() -> None:
    # WGS 84 pole: z = b = a (1 - f) = 6,356,752.314 m (NIMA TR8350.2).
    np.testing.assert_allclose(
        ecef_from_geodetic(90.0, 0.0, 0.0), [0.0, 0.0, 6_356_752.314], atol=1e-3
    )
    lat, lon, h = geodetic_from_ecef(ecef_from_geodetic(46.49, 130.77, 150.0))
    assert (lat, lon, h) == pytest.approx((46.49, 130.77, 150.0), abs=1e-6)


def test_sub_earth_point_stays_within_libration() -> None:
    # Optical librations: |lon| <= 7.9 deg, |lat| <= 6.9 deg (Meeus,
    # Astronomical Algorithms ch. 53), plus < 0.1 deg physical libration.
    eph = get_ephemeris()
    lats, lons = [], []
    for t_s in np.linspace(0.0, 53.0 * DAY_S, 200):
        lat, lon, _ = selenographic_from_moon_fixed(moon_fixed_from_mci(-eph.moon_eci_m(t_s), t_s))
        lats.append(lat)
        lons.append(lon)
    assert max(abs(x) for x in lats) < 7.0
    assert max(abs(x) for x in lons) < 8.1
    assert max(lons) - min(lons) > 8.0  # librations are really there


def test_moon_pole_near_ecliptic_pole() -> None:
    # The lunar equator is inclined 1.54 deg to the ecliptic (Cassini's laws);
    # ecliptic pole in ICRF at obliquity 23.439 deg.
    eps = math.radians(23.439)
    ecl_pole = np.array([0.0, -math.sin(eps), math.cos(eps)])
    angle = math.degrees(math.acos(float(moon_pole_mci(1e6) @ ecl_pole)))
    assert angle == pytest.approx(1.54, abs=0.05)


def test_landing_site_round_trip_and_surface_speed() -> None:
    t_s = mission_s_from_utc("2024-06-01T22:23:16Z")
    site_mf = moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M
    )
    assert selenographic_from_moon_fixed(site_mf) == pytest.approx(
        (LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M), abs=1e-6
    )
    _, v_mci = mci_from_moon_fixed_state(site_mf, np.zeros(3), t_s)
    rho_m = (R_MOON_M + LANDING_SITE_HEIGHT_M) * math.cos(math.radians(LANDING_SITE_LAT_DEG))
    # Synchronous rotation: omega * rho (IAU W rate, librations add < 2%).
    assert np.linalg.norm(v_mci) == pytest.approx(OMEGA_MOON_RAD_S * rho_m, rel=0.02)


def test_mci_eci_state_round_trip() -> None:
    t_s = 3.0 * DAY_S
    r, v = np.array([1.9e6, 2e5, -3e5]), np.array([10.0, 1600.0, 20.0])
    r_eci, v_eci = eci_from_mci_state(r, v, t_s)
    r2, v2 = mci_from_eci_state(r_eci, v_eci, t_s)
    np.testing.assert_allclose(r2, r, atol=1e-6)
    np.testing.assert_allclose(v2, v, atol=1e-9)
    assert np.linalg.norm(ecef_from_eci(r_eci, t_s)) == pytest.approx(
        np.linalg.norm(r_eci), rel=1e-14
    )
