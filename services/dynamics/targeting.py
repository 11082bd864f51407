"""Shooting (differential-correction) targeting of the Earth-Moon legs.

Every solve runs in two stages:

1. a first guess from conics (Earth two-body for the transfer, the Moon's
   hyperbola for departure or arrival), and
2. Newton iterations on the full force model of `propagate` (central body
   with J2, third bodies Earth/Moon and Sun from DE421), with a finite-
   difference Jacobian, a step-length limit and back-tracking.

Targets:

* trans-lunar: the B-plane vector of the arrival hyperbola (which sets the
  perilune radius and the orbit inclination to the lunar equator) and the
  perilune time. Perilune conditions are read from the osculating conic at
  the numerically found closest approach.
* trans-Earth and mid-course: at the fixed entry-interface time, the
  height above the ellipsoid, the inertial flight-path angle (geocentric
  horizon) and the crossrange of the landing site from the Earth-relative
  trajectory plane (so the entry guidance of `entry` sees the site straight
  ahead; the downrange is then set by the geometry and reported).

The targets carry every figure of a mission as arguments (Chang'e-6's are
in `change6`).

TEI is two burns, as the Chang'e sample returns flew it: TEI-1 raises the
circular parking orbit to an ellipse (prograde, to the target's apolune),
TEI-2 departs at the next perilune. The TEI-1 point is picked on the parking
orbit so that a periapsis departure from it points the outgoing asymptote
along the conic solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics import frames
from services.dynamics.burns import ImpulsiveBurn
from services.dynamics.constants import (
    GM_EARTH_M3_S2,
    GM_MOON_M3_S2,
    HOUR_S,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.dynamics.entry import LandingTarget, crossrange_rad
from services.dynamics.ephemeris import get_ephemeris
from services.dynamics.kepler import elements_from_rv
from services.dynamics.propagate import ForceModel, kepler_ellipse, propagate

Vec = NDArray[np.float64]

EARTH_MODEL = ForceModel("earth")  # J2 + Moon + Sun
MOON_MODEL = ForceModel("moon")  # J2 + Earth + Sun
EARTH_NO_MOON = ForceModel("earth", third_bodies=("sun",))
# Earth two-body, integrated: kepler.propagate_kepler's universal-variable
# solve fails on some multi-day near-parabolic arcs (KeplerError), this does not.
EARTH_TWO_BODY = ForceModel("earth", j2=False, third_bodies=())
MOON_SOI_SWITCH_S = 18.0 * HOUR_S  # hand-over between Moon- and Earth-centred legs
_RTOL = 1e-10


class TargetingError(ArithmeticError):
    """Differential correction did not converge."""

    def __init__(self, what: str, residual: Vec, iterations: int) -> None:
        super().__init__(
            f"{what}: no convergence after {iterations} iterations, residual {residual}"
        )
        self.residual = residual
        self.iterations = iterations


# --- Small helpers ------------------------------------------------------------------
def _unit(a: ArrayLike) -> Vec:
    v = np.asarray(a, dtype=np.float64)
    return v / float(np.linalg.norm(v))


def _vec3(a: Vec) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))


def time_to_periapsis_s(r_m: ArrayLike, v_m_s: ArrayLike, mu: float) -> float:
    """Conic time from the state to the nearest periapsis (negative if just passed)."""
    el = elements_from_rv(r_m, v_m_s, mu)
    nu = (el.nu_rad + math.pi) % (2.0 * math.pi) - math.pi
    e = el.e
    if e < 1.0:
        ecc = 2.0 * math.atan(math.sqrt((1.0 - e) / (1.0 + e)) * math.tan(nu / 2.0))
        mean = ecc - e * math.sin(ecc)
        return -mean / math.sqrt(mu / el.a_m**3)
    hyp = 2.0 * math.atanh(math.sqrt((e - 1.0) / (e + 1.0)) * math.tan(nu / 2.0))
    mean = e * math.sinh(hyp) - hyp
    return -mean / math.sqrt(mu / (-el.a_m) ** 3)


def to_periapsis(
    r_m: Vec, v_m_s: Vec, t_s: float, model: ForceModel, iterations: int = 4
) -> tuple[Vec, Vec, float]:
    """Numerical periapsis: step by the osculating conic's time to periapsis until it is ~0."""
    for _ in range(iterations):
        dt = time_to_periapsis_s(r_m, v_m_s, model.mu_m3_s2)
        if abs(dt) < 1e-3:
            break
        r_m, v_m_s = propagate(r_m, v_m_s, t_s, dt, model, rtol=_RTOL)
        t_s += dt
    return r_m, v_m_s, t_s


def b_plane(r_m: ArrayLike, v_m_s: ArrayLike, mu: float, pole: ArrayLike) -> tuple[float, float]:
    """(B.T, B.R) in metres of a hyperbolic state; T = S x pole, R = S x T."""
    r = np.asarray(r_m, dtype=np.float64)
    v = np.asarray(v_m_s, dtype=np.float64)
    h = np.cross(r, v)
    e_vec = ((v @ v - mu / np.linalg.norm(r)) * r - (r @ v) * v) / mu
    e = float(np.linalg.norm(e_vec))
    e_hat, h_hat = e_vec / e, _unit(h)
    q_hat = np.cross(h_hat, e_hat)
    s_hat = e_hat / e + math.sqrt(max(0.0, 1.0 - 1.0 / e**2)) * q_hat
    a = 1.0 / (2.0 / float(np.linalg.norm(r)) - float(v @ v) / mu)
    b_vec = abs(a) * math.sqrt(max(0.0, e * e - 1.0)) * np.cross(s_hat, h_hat)
    t_hat = _unit(np.cross(s_hat, np.asarray(pole, dtype=np.float64)))
    r_hat = np.cross(s_hat, t_hat)
    return float(b_vec @ t_hat), float(b_vec @ r_hat)


def _desired_b(
    s_hat: Vec, pole: Vec, rp_m: float, vinf_m_s: float, mu: float, inc_rad: float
) -> Vec:
    """(B.T, B.R) giving periapsis radius rp_m and inclination inc_rad to the pole."""
    b_mag = rp_m * math.sqrt(1.0 + 2.0 * mu / (rp_m * vinf_m_s**2))
    t_hat = _unit(np.cross(s_hat, pole))
    r_hat = np.cross(s_hat, t_hat)
    c_r = float(pole @ r_hat)
    # h = cos(psi) T + sin(psi) R must satisfy h . pole = cos(inc); B = S x h
    sin_psi = max(-1.0, min(1.0, math.cos(inc_rad) / c_r)) if abs(c_r) > 1e-9 else 0.0
    psi = math.asin(sin_psi)
    h_hat = math.cos(psi) * t_hat + sin_psi * r_hat
    b_hat = np.cross(s_hat, h_hat)
    return np.array([b_mag * float(b_hat @ t_hat), b_mag * float(b_hat @ r_hat)])


def _safe(residual: Callable[[Vec], Vec], x: Vec, like: Vec) -> Vec:
    """Residual, or a huge one where the conic or integrator cannot follow the trial."""
    try:
        return residual(x)
    except (ArithmeticError, RuntimeError):
        return np.full_like(like, 1e30)


def newton(
    residual: Callable[[Vec], Vec],
    x0: Vec,
    scale: Vec,
    fd_step: Vec,
    max_step: float,
    max_iter: int = 25,
) -> tuple[Vec, Vec, int]:
    """Damped Newton with a forward-difference Jacobian.

    `scale` divides the residual components so that 1.0 means "at tolerance":
    convergence is max |F / scale| <= 1. Steps are clipped to `max_step`
    (in x units) and halved while they do not reduce |F / scale|.
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    f = residual(x) / scale
    for it in range(1, max_iter + 1):
        if float(np.max(np.abs(f))) <= 1.0:
            return x, f * scale, it - 1
        jac = np.empty((f.size, x.size))
        for j in range(x.size):
            dx = np.zeros_like(x)
            dx[j] = fd_step[j]
            jac[:, j] = (residual(x + dx) / scale - f) / fd_step[j]
        step = -np.linalg.lstsq(jac, f, rcond=None)[0]
        n = float(np.linalg.norm(step))
        if n > max_step:
            step *= max_step / n
        norm0 = float(np.linalg.norm(f))
        for _ in range(10):
            f_try = _safe(residual, x + step, f) / scale
            if float(np.linalg.norm(f_try)) < norm0 or n < 1e-9:
                break
            step *= 0.5
        x, f = x + step, f_try
    if float(np.max(np.abs(f))) <= 1.0:
        return x, f * scale, max_iter
    raise TargetingError("newton", f * scale, max_iter)


# --- Trans-lunar ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class LunarArrivalTarget:
    """Where and when the free coast from separation must reach the Moon."""

    t_sep_s: float  # probe separation (start of the free coast)
    t_perilune_s: float  # perilune at the LOI epoch
    perilune_alt_m: float
    inclination_deg: float  # to the lunar equator; > 90 = retrograde
    parking_alt_m: float  # perigee of the post-TLI orbit


@dataclass(frozen=True, slots=True)
class LunarArrival:
    r_sep_eci_m: Vec
    v_sep_eci_m_s: Vec
    r_perilune_mci_m: Vec
    v_perilune_mci_m_s: Vec
    t_perilune_s: float
    perilune_alt_m: float
    inclination_deg: float
    iterations: int


def _tli_first_guess(tgt: LunarArrivalTarget) -> tuple[Vec, Vec]:
    """Perigee state 175 deg of transfer before the Moon, in the Moon's orbit plane."""
    r_m, v_m = get_ephemeris().moon_state_eci(tgt.t_perilune_s)
    n_hat = _unit(np.cross(r_m, v_m))
    m_hat = _unit(r_m)
    ang = math.radians(-175.0)
    u_hat = math.cos(ang) * m_hat + math.sin(ang) * np.cross(n_hat, m_hat)
    rp = R_EARTH_EQ_M + tgt.parking_alt_m
    ra = float(np.linalg.norm(r_m))
    vp = math.sqrt(GM_EARTH_M3_S2 * (2.0 / rp - 2.0 / (rp + ra)))
    return rp * u_hat, vp * np.cross(n_hat, u_hat)


def _coast_to_moon(r0: Vec, v0: Vec, tgt: LunarArrivalTarget) -> tuple[Vec, Vec, float]:
    """Full-model flight from separation to the numerical perilune (MCI)."""
    t_switch = tgt.t_perilune_s - MOON_SOI_SWITCH_S
    r1, v1 = propagate(r0, v0, tgt.t_sep_s, t_switch - tgt.t_sep_s, EARTH_MODEL, rtol=_RTOL)
    r_mci, v_mci = frames.mci_from_eci_state(r1, v1, t_switch)
    return to_periapsis(r_mci, v_mci, t_switch, MOON_MODEL)


def _rotation(eps_rad: Vec) -> Vec:
    """Rotation matrix for the rotation vector eps (Rodrigues)."""
    ang = float(np.linalg.norm(eps_rad))
    if ang < 1e-15:
        return np.eye(3)
    k = eps_rad / ang
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    rot: Vec = np.eye(3) + math.sin(ang) * kx + (1.0 - math.cos(ang)) * (kx @ kx)
    return rot


def plan_tli(tgt: LunarArrivalTarget) -> LunarArrival:
    """Separation state whose free flight reaches the target perilune at the LOI time.

    Unknowns: the velocity at the parking-orbit perigee (3) and a rigid
    rotation of the perigee state (2, in mrad: the choice of parking-orbit
    plane and TLI point, which the launch time and coast fix in reality).
    Without the rotation, moving the arrival point out of a ~175 deg transfer
    plane would need a huge plane change; with it the minimum-norm Newton
    step stays small.
    """
    r0, v0 = _tli_first_guess(tgt)
    r_m_arr, v_m_arr = get_ephemeris().moon_state_eci(tgt.t_perilune_s)
    n_hat = _unit(np.cross(r_m_arr, v_m_arr))
    axes = np.array([np.cross(n_hat, _unit(r_m_arr)), n_hat])  # out-of-plane, in-plane shifts
    pole = frames.moon_pole_mci(tgt.t_perilune_s)
    rp_target = R_MOON_M + tgt.perilune_alt_m
    inc = math.radians(tgt.inclination_deg)
    dt = tgt.t_perilune_s - tgt.t_sep_s

    def start(x: Vec) -> tuple[Vec, Vec]:
        rot = _rotation(1e-3 * (x[3] * axes[0] + x[4] * axes[1]))
        return rot @ r0, rot @ x[:3]

    def miss(x: Vec, aim: Vec) -> tuple[Vec, Vec]:
        # stages 1a/1b: straight-line arrival without the Moon's gravity
        r_s, v_s = start(x)
        r1, v1 = propagate(r_s, v_s, tgt.t_sep_s, dt, EARTH_NO_MOON, rtol=1e-9)
        return np.asarray(r1 - r_m_arr - aim), np.asarray(v1 - v_m_arr)

    fd = np.array([1e-3, 1e-3, 1e-3, 1e-4, 1e-4])
    x0 = np.array([*v0, 0.0, 0.0])
    x1, _, it1 = newton(lambda x: miss(x, np.zeros(3))[0], x0, np.full(3, 1.0e5), fd, 500.0)
    v_rel = miss(x1, np.zeros(3))[1]
    s_hat = _unit(v_rel)
    b_want = _desired_b(s_hat, pole, rp_target, float(np.linalg.norm(v_rel)), GM_MOON_M3_S2, inc)
    t_hat = _unit(np.cross(s_hat, pole))
    aim = b_want[0] * t_hat + b_want[1] * np.cross(s_hat, t_hat)
    x1, _, it1b = newton(lambda x: miss(x, aim)[0], x1, np.full(3, 1.0e3), fd, 100.0)

    def residual(x: Vec) -> Vec:
        r_s, v_s = start(x)
        r_p, v_p, t_p = _coast_to_moon(r_s, v_s, tgt)
        bt, br = b_plane(r_p, v_p, GM_MOON_M3_S2, pole)
        s_in = _incoming_asymptote(r_p, v_p, GM_MOON_M3_S2)
        vinf = math.sqrt(
            max(1.0, float(v_p @ v_p) - 2.0 * GM_MOON_M3_S2 / float(np.linalg.norm(r_p)))
        )
        want = _desired_b(s_in, pole, rp_target, vinf, GM_MOON_M3_S2, inc)
        return np.array([bt - want[0], br - want[1], t_p - tgt.t_perilune_s])

    # 1 km in B (about 0.4 km of perilune) and 10 s of time are "on target"
    x2, _, it2 = newton(residual, x1, np.array([1.0e3, 1.0e3, 10.0]), fd * 0.1, 20.0)
    r_s, v_s = start(x2)
    r_p, v_p, t_p = _coast_to_moon(r_s, v_s, tgt)
    h_hat = _unit(np.cross(r_p, v_p))
    inc_deg = math.degrees(math.acos(float(np.clip(h_hat @ pole, -1.0, 1.0))))
    return LunarArrival(
        r_sep_eci_m=r_s,
        v_sep_eci_m_s=v_s,
        r_perilune_mci_m=r_p,
        v_perilune_mci_m_s=v_p,
        t_perilune_s=t_p,
        perilune_alt_m=float(np.linalg.norm(r_p)) - R_MOON_M,
        inclination_deg=inc_deg,
        iterations=it1 + it1b + it2,
    )


def _incoming_asymptote(r_m: Vec, v_m_s: Vec, mu: float) -> Vec:
    h_hat = _unit(np.cross(r_m, v_m_s))
    e_vec = ((v_m_s @ v_m_s - mu / np.linalg.norm(r_m)) * r_m - (r_m @ v_m_s) * v_m_s) / mu
    e = float(np.linalg.norm(e_vec))
    e_hat = e_vec / e
    return np.asarray(e_hat / e + math.sqrt(max(0.0, 1.0 - 1.0 / e**2)) * np.cross(h_hat, e_hat))


# --- Trans-Earth -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class EntryInterfaceTarget:
    """Where and when the returner must meet the atmosphere."""

    t_ei_s: float
    altitude_m: float
    fpa_deg: float  # inertial, geocentric horizon
    site: LandingTarget
    transfer_s: float  # TEI-2 to the entry interface
    tei1_apolune_alt_m: float  # of the ellipse TEI-1 raises the parking orbit to


@dataclass(frozen=True, slots=True)
class EntryInterfaceState:
    """Predicted state at the entry-interface time."""

    t_s: float
    r_eci_m: Vec
    v_eci_m_s: Vec
    altitude_m: float
    fpa_deg: float  # inertial
    crossrange_deg: float  # site out of the Earth-relative plane, + = left
    lat_deg: float
    lon_deg: float
    range_to_site_m: float


@dataclass(frozen=True, slots=True)
class TeiPlan:
    burns: tuple[ImpulsiveBurn, ImpulsiveBurn]
    entry: EntryInterfaceState
    iterations: int


def entry_interface_state(
    r_eci_m: Vec, v_eci_m_s: Vec, t_s: float, site: LandingTarget
) -> EntryInterfaceState:
    r_ef, v_ef = frames.ecef_from_eci_state(r_eci_m, v_eci_m_s, t_s)
    lat, lon, h = frames.geodetic_from_ecef(r_ef)
    site_u = np.asarray(site.unit_ecef())
    xr = crossrange_rad(_vec3(r_ef), _vec3(v_ef), _vec3(site_u))
    fpa = math.degrees(math.asin(float(_unit(r_eci_m) @ _unit(v_eci_m_s))))
    rng = math.acos(float(np.clip(_unit(r_ef) @ site_u, -1.0, 1.0))) * R_EARTH_EQ_M
    return EntryInterfaceState(t_s, r_eci_m, v_eci_m_s, h, fpa, math.degrees(xr), lat, lon, rng)


def _ei_residual(ei: EntryInterfaceState, tgt: EntryInterfaceTarget) -> Vec:
    return np.array([ei.altitude_m - tgt.altitude_m, ei.fpa_deg - tgt.fpa_deg, ei.crossrange_deg])


# alt 100 m, FPA 0.01 deg, crossrange 0.01 deg (~1 km) count as "on target"
_EI_SCALE = np.array([100.0, 0.01, 0.01])


# stage-1 targets: vacuum perigee radius 1 km, perigee time 10 s, crossrange 0.05 deg
_PERIGEE_SCALE = np.array([1_000.0, 10.0, 0.05])
_PERIGEE_LOOKBACK_S = 6.0 * HOUR_S  # osculating conic taken this long before EI


def vacuum_perigee_target(
    tgt: EntryInterfaceTarget, ei_speed_m_s: float = 11_000.0
) -> tuple[float, float]:
    """(radius, time) of the vacuum perigee of a conic meeting the EI target.

    Far from the Earth the EI conditions are poorly conditioned functions of
    the state; the perigee of the osculating conic is not, so the solves
    first aim at it.
    """
    r_ei = R_EARTH_EQ_M + tgt.altitude_m
    g = math.radians(tgt.fpa_deg)
    r = np.array([r_ei, 0.0, 0.0])
    v = ei_speed_m_s * np.array([math.sin(g), math.cos(g), 0.0])
    el = elements_from_rv(r, v, GM_EARTH_M3_S2)
    return el.a_m * (1.0 - el.e), tgt.t_ei_s + time_to_periapsis_s(r, v, GM_EARTH_M3_S2)


def _earth_two_body(r_m: Vec, v_m_s: Vec, t_s: float, dt_s: float) -> tuple[Vec, Vec]:
    """Earth two-body state after dt_s: closed form on an ellipse, else integrated.

    Why closed form: the return solves evaluate hundreds of multi-day
    two-body arcs, ~85 integrator steps each; `propagate.kepler_ellipse`
    costs microseconds and never fails, unlike the universal-variable solve
    of `kepler` on these near-parabolic arcs. Hyperbolic trials integrate.
    """
    out = kepler_ellipse(_vec3(r_m), _vec3(v_m_s), dt_s, GM_EARTH_M3_S2)
    if out is None:
        return propagate(r_m, v_m_s, t_s, dt_s, EARTH_TWO_BODY, rtol=1e-9)
    return np.array(out[0]), np.array(out[1])


def _perigee_residual(
    r_c: Vec, v_c: Vec, t_c: float, tgt: EntryInterfaceTarget, rp_tp: tuple[float, float]
) -> Vec:
    el = elements_from_rv(r_c, v_c, GM_EARTH_M3_S2)
    rp = el.a_m * (1.0 - el.e)
    tp = t_c + time_to_periapsis_s(r_c, v_c, GM_EARTH_M3_S2)
    r_t, v_t = _earth_two_body(r_c, v_c, t_c, tgt.t_ei_s - t_c)
    xr = entry_interface_state(r_t, v_t, tgt.t_ei_s, tgt.site).crossrange_deg
    return np.array([rp - rp_tp[0], tp - rp_tp[1], xr])


def fly_home(r_mci_m: Vec, v_mci_m_s: Vec, t_s: float, t_end_s: float) -> tuple[Vec, Vec]:
    """Full-model flight from lunar orbit to t_end: Moon-centred first, then Earth-centred (ECI)."""
    leg = min(MOON_SOI_SWITCH_S, t_end_s - t_s)
    r1, v1 = propagate(r_mci_m, v_mci_m_s, t_s, leg, MOON_MODEL, rtol=_RTOL)
    r_e, v_e = frames.eci_from_mci_state(r1, v1, t_s + leg)
    return propagate(r_e, v_e, t_s + leg, t_end_s - t_s - leg, EARTH_MODEL, rtol=_RTOL)


def _conic_ei(
    v_dep: Vec, r_dep: Vec, t_dep: float, tgt: EntryInterfaceTarget
) -> EntryInterfaceState:
    r, v = _earth_two_body(r_dep, v_dep, t_dep, tgt.t_ei_s - t_dep)
    return entry_interface_state(r, v, tgt.t_ei_s, tgt.site)


def return_conic(t_dep_s: float, tgt: EntryInterfaceTarget) -> Vec:
    """Earth-relative velocity (ECI) at the Moon's centre for an Earth two-body return.

    Unknowns: radial and transverse speed, and the rotation of the return
    plane about the Earth-Moon line (prograde); targets as the full solve.
    A pure function of its arguments, kept per process (the return plane and
    TEI both ask for the nominal departure).
    """
    return np.array(_return_conic(float(t_dep_s), tgt))


@lru_cache(maxsize=8)
def _return_conic(t_dep_s: float, tgt: EntryInterfaceTarget) -> tuple[float, float, float]:
    r_m = get_ephemeris().moon_eci_m(t_dep_s)
    m_hat = _unit(r_m)
    # first guess: the plane of the Moon and the site at EI time, flown the long
    # way round (Moon -> near the anti-Moon point -> site): the entry then
    # happens ~25 deg before the anti-Moon point with the site ahead.
    site_eci = frames.eci_from_ecef(np.asarray(tgt.site.unit_ecef()), tgt.t_ei_s)
    n0 = -_unit(np.cross(m_hat, site_eci))

    def vel(x: Vec) -> Vec:
        psi = 1e-3 * x[2]
        n_hat = math.cos(psi) * n0 + math.sin(psi) * np.cross(m_hat, n0)
        return np.asarray(x[0] * np.cross(n_hat, m_hat) + x[1] * m_hat)

    rp_tp = vacuum_perigee_target(tgt)

    def perigee(x: Vec) -> Vec:
        return _perigee_residual(r_m, vel(x), t_dep_s, tgt, rp_tp)

    def residual(x: Vec) -> Vec:
        return _ei_residual(_conic_ei(vel(x), r_m, t_dep_s, tgt), tgt)

    fd = np.array([1e-3, 1e-3, 1e-3])
    x, _, _ = newton(perigee, np.array([50.0, -350.0, 0.0]), _PERIGEE_SCALE, fd, 100.0, max_iter=60)
    x, _, _ = newton(residual, x, _EI_SCALE, fd, 20.0, max_iter=30)
    return _vec3(vel(x))


def _periapsis_departure_dir(v_inf: Vec, h_hat: Vec, rp_m: float) -> Vec:
    """Periapsis direction in the orbit plane for an outgoing asymptote near v_inf."""
    s_proj = _unit(v_inf - (v_inf @ h_hat) * h_hat)
    e = 1.0 + rp_m * float(v_inf @ v_inf) / GM_MOON_M3_S2
    nu_inf = math.acos(-1.0 / e)
    return np.asarray(math.cos(nu_inf) * s_proj - math.sin(nu_inf) * np.cross(h_hat, s_proj))


def _pick_tei1(
    r_mci: Vec, v_mci: Vec, t_s: float, t_from: float, r_hat_want: Vec
) -> tuple[Vec, Vec, float]:
    """Orbiter state, over one revolution from t_from, whose position is nearest r_hat_want."""
    r, v = (
        propagate(r_mci, v_mci, t_s, t_from - t_s, MOON_MODEL, rtol=_RTOL)
        if t_from > t_s
        else (r_mci, v_mci)
    )
    t = max(t_s, t_from)
    a = 1.0 / (2.0 / float(np.linalg.norm(r)) - float(v @ v) / GM_MOON_M3_S2)
    period = 2.0 * math.pi * math.sqrt(a**3 / GM_MOON_M3_S2)
    best = (float(_unit(r) @ r_hat_want), r, v, t)
    n = 120
    for _ in range(n):
        r, v = propagate(r, v, t, period / n, MOON_MODEL, rtol=_RTOL)
        t += period / n
        score = float(_unit(r) @ r_hat_want)
        if score > best[0]:
            best = (score, r, v, t)
    return best[1], best[2], best[3]


def plan_tei_detailed(
    orbiter_r_mci_m: ArrayLike, orbiter_v_mci_m_s: ArrayLike, t_s: float, tgt: EntryInterfaceTarget
) -> TeiPlan:
    """TEI-1 (prograde, to an ellipse) and TEI-2 (at the next perilune), targeted to the EI."""
    r0 = np.asarray(orbiter_r_mci_m, dtype=np.float64)
    v0 = np.asarray(orbiter_v_mci_m_s, dtype=np.float64)
    h_hat = _unit(np.cross(r0, v0))
    rp = float(np.linalg.norm(r0))
    ra = R_MOON_M + tgt.tei1_apolune_alt_m
    a_e = 0.5 * (rp + ra)
    p_ellipse = 2.0 * math.pi * math.sqrt(a_e**3 / GM_MOON_M3_S2)
    t_dep = tgt.t_ei_s - tgt.transfer_s
    v_inf = return_conic(t_dep, tgt) - get_ephemeris().moon_state_eci(t_dep)[1]
    r_hat_want = _periapsis_departure_dir(v_inf, h_hat, rp)
    p_circ = 2.0 * math.pi * math.sqrt(rp**3 / GM_MOON_M3_S2)
    r1, v1, t1 = _pick_tei1(r0, v0, t_s, t_dep - p_ellipse - 0.5 * p_circ, r_hat_want)
    r1n = float(np.linalg.norm(r1))
    dv1 = (
        math.sqrt(GM_MOON_M3_S2 * (2.0 / r1n - 2.0 / (r1n + ra))) - float(np.linalg.norm(v1))
    ) * _unit(v1)
    r2, v2 = propagate(r1, v1 + dv1, t1, 0.75 * p_ellipse, MOON_MODEL, rtol=_RTOL)
    r2, v2, t2 = to_periapsis(r2, v2, t1 + 0.75 * p_ellipse, MOON_MODEL)
    # first guess: periapsis departure with the conic's asymptote, in the plane of r2 and v_inf
    v_inf = return_conic(t2, tgt) - get_ephemeris().moon_state_eci(t2)[1]
    r2n = float(np.linalg.norm(r2))
    h2 = _unit(np.cross(r2, v_inf))
    v_hyp = math.sqrt(float(v_inf @ v_inf) + 2.0 * GM_MOON_M3_S2 / r2n) * np.cross(h2, _unit(r2))

    rp_tp = vacuum_perigee_target(tgt)
    t_c = tgt.t_ei_s - _PERIGEE_LOOKBACK_S

    def perigee(dv: Vec) -> Vec:
        r_c, v_c = fly_home(r2, v2 + dv, t2, t_c)
        return _perigee_residual(r_c, v_c, t_c, tgt, rp_tp)

    def residual(dv: Vec) -> Vec:
        r_e, v_e = fly_home(r2, v2 + dv, t2, tgt.t_ei_s)
        return _ei_residual(entry_interface_state(r_e, v_e, tgt.t_ei_s, tgt.site), tgt)

    fd = np.full(3, 1e-4)
    dv2, _, it1 = newton(perigee, v_hyp - v2, _PERIGEE_SCALE, fd, 50.0, max_iter=40)
    dv2, _, it2 = newton(residual, dv2, _EI_SCALE, fd, 5.0, max_iter=30)
    iters = it1 + it2
    r_e, v_e = fly_home(r2, v2 + dv2, t2, tgt.t_ei_s)
    burns = (ImpulsiveBurn(t1, dv1, "TEI-1"), ImpulsiveBurn(t2, dv2, "TEI-2"))
    return TeiPlan(burns, entry_interface_state(r_e, v_e, tgt.t_ei_s, tgt.site), iters)


def plan_tei(
    orbiter_state_mci: tuple[ArrayLike, ArrayLike], t_s: float, target: EntryInterfaceTarget
) -> list[ImpulsiveBurn]:
    """The two TEI burns (MCI delta-v) for an orbiter state (r, v) in MCI at t_s."""
    return list(plan_tei_detailed(orbiter_state_mci[0], orbiter_state_mci[1], t_s, target).burns)


def plan_tcm(
    state_eci: tuple[ArrayLike, ArrayLike], t_s: float, target: EntryInterfaceTarget
) -> Vec:
    """Mid-course correction delta-v (ECI, m/s) at t_s that restores the EI targets."""
    r = np.asarray(state_eci[0], dtype=np.float64)
    v = np.asarray(state_eci[1], dtype=np.float64)

    rp_tp = vacuum_perigee_target(target)
    t_c = target.t_ei_s - _PERIGEE_LOOKBACK_S

    def perigee(dv: Vec) -> Vec:
        r_c, v_c = propagate(r, v + dv, t_s, t_c - t_s, EARTH_MODEL, rtol=_RTOL)
        return _perigee_residual(r_c, v_c, t_c, target, rp_tp)

    def residual(dv: Vec) -> Vec:
        r_e, v_e = propagate(r, v + dv, t_s, target.t_ei_s - t_s, EARTH_MODEL, rtol=_RTOL)
        return _ei_residual(entry_interface_state(r_e, v_e, target.t_ei_s, target.site), target)

    fd = np.full(3, 1e-5)
    dv = np.zeros(3)
    if t_s < t_c:
        dv, _, _ = newton(perigee, dv, _PERIGEE_SCALE, fd, 20.0, max_iter=30)
    dv, _, _ = newton(residual, dv, _EI_SCALE, fd, 5.0, max_iter=30)
    return dv


def parking_orbit_for_return(
    tgt: EntryInterfaceTarget, t_s: float, inclination_deg: float, alt_m: float
) -> tuple[Vec, Vec]:
    """Circular lunar orbit (MCI state at t_s) whose plane holds the return asymptote.

    This is what the weeks of orbit adjustments before TEI achieve: a plane
    that contains the departure direction, so TEI costs no plane change. The
    inclination (to the lunar equator) is kept if the geometry allows it,
    else the nearest feasible one is used.
    """
    t_dep = tgt.t_ei_s - tgt.transfer_s
    s_hat = _unit(return_conic(t_dep, tgt) - get_ephemeris().moon_state_eci(t_dep)[1])
    pole = frames.moon_pole_mci(t_s)
    a_hat = _unit(np.cross(s_hat, pole))
    b_hat = np.cross(s_hat, a_hat)
    sin_b = max(-1.0, min(1.0, math.cos(math.radians(inclination_deg)) / float(pole @ b_hat)))
    n_hat = math.sqrt(1.0 - sin_b**2) * a_hat + sin_b * b_hat
    r = R_MOON_M + alt_m
    u_hat = _unit(np.cross(n_hat, s_hat))
    return r * u_hat, math.sqrt(GM_MOON_M3_S2 / r) * np.cross(n_hat, u_hat)
