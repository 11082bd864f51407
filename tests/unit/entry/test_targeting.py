"""Shooting targeting of the trans-lunar and trans-Earth legs, full force model.

Authority: the CE-6 timeline (reference change6-mission.md): separation
2024-05-03T10:04Z, LOI 2024-05-08T02:12Z into a ~200 km perilune, retrograde
parking orbit (inclination 137 deg); two TEI burns and one correction; entry
interface ~120 km at ~11 km/s at 2024-06-25T05:41Z; touchdown 06:07 at
Siziwang. Tolerances: perilune altitude 5 km and time 1 min;
EI altitude 1 km, flight-path angle 0.2 deg, time 1 min (the EI time is fixed
by construction, so the check is on the state at that time).

Every check re-flies the solver's answer with `propagate` on its own, so a
solver that reports a converged residual it did not reach fails here.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from numpy.typing import NDArray

from services.dynamics import change6, frames
from services.dynamics.burns import ImpulsiveBurn
from services.dynamics.constants import R_EARTH_EQ_M, R_MOON_M
from services.dynamics.entry import entry_state_from_eci, simulate_entry
from services.dynamics.ephemeris import get_ephemeris
from services.dynamics.propagate import ForceModel, propagate
from services.dynamics.targeting import (
    EntryInterfaceTarget,
    LunarArrival,
    LunarArrivalTarget,
    TeiPlan,
    entry_interface_state,
    fly_home,
    parking_orbit_for_return,
    plan_tcm,
    plan_tei,
    plan_tei_detailed,
    plan_tli,
)
from services.dynamics.timescale import mission_s_from_utc
from tests.authorities import EI_UTC, LOI_UTC, REAL_UTC, SEPARATION_UTC

Vec = NDArray[np.float64]
Vec3 = tuple[float, float, float]

T_SEP_S = mission_s_from_utc(SEPARATION_UTC)
T_LOI_S = mission_s_from_utc(LOI_UTC)
T_EI_S = mission_s_from_utc(EI_UTC)
#: The 200 km, 137 deg lunar parking orbit (reference, "Parking orbit").
PARKING_ALT_M = 200_000.0
PARKING_INCLINATION_DEG = 137.0
PERILUNE_ALT_TOL_M = 5_000.0
PERILUNE_TIME_TOL_S = 60.0
EI_ALT_TOL_M = 1_000.0
EI_FPA_TOL_DEG = 0.2
EI_CROSSRANGE_TOL_DEG = 0.1  # ~11 km sideways at the site; entry guidance steers out more


@cache
def tli() -> LunarArrival:
    return plan_tli(arrival_target())


def arrival_target() -> LunarArrivalTarget:
    return change6.lunar_arrival_target(T_SEP_S, T_LOI_S)


def _closest_approach(arr: LunarArrival, tgt: LunarArrivalTarget) -> tuple[float, float, Vec3]:
    """Independent re-flight: Earth-centred to 2 h before LOI, then 5 s samples about the Moon."""
    t_a = tgt.t_perilune_s - 2.0 * 3600.0
    r, v = propagate(
        arr.r_sep_eci_m, arr.v_sep_eci_m_s, tgt.t_sep_s, t_a - tgt.t_sep_s, ForceModel("earth")
    )
    r, v = frames.mci_from_eci_state(r, v, t_a)
    best = (math.inf, t_a, (0.0, 0.0, 0.0))
    t = t_a
    model = ForceModel("moon")
    while t < tgt.t_perilune_s + 2.0 * 3600.0:
        r, v = propagate(r, v, t, 5.0, model)
        t += 5.0
        d = float(np.linalg.norm(r))
        if d < best[0]:
            best = (d, t, (float(v[0]), float(v[1]), float(v[2])))
    return best[0] - R_MOON_M, best[1], best[2]


def test_tli_reaches_a_200_km_perilune_at_the_loi_time() -> None:
    alt_m, t_s, _ = _closest_approach(tli(), arrival_target())
    assert alt_m == pytest.approx(PARKING_ALT_M, abs=PERILUNE_ALT_TOL_M)
    assert t_s == pytest.approx(T_LOI_S, abs=PERILUNE_TIME_TOL_S)


def test_tli_arrives_retrograde() -> None:
    arr = tli()
    pole = frames.moon_pole_mci(arr.t_perilune_s)
    h = np.cross(arr.r_perilune_mci_m, arr.v_perilune_mci_m_s)
    inc_deg = math.degrees(math.acos(float(h @ pole / np.linalg.norm(h))))
    assert inc_deg == pytest.approx(PARKING_INCLINATION_DEG, abs=1.0)


def test_tli_separation_state_is_a_trans_lunar_perigee() -> None:
    arr = tli()
    alt = float(np.linalg.norm(arr.r_sep_eci_m)) - R_EARTH_EQ_M
    speed = float(np.linalg.norm(arr.v_sep_eci_m_s))
    fpa = math.degrees(
        math.asin(float(arr.r_sep_eci_m @ arr.v_sep_eci_m_s) / (alt + R_EARTH_EQ_M) / speed)
    )
    assert alt == pytest.approx(200_000.0, abs=1.0)
    # vis-viva to lunar distance from 200 km: 10.9 km/s; a 4.7-day transfer is near it
    assert 10_850.0 <= speed <= 10_980.0
    assert abs(fpa) < 1.0


@cache
def tei_case() -> tuple[EntryInterfaceTarget, TeiPlan, Vec, Vec, float]:
    tgt = change6.entry_interface_target(T_EI_S)
    t_s = mission_s_from_utc("2024-06-19T12:00:00Z")
    r0, v0 = parking_orbit_for_return(tgt, t_s, PARKING_INCLINATION_DEG, PARKING_ALT_M)
    return tgt, plan_tei_detailed(r0, v0, t_s, tgt), r0, v0, t_s


def _fly_plan(r0: Vec, v0: Vec, t_s: float, plan: TeiPlan, t_end: float) -> tuple[Vec, Vec]:
    """Execute the burns on a fresh propagation and fly to t_end (ECI)."""
    moon = ForceModel("moon")
    r, v, t = r0, v0, t_s
    for burn in plan.burns:
        r, v = propagate(r, v, t, burn.t_s - t, moon)
        v, t = v + burn.dv_mci_m_s, burn.t_s
    return fly_home(r, v, t, t_end)


def test_tei_reaches_the_entry_interface() -> None:
    tgt, plan, r0, v0, t_s = tei_case()
    r, v = _fly_plan(r0, v0, t_s, plan, tgt.t_ei_s)
    ei = entry_interface_state(r, v, tgt.t_ei_s, tgt.site)
    assert tgt.t_ei_s == T_EI_S
    assert ei.altitude_m == pytest.approx(120_000.0, abs=EI_ALT_TOL_M)
    assert ei.fpa_deg == pytest.approx(tgt.fpa_deg, abs=EI_FPA_TOL_DEG)
    assert abs(ei.crossrange_deg) < EI_CROSSRANGE_TOL_DEG
    # "close to second cosmic velocity" (Xinhua)
    assert 10_900.0 <= float(np.linalg.norm(v)) <= 11_100.0


def test_tei_burns_are_two_and_plausible() -> None:
    tgt, plan, r0, v0, t_s = tei_case()
    tei1, tei2 = plan.burns
    assert (tei1.label, tei2.label) == ("TEI-1", "TEI-2")
    assert t_s < tei1.t_s < tei2.t_s < tgt.t_ei_s - 3.0 * 86_400.0
    # TEI-1 raises 200 km circular to 200 x 5,000 km: vis-viva gives 392 m/s
    assert tei1.dv_m_s == pytest.approx(392.0, abs=5.0)
    # a periapsis departure with v_inf ~0.9 km/s from that ellipse costs ~0.4-0.5 km/s
    assert 300.0 <= tei2.dv_m_s <= 700.0
    # TEI-2 at the perilune of the TEI-1 ellipse: 200 km altitude
    r = _fly_to(r0, v0, t_s, tei1, tei2.t_s)
    assert float(np.linalg.norm(r)) - R_MOON_M == pytest.approx(200_000.0, abs=20_000.0)


def _fly_to(r0: Vec, v0: Vec, t_s: float, burn: ImpulsiveBurn, t_end: float) -> Vec:
    moon = ForceModel("moon")
    r, v = propagate(r0, v0, t_s, burn.t_s - t_s, moon)
    r, _ = propagate(r, v + burn.dv_mci_m_s, burn.t_s, t_end - burn.t_s, moon)
    return r


def test_entry_interface_is_over_the_arabian_sea_with_the_site_ahead() -> None:
    _, plan, _, _, _ = tei_case()
    ei = plan.entry
    # the return geometry (Moon at dec -27 deg on 06-21) puts the EI ~25 deg
    # before the anti-Moon point: Arabian Sea, with Siziwang 4,000-7,000 km ahead
    assert 5.0 <= ei.lat_deg <= 30.0
    assert 45.0 <= ei.lon_deg <= 80.0
    assert 4_000_000.0 <= ei.range_to_site_m <= 7_000_000.0


def test_tei_public_signature_returns_the_same_burns() -> None:
    tgt, plan, r0, v0, t_s = tei_case()
    burns = plan_tei((r0, v0), t_s, tgt)
    assert [b.label for b in burns] == ["TEI-1", "TEI-2"]
    assert burns[1].t_s == pytest.approx(plan.burns[1].t_s, abs=1e-3)


def test_tcm_removes_a_tei_execution_error() -> None:
    tgt, plan, r0, v0, t_s = tei_case()
    t_tcm = tgt.t_ei_s - 2.0 * 86_400.0
    r, v = _fly_plan(r0, v0, t_s, plan, t_tcm)
    # 5 cm/s of error one day after TEI grows to many km at EI
    v_err = v + np.array([0.05, -0.03, 0.02])
    r_bad, v_bad = propagate(r, v_err, t_tcm, tgt.t_ei_s - t_tcm, ForceModel("earth"))
    bad = entry_interface_state(r_bad, v_bad, tgt.t_ei_s, tgt.site)
    assert (
        abs(bad.fpa_deg - tgt.fpa_deg) > EI_FPA_TOL_DEG
        or abs(bad.altitude_m - 120e3) > EI_ALT_TOL_M
    )
    dv = plan_tcm((r, v_err), t_tcm, tgt)
    r_ok, v_ok = propagate(r, v_err + dv, t_tcm, tgt.t_ei_s - t_tcm, ForceModel("earth"))
    ok = entry_interface_state(r_ok, v_ok, tgt.t_ei_s, tgt.site)
    assert ok.altitude_m == pytest.approx(120_000.0, abs=EI_ALT_TOL_M)
    assert ok.fpa_deg == pytest.approx(tgt.fpa_deg, abs=EI_FPA_TOL_DEG)
    assert float(np.linalg.norm(dv)) < 1.0  # CE-5's return TCMs: 2 x 25 N for 8-28 s


def test_targeted_return_lands_at_siziwang_on_time() -> None:
    _, plan, _, _, _ = tei_case()
    ei = plan.entry
    state = entry_state_from_eci(ei.r_eci_m, ei.v_eci_m_s, ei.t_s, change6.RETURNER,
                                 change6.SIZIWANG)
    res = simulate_entry(state, dt_s=1.0)
    assert res.miss_m < 10_000.0
    assert "skip_out" in res.events
    landing = res.events["earth_landing"]
    assert landing == pytest.approx(mission_s_from_utc(REAL_UTC["earth_landing"]), abs=300.0)


def test_moon_far_from_earth_at_loi() -> None:
    # guards the epoch bookkeeping the targets rely on (DE421: 363-406 Mm)
    d = float(np.linalg.norm(get_ephemeris().moon_eci_m(T_LOI_S)))
    assert 356e6 < d < 407e6
