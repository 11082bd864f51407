"""Cost of the guidance loops: microseconds per step and whole-phase wall time.

Run: .venv/bin/python bench/bench_guidance.py
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from services.dynamics import frames
from services.dynamics.burns import execute_impulsive
from services.dynamics.constants import (
    GM_MOON_M3_S2,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    MISSION_EPOCH_UTC,
    R_MOON_M,
)
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import ascent as asc
from services.dynamics.guidance import descent as dsc
from services.dynamics.guidance import rendezvous as rz
from services.dynamics.guidance.loi import plane_normal_over_site
from services.dynamics.kepler import Elements, propagate_kepler, rv_from_elements

T_PDI_S = (datetime(2024, 6, 1, 22, 9, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()
T_LIFTOFF_S = (datetime(2024, 6, 3, 23, 38, 10, tzinfo=UTC) - MISSION_EPOCH_UTC).total_seconds()


T = TypeVar("T")


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_descent() -> None:
    state = dsc.nominal_ignition_state(T_PDI_S)
    cfg = dsc.DescentConfig(rotation=MoonRotation.at(state.t_s))
    wall, res = _timed(lambda: dsc.simulate_descent(state, cfg))
    print(
        f"descent : {wall * 1e6 / res.steps:8.1f} us/step (1 s steps, 0.2 s sub-steps), "
        f"whole descent {wall:.2f} s wall for {res.duration_s:.0f} s flown; "
        f"miss {res.miss_distance_m:.1f} m, {res.propellant_left_kg:.0f} kg left, "
        f"touchdown {res.touchdown_v_m_s[0]:.2f}/{res.touchdown_v_m_s[1]:.3f} m/s (v/h)"
    )


def bench_ascent() -> None:
    site_f = frames.moon_fixed_from_selenographic(
        LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, LANDING_SITE_HEIGHT_M
    )
    t = T_LIFTOFF_S + 200.0
    normal = plane_normal_over_site(
        frames.mci_from_moon_fixed(site_f, t), frames.moon_pole_mci(t), math.radians(137.0)
    )
    cfg = asc.AscentConfig(rotation=MoonRotation.at(T_LIFTOFF_S), target_normal_mci=normal)
    state = asc.AscentState.on_pad(T_LIFTOFF_S, cfg)
    wall, res = _timed(lambda: asc.simulate_ascent(state, cfg))
    print(
        f"ascent  : {wall * 1e6 / res.steps:8.1f} us/step, whole ascent {wall:.2f} s wall for "
        f"{res.burn_s:.0f} s burn; orbit {res.perilune_height_m / 1e3:.1f} x "
        f"{res.apolune_height_m / 1e3:.1f} km, {res.propellant_left_kg:.0f} kg left"
    )


def bench_rendezvous() -> None:
    mu = GM_MOON_M3_S2
    inc = math.radians(137.0)
    a_asc = R_MOON_M + 97.5e3
    r_a, v_a = rv_from_elements(Elements(a_asc, 165e3 / (2 * a_asc), inc, 1.0, 0.3, 0.0), mu)
    r_o, v_o = rv_from_elements(Elements(R_MOON_M + 200e3, 0.0, inc, 1.0, 0.0, 0.9), mu)
    wall_plan, out = _timed(lambda: rz.plan_phasing(r_a, v_a, r_o, v_o, 0.0))
    burns, t_aim = out
    ra, va = execute_impulsive(r_a, v_a, 0.0, burns, t_aim)
    ro, vo = propagate_kepler(r_o, v_o, t_aim, mu)
    wall_legs, legs = _timed(lambda: rz.fly_closing_legs(ra, va, ro, vo, t_aim))
    t1, (rt, vt, rc, vc), _ = legs
    state = rz.ApproachState(t1, rt, vt, rc, vc, 2_500.0)
    wall, fin = _timed(lambda: rz.simulate_approach(state, rz.ApproachConfig()))
    _, _, steps = fin
    dv = sum(b.dv_m_s for b in burns)
    print(
        f"phasing : plan {wall_plan * 1e3:.1f} ms "
        f"(4 burns, {dv:.1f} m/s, aim at +{t_aim / 3600:.1f} h); "
        f"closing legs {wall_legs * 1e3:.1f} ms"
    )
    print(
        f"approach: {wall * 1e6 / steps:8.1f} us/step, {steps} s from the 100 m hold to capture, "
        f"{wall:.2f} s wall"
    )


def bench_lambert() -> None:
    r1, r2 = [5000e3, 10000e3, 2100e3], [-14600e3, 2500e3, 7000e3]
    n = 2_000
    wall, _ = _timed(lambda: [rz.lambert(r1, r2, 3600.0, 398_600e9) for _ in range(n)])
    print(f"lambert : {wall * 1e6 / n:8.1f} us/solve")


if __name__ == "__main__":
    bench_descent()
    bench_ascent()
    bench_rendezvous()
    bench_lambert()
