"""Lunar orbit insertion and the orbit adjustments down to the parking orbit.

Every planner takes the current two-body state (MCI) and mission time and
returns a list of :class:`ImpulsiveBurn` (time, MCI delta-v). Burns sit at
apsides or nodes, where they are cheapest; the next burn of a sequence is
planned from the state the previous one leaves, so a plan executed with
:func:`execute_impulsive` lands on its target to numerical precision.

Targets (reference (c), "Orbits and trajectory"): capture into ~200 x 8,600 km
(~12 h), then adjustments to the ~200 km circular, 137 deg retrograde parking
orbit, then descent-orbit lowering to a ~15 km perilune near the landing site.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.burns import (
    Engine,
    FiniteBurnResult,
    ImpulsiveBurn,
    finite_burn,
    steer_velocity,
)
from services.dynamics.constants import GM_MOON_M3_S2, R_MOON_M
from services.dynamics.kepler import elements_from_rv, propagate_kepler
from services.dynamics.vec import cross, norm

__all__ = [
    "CAPTURE_APOLUNE_HEIGHT_M",
    "CAPTURE_PERILUNE_HEIGHT_M",
    "DESCENT_PERILUNE_HEIGHT_M",
    "PARKING_HEIGHT_M",
    "PARKING_INCLINATION_DEG",
    "LoiFinitePlan",
    "apsis_speed_m_s",
    "horizontal_burn",
    "orbit_normal",
    "plan_apsis_change",
    "plan_circularisation",
    "plan_descent_orbit_lowering",
    "plan_hohmann",
    "plan_loi",
    "plan_loi_finite",
    "plan_plane_change",
    "plane_normal_over_site",
    "time_to_true_anomaly_s",
]

Vec = NDArray[np.float64]
MU = GM_MOON_M3_S2
_TWO_PI = 2.0 * math.pi

# Reference (c): capture orbit ~200 x 8,600 km, 12 h (Leonard David / CNSA).
CAPTURE_PERILUNE_HEIGHT_M = 200e3
CAPTURE_APOLUNE_HEIGHT_M = 8_600e3
# Reference (c): parking orbit ~200 km circular, 137 deg (Wikipedia infobox, W/U).
PARKING_HEIGHT_M = 200e3
PARKING_INCLINATION_DEG = 137.0
# Reference (c): powered descent starts at ~15 km (CNSA/CCTV).
DESCENT_PERILUNE_HEIGHT_M = 15e3


def apsis_speed_m_s(r_here_m: float, r_other_m: float, mu: float = MU) -> float:
    """Speed at one apsis of the ellipse whose apsides are the two radii."""
    return math.sqrt(2.0 * mu * r_other_m / (r_here_m * (r_here_m + r_other_m)))


def orbit_normal(i_rad: float, raan_rad: float, frame_to_mci: ArrayLike | None = None) -> Vec:
    """Unit angular-momentum vector of an orbit with inclination ``i_rad`` and
    node ``raan_rad`` in an equatorial frame, rotated to MCI by ``frame_to_mci``."""
    n = np.array(
        [
            math.sin(i_rad) * math.sin(raan_rad),
            -math.sin(i_rad) * math.cos(raan_rad),
            math.cos(i_rad),
        ]
    )
    if frame_to_mci is None:
        return n
    result: Vec = np.asarray(frame_to_mci, dtype=np.float64) @ n
    return result


def plane_normal_over_site(
    site_mci_m: ArrayLike, pole_mci: ArrayLike, inclination_rad: float, northbound: bool = True
) -> Vec:
    """Normal of the orbit plane with the given inclination to the lunar
    equator that contains the site direction (the vehicle passes overhead).

    Exists only for |site latitude| <= min(i, 180 deg - i); of the two planes,
    ``northbound`` picks the one crossing the site while moving north. At the
    limit the two are one plane, crossing the site due east or west: it is
    returned for either ``northbound``.
    """
    s_hat = _as_vec(site_mci_m) / np.linalg.norm(site_mci_m)
    p_hat = _as_vec(pole_mci) / np.linalg.norm(pole_mci)
    s_perp = s_hat - float(s_hat @ p_hat) * p_hat
    a_hat = s_perp / np.linalg.norm(s_perp)
    b_hat = cross(p_hat, a_hat)
    cos_phi = (
        -math.cos(inclination_rad)
        * float(s_hat @ p_hat)
        / (math.sin(inclination_rad) * norm(s_perp))
    )
    if abs(cos_phi) > 1.0:
        raise ValueError("no orbit of this inclination passes over a site at that latitude")
    for sign in (1.0, -1.0):
        sin_phi = sign * math.sqrt(1.0 - cos_phi * cos_phi)
        w = cos_phi * a_hat + sin_phi * b_hat
        n = math.cos(inclination_rad) * p_hat + math.sin(inclination_rad) * w
        moving_north = float(cross(n, s_hat) @ p_hat) > 0.0
        if moving_north == northbound or sin_phi == 0.0:
            return n
    raise AssertionError("unreachable: the two planes move in opposite senses over the site")


# --- timing along a conic --------------------------------------------------


def _mean_anomaly(nu: float, e: float) -> float:
    if e < 1.0:
        ecc_anom = 2.0 * math.atan2(
            math.sqrt(1.0 - e) * math.sin(nu / 2), math.sqrt(1.0 + e) * math.cos(nu / 2)
        )
        return ecc_anom - e * math.sin(ecc_anom)
    hyp_anom = 2.0 * math.atanh(math.sqrt((e - 1.0) / (e + 1.0)) * math.tan(nu / 2))
    return e * math.sinh(hyp_anom) - hyp_anom


def time_to_true_anomaly_s(
    r_m: ArrayLike, v_m_s: ArrayLike, nu_target_rad: float, mu: float = MU
) -> float:
    """Time until the orbit next reaches ``nu_target_rad`` (>= 0).

    On a hyperbola the target must lie ahead on the same branch.
    """
    el = elements_from_rv(r_m, v_m_s, mu)
    n = math.sqrt(mu / abs(el.a_m) ** 3)
    dm = _mean_anomaly(nu_target_rad, el.e) - _mean_anomaly(el.nu_rad, el.e)
    if el.e < 1.0:
        return (dm % _TWO_PI) / n
    if dm < 0.0:
        raise ValueError("the target true anomaly is behind the vehicle on this hyperbola")
    return dm / n


def _angle_in_plane(r_m: Vec, v_m_s: Vec, direction: Vec) -> float:
    """True anomaly at which the orbit of (r, v) points along ``direction``."""
    el = elements_from_rv(r_m, v_m_s, MU)
    h_hat = cross(r_m, v_m_s)
    h_hat /= np.linalg.norm(h_hat)
    r_hat = r_m / np.linalg.norm(r_m)
    d = direction - (direction @ h_hat) * h_hat
    d /= np.linalg.norm(d)
    # Angle from the current position to the direction, in the sense of motion.
    delta = math.atan2(float(cross(r_hat, d) @ h_hat), float(r_hat @ d))
    return (el.nu_rad + delta) % _TWO_PI


def _coast(r_m: Vec, v_m_s: Vec, dt_s: float) -> tuple[Vec, Vec]:
    return propagate_kepler(r_m, v_m_s, dt_s, MU)


def _as_vec(x: ArrayLike) -> Vec:
    return np.asarray(x, dtype=np.float64)


# --- capture ---------------------------------------------------------------


def plan_loi(
    r_mci_m: ArrayLike,
    v_mci_m_s: ArrayLike,
    t_s: float,
    apolune_radius_m: float = R_MOON_M + CAPTURE_APOLUNE_HEIGHT_M,
) -> list[ImpulsiveBurn]:
    """Impulsive braking at perilune of a hyperbolic approach into an ellipse
    keeping the approach perilune and reaching ``apolune_radius_m``."""
    r0, v0 = _as_vec(r_mci_m), _as_vec(v_mci_m_s)
    dt = time_to_true_anomaly_s(r0, v0, 0.0)
    r_p, v_p = _coast(r0, v0, dt)
    rp = norm(r_p)
    v_target = apsis_speed_m_s(rp, apolune_radius_m)
    v_hat = v_p / np.linalg.norm(v_p)
    dv = (v_target - norm(v_p)) * v_hat
    return [ImpulsiveBurn(t_s + dt, dv, "loi")]


@dataclass(frozen=True)
class LoiFinitePlan:
    """A retrograde finite LOI burn and where it leaves the vehicle."""

    t_start_s: float
    duration_s: float
    result: FiniteBurnResult


def plan_loi_finite(
    r_mci_m: ArrayLike,
    v_mci_m_s: ArrayLike,
    mass_kg: float,
    t_s: float,
    engine: Engine,
    *,
    dry_mass_kg: float,
    apolune_radius_m: float = R_MOON_M + CAPTURE_APOLUNE_HEIGHT_M,
    substep_s: float = 1.0,
) -> LoiFinitePlan:
    """Retrograde full-thrust burn centred on perilune, its length tuned by
    secant iteration until the resulting apolune matches the target.

    Gravity losses of a long (~10+ min) burn make the impulsive delta-v too
    small; the iteration absorbs them.
    """
    r0, v0 = _as_vec(r_mci_m), _as_vec(v_mci_m_s)
    impulse = plan_loi(r0, v0, t_s, apolune_radius_m)[0]
    mdot = engine.mass_flow_kg_s(engine.max_thrust_n)
    duration = mass_kg * (1.0 - math.exp(-impulse.dv_m_s / engine.v_e_m_s)) / mdot

    def fly(dur: float) -> tuple[float, FiniteBurnResult]:
        t_start = impulse.t_s - dur / 2.0
        r1, v1 = _coast(r0, v0, t_start - t_s)
        res = finite_burn(
            r1,
            v1,
            mass_kg,
            t_start,
            dur,
            engine,
            steer_velocity(-1.0),
            dry_mass_kg=dry_mass_kg,
            substep_s=substep_s,
        )
        el = elements_from_rv(res.r_mci_m, res.v_mci_m_s, MU)
        ra = el.a_m * (1.0 + el.e) if el.e < 1.0 else math.inf
        return ra - apolune_radius_m, res

    d0, d1 = duration, duration * 1.05
    f0, res = fly(d0)
    f1, res = fly(d1)
    for _ in range(20):
        if abs(f1) < 1.0 or f1 == f0 or not math.isfinite(f1 + f0):
            break
        d0, d1, f0 = d1, d1 - f1 * (d1 - d0) / (f1 - f0), f1
        f1, res = fly(d1)
    return LoiFinitePlan(impulse.t_s - d1 / 2.0, d1, res)


# --- apsis changes ---------------------------------------------------------


def plan_apsis_change(
    r_mci_m: ArrayLike,
    v_mci_m_s: ArrayLike,
    t_s: float,
    at: str,
    new_opposite_radius_m: float,
) -> list[ImpulsiveBurn]:
    """One horizontal burn at the next perilune or apolune (``at``) that moves
    the opposite apsis to ``new_opposite_radius_m``."""
    if at not in ("perilune", "apolune"):
        raise ValueError(f"at must be 'perilune' or 'apolune', got {at!r}")
    r0, v0 = _as_vec(r_mci_m), _as_vec(v_mci_m_s)
    dt = time_to_true_anomaly_s(r0, v0, 0.0 if at == "perilune" else math.pi)
    return [horizontal_burn(*_coast(r0, v0, dt), t_s + dt, new_opposite_radius_m, at)]


def horizontal_burn(r: Vec, v: Vec, t_s: float, other_radius_m: float, label: str) -> ImpulsiveBurn:
    """Burn that leaves a horizontal velocity making ``r`` an apsis of an
    ellipse whose other apsis has radius ``other_radius_m``."""
    r_here = norm(r)
    h_hat = cross(r, v)
    h_hat /= np.linalg.norm(h_hat)
    t_hat = cross(h_hat, r / r_here)
    v_new = apsis_speed_m_s(r_here, other_radius_m) * t_hat
    return ImpulsiveBurn(t_s, v_new - v, label)


def plan_circularisation(
    r_mci_m: ArrayLike, v_mci_m_s: ArrayLike, t_s: float, at: str = "perilune"
) -> list[ImpulsiveBurn]:
    """Circularise at the next perilune (lowering apolune) or apolune."""
    r0, v0 = _as_vec(r_mci_m), _as_vec(v_mci_m_s)
    el = elements_from_rv(r0, v0, MU)
    r_here = el.a_m * (1.0 - el.e) if at == "perilune" else el.a_m * (1.0 + el.e)
    return plan_apsis_change(r0, v0, t_s, at, r_here)


def plan_hohmann(
    r_mci_m: ArrayLike, v_mci_m_s: ArrayLike, t_s: float, target_radius_m: float
) -> list[ImpulsiveBurn]:
    """Two-burn transfer from a near-circular orbit to a circular orbit of
    ``target_radius_m``: at the next apsis (perilune when raising, apolune
    when lowering) move the opposite apsis, then circularise there."""
    r0, v0 = _as_vec(r_mci_m), _as_vec(v_mci_m_s)
    el = elements_from_rv(r0, v0, MU)
    at = "perilune" if target_radius_m > el.a_m else "apolune"
    first = plan_apsis_change(r0, v0, t_s, at, target_radius_m)[0]
    r1, v1 = _coast(r0, v0, first.t_s - t_s)
    v1 = v1 + first.dv_mci_m_s
    r2, v2 = _coast(r1, v1, time_to_true_anomaly_s(r1, v1, math.pi if at == "perilune" else 0.0))
    t2 = first.t_s + time_to_true_anomaly_s(r1, v1, math.pi if at == "perilune" else 0.0)
    second = horizontal_burn(r2, v2, t2, norm(r2), "hohmann-2")
    return [ImpulsiveBurn(first.t_s, first.dv_mci_m_s, "hohmann-1"), second]


# --- plane change ----------------------------------------------------------


def _rotate_about(vec: Vec, axis_hat: Vec, angle_rad: float) -> Vec:
    """Rodrigues rotation of ``vec`` about the unit ``axis_hat``."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    result: Vec = vec * c + cross(axis_hat, vec) * s + axis_hat * float(axis_hat @ vec) * (1 - c)
    return result


def plan_plane_change(
    r_mci_m: ArrayLike, v_mci_m_s: ArrayLike, t_s: float, target_normal_mci: ArrayLike
) -> list[ImpulsiveBurn]:
    """Rotate the orbit plane onto the one with unit normal ``target_normal_mci``
    at the slower of the two nodes within the next revolution (cheapest).

    The burn rotates the velocity about the radius vector, so size and shape
    of the orbit are kept.
    """
    r0, v0 = _as_vec(r_mci_m), _as_vec(v_mci_m_s)
    n_t = _as_vec(target_normal_mci) / np.linalg.norm(target_normal_mci)
    h_hat = cross(r0, v0)
    h_hat /= np.linalg.norm(h_hat)
    node = cross(h_hat, n_t)
    if norm(node) < 1e-12:
        return []  # already in the target plane
    best: tuple[float, Vec, Vec, float] | None = None
    for sign in (1.0, -1.0):
        dt = time_to_true_anomaly_s(r0, v0, _angle_in_plane(r0, v0, sign * node))
        r1, v1 = _coast(r0, v0, dt)
        speed = norm(v1)
        if best is None or speed < best[3]:
            best = (dt, r1, v1, speed)
    assert best is not None
    dt, r1, v1, _ = best
    r_hat = r1 / np.linalg.norm(r1)
    h1 = cross(r1, v1)
    h1 /= np.linalg.norm(h1)
    angle = math.atan2(float(cross(h1, n_t) @ r_hat), float(h1 @ n_t))
    v_new = _rotate_about(v1, r_hat, angle)
    return [ImpulsiveBurn(t_s + dt, v_new - v1, "plane-change")]


# --- descent orbit lowering ------------------------------------------------


def plan_descent_orbit_lowering(
    r_mci_m: ArrayLike,
    v_mci_m_s: ArrayLike,
    t_s: float,
    site_mci_m: Callable[[float], Vec],
    *,
    site_reference_radius_m: float,
    perilune_height_m: float = DESCENT_PERILUNE_HEIGHT_M,
    lead_angle_rad: float = 0.0,
    min_lead_time_s: float = 0.0,
) -> list[ImpulsiveBurn]:
    """One retrograde burn half an orbit before a perilune of
    ``site_reference_radius_m + perilune_height_m`` placed ``lead_angle_rad``
    uprange of the landing site (so powered descent can start there).

    ``site_mci_m(t)`` gives the site in MCI at time t: the Moon turns ~0.5 deg
    during the hour of the transfer, so the perilune time is iterated.
    """
    r0, v0 = _as_vec(r_mci_m), _as_vec(v_mci_m_s)
    h_hat = cross(r0, v0)
    h_hat /= np.linalg.norm(h_hat)
    rp_target = site_reference_radius_m + perilune_height_m
    period = _TWO_PI * math.sqrt(elements_from_rv(r0, v0, MU).a_m ** 3 / MU)
    t_peri = t_s + period  # first guess, refined below
    burn = ImpulsiveBurn(t_s, np.zeros(3), "dol")
    for _ in range(4):
        site = site_mci_m(t_peri)
        peri_dir = _rotate_about(site, h_hat, -lead_angle_rad)
        dt = time_to_true_anomaly_s(r0, v0, _angle_in_plane(r0, v0, -peri_dir))
        if dt < min_lead_time_s:
            dt += period
        r1, v1 = _coast(r0, v0, dt)
        burn = horizontal_burn(r1, v1, t_s + dt, rp_target, "descent-orbit-lowering")
        v_after = v1 + burn.dv_mci_m_s
        t_peri = burn.t_s + time_to_true_anomaly_s(r1, v_after, 0.0)
    return [burn]
