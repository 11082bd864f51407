"""Planning of the orbiter's legs: pure functions of a state and a time.

* the separation state (``targeting.plan_tli``), cached per process because
  it is a deterministic function of its target (the plan's separation and LOI);
* cruise corrections that re-target the perilune (radius, inclination to the
  lunar equator, time) by Newton on the full force model;
* the orbit adjustments to the 200 km, 137 deg parking orbit whose plane
  holds the landing site at powered-descent initiation (PDI), aiming ahead of
  the J2 nodal drift between the adjustment and PDI;
* the plane for the return, the avoidance burn after returner separation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from services.dynamics import frames, targeting
from services.dynamics.burns import ImpulsiveBurn
from services.dynamics.comms import landing_site_mci_m
from services.dynamics.constants import (
    GM_EARTH_M3_S2,
    GM_MOON_M3_S2,
    J2_MOON,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.dynamics.guidance.loi import (
    PARKING_HEIGHT_M,
    PARKING_INCLINATION_DEG,
    plan_circularisation,
    plan_hohmann,
    plan_plane_change,
    plane_normal_over_site,
)
from services.dynamics.kepler import elements_from_rv, propagate_kepler
from services.dynamics.propagate import propagate
from services.dynamics.targeting import (
    EARTH_MODEL,
    MOON_MODEL,
    LunarArrival,
    LunarArrivalTarget,
    to_periapsis,
)
from services.orbiter.flight import Vec, unit, vec

PARKING_RADIUS_M = R_MOON_M + PARKING_HEIGHT_M
# Shape trims smaller than this are not worth a burn (m of apsis error).
SHAPE_TOLERANCE_M = 1_000.0
# The return plane is only flown to when it is this close (each degree costs
# ~28 m/s at 200 km; TEI can absorb the rest, at a higher TEI-2 delta-v).
MAX_RETURN_PLANE_CHANGE_DEG = 10.0
# Propagation tolerance of the predictions that aim the plane (cheaper than
# the 1e-10 of the flown trajectory): over the 12-22 days to PDI the orbit
# normal differs from the 1e-10 one by 2e-7 rad, 0.3 m at the site.
_PREDICT_RTOL = 1e-7
# The orbiter's perigee after the avoidance burn (well above the atmosphere).
AVOIDANCE_PERIGEE_ALT_M = 200_000.0


@lru_cache(maxsize=4)
def tli_solution(target: LunarArrivalTarget) -> LunarArrival:
    """Separation state aimed at the target's LOI perilune: a pure function of
    the target (~0.5 s), solved once per target in a process."""
    return targeting.plan_tli(target)


# --- cruise: perilune prediction and correction ---------------------------------------


@dataclass(frozen=True)
class Perilune:
    r_mci_m: Vec
    v_mci_m_s: Vec
    t_s: float

    @property
    def alt_m(self) -> float:
        return float(np.linalg.norm(self.r_mci_m)) - R_MOON_M

    @property
    def inclination_deg(self) -> float:
        return inclination_deg(self.r_mci_m, self.v_mci_m_s, self.t_s)


def inclination_deg(r_mci_m: Vec, v_mci_m_s: Vec, t_s: float) -> float:
    """Inclination to the lunar equator (> 90 deg retrograde)."""
    h_hat = unit(np.cross(r_mci_m, v_mci_m_s))
    return math.degrees(math.acos(float(np.clip(h_hat @ frames.moon_pole_mci(t_s), -1, 1))))


def predict_perilune(r_eci_m: Vec, v_eci_m_s: Vec, t_s: float, t_switch_s: float) -> Perilune:
    """Full-model free flight from an Earth-centred state to the next perilune."""
    r, v, t = r_eci_m, v_eci_m_s, t_s
    if t < t_switch_s:
        r, v = propagate(r, v, t, t_switch_s - t, EARTH_MODEL)
        t = t_switch_s
    r_m, v_m = frames.mci_from_eci_state(r, v, t)
    return Perilune(*to_periapsis(r_m, v_m, t, MOON_MODEL))


def plan_cruise_tcm(
    r_eci_m: Vec, v_eci_m_s: Vec, t_s: float, t_switch_s: float,
    t_perilune_s: float, alt_m: float, inc_deg: float,
) -> tuple[Vec, Perilune]:
    """Delta-v (ECI) now that restores the perilune altitude, inclination and time.

    Returns a zero vector when the prediction is already within tolerance
    (0.5 km, 0.02 deg, 5 s), so a correction on an on-track cruise costs nothing.
    """
    t_switch = t_switch_s
    want = np.array([alt_m, inc_deg, t_perilune_s])

    def residual(dv: Vec) -> Vec:
        p = predict_perilune(r_eci_m, v_eci_m_s + dv, t_s, t_switch)
        out: Vec = np.array([p.alt_m, p.inclination_deg, p.t_s]) - want
        return out

    scale = np.array([500.0, 0.02, 5.0])
    dv, _, _ = targeting.newton(residual, np.zeros(3), scale, np.full(3, 1e-3), 5.0, max_iter=15)
    return dv, predict_perilune(r_eci_m, v_eci_m_s + dv, t_s, t_switch)


# --- plane geometry about the lunar pole ------------------------------------------------


def _equator_basis(pole: Vec) -> tuple[Vec, Vec]:
    x = unit(np.cross([0.0, 0.0, 1.0], pole))
    return x, np.cross(pole, x)


def incl_node_rad(normal: Vec, pole: Vec) -> tuple[float, float]:
    """(inclination, ascending node) of a plane relative to the lunar equator."""
    x, y = _equator_basis(pole)
    node = np.cross(pole, normal)
    return (math.acos(float(np.clip(normal @ pole, -1.0, 1.0))),
            math.atan2(float(node @ y), float(node @ x)))


def normal_from(i_rad: float, node_rad: float, pole: Vec) -> Vec:
    x, y = _equator_basis(pole)
    w = math.sin(node_rad) * x - math.cos(node_rad) * y  # in the equator, 90 deg behind the node
    return unit(math.cos(i_rad) * pole + math.sin(i_rad) * w)


def node_rate_rad_s(a_m: float, e: float, i_rad: float) -> float:
    """Secular J2 regression of the node (Vallado 2013, eq. 9-41)."""
    n = math.sqrt(GM_MOON_M3_S2 / a_m**3)
    p = a_m * (1.0 - e * e)
    return -1.5 * n * J2_MOON * (R_MOON_M / p) ** 2 * math.cos(i_rad)


def site_normal(t_pdi_s: float, near: Vec) -> Vec:
    """Of the two 137 deg planes over the site at PDI, the one nearer ``near``."""
    site, pole = landing_site_mci_m(t_pdi_s), frames.moon_pole_mci(t_pdi_s)
    inc = math.radians(PARKING_INCLINATION_DEG)
    options = [plane_normal_over_site(site, pole, inc, nb) for nb in (True, False)]
    return max(options, key=lambda n: float(n @ near))


def site_offset_m(normal: Vec, t_s: float) -> float:
    """Distance of the landing site from a plane (through the Moon's centre)."""
    return float(landing_site_mci_m(t_s) @ normal)


# --- orbit adjustments -------------------------------------------------------------------


def _after(r: Vec, v: Vec, t: float, burns: list[ImpulsiveBurn]) -> tuple[Vec, Vec, float]:
    for b in burns:
        r, v = propagate_kepler(r, v, b.t_s - t, GM_MOON_M3_S2)
        v, t = v + b.dv_mci_m_s, b.t_s
    return r, v, t


def _shape_burns(stage: int, r: Vec, v: Vec, t: float) -> list[ImpulsiveBurn]:
    if stage == 1:
        return []
    if stage == 2:
        return plan_circularisation(r, v, t, "perilune")
    el = elements_from_rv(r, v, GM_MOON_M3_S2)
    rp, ra = el.a_m * (1.0 - el.e), el.a_m * (1.0 + el.e)
    if max(abs(rp - PARKING_RADIUS_M), abs(ra - PARKING_RADIUS_M)) < SHAPE_TOLERANCE_M:
        return []
    return plan_hohmann(r, v, t, PARKING_RADIUS_M)


def _stage_burns(stage: int, r: Vec, v: Vec, t: float, aim: Vec) -> list[ImpulsiveBurn]:
    burns = plan_plane_change(r, v, t, aim)
    r1, v1, t1 = _after(r, v, t, burns)
    return burns + _shape_burns(stage, r1, v1, t1)


def predicted_normal(r: Vec, v: Vec, t: float, burns: list[ImpulsiveBurn], t_end_s: float) -> Vec:
    """Orbit normal at ``t_end_s`` after the burns (full model from the last one)."""
    r1, v1, t1 = _after(r, v, t, burns)
    r2, v2 = propagate(r1, v1, t1, t_end_s - t1, MOON_MODEL, rtol=_PREDICT_RTOL)
    return unit(np.cross(r2, v2))


def plan_adjustment(
    stage: int, r: Vec, v: Vec, t: float, t_pdi_s: float
) -> list[ImpulsiveBurn]:
    """Burns (MCI) of one adjustment stage towards the parking orbit.

    1: plane change onto the aimed plane; 2: re-aim, then circularise at the
    next perilune (~200 km); 3, 4: re-aim, Hohmann trim to 200 km circular.
    The aim is the plane over the site at PDI turned back by the J2 drift
    (circular 200 km orbit); from stage 2 on, one full-model prediction to
    PDI corrects the node and inclination it reaches.
    """
    pole = frames.moon_pole_mci(t_pdi_s)
    n_site = site_normal(t_pdi_s, unit(np.cross(r, v)))
    i_site, node_site = incl_node_rad(n_site, pole)
    drift = node_rate_rad_s(PARKING_RADIUS_M, 0.0, i_site) * (t_pdi_s - t)
    i_aim, node_aim = i_site, node_site - drift
    burns = _stage_burns(stage, r, v, t, normal_from(i_aim, node_aim, pole))
    if stage >= 2:
        i_got, node_got = incl_node_rad(predicted_normal(r, v, t, burns, t_pdi_s), pole)
        i_aim += i_site - i_got
        node_aim += math.remainder(node_site - node_got, 2.0 * math.pi)
        burns = _stage_burns(stage, r, v, t, normal_from(i_aim, node_aim, pole))
    return burns


# --- return -------------------------------------------------------------------------------


def return_normals(tgt: targeting.EntryInterfaceTarget, t_s: float) -> tuple[Vec, Vec, Vec]:
    """(departure asymptote, the two 137 deg plane normals that contain it)."""
    r, v = targeting.parking_orbit_for_return(tgt, t_s, PARKING_INCLINATION_DEG, PARKING_HEIGHT_M)
    n1 = unit(np.cross(r, v))
    s_hat = unit(np.cross(unit(r), n1))
    pole = frames.moon_pole_mci(t_s)
    w = unit(pole - (pole @ s_hat) * s_hat)
    u = np.cross(s_hat, w)
    return s_hat, n1, unit((n1 @ w) * w - (n1 @ u) * u)


def plan_return_plane(
    r: Vec, v: Vec, t: float, tgt: targeting.EntryInterfaceTarget
) -> tuple[list[ImpulsiveBurn], float]:
    """Plane change onto the nearer return plane (aimed ahead of the J2 drift
    until departure), and the angle to it in degrees. No burn above
    MAX_RETURN_PLANE_CHANGE_DEG: TEI then departs out of plane."""
    t_dep = tgt.t_ei_s - tgt.transfer_s
    _, n1, n2 = return_normals(tgt, t_dep)
    pole = frames.moon_pole_mci(t_dep)
    el = elements_from_rv(r, v, GM_MOON_M3_S2)
    n_now = unit(np.cross(r, v))
    aims = []
    for n in (n1, n2):
        i_n, node_n = incl_node_rad(n, pole)
        aims.append(normal_from(i_n, node_n - node_rate_rad_s(el.a_m, el.e, i_n) * (t_dep - t),
                                pole))
    aim = max(aims, key=lambda n: float(n @ n_now))
    angle = math.degrees(math.acos(float(np.clip(aim @ n_now, -1.0, 1.0))))
    if angle > MAX_RETURN_PLANE_CHANGE_DEG:
        return [], angle
    return plan_plane_change(r, v, t, aim), angle


def avoidance_dv(r_eci_m: Vec, v_eci_m_s: Vec, max_dv_m_s: float = 400.0) -> Vec:
    """Smallest burn (ECI) normal to the velocity, outward, that lifts the
    Kepler perigee to AVOIDANCE_PERIGEE_ALT_M (bisection; capped)."""
    v_hat = unit(v_eci_m_s)
    out = unit(r_eci_m - (r_eci_m @ v_hat) * v_hat)

    def perigee_alt(dv: float) -> float:
        el = elements_from_rv(r_eci_m, v_eci_m_s + dv * out, GM_EARTH_M3_S2)
        return el.a_m * (1.0 - el.e) - R_EARTH_EQ_M

    lo, hi = 0.0, max_dv_m_s
    if perigee_alt(hi) < AVOIDANCE_PERIGEE_ALT_M:
        return hi * out
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if perigee_alt(mid) < AVOIDANCE_PERIGEE_ALT_M else (lo, mid)
    return vec(hi * out)
