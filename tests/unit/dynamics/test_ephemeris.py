"""DE421 through jplephem against DE421 through skyfield, and the fast refit."""

from __future__ import annotations

import numpy as np
import pytest
from skyfield.api import load
from skyfield.jpllib import SpiceKernel

from services.dynamics.constants import C_M_S, DAY_S
from services.dynamics.ephemeris import (
    ChebyshevTable,
    de421_path,
    get_ephemeris,
    get_fast_ephemeris,
)
from services.dynamics.timescale import mission_s_from_utc, utc_from_mission_s

# Key epochs: reference timeline (LOI, touchdown, docking, return landing).
KEY_EPOCHS = [
    "2024-05-08T02:12:00Z",
    "2024-06-01T22:23:16Z",
    "2024-06-06T06:48:00Z",
    "2024-06-25T06:07:00Z",
]
# Same kernel, same time scale: differences are float rounding of the
# time argument (~1e-5 s times 1 km/s for the Moon, 30 km/s for the Sun).
MOON_TOL_M = 0.5
SUN_TOL_M = 5.0
MISSION_END_S = 53.0 * DAY_S


@pytest.fixture(scope="module")
def skyfield_de421() -> SpiceKernel:
    return SpiceKernel(str(de421_path()))


@pytest.mark.parametrize("iso", KEY_EPOCHS)
def test_moon_and_sun_match_skyfield(iso: str, skyfield_de421: SpiceKernel) -> None:
    t_s = mission_s_from_utc(iso)
    t = load.timescale(builtin=True).from_datetime(utc_from_mission_s(t_s))
    eph = get_ephemeris()
    moon_ref = (skyfield_de421["moon"] - skyfield_de421["earth"]).at(t).position.m
    sun_ref = (skyfield_de421["sun"] - skyfield_de421["earth"]).at(t).position.m
    sun_moon_ref = (skyfield_de421["sun"] - skyfield_de421["moon"]).at(t).position.m
    assert np.linalg.norm(eph.moon_eci_m(t_s) - moon_ref) < MOON_TOL_M
    assert np.linalg.norm(eph.sun_eci_m(t_s) - sun_ref) < SUN_TOL_M
    assert np.linalg.norm(eph.sun_mci_m(t_s) - sun_moon_ref) < SUN_TOL_M


def test_moon_velocity_is_derivative_of_position() -> None:
    eph = get_ephemeris()
    t_s = mission_s_from_utc(KEY_EPOCHS[1])
    _, v = eph.moon_state_eci(t_s)
    v_fd = (eph.moon_eci_m(t_s + 1.0) - eph.moon_eci_m(t_s - 1.0)) / 2.0
    # Central difference error ~ a * dt^2 / 6 ~ 1e-9 m/s.
    np.testing.assert_allclose(v, v_fd, atol=1e-6)


def test_vector_shapes() -> None:
    eph = get_ephemeris()
    assert eph.moon_eci_m(0.0).shape == (3,)
    assert eph.moon_eci_m(np.array([0.0, 60.0])).shape == (2, 3)
    r, v = eph.moon_state_eci(np.zeros(4))
    assert r.shape == v.shape == (4, 3)


def test_earth_moon_light_time_over_mission() -> None:
    # Reference (d): 1.19-1.36 s one way (perigee 356,500 km / apogee 406,700 km).
    t = np.linspace(0.0, MISSION_END_S, 2_000)
    light_s = np.linalg.norm(get_ephemeris().moon_eci_m(t), axis=1) / C_M_S
    assert light_s.min() >= 1.19
    assert light_s.max() <= 1.36
    assert light_s.max() - light_s.min() > 0.05  # the orbit's eccentricity shows


def test_fast_ephemeris_matches_de421() -> None:
    # Fit error of 2-day degree-14 Chebyshev segments: < 1 mm Moon, < 5 cm Sun
    # (the Sun's larger error is float rounding at 1.5e11 m).
    t = np.linspace(-2.0 * DAY_S, MISSION_END_S, 5_001)
    eph, fast = get_ephemeris(), get_fast_ephemeris()
    assert np.abs(fast.moon_eci_m(t) - eph.moon_eci_m(t)).max() < 1e-3
    assert np.abs(fast.sun_eci_m(t) - eph.sun_eci_m(t)).max() < 0.05
    assert np.abs(fast.sun_mci_m(t) - eph.sun_mci_m(t)).max() < 0.05


def test_chebyshev_table_reproduces_polynomial_and_grows() -> None:
    def func(t: np.ndarray) -> np.ndarray:
        return np.stack([np.sin(t / 1e4), (t / 1e5) ** 3], axis=-1)

    table = ChebyshevTable(func, width=2, segment_s=2e4, degree=14)
    t = np.array([-3e5, 0.0, 1.234e5, 9e5])
    np.testing.assert_allclose(table(t), func(t), atol=1e-12)
    assert table(1.0).shape == (2,)
