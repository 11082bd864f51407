"""Propellant, sunlight, solar power and battery."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.dynamics.comms import landing_site_mci_m
from services.dynamics.constants import AU_M, GM_MOON_M3_S2, R_MOON_M
from services.dynamics.ephemeris import get_ephemeris
from services.dynamics.frames import eci_from_mci
from services.dynamics.kepler import Elements, period_s, propagate_kepler, rv_from_elements
from services.dynamics.power import (
    Battery,
    PropellantError,
    PropellantTank,
    battery_step,
    solar_power_w,
    sun_visible_fraction,
)
from services.dynamics.timescale import mission_s_from_utc

TOUCHDOWN_S = mission_s_from_utc("2024-06-01T22:23:16Z")


def test_tank_draw_respects_reserve() -> None:
    tank = PropellantTank("lander", capacity_kg=100.0, mass_kg=100.0, reserve_kg=10.0)
    tank = tank.draw(85.0)
    assert tank.mass_kg == pytest.approx(15.0)
    with pytest.raises(PropellantError) as err:
        tank.draw(6.0)
    assert err.value.available_kg == pytest.approx(5.0)
    assert tank.draw(6.0, use_reserve=True).in_reserve
    with pytest.raises(ValueError, match=">= 0"):
        tank.draw(-1.0)
    with pytest.raises(ValueError, match="outside"):
        PropellantTank("bad", capacity_kg=1.0, mass_kg=2.0)


def test_battery_charges_with_efficiency_and_clamps() -> None:
    batt = Battery(
        capacity_wh=100.0, charge_wh=50.0, charge_efficiency=0.9, discharge_efficiency=0.8
    )
    step = battery_step(batt, power_in_w=200.0, load_w=100.0, dt_s=1_800.0)  # +50 Wh in
    assert step.battery.charge_wh == pytest.approx(95.0)
    full = battery_step(step.battery, power_in_w=200.0, load_w=100.0, dt_s=3_600.0)
    assert full.battery.charge_wh == pytest.approx(100.0)
    assert full.spilled_wh == pytest.approx(100.0 - 5.0 / 0.9)
    drain = battery_step(batt, power_in_w=0.0, load_w=100.0, dt_s=3_600.0)  # needs 125 Wh
    assert drain.battery.charge_wh == 0.0
    assert drain.unmet_load_wh == pytest.approx((125.0 - 50.0) * 0.8)
    assert drain.battery.soc == 0.0


def test_landing_site_lit_after_touchdown_dark_two_weeks_later() -> None:
    # CE-6 landed in the lunar morning and worked ~2 days on the surface
    # (reference timeline rows 14-19); lunar day is ~14.8 Earth days.
    for t_s in (TOUCHDOWN_S, TOUCHDOWN_S + 2.0 * 86_400.0):
        site = eci_from_mci(landing_site_mci_m(t_s), t_s)
        assert sun_visible_fraction(site, t_s) == 1.0
    t_night = TOUCHDOWN_S + 14.0 * 86_400.0
    assert sun_visible_fraction(eci_from_mci(landing_site_mci_m(t_night), t_night), t_night) == 0.0


def test_lunar_orbit_eclipse_fraction_matches_cylinder_model() -> None:
    # Cylindrical-shadow eclipse fraction of a circular orbit with beta angle
    # b: acos(sqrt(1 - (R/r)^2) / cos b) / pi (Vallado 2013, sec. 5.3).
    # The conical penumbra changes it by < 0.5 % of the orbit.
    t0 = TOUCHDOWN_S
    a_m = R_MOON_M + 200e3
    r0, v0 = rv_from_elements(Elements(a_m, 0.0, math.radians(137.0), 0.3, 0.0, 0.0), GM_MOON_M3_S2)
    sun_dir = get_ephemeris().sun_mci_m(t0)
    sun_dir /= np.linalg.norm(sun_dir)
    h = np.cross(r0, v0)
    beta = math.asin(float(h @ sun_dir) / float(np.linalg.norm(h)))
    expected = math.acos(math.sqrt(1.0 - (R_MOON_M / a_m) ** 2) / math.cos(beta)) / math.pi
    times = np.arange(0.0, period_s(a_m, GM_MOON_M3_S2), 20.0)
    lit = [
        sun_visible_fraction(
            eci_from_mci(propagate_kepler(r0, v0, dt, GM_MOON_M3_S2)[0], t0 + dt), t0 + dt
        )
        for dt in times
    ]
    assert 1.0 - float(np.mean(lit)) == pytest.approx(expected, abs=0.01)
    assert any(0.0 < f < 1.0 for f in lit)  # penumbra is resolved


def test_solar_power_scales_with_distance_and_incidence() -> None:
    t_s = TOUCHDOWN_S
    sun = get_ephemeris().sun_eci_m(t_s)
    point = sun * 0.0 + np.array([0.0, 0.0, 5e8])  # well away from both shadows
    d = float(np.linalg.norm(sun - point))
    assert solar_power_w(1_000.0, point, t_s) == pytest.approx(1_000.0 * (AU_M / d) ** 2, rel=1e-12)
    assert solar_power_w(1_000.0, point, t_s, cos_incidence=-0.5) == 0.0
