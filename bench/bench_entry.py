"""Cost of the re-entry guidance and of the targeting solves.

Prints: entry step cost (us per 1 s clock step, overall and in guided
flight), whole-entry wall time, and wall time and Newton iterations of the
TLI, TEI and TCM solves. Run: .venv/bin/python bench/bench_entry.py
"""

from __future__ import annotations

import time

import numpy as np
import orjson

from services.dynamics import change6
from services.dynamics.entry import (
    EntryPhase,
    bearing_deg,
    entry_state_from_geodetic,
    simulate_entry,
    site_point,
    step,
)
from services.dynamics.guidance.loi import PARKING_HEIGHT_M, PARKING_INCLINATION_DEG
from services.dynamics.propagate import ForceModel, propagate
from services.dynamics.targeting import (
    fly_home,
    parking_orbit_for_return,
    plan_tcm,
    plan_tei_detailed,
    plan_tli,
)
from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import NOMINAL_PLAN

#: The nominal plan's dates: separation (its first item) and the LOI and EI facts.
_PLAN = orjson.loads(NOMINAL_PLAN.read_bytes())
T_SEP_S = mission_s_from_utc(_PLAN["items"][0]["at"])
T_LOI_S = mission_s_from_utc(_PLAN["facts"]["loi_utc"])
T_EI_S = mission_s_from_utc(_PLAN["facts"]["ei_utc"])


def bench_entry_steps() -> None:
    tgt = change6.SIZIWANG
    lat, lon = site_point(tgt.lat_deg, tgt.lon_deg, 5_400_000.0, 240.0)
    state = entry_state_from_geodetic(
        0.0, lat, lon, 120_000.0, 11_000.0, -6.4, bearing_deg(lat, lon, tgt.lat_deg, tgt.lon_deg),
        change6.RETURNER, tgt,
    )
    guided_s, guided_n, all_s, all_n = 0.0, 0, 0.0, 0
    while state.phase is not EntryPhase.LANDED:
        lifting = state.phase in (EntryPhase.FIRST_ENTRY, EntryPhase.SECOND_ENTRY)
        t0 = time.perf_counter()
        state, _ = step(state, 1.0)
        dt = time.perf_counter() - t0
        all_s, all_n = all_s + dt, all_n + 1
        if lifting:
            guided_s, guided_n = guided_s + dt, guided_n + 1
    print(f"entry step (1 s clock)      : {1e6 * all_s / all_n:9.1f} us/step over {all_n} steps")
    guided_us = 1e6 * guided_s / guided_n
    print(f"entry step, guided flight   : {guided_us:9.1f} us/step over {guided_n} steps")
    print(f"predictor runs              : {state.guidance.predictions}")
    t0 = time.perf_counter()
    lat, lon = site_point(tgt.lat_deg, tgt.lon_deg, 5_400_000.0, 240.0)
    res = simulate_entry(
        entry_state_from_geodetic(
            0.0,
            lat,
            lon,
            120_000.0,
            11_000.0,
            -6.4,
            bearing_deg(lat, lon, tgt.lat_deg, tgt.lon_deg),
            change6.RETURNER,
            tgt,
        )
    )
    wall = time.perf_counter() - t0
    flight = res.events["earth_landing"] - res.events["entry_interface"]
    print(
        f"whole entry simulation      : {wall:9.3f} s wall for {flight / 60:.1f} min of flight, "
        f"miss {res.miss_m / 1e3:.2f} km, peak {res.peak_decel_g:.1f} g, "
        f"{res.peak_heat_flux_w_m2 / 1e6:.2f} MW/m^2"
    )


def bench_targeting() -> None:
    # warm the ephemeris tables so the first solve is not charged for them
    propagate(np.array([7e6, 0, 0]), np.array([0, 7.5e3, 0]), 0.0, 60.0, ForceModel("earth"))
    t0 = time.perf_counter()
    arr = plan_tli(change6.lunar_arrival_target(T_SEP_S, T_LOI_S))
    wall = time.perf_counter() - t0
    print(
        f"TLI solve                   : {wall:9.3f} s, {arr.iterations} iterations, "
        f"perilune {arr.perilune_alt_m / 1e3:.2f} km, i {arr.inclination_deg:.2f} deg"
    )
    tgt = change6.entry_interface_target(T_EI_S)
    t_s = mission_s_from_utc("2024-06-19T12:00:00Z")
    r0, v0 = parking_orbit_for_return(tgt, t_s, PARKING_INCLINATION_DEG, PARKING_HEIGHT_M)
    t0 = time.perf_counter()
    plan = plan_tei_detailed(r0, v0, t_s, tgt)
    wall = time.perf_counter() - t0
    dv = " + ".join(f"{b.dv_m_s:.1f}" for b in plan.burns)
    print(
        f"TEI solve (2 burns)         : {wall:9.3f} s, {plan.iterations} iterations, "
        f"dv {dv} m/s, EI {plan.entry.altitude_m / 1e3:.2f} km {plan.entry.fpa_deg:.3f} deg"
    )
    t_tcm = tgt.t_ei_s - 2.0 * 86_400.0
    moon = ForceModel("moon")
    r, v, t = r0, v0, t_s
    for burn in plan.burns:
        r, v = propagate(r, v, t, burn.t_s - t, moon)
        v, t = v + burn.dv_mci_m_s, burn.t_s
    r, v = fly_home(r, v, t, t_tcm)
    t0 = time.perf_counter()
    dv_tcm = plan_tcm((r, v + np.array([0.05, -0.03, 0.02])), t_tcm, tgt)
    print(
        f"TCM solve                   : {time.perf_counter() - t0:9.3f} s, "
        f"dv {np.linalg.norm(dv_tcm) * 100:.1f} cm/s"
    )


if __name__ == "__main__":
    bench_entry_steps()
    bench_targeting()
