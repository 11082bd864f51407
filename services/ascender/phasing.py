"""The ascender's plans: ascent plane, four phasing burns, the aim point, deorbit.

The orbiter's state is the OR stack's at the LA stack's separation, which the
lander forwards in the ascender's hand-over, predicted with the full lunar
force model: the orbiter coasts from separation until its closing approach
(no burn in between), so the prediction is what it flies. Phasing uses
``guidance.rendezvous.plan_phasing`` (two-body) for M1-M3 with an aim-time
window, and re-plans M4 on board as a Lambert arc shot through the perturbed
model onto the aim point (50 km ahead of and 10 km above the orbiter,
reference timeline rows 20-21), which also removes what J2 and the Earth did
to M1-M3.

Deorbit (choice; the CE-6 ascender's impact point is unpublished, CE-5's
was near 30 S, 0 E): at the next apolune after the command, a retrograde
horizontal burn puts perilune 30 km below the 1,737.4 km sphere, so the
ascender hits the surface in the following half revolution at a shallow
angle, well away from the CE-6 landing site.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from services.dynamics.burns import rtn_basis
from services.dynamics.constants import GM_MOON_M3_S2, R_MOON_M
from services.dynamics.guidance.loi import horizontal_burn, time_to_true_anomaly_s
from services.dynamics.guidance.rendezvous import plan_phasing
from services.kernel.onboard import PlannedBurn, Vec, planned, predict, shoot_lambert

MU = GM_MOON_M3_S2
AHEAD_M = 50e3
ABOVE_M = 10e3
DEORBIT_PERILUNE_M = R_MOON_M - 30e3


# Predictions days ahead restart from states on this grid (see KnownState.at).
GRID_S = 6 * 3_600.0


@dataclass(frozen=True)
class KnownState:
    """A body's MCI state at a time (what the ascender knows of the orbiter)."""

    r_mci_m: Vec
    v_mci_m_s: Vec
    t_s: float
    # node k: the state predicted at t_s + k GRID_S, each from node k - 1
    _grid: dict[int, tuple[Vec, Vec]] = field(default_factory=dict, compare=False, repr=False)

    def at(self, t_s: float) -> tuple[Vec, Vec]:
        """The state predicted at t_s, from the last grid node before it.

        The plans ask for the orbiter 2 days ahead several times; with the
        nodes kept each asks for at most GRID_S of new flight. A node depends
        only on the known state (never on which calls came first), so a
        restored core predicts exactly the same."""
        k = math.floor((t_s - self.t_s) / GRID_S)
        if k <= 0:
            return predict(self.r_mci_m, self.v_mci_m_s, self.t_s, t_s)
        r, v = self._node(k)
        return predict(r, v, self.t_s + k * GRID_S, t_s)

    def _node(self, k: int) -> tuple[Vec, Vec]:
        j = max((i for i in self._grid if i <= k), default=0)
        r, v = self._grid[j] if j else (self.r_mci_m, self.v_mci_m_s)
        for i in range(j + 1, k + 1):
            r, v = predict(r, v, self.t_s + (i - 1) * GRID_S, self.t_s + i * GRID_S)
            self._grid[i] = (r, v)
        return r, v

    def normal_at(self, t_s: float) -> Vec:
        r, v = self.at(t_s)
        h = np.cross(r, v)
        result: Vec = h / np.linalg.norm(h)
        return result


def aim_point(orbiter: KnownState, t_s: float) -> Vec:
    """The aim point in MCI: ``AHEAD_M`` along-track, ``ABOVE_M`` radial."""
    r_o, v_o = orbiter.at(t_s)
    result: Vec = r_o + rtn_basis(r_o, v_o).T @ np.array([ABOVE_M, AHEAD_M, 0.0])
    return result


def relative_lvlh(orbiter: KnownState, r_m: Vec, t_s: float) -> Vec:
    """Ascender position in the orbiter's (radial, along-track, normal) frame."""
    r_o, v_o = orbiter.at(t_s)
    result: Vec = rtn_basis(r_o, v_o) @ (r_m - r_o)
    return result


def plan_four_burns(r_m: Vec, v_m_s: Vec, t_s: float, orbiter: KnownState,
                    aim_after_s: float, aim_before_s: float) -> tuple[list[PlannedBurn], float]:
    r_o, v_o = orbiter.at(t_s)
    burns, t_aim = plan_phasing(r_m, v_m_s, r_o, v_o, t_s, ahead_m=AHEAD_M, above_m=ABOVE_M,
                                min_duration_s=aim_after_s - t_s,
                                max_duration_s=aim_before_s - t_s)
    return [planned(b.t_s, b.dv_mci_m_s, f"phasing-{i + 1}") for i, b in enumerate(burns)], t_aim


def replan_trim(r_m: Vec, v_m_s: Vec, t_s: float, orbiter: KnownState, t_aim_s: float
                ) -> PlannedBurn:
    v_new = shoot_lambert(r_m, v_m_s, t_s, aim_point(orbiter, t_aim_s), t_aim_s)
    return planned(t_s, v_new - v_m_s, "phasing-4")


def plan_deorbit(r_m: Vec, v_m_s: Vec, t_s: float) -> PlannedBurn:
    dt = time_to_true_anomaly_s(r_m, v_m_s, math.pi)
    r1, v1 = predict(r_m, v_m_s, t_s, t_s + dt)
    burn = horizontal_burn(r1, v1, t_s + dt, DEORBIT_PERILUNE_M, "deorbit")
    return planned(burn.t_s, burn.dv_mci_m_s, "deorbit")


def impact_time_s(r_m: Vec, v_m_s: Vec, t_s: float, surface_radius_m: float = R_MOON_M,
                  scan_s: float = 60.0, max_s: float = 3 * 86_400.0) -> float:
    """First time the coasting body reaches ``surface_radius_m`` (to ~1 ms)."""
    lo, r, v = t_s, r_m, v_m_s
    while lo - t_s < max_s:
        r_next, v_next = predict(r, v, lo, lo + scan_s)
        if float(np.linalg.norm(r_next)) <= surface_radius_m:
            a, b = lo, lo + scan_s
            while b - a > 1e-3:
                mid = 0.5 * (a + b)
                r_mid, _ = predict(r, v, lo, mid)
                a, b = (mid, b) if float(np.linalg.norm(r_mid)) > surface_radius_m else (a, mid)
            return b
        lo, r, v = lo + scan_s, r_next, v_next
    raise ValueError("the orbit does not reach the surface")
