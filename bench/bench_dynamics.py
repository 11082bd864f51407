"""Speed of the flight-dynamics core. Prints a table; asserts nothing.

Run: ``.venv/bin/python bench/bench_dynamics.py [--quick]``

The headline row is the issue's target: a 13-day perturbed lunar coast
(200 km circular, i = 137 deg; Moon point mass + J2 + Earth + Sun) within
10 m of a tight-tolerance reference in under 1 s of CPU. ``--quick`` skips
the slow scipy baseline (DOP853 with DE421 evaluated in every RHS call).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.integrate import solve_ivp

from services.dynamics.constants import DAY_S, GM_MOON_M3_S2, R_MOON_M
from services.dynamics.ephemeris import get_ephemeris, get_fast_ephemeris
from services.dynamics.kepler import Elements, propagate_kepler, rv_from_elements
from services.dynamics.propagate import (
    ForceModel,
    Propagator,
    accel,
    accel_direct,
    propagate,
)
from services.dynamics.timescale import mission_s_from_utc

Vec = NDArray[np.float64]
LUNAR = ForceModel("moon")
T0_S = mission_s_from_utc("2024-05-08T02:12:00Z")  # LOI
COAST_S = 13.0 * DAY_S


def _cpu(func: Callable[[], object]) -> tuple[float, object]:
    start = time.process_time()
    out = func()
    return time.process_time() - start, out


def _rate(func: Callable[[], object], n: int) -> float:
    cpu, _ = _cpu(lambda: [func() for _ in range(n)])
    return n / cpu


def _orbit() -> tuple[Vec, Vec]:
    el = Elements(R_MOON_M + 200e3, 0.0, math.radians(137.0), 0.3, 0.0, 0.0)
    return rv_from_elements(el, GM_MOON_M3_S2)


def _row(name: str, value: str, note: str = "") -> None:
    print(f"| {name:<52} | {value:>14} | {note:<44} |")


def _scipy_baseline(r0: Vec, v0: Vec, rtol: float) -> tuple[float, Vec, int]:
    def rhs(t: float, y: Vec) -> Vec:
        return np.concatenate([y[3:], accel_direct(y[:3], t, LUNAR)])

    cpu, sol = _cpu(
        lambda: solve_ivp(
            rhs,
            (T0_S, T0_S + COAST_S),
            np.concatenate([r0, v0]),
            method="DOP853",
            rtol=rtol,
            atol=1e-6,
        )
    )
    return cpu, sol.y[:3, -1], sol.nfev  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="skip the slow scipy baseline")
    args = parser.parse_args()
    r0, v0 = _orbit()
    # Warm the shared tables so their one-off fit is reported separately.
    fit_cpu, _ = _cpu(lambda: propagate(r0, v0, T0_S, 60.0, LUNAR))

    print(f"| {'measure':<52} | {'value':>14} | {'note':<44} |")
    print(f"|{'-' * 54}|{'-' * 16}|{'-' * 46}|")
    _row(
        "one-off fit of perturber table (first call), CPU s",
        f"{fit_cpu:.3f}",
        "DE421 + IAU poles, 2-day segments",
    )
    _row(
        "Kepler propagations / s",
        f"{_rate(lambda: propagate_kepler(r0, v0, 5_000.0, GM_MOON_M3_S2), 2_000):,.0f}",
        "universal variables",
    )
    _row(
        "DE421 direct Moon positions / s",
        f"{_rate(lambda: get_ephemeris().moon_eci_m(T0_S), 2_000):,.0f}",
        "jplephem, scalar",
    )
    _row(
        "Chebyshev Moon positions / s",
        f"{_rate(lambda: get_fast_ephemeris().moon_eci_m(T0_S), 2_000):,.0f}",
        "refit, scalar",
    )
    _row(
        "accel() calls / s (public, numpy)",
        f"{_rate(lambda: accel(r0, T0_S, LUNAR), 2_000):,.0f}",
        "not the integrator's path",
    )

    # Headline: 13-day perturbed coast, default tolerance vs tight reference.
    prop = Propagator(LUNAR)
    start = time.process_time()
    r_fast, _ = prop.step(r0, v0, T0_S, COAST_S)
    cpu_fast = time.process_time() - start
    tight = Propagator(LUNAR, rtol=1e-13)
    start = time.process_time()
    r_tight, _ = tight.step(r0, v0, T0_S, COAST_S)
    cpu_tight = time.process_time() - start
    err_m = float(np.linalg.norm(r_fast - r_tight))
    _row("13-day perturbed lunar coast, CPU s (rtol 1e-10)", f"{cpu_fast:.3f}", "TARGET < 1 s")
    _row("  error vs rtol 1e-13 reference, m", f"{err_m:.3f}", "TARGET <= 10 m")
    _row("  integrator steps", f"{prop.steps:,}", f"{prop.steps * 12:,} RHS evaluations")
    _row("  steps / CPU s", f"{prop.steps / cpu_fast:,.0f}", "DOP853, 12 RHS per step")
    _row("  mission days / CPU s", f"{13.0 / cpu_fast:.1f}", "200 km, i = 137 deg")
    _row("  reference run (rtol 1e-13), CPU s", f"{cpu_tight:.3f}", f"{tight.steps:,} steps")

    # The clock's view: 60 s steps over one day, step size kept between calls.
    clock = Propagator(LUNAR)

    def one_day_in_minutes() -> None:
        r, v, t = r0, v0, T0_S
        for _ in range(1_440):
            r, v = clock.step(r, v, t, 60.0)
            t += 60.0

    cpu_clock, _ = _cpu(one_day_in_minutes)
    _row(
        "1 day in 60 s clock steps, CPU s",
        f"{cpu_clock:.3f}",
        f"{clock.steps:,} steps for 1,440 calls",
    )
    cpu_30, _ = _cpu(lambda: propagate(r0, v0, T0_S, 30.0 * DAY_S, LUNAR))
    _row("30-day orbiter coast, CPU s", f"{cpu_30:.3f}", "whole-mission lunar-orbit share")

    if not args.quick:
        cpu_base, r_base, nfev = _scipy_baseline(r0, v0, rtol=1e-9)
        _row(
            "baseline: scipy DOP853 rtol 1e-9 + DE421 per RHS, CPU s",
            f"{cpu_base:.2f}",
            f"{nfev:,} RHS evaluations",
        )
        _row(
            "  baseline error vs rtol 1e-13 reference, m",
            f"{float(np.linalg.norm(r_base - r_tight)):.3f}",
            "independent integrator and ephemeris path",
        )
        _row("  speed-up of the fast path", f"{cpu_base / cpu_fast:.1f}x", "")


if __name__ == "__main__":
    main()
