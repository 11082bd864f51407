"""The OR's closing approach on the ascender, as the active chaser.

From the aim point (the ascender ~50 km ahead and ~10 km above) three
Clohessy-Wiltshire legs (``guidance.rendezvous.plan_closing_leg``) bring the
OR to hold points 5 km, 1 km and 100 m behind the ascender on V-bar; each
leg is planned from the tracked states at its start and ends with a burn
that cancels the relative velocity actually reached (as
``fly_closing_legs`` does in two-body). Then the step-wise V-bar controller
(``approach_step``) closes to capture.

Leg times (fractions of the ascender's period, ~2.1 h): 0.35, 0.2, 0.15
instead of the library's 0.45/0.3/0.25, so that docking falls about 1.5 h
after the aim point (reference: aim point ~05:30, docking 06:48 UTC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from services.dynamics.burns import rtn_basis
from services.dynamics.constants import GM_MOON_M3_S2
from services.dynamics.guidance.rendezvous import (
    DEFAULT_HOLD_POINTS_M,
    ApproachConfig,
    ApproachState,
    approach_step,
    lvlh_relative,
    plan_closing_leg,
)
from services.dynamics.kepler import elements_from_rv, propagate_kepler
from services.orbiter.flight import Vec, vec

LEG_FRACTIONS = (0.35, 0.2, 0.15)
HOLDS_M = DEFAULT_HOLD_POINTS_M
APPROACH = ApproachConfig()


@dataclass
class Target:
    """The ascender's last reported state (MCI)."""

    r_m: Vec
    v_m_s: Vec
    t_s: float
    mass_kg: float

    def at(self, t_s: float) -> tuple[Vec, Vec]:
        """Its state at ``t_s``, two-body from the last report when that is older."""
        if abs(t_s - self.t_s) < 1e-9:
            return self.r_m.copy(), self.v_m_s.copy()
        return propagate_kepler(self.r_m, self.v_m_s, t_s - self.t_s, GM_MOON_M3_S2)


def period_s(r_m: Vec, v_m_s: Vec) -> float:
    a = elements_from_rv(r_m, v_m_s, GM_MOON_M3_S2).a_m
    return 2.0 * math.pi * math.sqrt(a**3 / GM_MOON_M3_S2)


def leg_departure(rt: Vec, vt: Vec, rc: Vec, vc: Vec, t_s: float, leg: int) -> tuple[Vec, float]:
    """Departure delta-v (MCI) of CW leg ``leg`` and its arrival time."""
    tof = LEG_FRACTIONS[leg] * period_s(rt, vt)
    burns = plan_closing_leg(rt, vt, rc, vc, t_s, HOLDS_M[leg], tof)
    return burns[0].dv_mci_m_s, t_s + tof


def stop_dv(rt: Vec, vt: Vec, rc: Vec, vc: Vec) -> Vec:
    """Delta-v (MCI) that cancels the chaser's velocity relative to the target's LVLH."""
    _, rel_v = lvlh_relative(rt, vt, rc, vc)
    out: Vec = rtn_basis(rt, vt).T @ -rel_v
    return out


def relative(rt: Vec, vt: Vec, rc: Vec, vc: Vec) -> tuple[Vec, Vec]:
    return lvlh_relative(rt, vt, rc, vc)


def terminal_step(
    target: Target, rc: Vec, vc: Vec, mass_kg: float, t_from: float, t_to: float,
    thrust_scale: float = 1.0,
) -> tuple[Vec, Vec, float, bool, float, Vec, Vec]:
    """Terminal V-bar approach over one clock step.

    Returns (r, v, mass, captured, thrust_n, rel_r, rel_v) of the chaser.
    """
    rt, vt = target.at(t_from)
    cfg = APPROACH
    if thrust_scale < 1.0:
        cfg = replace(cfg, max_thrust_n=max(1e-6, cfg.max_thrust_n * thrust_scale))
    state = ApproachState(t_from, rt, vt, rc, vc, mass_kg)
    state, out = approach_step(state, t_to - t_from, cfg)
    captured = "capture" in out.events
    rel_r, rel_v = out.rel_r_m, out.rel_v_m_s
    if state.capture_rel_m is not None:  # report the claws' view, not the ride after
        rel_r, rel_v = vec(state.capture_rel_m[0]), vec(state.capture_rel_m[1])
    return (np.asarray(state.r_chaser_m), np.asarray(state.v_chaser_m_s),
            state.chaser_mass_kg, captured, out.thrust_n, rel_r, rel_v)
