"""Powered-flight guidance and manoeuvre planning around the Moon.

Modules: ``loi`` (orbit insertion and adjustments), ``descent`` (powered
descent to the landing site), ``ascent`` (lift-off to lunar orbit) and
``rendezvous`` (phasing, closing approach and capture). Each powered phase is
a pure state machine, ``step(state, dt_s) -> (state, output)``, that the
lock-step services can advance by any clock step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics import frames
from services.dynamics.vec import cross, norm

__all__ = ["ArcGravity", "MoonRotation", "PoweredOutput", "zem_zev", "zem_zev_accel"]

Vec = NDArray[np.float64]
# Half-width of the central difference that measures the Moon's spin rate.
_RATE_HALF_S = 30.0


@dataclass(frozen=True)
class MoonRotation:
    """The MCI -> Moon-fixed rotation as a uniform spin about a fixed axis.

    Sampled once from the IAU model (``frames``) and extrapolated: over a
    powered phase the libration-driven change of the spin rate moves a
    surface point by well under a metre (checked in tests against
    :func:`frames.moon_fixed_matrix`), and evaluating one Rodrigues matrix is
    ~20x cheaper than the full model per guidance cycle.
    """

    t_ref_s: float
    fixed_from_mci_ref: Vec = field(compare=False)
    omega_fixed_rad_s: Vec = field(compare=False)

    @classmethod
    def at(cls, t_s: float) -> MoonRotation:
        m_ref = frames.moon_fixed_matrix(t_s)
        m_dot = (
            frames.moon_fixed_matrix(t_s + _RATE_HALF_S)
            - frames.moon_fixed_matrix(t_s - _RATE_HALF_S)
        ) / (2.0 * _RATE_HALF_S)
        skew = m_dot @ m_ref.T  # = -[omega]x, omega in fixed axes
        omega = np.array([skew[1, 2], skew[2, 0], skew[0, 1]])
        return cls(t_s, m_ref, omega)

    def matrix(self, t_s: float) -> Vec:
        """Rotation MCI -> Moon-fixed at ``t_s``: exp(-[omega]x dt) M_ref."""
        rate = norm(self.omega_fixed_rad_s)
        angle = rate * (t_s - self.t_ref_s)
        k = self.omega_fixed_rad_s / rate
        kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
        spin = np.eye(3) - math.sin(angle) * kx + (1.0 - math.cos(angle)) * (kx @ kx)
        result: Vec = spin @ self.fixed_from_mci_ref
        return result

    def fixed_state(self, r_mci_m: ArrayLike, v_mci_m_s: ArrayLike, t_s: float) -> tuple[Vec, Vec]:
        """Position and surface-relative velocity in the Moon-fixed frame."""
        m = self.matrix(t_s)
        r_f: Vec = m @ np.asarray(r_mci_m, dtype=np.float64)
        v_f: Vec = m @ np.asarray(v_mci_m_s, dtype=np.float64) - cross(
            self.omega_fixed_rad_s, r_f
        )
        return r_f, v_f

    def mci_state(
        self, r_fixed_m: ArrayLike, v_fixed_m_s: ArrayLike, t_s: float
    ) -> tuple[Vec, Vec]:
        m_t = self.matrix(t_s).T
        r_f = np.asarray(r_fixed_m, dtype=np.float64)
        v_in = np.asarray(v_fixed_m_s, dtype=np.float64) + cross(self.omega_fixed_rad_s, r_f)
        r_mci: Vec = m_t @ r_f
        v_mci: Vec = m_t @ v_in
        return r_mci, v_mci


@dataclass(frozen=True)
class PoweredOutput:
    """What one step of a powered phase reports (thrust held over the last sub-step)."""

    t_s: float
    phase: str
    thrust_n: float
    throttle: float  # thrust / max thrust, 0 when the engine is off
    thrust_dir_mci: Vec = field(compare=False)
    events: tuple[str, ...]
    altitude_m: float  # above the site's reference radius (descent/ascent)
    propellant_kg: float


@dataclass(frozen=True)
class ArcGravity:
    """Gravity along a guidance arc: constant ``g`` plus a vertical
    centrifugal relief v_h(t)^2 / r, with v_h falling linearly from
    ``vh_now`` to ``vh_end`` over t_go (axis 2 is up).

    Over the ~500 km braking arc the horizontal speed first almost cancels
    gravity and at the gate does not; a constant effective gravity would make
    the guidance thrust upward early and climb tens of kilometres.
    """

    g: Vec
    vh_now: float = 0.0
    vh_end: float = 0.0
    inv_r: float = 0.0

    def integrals(self, t: Vec) -> tuple[Vec, Vec]:
        """(velocity, position) change from gravity after t (column array)."""
        c, d = self.vh_now, self.vh_end
        dv = self.g * t
        dr = 0.5 * self.g * t * t
        if self.inv_r:
            dv_up = self.inv_r * t * (c * c + c * d + d * d) / 3.0
            dr_up = self.inv_r * t * t * (c * c / 2.0 + c * (d - c) / 3.0 + (d - c) ** 2 / 12.0)
            dv = dv + dv_up * _UP
            dr = dr + dr_up * _UP
        return dv, dr


_UP = np.array([0.0, 0.0, 1.0])


def zem_zev(
    pos: Vec, vel: Vec, grav: ArcGravity, pos_f: Vec, vel_f: Vec, t: Vec
) -> tuple[Vec, Vec]:
    dv, dr = grav.integrals(t)
    return pos_f - (pos + vel * t + dr), vel_f - (vel + dv)


def zem_zev_accel(pos: Vec, vel: Vec, grav: ArcGravity, pos_f: Vec, vel_f: Vec, tgo: float) -> Vec:
    """E-guidance thrust acceleration now: 6 ZEM / t^2 - 2 ZEV / t."""
    t = np.array([[tgo]])
    zem, zev = zem_zev(pos, vel, grav, pos_f, vel_f, t)
    result: Vec = (6.0 * zem / (tgo * tgo) - 2.0 * zev / tgo)[0]
    return result
