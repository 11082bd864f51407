"""Campaign statistics against closed forms, published tables and geometry written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.campaign.stats import (
    StatsError,
    dispersion_ellipse,
    east_north_m,
    ellipse_outline,
    lat_lon_deg,
    spread,
    success_rate,
)
from tests.authorities import (
    EARTH_MEAN_RADIUS_M,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
    central_angle_rad,
)

#: A closed-form bound against scipy's root-finding: agreement to 1e-9 is far
#: below anything a summary prints (0.1 %).
CLOSED_FORM_TOL = 1e-9
#: A published value printed to 4 decimals: half a unit in the last place.
FOUR_DECIMALS_TOL = 5e-5
#: Printed to 3 decimals.
THREE_DECIMALS_TOL = 5e-4
#: Positions on the sphere: the same spherical trigonometry two ways, double
#: precision over tens of km leaves micrometres; a millimetre is nothing on a map.
POSITION_TOL_M = 1e-3
ANGLE_TOL_DEG = 1e-9
#: Siziwang aim point of the twin's returner, 42.0 N 111.45 E (a point in the
#: Amugulang grassland, docs/reference "not found" item 10): only a place to
#: centre the Earth plane here, not a figure under test.
AIM_LAT_DEG, AIM_LON_DEG = 42.0, 111.45


# --- Clopper-Pearson ---------------------------------------------------------------


def test_all_successes_of_twenty_give_the_closed_form_lower_bound() -> None:
    # k = n: the lower bound solves p^n = alpha/2, so p = 0.025^(1/20) = 0.8316.
    rate = success_rate(20, 20)
    assert rate.rate == 1.0
    assert rate.low == pytest.approx(0.025 ** (1 / 20), abs=CLOSED_FORM_TOL)
    assert rate.low == pytest.approx(0.8316, abs=FOUR_DECIMALS_TOL)
    assert rate.high == 1.0
    # one-sided: all of alpha in the lower tail, p^n = 0.05, p = 0.8609
    assert rate.lower_one_sided == pytest.approx(0.05 ** (1 / 20), abs=CLOSED_FORM_TOL)


def test_no_success_of_twenty_gives_the_closed_form_upper_bound() -> None:
    # k = 0: (1 - p)^n = alpha/2, so p = 1 - 0.025^(1/20) = 0.1684 (Newcombe's 0/20 row too).
    rate = success_rate(0, 20)
    assert rate.low == 0.0
    assert rate.high == pytest.approx(1.0 - 0.025 ** (1 / 20), abs=CLOSED_FORM_TOL)
    assert rate.high == pytest.approx(0.1684, abs=FOUR_DECIMALS_TOL)
    assert rate.lower_one_sided == 0.0


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    # Newcombe, "Two-sided confidence intervals for the single proportion:
    # comparison of seven methods", Statist. Med. 17:857 (1998), table II,
    # method 5 (exact, Clopper-Pearson).
    (81, 263, 0.2527, 0.3676),
    (15, 148, 0.0578, 0.1617),
    (1, 29, 0.0009, 0.1776),
])
def test_interior_cases_match_newcombes_table(k: int, n: int, low: float, high: float) -> None:
    rate = success_rate(k, n)
    assert rate.low == pytest.approx(low, abs=FOUR_DECIMALS_TOL)
    assert rate.high == pytest.approx(high, abs=FOUR_DECIMALS_TOL)


def test_an_interior_case_matches_conovers_table() -> None:
    # 5 of 25: 0.068 to 0.407 from the tables of Conover, "Practical
    # Nonparametric Statistics" (3rd ed., 1999), as worked by influentialpoints.com.
    rate = success_rate(5, 25)
    assert rate.low == pytest.approx(0.068, abs=THREE_DECIMALS_TOL)
    assert rate.high == pytest.approx(0.407, abs=THREE_DECIMALS_TOL)
    assert rate.low < rate.lower_one_sided < rate.rate


@pytest.mark.parametrize(("k", "n", "fix"), [
    (0, 0, "at least one case"), (21, 20, "between 0 and the 20 cases"),
    (-1, 20, "between 0 and the 20 cases"),
])
def test_impossible_counts_are_refused_saying_why(k: int, n: int, fix: str) -> None:
    with pytest.raises(StatsError, match=fix):
        success_rate(k, n)


# --- percentiles -------------------------------------------------------------------


def test_percentiles_follow_hyndman_and_fan_definition_7() -> None:
    # Sorted 15, 20, 35, 40, 50 (n = 5): the p-quantile sits at h = (n - 1) p
    # between x[floor h] and the next, linearly.
    #   P50: h = 2.0  -> 35
    #   P90: h = 3.6  -> 40 + 0.6 (50 - 40) = 46
    #   P99: h = 3.96 -> 40 + 0.96 (50 - 40) = 49.6
    s = spread([40.0, math.nan, 15.0, 50.0, 20.0, 35.0])  # the NaN (no event) is left out
    assert s.count == 5
    assert s.at(50.0) == pytest.approx(35.0, abs=1e-12)
    assert s.at(90.0) == pytest.approx(46.0, abs=1e-12)
    assert s.at(99.0) == pytest.approx(49.6, abs=1e-12)
    assert (s.minimum, s.maximum) == (15.0, 50.0)


def test_a_quantity_that_never_happened_has_no_percentiles() -> None:
    s = spread([math.nan, math.nan])
    assert s.count == 0
    assert all(math.isnan(v) for _, v in s.percentiles)
    with pytest.raises(StatsError, match="percentile 75"):
        s.at(75.0)


# --- dispersion ellipses -----------------------------------------------------------


def _cross(a: float, b: float, theta_deg: float, centre: tuple[float, float],
           ) -> tuple[np.ndarray, np.ndarray]:
    """Four points: +-a along the direction theta from north (towards east), +-b across."""
    t = math.radians(theta_deg)
    u = np.array([math.sin(t), math.cos(t)])
    v = np.array([math.cos(t), -math.sin(t)])
    pts = np.array([a * u, -a * u, b * v, -b * v]) + np.array(centre)
    return pts[:, 0], pts[:, 1]


@pytest.mark.parametrize(("theta_deg", "expected_deg"), [(30.0, 30.0), (120.0, 120.0),
                                                         (200.0, 20.0)])
def test_the_ellipse_of_a_cross_has_the_known_axes_and_angle(
        theta_deg: float, expected_deg: float) -> None:
    # The mean is the centre; the scatter matrix is 2 a^2 u u' + 2 b^2 v v', so
    # with divisor n - 1 = 3 the covariance has eigenvalues 2a^2/3 and 2b^2/3
    # along u and v: 3-sigma semi-axes 3 a sqrt(2/3) and 3 b sqrt(2/3).
    a, b, centre = 400.0, 150.0, (120.0, -80.0)
    ellipse = dispersion_ellipse(*_cross(a, b, theta_deg, centre))
    assert ellipse.count == 4
    assert ellipse.centre_east == pytest.approx(centre[0], abs=1e-9)
    assert ellipse.centre_north == pytest.approx(centre[1], abs=1e-9)
    assert ellipse.centre_offset == pytest.approx(math.hypot(*centre), abs=1e-9)
    assert ellipse.semi_major == pytest.approx(3.0 * a * math.sqrt(2.0 / 3.0), rel=1e-12)
    assert ellipse.semi_minor == pytest.approx(3.0 * b * math.sqrt(2.0 / 3.0), rel=1e-12)
    assert ellipse.orientation_deg == pytest.approx(expected_deg, abs=ANGLE_TOL_DEG)


def test_three_sigma_holds_98_9_percent_of_a_gaussian() -> None:
    # chi-square, 2 dof: P(d^2 <= 9) = 1 - exp(-9/2) = 0.98889. With 20,000
    # points the share inside has a standard deviation of 0.00074; 0.003 is 4 of them.
    rng = np.random.default_rng(20240625)
    sigma_major, sigma_minor, theta = 2_000.0, 700.0, math.radians(65.0)
    along = rng.normal(0.0, sigma_major, 20_000)
    across = rng.normal(0.0, sigma_minor, 20_000)
    east = along * math.sin(theta) + across * math.cos(theta)
    north = along * math.cos(theta) - across * math.sin(theta)
    ellipse = dispersion_ellipse(east, north)
    assert ellipse.containment == pytest.approx(1.0 - math.exp(-4.5), abs=1e-15)
    assert ellipse.semi_major == pytest.approx(3 * sigma_major, rel=0.02)
    assert ellipse.semi_minor == pytest.approx(3 * sigma_minor, rel=0.02)
    assert ellipse.orientation_deg == pytest.approx(65.0, abs=1.0)
    o = math.radians(ellipse.orientation_deg)
    de, dn = east - ellipse.centre_east, north - ellipse.centre_north
    u = de * math.sin(o) + dn * math.cos(o)
    v = de * math.cos(o) - dn * math.sin(o)
    inside = (u / ellipse.semi_major) ** 2 + (v / ellipse.semi_minor) ** 2 <= 1.0
    assert float(inside.mean()) == pytest.approx(0.98889, abs=0.003)


def test_the_outline_reaches_the_semi_axes() -> None:
    ellipse = dispersion_ellipse(*_cross(300.0, 100.0, 40.0, (10.0, 20.0)))
    east, north = ellipse_outline(ellipse, points=3601)
    r = np.hypot(east - 10.0, north - 20.0)
    assert float(r.max()) == pytest.approx(ellipse.semi_major, rel=1e-6)
    assert float(r.min()) == pytest.approx(ellipse.semi_minor, rel=1e-6)
    far = int(np.argmax(r))
    bearing = math.degrees(math.atan2(east[far] - 10.0, north[far] - 20.0)) % 180.0
    assert bearing == pytest.approx(40.0, abs=0.1)


def test_too_few_points_give_no_ellipse() -> None:
    with pytest.raises(StatsError, match="at least 3 points"):
        dispersion_ellipse([1.0, 2.0, math.nan], [1.0, 3.0, 5.0])


# --- local east/north on a sphere -------------------------------------------------------


def _destination(lat_deg: float, lon_deg: float, bearing_deg: float, distance_m: float,
                 radius_m: float) -> tuple[float, float]:
    """The point ``distance_m`` along the great circle leaving at ``bearing_deg``
    (the direct problem on a sphere; Williams, Aviation Formulary)."""
    p1, l1 = math.radians(lat_deg), math.radians(lon_deg)
    th, d = math.radians(bearing_deg), distance_m / radius_m
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(th))
    l2 = l1 + math.atan2(math.sin(th) * math.sin(d) * math.cos(p1),
                         math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), math.degrees(l2)


CENTRES = [
    pytest.param(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, R_MOON_M + LANDING_SITE_HEIGHT_M,
                 id="LROC site"),
    pytest.param(AIM_LAT_DEG, AIM_LON_DEG, EARTH_MEAN_RADIUS_M, id="Siziwang"),
]


@pytest.mark.parametrize(("lat0", "lon0", "radius_m"), CENTRES)
@pytest.mark.parametrize(("bearing_deg", "distance_m"), [
    (0.0, 1_000.0), (90.0, 1_000.0), (137.0, 2_500.0), (251.0, 40_000.0), (333.0, 80_000.0),
])
def test_east_north_keeps_distance_and_bearing(lat0: float, lon0: float, radius_m: float,
                                               bearing_deg: float, distance_m: float) -> None:
    lat, lon = _destination(lat0, lon0, bearing_deg, distance_m, radius_m)
    east, north = east_north_m([lat], [lon], lat0, lon0, radius_m)
    b = math.radians(bearing_deg)
    assert float(east[0]) == pytest.approx(distance_m * math.sin(b), abs=POSITION_TOL_M)
    assert float(north[0]) == pytest.approx(distance_m * math.cos(b), abs=POSITION_TOL_M)
    # and the plane's distance is the haversine great-circle distance
    arc_m = radius_m * central_angle_rad(lat0, lon0, lat, lon)
    assert math.hypot(float(east[0]), float(north[0])) == pytest.approx(arc_m,
                                                                         abs=POSITION_TOL_M)


@pytest.mark.parametrize(("lat0", "lon0", "radius_m"), CENTRES)
def test_lat_lon_inverts_east_north(lat0: float, lon0: float, radius_m: float) -> None:
    east = np.array([0.0, 500.0, -30_000.0, 12_345.0])
    north = np.array([0.0, -800.0, 45_000.0, -67_890.0])
    lat, lon = lat_lon_deg(east, north, lat0, lon0, radius_m)
    back_e, back_n = east_north_m(lat, lon, lat0, lon0, radius_m)
    np.testing.assert_allclose(back_e, east, atol=POSITION_TOL_M)
    np.testing.assert_allclose(back_n, north, atol=POSITION_TOL_M)


def test_a_missing_position_stays_missing() -> None:
    east, north = east_north_m([math.nan, AIM_LAT_DEG], [math.nan, AIM_LON_DEG], AIM_LAT_DEG,
                               AIM_LON_DEG, EARTH_MEAN_RADIUS_M)
    assert math.isnan(east[0]) and math.isnan(north[0])
    assert float(east[1]) == pytest.approx(0.0, abs=POSITION_TOL_M)
    assert float(north[1]) == pytest.approx(0.0, abs=POSITION_TOL_M)
