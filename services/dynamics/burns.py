"""Manoeuvres: impulsive delta-v and finite burns with a steering law.

Conventions
-----------
* Vectors are Moon-centred inertial (MCI, ICRF axes) unless the name says
  otherwise; RTN is the local orbital frame (R radial out, N along the orbit
  angular momentum, T = N x R, roughly along the velocity).
* An engine is described by its thrust and effective exhaust velocity
  ``v_e_m_s`` (= Isp * g0); mass flow is thrust / v_e.
* A burn never adds mass: propellant can only be spent, and a burn that
  would take the vehicle below its dry mass raises :class:`PropellantExhausted`
  before touching the state.

Powered flight is integrated with a fixed-step RK4 on Moon point-mass gravity
(optionally + J2). Third bodies (Earth ~2e-5 m/s^2 differential at low lunar
orbit, Sun ~1e-7 m/s^2) change a minutes-long burn by centimetres per second
and are neglected here; the coast propagator carries them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.constants import GM_MOON_M3_S2, J2_MOON, R_MOON_M
from services.dynamics.kepler import propagate_kepler
from services.dynamics.vec import cross, norm

__all__ = [
    "Engine",
    "FiniteBurnResult",
    "ImpulsiveBurn",
    "PropellantExhausted",
    "Steering",
    "apply_impulse",
    "burn_duration_s",
    "execute_impulsive",
    "finite_burn",
    "finite_burn_for_dv",
    "inertial_from_rtn",
    "mass_after_dv_kg",
    "moon_gravity_mci",
    "propellant_for_dv_kg",
    "rk4_powered_step",
    "rtn_basis",
    "rtn_from_inertial",
    "steer_inertial",
    "steer_rtn",
    "steer_velocity",
]

Vec = NDArray[np.float64]
# (t_s, r_mci_m, v_mci_m_s, mass_kg) -> unit thrust direction in MCI.
Steering = Callable[[float, Vec, Vec, float], Vec]


class PropellantExhausted(RuntimeError):
    """A burn needs more propellant than the vehicle carries above its dry mass."""

    def __init__(self, needed_kg: float, available_kg: float) -> None:
        super().__init__(
            f"burn needs {needed_kg:.3f} kg of propellant, only {available_kg:.3f} kg available"
        )
        self.needed_kg = needed_kg
        self.available_kg = available_kg


@dataclass(frozen=True)
class Engine:
    """A throttleable engine; ``min_thrust_n`` is the lowest lit setting."""

    max_thrust_n: float
    v_e_m_s: float
    min_thrust_n: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_thrust_n > 0.0:
            raise ValueError(f"max_thrust_n must be > 0, got {self.max_thrust_n}")
        if not self.v_e_m_s > 0.0:
            raise ValueError(f"v_e_m_s (Isp * g0) must be > 0, got {self.v_e_m_s}")
        if not 0.0 <= self.min_thrust_n <= self.max_thrust_n:
            raise ValueError(
                f"min_thrust_n must lie in [0, max_thrust_n={self.max_thrust_n}], "
                f"got {self.min_thrust_n}"
            )

    def mass_flow_kg_s(self, thrust_n: float) -> float:
        return thrust_n / self.v_e_m_s

    def clamp_thrust_n(self, thrust_n: float) -> float:
        """Nearest achievable thrust while the engine is lit."""
        return min(self.max_thrust_n, max(self.min_thrust_n, thrust_n))


@dataclass(frozen=True)
class ImpulsiveBurn:
    """A planned instantaneous velocity change at mission time ``t_s``."""

    t_s: float
    dv_mci_m_s: Vec = field(compare=False)
    label: str = ""

    @property
    def dv_m_s(self) -> float:
        return norm(self.dv_mci_m_s)


# --- rocket equation -------------------------------------------------------


def mass_after_dv_kg(m0_kg: float, dv_m_s: float, v_e_m_s: float) -> float:
    """Tsiolkovsky: mass left after spending ``dv_m_s`` (>= 0)."""
    if dv_m_s < 0.0:
        raise ValueError(f"delta-v magnitude must be >= 0, got {dv_m_s}")
    return m0_kg * math.exp(-dv_m_s / v_e_m_s)


def propellant_for_dv_kg(m0_kg: float, dv_m_s: float, v_e_m_s: float) -> float:
    return m0_kg - mass_after_dv_kg(m0_kg, dv_m_s, v_e_m_s)


def apply_impulse(
    v_m_s: ArrayLike, mass_kg: float, dv_m_s: ArrayLike, v_e_m_s: float, dry_mass_kg: float
) -> tuple[Vec, float]:
    """Velocity and mass after an impulsive burn; raises if propellant runs out."""
    dv = np.asarray(dv_m_s, dtype=np.float64)
    m_after = mass_after_dv_kg(mass_kg, norm(dv), v_e_m_s)
    if m_after < dry_mass_kg:
        raise PropellantExhausted(mass_kg - m_after, max(0.0, mass_kg - dry_mass_kg))
    return np.asarray(v_m_s, dtype=np.float64) + dv, m_after


# --- local orbital frame ---------------------------------------------------


def rtn_basis(r_m: ArrayLike, v_m_s: ArrayLike) -> Vec:
    """Rows are the R, T, N unit vectors (in the frame of ``r_m``)."""
    r = np.asarray(r_m, dtype=np.float64)
    v = np.asarray(v_m_s, dtype=np.float64)
    r_hat = r / np.linalg.norm(r)
    h = cross(r, v)
    n_hat = h / np.linalg.norm(h)
    return np.array([r_hat, cross(n_hat, r_hat), n_hat])


def inertial_from_rtn(r_m: ArrayLike, v_m_s: ArrayLike, vec_rtn: ArrayLike) -> Vec:
    result: Vec = rtn_basis(r_m, v_m_s).T @ np.asarray(vec_rtn, dtype=np.float64)
    return result


def rtn_from_inertial(r_m: ArrayLike, v_m_s: ArrayLike, vec: ArrayLike) -> Vec:
    result: Vec = rtn_basis(r_m, v_m_s) @ np.asarray(vec, dtype=np.float64)
    return result


# --- gravity and the powered integrator ------------------------------------


def moon_gravity_mci(r_mci_m: Vec, pole_mci: Vec | None = None) -> Vec:
    """Moon point mass, plus J2 about ``pole_mci`` (unit) when given."""
    r2 = float(r_mci_m @ r_mci_m)
    r = math.sqrt(r2)
    acc: Vec = (-GM_MOON_M3_S2 / (r2 * r)) * r_mci_m
    if pole_mci is None:
        return acc
    r_hat = r_mci_m / r
    s = float(r_hat @ pole_mci)
    k = -1.5 * J2_MOON * GM_MOON_M3_S2 * R_MOON_M**2 / (r2 * r2)
    return acc + k * ((1.0 - 5.0 * s * s) * r_hat + 2.0 * s * pole_mci)


def rk4_powered_step(
    r_m: Vec,
    v_m_s: Vec,
    mass_kg: float,
    dt_s: float,
    thrust_mci_n: Vec,
    v_e_m_s: float,
    pole_mci: Vec | None = None,
) -> tuple[Vec, Vec, float]:
    """One RK4 step with a thrust vector held fixed in MCI over the step.

    Mass falls linearly at constant thrust, so it is integrated exactly.
    """
    thrust = norm(thrust_mci_n)
    mdot = thrust / v_e_m_s
    half = 0.5 * dt_s

    def acc(r: Vec, m: float) -> Vec:
        return moon_gravity_mci(r, pole_mci) + thrust_mci_n / m

    m_mid = mass_kg - mdot * half
    m_end = mass_kg - mdot * dt_s
    a1 = acc(r_m, mass_kg)
    r2 = r_m + half * v_m_s
    v2 = v_m_s + half * a1
    a2 = acc(r2, m_mid)
    r3 = r_m + half * v2
    v3 = v_m_s + half * a2
    a3 = acc(r3, m_mid)
    r4 = r_m + dt_s * v3
    v4 = v_m_s + dt_s * a3
    a4 = acc(r4, m_end)
    sixth = dt_s / 6.0
    r_new = r_m + sixth * (v_m_s + 2.0 * v2 + 2.0 * v3 + v4)
    v_new = v_m_s + sixth * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
    return r_new, v_new, m_end


# --- steering laws ---------------------------------------------------------


def _unit(vec: ArrayLike) -> Vec:
    arr = np.asarray(vec, dtype=np.float64)
    length = norm(arr)
    if length == 0.0:
        raise ValueError("a thrust direction needs a non-zero vector")
    result: Vec = arr / length
    return result


def steer_inertial(direction_mci: ArrayLike) -> Steering:
    """Hold one inertial attitude for the whole burn."""
    fixed = _unit(direction_mci)
    return lambda _t, _r, _v, _m: fixed


def steer_velocity(sign: float = 1.0) -> Steering:
    """Along (+1, prograde) or against (-1, retrograde) the current velocity."""
    return lambda _t, _r, v, _m: math.copysign(1.0, sign) * _unit(v)


def steer_rtn(direction_rtn: ArrayLike) -> Steering:
    """Hold a fixed direction in the rotating RTN frame."""
    fixed = _unit(direction_rtn)
    return lambda _t, r, v, _m: inertial_from_rtn(r, v, fixed)


# --- finite burns ----------------------------------------------------------


@dataclass(frozen=True)
class FiniteBurnResult:
    """State at the end of a finite burn and what it cost."""

    t_end_s: float
    r_mci_m: Vec = field(compare=False)
    v_mci_m_s: Vec = field(compare=False)
    mass_kg: float
    propellant_kg: float
    dv_m_s: float  # integral of thrust / mass, the "ideal" delta-v delivered


def finite_burn(
    r_mci_m: ArrayLike,
    v_mci_m_s: ArrayLike,
    mass_kg: float,
    t0_s: float,
    duration_s: float,
    engine: Engine,
    steering: Steering,
    *,
    dry_mass_kg: float,
    throttle: float = 1.0,
    substep_s: float = 0.5,
    pole_mci: Vec | None = None,
) -> FiniteBurnResult:
    """Burn at ``throttle`` * max thrust for ``duration_s`` along ``steering``.

    The steering is sampled once per sub-step (a guidance cycle).
    """
    if duration_s < 0.0 or not 0.0 < throttle <= 1.0:
        raise ValueError(
            f"need duration_s >= 0 and 0 < throttle <= 1, got {duration_s}, {throttle}"
        )
    thrust_n = engine.clamp_thrust_n(throttle * engine.max_thrust_n)
    needed_kg = engine.mass_flow_kg_s(thrust_n) * duration_s
    if mass_kg - needed_kg < dry_mass_kg:
        raise PropellantExhausted(needed_kg, max(0.0, mass_kg - dry_mass_kg))
    r = np.asarray(r_mci_m, dtype=np.float64)
    v = np.asarray(v_mci_m_s, dtype=np.float64)
    m, t = mass_kg, t0_s
    n_sub = max(1, math.ceil(duration_s / substep_s))
    h = duration_s / n_sub
    for _ in range(n_sub):
        thrust_vec = thrust_n * steering(t, r, v, m)
        r, v, m = rk4_powered_step(r, v, m, h, thrust_vec, engine.v_e_m_s, pole_mci)
        t += h
    dv = engine.v_e_m_s * math.log(mass_kg / m)
    return FiniteBurnResult(t, r, v, m, mass_kg - m, dv)


def burn_duration_s(mass_kg: float, dv_m_s: float, engine: Engine, throttle: float = 1.0) -> float:
    """Time for a constant-thrust burn to deliver ``dv_m_s`` (rocket equation)."""
    used = propellant_for_dv_kg(mass_kg, dv_m_s, engine.v_e_m_s)
    return used / engine.mass_flow_kg_s(throttle * engine.max_thrust_n)


def finite_burn_for_dv(
    r_mci_m: ArrayLike,
    v_mci_m_s: ArrayLike,
    mass_kg: float,
    t0_s: float,
    dv_m_s: float,
    engine: Engine,
    steering: Steering,
    *,
    dry_mass_kg: float,
    substep_s: float = 0.5,
    pole_mci: Vec | None = None,
) -> FiniteBurnResult:
    """Full-thrust burn lasting exactly as long as ``dv_m_s`` of ideal delta-v needs."""
    duration = burn_duration_s(mass_kg, dv_m_s, engine)
    return finite_burn(
        r_mci_m,
        v_mci_m_s,
        mass_kg,
        t0_s,
        duration,
        engine,
        steering,
        dry_mass_kg=dry_mass_kg,
        substep_s=substep_s,
        pole_mci=pole_mci,
    )


def execute_impulsive(
    r_mci_m: ArrayLike,
    v_mci_m_s: ArrayLike,
    t0_s: float,
    burns: list[ImpulsiveBurn],
    t_end_s: float,
    mu_m3_s2: float = GM_MOON_M3_S2,
) -> tuple[Vec, Vec]:
    """Two-body coast from ``t0_s`` to ``t_end_s`` applying ``burns`` on the way.

    The check a planner's burn list gets in tests: burns before ``t0_s`` or
    after ``t_end_s`` are refused rather than silently skipped.
    """
    r = np.asarray(r_mci_m, dtype=np.float64)
    v = np.asarray(v_mci_m_s, dtype=np.float64)
    t = t0_s
    for burn in sorted(burns, key=lambda b: b.t_s):
        if not t0_s <= burn.t_s <= t_end_s:
            raise ValueError(f"burn at t={burn.t_s} s lies outside [{t0_s}, {t_end_s}] s")
        r, v = propagate_kepler(r, v, burn.t_s - t, mu_m3_s2)
        v = v + burn.dv_mci_m_s
        t = burn.t_s
    return propagate_kepler(r, v, t_end_s - t, mu_m3_s2)
