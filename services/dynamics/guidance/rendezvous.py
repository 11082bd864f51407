"""Rendezvous of the orbiter-returner (OR) with the ascender in lunar orbit.

Reference (timeline rows 20-21): after ascent the ascender made 4 orbit
adjustments that left it ~50 km ahead of and ~10 km above the OR; the OR
then closed in by short-range autonomous control and captured the ascender
with three K-shaped claws gripping three rods.

Pieces:

* :func:`lambert` - universal-variable Lambert solver (Bate, Mueller & White
  1971 sec. 5.3; Vallado 2013 alg. 58), single revolution, bisection on psi.
* :func:`lvlh_relative` - relative state in the target's LVLH (Hill) frame:
  x radial (up), y along-track, z along the orbit normal.
* :func:`cw_transfer_dv` - two-impulse Clohessy-Wiltshire targeting.
* :func:`plan_phasing` - the ascender's four manoeuvres (phasing-orbit
  perilune change, two-burn Hohmann to the aim orbit, Lambert trim onto the
  aim point).
* :func:`plan_closing_leg` and a step-wise terminal controller
  (:func:`approach_step`) for the OR's closing approach along V-bar.

Capture criteria (:func:`capture_ok`; assumptions, the CE-5/6 mechanism
tolerances are unpublished): the claws close when the OR's capture ring is
within 0.30 m of the ascender's rods, with lateral (radial and
cross-track) offset <= 0.10 m, relative speed <= 0.05 m/s and lateral
speed <= 0.02 m/s. Docking-port offsets from the centres of mass are
folded into the relative state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.burns import ImpulsiveBurn, rk4_powered_step, rtn_basis
from services.dynamics.constants import GM_MOON_M3_S2
from services.dynamics.guidance.loi import (
    apsis_speed_m_s,
    horizontal_burn,
    time_to_true_anomaly_s,
)
from services.dynamics.kepler import elements_from_rv, propagate_kepler, stumpff_c2_c3
from services.dynamics.vec import cross, norm

__all__ = [
    "CAPTURE_LATERAL_M",
    "CAPTURE_LATERAL_SPEED_M_S",
    "CAPTURE_RANGE_M",
    "CAPTURE_SPEED_M_S",
    "ApproachConfig",
    "ApproachOutput",
    "ApproachState",
    "LambertError",
    "approach_step",
    "capture_ok",
    "cw_state_transition",
    "cw_transfer_dv",
    "fly_closing_legs",
    "inertial_from_lvlh",
    "lambert",
    "lvlh_relative",
    "plan_closing_leg",
    "plan_phasing",
    "plan_trim",
    "simulate_approach",
]

Vec = NDArray[np.float64]
MU = GM_MOON_M3_S2
_TWO_PI = 2.0 * math.pi

CAPTURE_RANGE_M = 0.30
CAPTURE_LATERAL_M = 0.10
CAPTURE_SPEED_M_S = 0.05
CAPTURE_LATERAL_SPEED_M_S = 0.02


class LambertError(ArithmeticError):
    """No single-revolution Lambert solution was found."""

    def __init__(self, tof_s: float, reason: str) -> None:
        super().__init__(f"Lambert failed for tof={tof_s} s: {reason}")
        self.tof_s = tof_s
        self.reason = reason


# --- Lambert ---------------------------------------------------------------


def lambert(
    r1_m: ArrayLike,
    r2_m: ArrayLike,
    tof_s: float,
    mu: float = MU,
    normal_hint: ArrayLike = (0.0, 0.0, 1.0),
) -> tuple[Vec, Vec]:
    """Velocities (v1, v2) of the single-revolution conic from r1 to r2 in
    ``tof_s``; the transfer's angular momentum points along ``normal_hint``
    (short way or long way is chosen to match it)."""
    r1v, r2v = np.asarray(r1_m, dtype=np.float64), np.asarray(r2_m, dtype=np.float64)
    r1, r2 = norm(r1v), norm(r2v)
    cos_dnu = max(-1.0, min(1.0, float(r1v @ r2v) / (r1 * r2)))
    short_way = float(cross(r1v, r2v) @ np.asarray(normal_hint, dtype=np.float64)) >= 0.0
    a_coef = (1.0 if short_way else -1.0) * math.sqrt(r1 * r2 * (1.0 + cos_dnu))
    if abs(a_coef) < 1e-9 * (r1 + r2):
        raise LambertError(tof_s, "r1 and r2 are 180 deg apart: the transfer plane is undefined")
    sqmu = math.sqrt(mu)
    lo, hi = -4.0 * math.pi, 4.0 * math.pi * math.pi
    y = 0.0
    for _ in range(200):
        psi = 0.5 * (lo + hi)
        c2, c3 = stumpff_c2_c3(psi)
        y = r1 + r2 + a_coef * (psi * c3 - 1.0) / math.sqrt(c2)
        if y < 0.0:
            lo = psi
            continue
        chi = math.sqrt(y / c2)
        dt = (chi**3 * c3 + a_coef * math.sqrt(y)) / sqmu
        lo, hi = (psi, hi) if dt <= tof_s else (lo, psi)
        if abs(dt - tof_s) < 1e-9 * max(tof_s, 1.0):
            break
    else:
        raise LambertError(tof_s, "bisection on psi did not converge")
    f = 1.0 - y / r1
    g = a_coef * math.sqrt(y / mu)
    g_dot = 1.0 - y / r2
    return (r2v - f * r1v) / g, (g_dot * r2v - r1v) / g


# --- LVLH and Clohessy-Wiltshire -------------------------------------------


def _lvlh(r_t: Vec, v_t: Vec) -> tuple[Vec, Vec]:
    """(basis rows x=R, y=T, z=N; angular velocity of the frame in LVLH)."""
    basis = rtn_basis(r_t, v_t)
    h = norm(cross(r_t, v_t))
    return basis, np.array([0.0, 0.0, h / float(r_t @ r_t)])


def lvlh_relative(
    r_t: ArrayLike, v_t: ArrayLike, r_c: ArrayLike, v_c: ArrayLike
) -> tuple[Vec, Vec]:
    """Chaser position and velocity relative to the target, in the target's
    rotating LVLH frame (x radial up, y along-track, z orbit normal)."""
    rt, vt = np.asarray(r_t, dtype=np.float64), np.asarray(v_t, dtype=np.float64)
    basis, omega = _lvlh(rt, vt)
    rel_r: Vec = basis @ (np.asarray(r_c, dtype=np.float64) - rt)
    rel_v: Vec = basis @ (np.asarray(v_c, dtype=np.float64) - vt) - cross(omega, rel_r)
    return rel_r, rel_v


def inertial_from_lvlh(
    r_t: ArrayLike, v_t: ArrayLike, rel_r: ArrayLike, rel_v: ArrayLike
) -> tuple[Vec, Vec]:
    """Inverse of :func:`lvlh_relative`: the chaser's inertial state."""
    rt, vt = np.asarray(r_t, dtype=np.float64), np.asarray(v_t, dtype=np.float64)
    basis, omega = _lvlh(rt, vt)
    rr = np.asarray(rel_r, dtype=np.float64)
    rv = np.asarray(rel_v, dtype=np.float64) + cross(omega, rr)
    r_c: Vec = rt + basis.T @ rr
    v_c: Vec = vt + basis.T @ rv
    return r_c, v_c


def cw_state_transition(n_rad_s: float, t_s: float) -> Vec:
    """6x6 Clohessy-Wiltshire state transition (x radial, y along, z normal)."""
    s, c, nt = math.sin(n_rad_s * t_s), math.cos(n_rad_s * t_s), n_rad_s * t_s
    n = n_rad_s
    return np.array(
        [
            [4 - 3 * c, 0, 0, s / n, 2 * (1 - c) / n, 0],
            [6 * (s - nt), 1, 0, 2 * (c - 1) / n, (4 * s - 3 * nt) / n, 0],
            [0, 0, c, 0, 0, s / n],
            [3 * n * s, 0, 0, c, 2 * s, 0],
            [6 * n * (c - 1), 0, 0, -2 * s, 4 * c - 3, 0],
            [0, 0, -n * s, 0, 0, c],
        ]
    )


def cw_transfer_dv(
    rel_r0: ArrayLike,
    rel_v0: ArrayLike,
    rel_r_target: ArrayLike,
    tof_s: float,
    n_rad_s: float,
    rel_v_target: ArrayLike = (0.0, 0.0, 0.0),
) -> tuple[Vec, Vec]:
    """Two CW impulses (LVLH) that take the chaser from (r0, v0) to
    ``rel_r_target`` in ``tof_s`` and leave it with ``rel_v_target``."""
    phi = cw_state_transition(n_rad_s, tof_s)
    r0 = np.asarray(rel_r0, dtype=np.float64)
    miss = np.asarray(rel_r_target, dtype=np.float64) - phi[:3, :3] @ r0
    v_needed = np.asarray(np.linalg.solve(phi[:3, 3:], miss), dtype=np.float64)
    v_arrive = phi[3:, :3] @ r0 + phi[3:, 3:] @ v_needed
    dv1: Vec = v_needed - np.asarray(rel_v0, dtype=np.float64)
    dv2: Vec = np.asarray(rel_v_target, dtype=np.float64) - v_arrive
    return dv1, dv2


def capture_ok(rel_r: ArrayLike, rel_v: ArrayLike) -> bool:
    """True when the claws can close (criteria in the module docstring)."""
    rr, rv = np.asarray(rel_r, dtype=np.float64), np.asarray(rel_v, dtype=np.float64)
    return bool(
        np.linalg.norm(rr) <= CAPTURE_RANGE_M
        and math.hypot(rr[0], rr[2]) <= CAPTURE_LATERAL_M
        and np.linalg.norm(rv) <= CAPTURE_SPEED_M_S
        and math.hypot(rv[0], rv[2]) <= CAPTURE_LATERAL_SPEED_M_S
    )


# --- phasing (the ascender's four manoeuvres) ------------------------------


def _period(a_m: float) -> float:
    return _TWO_PI * math.sqrt(a_m**3 / MU)


def _angle(ref: Vec, vec: Vec, normal: Vec) -> float:
    """Angle from ``ref`` to ``vec`` about ``normal`` in [0, 2 pi)."""
    return math.atan2(float(cross(ref, vec) @ normal), float(ref @ vec)) % _TWO_PI


def _aim_point(r_o: Vec, v_o: Vec, ahead_m: float, above_m: float) -> tuple[Vec, Vec]:
    """Aim position (target LVLH offset) and a circular velocity there."""
    basis = rtn_basis(r_o, v_o)
    r_aim: Vec = r_o + basis.T @ np.array([above_m, ahead_m, 0.0])
    h_hat = basis[2]
    speed = math.sqrt(MU / norm(r_aim))
    v_dir = cross(h_hat, r_aim)
    v_aim: Vec = speed * v_dir / np.linalg.norm(v_dir)
    return r_aim, v_aim


def plan_phasing(
    r_asc_m: ArrayLike,
    v_asc_m_s: ArrayLike,
    r_orb_m: ArrayLike,
    v_orb_m_s: ArrayLike,
    t_s: float,
    *,
    ahead_m: float = 50e3,
    above_m: float = 10e3,
    max_duration_s: float = 2.5 * 86_400.0,
    min_perilune_radius_m: float = 1_737_400.0 + 30e3,
    min_duration_s: float = 0.0,
) -> tuple[list[ImpulsiveBurn], float]:
    """The ascender's four manoeuvres and the time they deliver it to the aim
    point ``ahead_m`` along-track of and ``above_m`` above the orbiter.

    M1 at the next apolune sets the perilune of a phasing orbit whose period
    is solved so that, after k revolutions, M2 (there: raise the opposite
    apsis to the aim radius) and M3 (half a transfer later: circularise)
    arrive with the right phase; the cheapest (k, period) whose aim time
    falls between ``min_duration_s`` and ``max_duration_s`` from now wins
    (the reachable aim times are one orbiter period apart, so give a window
    at least that wide). M4, a fifth of a revolution later, is a Lambert
    trim onto the exact aim point 0.3 revolution ahead, absorbing the
    eccentricities the analytic phasing neglects. Two-body (Kepler).
    """
    ra, va = np.asarray(r_asc_m, dtype=np.float64), np.asarray(v_asc_m_s, dtype=np.float64)
    ro, vo = np.asarray(r_orb_m, dtype=np.float64), np.asarray(v_orb_m_s, dtype=np.float64)
    el_o = elements_from_rv(ro, vo, MU)
    normal = cross(ra, va)
    normal /= np.linalg.norm(normal)
    n_o = _TWO_PI / _period(el_o.a_m)
    # M1 at the ascender's apolune.
    dt1 = time_to_true_anomaly_s(ra, va, math.pi)
    r1, v1 = propagate_kepler(ra, va, dt1, MU)
    t1 = t_s + dt1
    r_apo = norm(r1)
    ro1, _ = propagate_kepler(ro, vo, dt1, MU)
    r_c = math.hypot(el_o.a_m + above_m, ahead_m)
    n_c = _TWO_PI / _period(r_c)
    t_transfer = 0.5 * _period(0.5 * (r_apo + r_c))
    t_c = _period(r_c)
    trim_after, trim_tof = 0.2 * t_c, 0.3 * t_c
    phi_aim = math.atan2(ahead_m, el_o.a_m + above_m)
    phi3 = phi_aim + (n_o - n_c) * (trim_after + trim_tof)
    big_c = (_angle(r1, ro1, normal) * -1.0 + math.pi - n_o * t_transfer - phi3) % _TWO_PI
    period_lo = _period(0.5 * (r_apo + min_perilune_radius_m))
    period_hi = _period(0.5 * (r_apo + r_c + 200e3))
    v_now = norm(v1)
    best: tuple[float, float, int] | None = None
    for k in range(1, 200):
        for j in range(0, 400):
            period = (big_c + _TWO_PI * j) / (n_o * k)
            if period > period_hi:
                break
            duration = dt1 + k * period + t_transfer + trim_after + trim_tof
            if period < period_lo or not min_duration_s <= duration <= max_duration_s:
                continue
            rp1 = 2.0 * (MU * (period / _TWO_PI) ** 2) ** (1.0 / 3.0) - r_apo
            cost = _phasing_cost(v_now, r_apo, rp1, r_c)
            if best is None or cost < best[0]:
                best = (cost, period, k)
    if best is None:
        raise ValueError("no phasing orbit fits the perilune floor and the time allowed")
    _, period, k = best
    rp1 = 2.0 * (MU * (period / _TWO_PI) ** 2) ** (1.0 / 3.0) - r_apo
    m1 = horizontal_burn(r1, v1, t1, rp1, "phasing-1")
    v1 = v1 + m1.dv_mci_m_s
    t2 = t1 + k * _period(elements_from_rv(r1, v1, MU).a_m)
    r2, v2 = propagate_kepler(r1, v1, t2 - t1, MU)
    m2 = horizontal_burn(r2, v2, t2, r_c, "phasing-2")
    v2 = v2 + m2.dv_mci_m_s
    t3 = t2 + 0.5 * _period(elements_from_rv(r2, v2, MU).a_m)
    r3, v3 = propagate_kepler(r2, v2, t3 - t2, MU)
    m3 = horizontal_burn(r3, v3, t3, norm(r3), "phasing-3")
    v3 = v3 + m3.dv_mci_m_s
    t4, t_aim = t3 + trim_after, t3 + trim_after + trim_tof
    r4, v4 = propagate_kepler(r3, v3, trim_after, MU)
    r_o4, v_o4 = propagate_kepler(ro, vo, t4 - t_s, MU)
    m4 = plan_trim(r4, v4, r_o4, v_o4, t4, t_aim, ahead_m=ahead_m, above_m=above_m)
    return [m1, m2, m3, m4], t_aim


def plan_trim(
    r_asc_m: ArrayLike,
    v_asc_m_s: ArrayLike,
    r_orb_m: ArrayLike,
    v_orb_m_s: ArrayLike,
    t_s: float,
    t_aim_s: float,
    *,
    ahead_m: float = 50e3,
    above_m: float = 10e3,
) -> ImpulsiveBurn:
    """Lambert burn now that puts the ascender on the aim point (``ahead_m``
    along-track, ``above_m`` radial in the orbiter's LVLH) at ``t_aim_s``.

    The fourth phasing manoeuvre; re-planned from tracked states it also
    removes what J2 and the Earth did to the first three.
    """
    ra, va = np.asarray(r_asc_m, dtype=np.float64), np.asarray(v_asc_m_s, dtype=np.float64)
    r_o_aim, v_o_aim = propagate_kepler(r_orb_m, v_orb_m_s, t_aim_s - t_s, MU)
    r_aim, _ = _aim_point(r_o_aim, v_o_aim, ahead_m, above_m)
    v_new, _ = lambert(ra, r_aim, t_aim_s - t_s, MU, cross(ra, va))
    return ImpulsiveBurn(t_s, v_new - va, "phasing-4")


def _phasing_cost(v_now: float, r_apo: float, rp1: float, r_c: float) -> float:
    """Delta-v of M1 + M2 + M3 for a phasing perilune ``rp1`` (apsis speeds)."""
    v_phase = apsis_speed_m_s(r_apo, rp1)
    v_transfer = apsis_speed_m_s(r_apo, r_c)
    v_arrive = apsis_speed_m_s(r_c, r_apo)
    return abs(v_phase - v_now) + abs(v_transfer - v_phase) + abs(math.sqrt(MU / r_c) - v_arrive)


# --- closing approach ------------------------------------------------------


def _mean_motion(r_t: Vec, v_t: Vec) -> float:
    return _TWO_PI / _period(elements_from_rv(r_t, v_t, MU).a_m)


def plan_closing_leg(
    r_t: ArrayLike,
    v_t: ArrayLike,
    r_c: ArrayLike,
    v_c: ArrayLike,
    t_s: float,
    rel_r_target: ArrayLike,
    tof_s: float,
) -> list[ImpulsiveBurn]:
    """Two CW impulses (as inertial burns on the chaser) for one leg of the
    closing approach to a hold point ``rel_r_target`` in the target's LVLH.

    The arrival burn is computed from the CW prediction; executed from the
    real (nonlinear) state it leaves a residual that the next leg absorbs.
    """
    rt, vt = np.asarray(r_t, dtype=np.float64), np.asarray(v_t, dtype=np.float64)
    rel_r, rel_v = lvlh_relative(rt, vt, r_c, v_c)
    dv1, dv2 = cw_transfer_dv(rel_r, rel_v, rel_r_target, tof_s, _mean_motion(rt, vt))
    basis0 = rtn_basis(rt, vt)
    rt2, vt2 = propagate_kepler(rt, vt, tof_s, MU)
    basis2 = rtn_basis(rt2, vt2)
    return [
        ImpulsiveBurn(t_s, basis0.T @ dv1, "closing-departure"),
        ImpulsiveBurn(t_s + tof_s, basis2.T @ dv2, "closing-arrival"),
    ]


# Hold points on -V-bar (behind the target) and leg times as fractions of the
# target's period: the OR closes from ~50 km to 100 m in three CW legs.
DEFAULT_HOLD_POINTS_M: tuple[tuple[float, float, float], ...] = (
    (0.0, -5_000.0, 0.0),
    (0.0, -1_000.0, 0.0),
    (0.0, -100.0, 0.0),
)
DEFAULT_LEG_FRACTIONS = (0.45, 0.3, 0.25)


def fly_closing_legs(
    r_t: ArrayLike,
    v_t: ArrayLike,
    r_c: ArrayLike,
    v_c: ArrayLike,
    t_s: float,
    hold_points_m: tuple[tuple[float, float, float], ...] = DEFAULT_HOLD_POINTS_M,
    leg_fractions: tuple[float, ...] = DEFAULT_LEG_FRACTIONS,
) -> tuple[float, tuple[Vec, Vec, Vec, Vec], list[ImpulsiveBurn]]:
    """Plan and fly (two-body) the CW legs to each hold point in turn, each
    leg re-planned from the state the previous one really reached.

    Returns (time, (r_t, v_t, r_c, v_c) at the last hold point, burns).
    """
    rt, vt = np.asarray(r_t, dtype=np.float64), np.asarray(v_t, dtype=np.float64)
    rc, vc = np.asarray(r_c, dtype=np.float64), np.asarray(v_c, dtype=np.float64)
    period = _TWO_PI / _mean_motion(rt, vt)
    burns: list[ImpulsiveBurn] = []
    for hold, frac in zip(hold_points_m, leg_fractions, strict=True):
        tof = frac * period
        leg = plan_closing_leg(rt, vt, rc, vc, t_s, hold, tof)
        vc = vc + leg[0].dv_mci_m_s
        rt, vt = propagate_kepler(rt, vt, tof, MU)
        rc, vc = propagate_kepler(rc, vc, tof, MU)
        # Arrival burn from the real relative state: stop on the hold point.
        _, rel_v = lvlh_relative(rt, vt, rc, vc)
        stop = ImpulsiveBurn(t_s + tof, rtn_basis(rt, vt).T @ -rel_v, "closing-arrival")
        vc = vc + stop.dv_mci_m_s
        burns += [leg[0], stop]
        t_s += tof
    return t_s, (rt, vt, rc, vc), burns


@dataclass(frozen=True)
class ApproachConfig:
    """Terminal approach along V-bar (chaser behind the target, closing on +y).

    OR thrust: assumption, ~100 N of translation thrusters on a ~2,500 kg
    orbiter-returner (CE-5's OR carried 150 N and 25 N thrusters, reference
    (b)); modelled as continuous, proportional thrust.
    """

    max_thrust_n: float = 100.0
    v_e_m_s: float = 2_800.0
    closing_gain_1_s: float = 0.01  # closing speed = gain * range ...
    max_closing_m_s: float = 0.5  # ... capped here ...
    min_closing_m_s: float = 0.03  # ... and floored here (below the capture speed)
    lateral_gain_1_s: float = 0.02
    velocity_gain_1_s: float = 0.2
    substep_s: float = 1.0


@dataclass(frozen=True)
class ApproachState:
    """Both vehicles in MCI; the chaser (OR) thrusts, the target coasts."""

    t_s: float
    r_target_m: Vec = field(compare=False)
    v_target_m_s: Vec = field(compare=False)
    r_chaser_m: Vec = field(compare=False)
    v_chaser_m_s: Vec = field(compare=False)
    chaser_mass_kg: float
    phase: str = "closing"  # closing | captured
    capture_rel_m: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None


@dataclass(frozen=True)
class ApproachOutput:
    t_s: float
    phase: str
    thrust_n: float
    thrust_dir_mci: Vec = field(compare=False)
    rel_r_m: Vec = field(compare=False)
    rel_v_m_s: Vec = field(compare=False)
    events: tuple[str, ...]


def _approach_accel_lvlh(rel_r: Vec, rel_v: Vec, n: float, cfg: ApproachConfig) -> Vec:
    """Velocity-tracking law with the CW accelerations cancelled."""
    rng = norm(rel_r)
    closing = min(cfg.max_closing_m_s, max(cfg.min_closing_m_s, cfg.closing_gain_1_s * rng))
    v_ref = np.array([-cfg.lateral_gain_1_s * rel_r[0], closing, -cfg.lateral_gain_1_s * rel_r[2]])
    if rel_r[1] > 0.0:  # past the target along-track: back off towards it
        v_ref[1] = -closing
    natural = np.array(
        [3 * n * n * rel_r[0] + 2 * n * rel_v[1], -2 * n * rel_v[0], -n * n * rel_r[2]]
    )
    result: Vec = cfg.velocity_gain_1_s * (v_ref - rel_v) - natural
    return result


def approach_step(
    state: ApproachState, dt_s: float, cfg: ApproachConfig
) -> tuple[ApproachState, ApproachOutput]:
    """Advance the terminal approach; capture is checked every sub-step."""
    events: list[str] = []
    t_end = state.t_s + dt_s
    thrust, dir_mci = 0.0, np.zeros(3)
    while t_end - state.t_s > 1e-9:
        h = min(cfg.substep_s, t_end - state.t_s)
        rel_r, rel_v = lvlh_relative(
            state.r_target_m, state.v_target_m_s, state.r_chaser_m, state.v_chaser_m_s
        )
        if state.phase == "closing" and capture_ok(rel_r, rel_v):
            events.append("capture")
            rel = (_triple(rel_r), _triple(rel_v))
            state = replace(state, phase="captured", capture_rel_m=rel)
        if state.phase == "captured":  # one body from now on: the chaser rides with the target
            thrust_vec = np.zeros(3)
        else:
            n = _mean_motion(state.r_target_m, state.v_target_m_s)
            a_lvlh = _approach_accel_lvlh(rel_r, rel_v, n, cfg)
            a_max = cfg.max_thrust_n / state.chaser_mass_kg
            mag = norm(a_lvlh)
            if mag > a_max:
                a_lvlh *= a_max / mag
            thrust_vec = rtn_basis(state.r_target_m, state.v_target_m_s).T @ (
                a_lvlh * state.chaser_mass_kg
            )
        thrust = norm(thrust_vec)
        dir_mci = thrust_vec / thrust if thrust > 0.0 else np.zeros(3)
        rt, vt, _ = rk4_powered_step(
            state.r_target_m, state.v_target_m_s, 1.0, h, np.zeros(3), cfg.v_e_m_s
        )
        if state.phase == "captured":
            rc, vc, mc = rt, vt, state.chaser_mass_kg
        else:
            rc, vc, mc = rk4_powered_step(
                state.r_chaser_m,
                state.v_chaser_m_s,
                state.chaser_mass_kg,
                h,
                thrust_vec,
                cfg.v_e_m_s,
            )
        state = replace(
            state,
            t_s=state.t_s + h,
            r_target_m=rt,
            v_target_m_s=vt,
            r_chaser_m=rc,
            v_chaser_m_s=vc,
            chaser_mass_kg=mc,
        )
    rel_r, rel_v = lvlh_relative(
        state.r_target_m, state.v_target_m_s, state.r_chaser_m, state.v_chaser_m_s
    )
    return state, ApproachOutput(
        state.t_s, state.phase, thrust, dir_mci, rel_r, rel_v, tuple(events)
    )


def _triple(vec: Vec) -> tuple[float, float, float]:
    return float(vec[0]), float(vec[1]), float(vec[2])


def simulate_approach(
    state: ApproachState, cfg: ApproachConfig, dt_s: float = 1.0, max_duration_s: float = 7_200.0
) -> tuple[ApproachState, ApproachOutput, int]:
    """Loop :func:`approach_step` until capture (state, last output, steps);
    the relative state at capture is in ``state.capture_rel_m``."""
    t0 = state.t_s
    steps = 0
    while True:
        state, out = approach_step(state, dt_s, cfg)
        steps += 1
        if "capture" in out.events:
            return state, out, steps
        if state.t_s - t0 >= max_duration_s:
            raise RuntimeError(
                f"no capture within {max_duration_s} s: rel_r={out.rel_r_m}, rel_v={out.rel_v_m_s}"
            )
