"""Numerical propagation of perturbed flight, step-wise and fast.

Force model (selectable per phase with :class:`ForceModel`): point mass of
the central body, its J2 about its true spin axis, and third-body terms of
the Earth or Moon and the Sun from DE421.

Integrator: the Dormand-Prince 8(5,3) pair (Hairer, Norsett & Wanner 1993,
II.5; coefficients from scipy's DOP853 table) in a lean loop of our own.
Why our own loop: with scipy's ``solve_ivp`` and DE421 evaluated inside
every right-hand side a 13-day lunar coast costs ~10 s of CPU. Here

* the Earth/Moon, Sun and spin-axis directions are read from a
  :class:`~services.dynamics.ephemeris.ChebyshevTable` refit of DE421
  and the IAU rotation models, evaluated for all twelve stage times of a step
  in one vectorised call;
* the right-hand side is plain float arithmetic (no small-array numpy calls);
* the error norm scales position and velocity by their vector magnitudes,
  which suits orbits better than per-component scaling.

:func:`propagate` is step-wise (state at ``t0_s`` in, state at ``t0_s + dt_s``
out); :class:`Propagator` remembers the last step size between calls so the
clock's many short steps do not each restart the step-size search.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics.constants import (
    GM_EARTH_M3_S2,
    GM_MOON_M3_S2,
    GM_SUN_M3_S2,
    J2_EARTH,
    J2_MOON,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.dynamics.ephemeris import ChebyshevTable, get_ephemeris
from services.dynamics.frames import earth_fixed_matrix, moon_pole_mci
from services.dynamics.gravity import j2_accel, point_mass_accel, third_body_accel

__all__ = [
    "ALL_BODIES",
    "ForceModel",
    "PropagationError",
    "Propagator",
    "accel",
    "accel_direct",
    "kepler_ellipse",
    "propagate",
]

Vec = NDArray[np.float64]
Body = Literal["earth", "moon"]
ALL_BODIES: tuple[str, ...] = ("earth", "moon", "sun")
_GM = {"earth": GM_EARTH_M3_S2, "moon": GM_MOON_M3_S2, "sun": GM_SUN_M3_S2}
_SHAPE = {"earth": (J2_EARTH, R_EARTH_EQ_M), "moon": (J2_MOON, R_MOON_M)}


def _dop853_table() -> ModuleType:
    """scipy's DOP853 coefficient module, loaded from its file by itself.

    Why not ``from scipy.integrate._ivp import ...``: that runs
    ``scipy.integrate``'s package import (special functions, optimize, ...),
    ~0.4 s of CPU in every service process, for a table of numbers that only
    needs numpy."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or spec.origin is None:
        raise ImportError("scipy is required for the DOP853 coefficients")
    path = Path(spec.origin).parent / "integrate" / "_ivp" / "dop853_coefficients.py"
    file_spec = importlib.util.spec_from_file_location("_twin_dop853_coefficients", path)
    if file_spec is None or file_spec.loader is None:
        raise ImportError(f"cannot load the DOP853 coefficients from {path}")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


_dop = _dop853_table()

# DOP853 tableau: 12 stages, the 12th at t + h; the 13th row of E3/E5 uses
# the derivative at the new state (first-same-as-last).
_N_STAGES = 12
_A = np.ascontiguousarray(_dop.A[:_N_STAGES, :_N_STAGES])
_B = np.ascontiguousarray(_dop.B)
_C = np.ascontiguousarray(_dop.C[:_N_STAGES])
_E3 = np.ascontiguousarray(_dop.E3)
_E5 = np.ascontiguousarray(_dop.E5)
_E53 = np.ascontiguousarray(np.vstack([_E5, _E3]))  # both error estimates in one product
_MAX_STEPS = 10_000_000


class PropagationError(RuntimeError):
    """The integrator could not reach the requested time."""

    def __init__(self, reason: str, t_s: float) -> None:
        super().__init__(f"{reason} at t={t_s:.3f} s")
        self.reason = reason
        self.t_s = t_s


@dataclass(frozen=True)
class ForceModel:
    """Which accelerations act, relative to which centre.

    ``third_bodies`` defaults to every body other than the centre, i.e.
    ("moon", "sun") about the Earth and ("earth", "sun") about the Moon.
    ``ForceModel("moon", j2=False, third_bodies=())`` is pure two-body.
    """

    central: Body
    j2: bool = True
    third_bodies: tuple[str, ...] = ALL_BODIES

    def __post_init__(self) -> None:
        if self.central not in _SHAPE:
            raise ValueError(f"central must be 'earth' or 'moon', got {self.central!r}")
        if self.third_bodies == ALL_BODIES:
            others = tuple(b for b in ALL_BODIES if b != self.central)
            object.__setattr__(self, "third_bodies", others)
        bad = [b for b in self.third_bodies if b not in ALL_BODIES or b == self.central]
        if bad:
            msg = f"third_bodies {bad} invalid for central {self.central!r}; pick from {ALL_BODIES}"
            raise ValueError(msg)

    @property
    def mu_m3_s2(self) -> float:
        """Gravitational parameter of the central body."""
        return _GM[self.central]

    @property
    def other(self) -> Body:
        """The Earth for a Moon-centred model and vice versa."""
        return "earth" if self.central == "moon" else "moon"


# --- Geometry of the perturbers, direct and tabulated --------------------------


def _perturber_columns(central: Body, t_s: Vec) -> Vec:
    """(n, 9): other body rel. centre, Sun rel. centre, centre's spin axis (ICRF)."""
    eph = get_ephemeris()
    moon_eci = eph.moon_eci_m(t_s)
    sun_eci = eph.sun_eci_m(t_s)
    if central == "moon":
        pole = moon_pole_mci(t_s)
        return np.hstack([-moon_eci, sun_eci - moon_eci, pole])
    pole = earth_fixed_matrix(t_s)[..., 2, :]  # ITRS z axis in GCRS
    return np.hstack([moon_eci, sun_eci, pole])


@lru_cache(maxsize=2)
def perturber_table(central: Body) -> ChebyshevTable:
    """Shared Chebyshev table of :func:`_perturber_columns` (grows on demand).

    2-day degree-14 segments reproduce DE421 to < 1 mm and the spin axes to
    < 1e-12 rad (tests/unit/dynamics/test_propagate.py)."""

    def columns(t_s: Vec) -> Vec:
        return _perturber_columns(central, t_s)

    return ChebyshevTable(columns, width=9)


def _accel_from_columns(r: Vec, cols: Vec, model: ForceModel) -> Vec:
    acc = point_mass_accel(r, model.mu_m3_s2)
    if model.j2:
        j2, radius = _SHAPE[model.central]
        acc = acc + j2_accel(r, model.mu_m3_s2, j2, radius, cols[..., 6:9])
    if model.other in model.third_bodies:
        acc = acc + third_body_accel(r, cols[..., 0:3], _GM[model.other])
    if "sun" in model.third_bodies:
        acc = acc + third_body_accel(r, cols[..., 3:6], GM_SUN_M3_S2)
    return acc


def accel(r_m: ArrayLike, t_s: ArrayLike, model: ForceModel) -> Vec:
    """Acceleration (m/s^2) at position ``r_m`` relative to the centre (tabulated ephemeris)."""
    cols = perturber_table(model.central)(t_s)
    return _accel_from_columns(np.asarray(r_m, dtype=np.float64), cols, model)


def accel_direct(r_m: ArrayLike, t_s: ArrayLike, model: ForceModel) -> Vec:
    """Same as :func:`accel` but with DE421 and rotation models evaluated directly (reference)."""
    t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
    cols = _perturber_columns(model.central, t)
    cols = cols[0] if np.ndim(t_s) == 0 else cols
    return _accel_from_columns(np.asarray(r_m, dtype=np.float64), cols, model)


# --- Fast right-hand side -------------------------------------------------------

Rhs = Callable[[list[float], list[float]], tuple[float, float, float, float, float, float]]


def _make_rhs(model: ForceModel) -> Rhs:
    """Plain-float derivative of (r, v) given the 9 tabulated columns at the stage time."""
    mu = model.mu_m3_s2
    j2, radius = _SHAPE[model.central]
    k_j2 = -1.5 * j2 * mu * radius * radius if model.j2 else 0.0
    mu_o = _GM[model.other] if model.other in model.third_bodies else 0.0
    mu_s = GM_SUN_M3_S2 if "sun" in model.third_bodies else 0.0
    sqrt = math.sqrt
    if k_j2 and mu_o and mu_s:
        return _make_full_rhs(mu, k_j2, mu_o, mu_s)

    def rhs(y: list[float], e: list[float]) -> tuple[float, float, float, float, float, float]:
        x, yy, z = y[0], y[1], y[2]
        r2 = x * x + yy * yy + z * z
        r = sqrt(r2)
        g = -mu / (r2 * r)
        ax, ay, az = g * x, g * yy, g * z
        if k_j2:
            px, py, pz = e[6], e[7], e[8]
            s = (x * px + yy * py + z * pz) / r  # sine of latitude
            c1 = k_j2 / (r2 * r2) * (1.0 - 5.0 * s * s) / r
            c2 = k_j2 / (r2 * r2) * 2.0 * s
            ax += c1 * x + c2 * px
            ay += c1 * yy + c2 * py
            az += c1 * z + c2 * pz
        for mu_b, bx, by, bz in ((mu_o, e[0], e[1], e[2]), (mu_s, e[3], e[4], e[5])):
            if mu_b:
                dx, dy, dz = bx - x, by - yy, bz - z
                d2 = dx * dx + dy * dy + dz * dz
                b2 = bx * bx + by * by + bz * bz
                kd = mu_b / (d2 * sqrt(d2))
                kb = mu_b / (b2 * sqrt(b2))
                ax += kd * dx - kb * bx
                ay += kd * dy - kb * by
                az += kd * dz - kb * bz
        return y[3], y[4], y[5], ax, ay, az

    return rhs


def _make_full_rhs(mu: float, k_j2: float, mu_o: float, mu_s: float) -> Rhs:
    """The default models' derivative (J2 and both third bodies), unrolled:
    the integrator spends most of its time here."""
    sqrt = math.sqrt

    def rhs(y: list[float], e: list[float]) -> tuple[float, float, float, float, float, float]:
        x, yy, z = y[0], y[1], y[2]
        r2 = x * x + yy * yy + z * z
        r = sqrt(r2)
        g = -mu / (r2 * r)
        px, py, pz = e[6], e[7], e[8]
        s = (x * px + yy * py + z * pz) / r  # sine of latitude
        kr = k_j2 / (r2 * r2)
        c1 = kr * (1.0 - 5.0 * s * s) / r + g
        c2 = kr * 2.0 * s
        bx, by, bz = e[0], e[1], e[2]
        dx, dy, dz = bx - x, by - yy, bz - z
        d2 = dx * dx + dy * dy + dz * dz
        b2 = bx * bx + by * by + bz * bz
        kd = mu_o / (d2 * sqrt(d2))
        kb = mu_o / (b2 * sqrt(b2))
        sx, sy, sz = e[3], e[4], e[5]
        ex, ey, ez = sx - x, sy - yy, sz - z
        q2 = ex * ex + ey * ey + ez * ez
        s2 = sx * sx + sy * sy + sz * sz
        kq = mu_s / (q2 * sqrt(q2))
        ks = mu_s / (s2 * sqrt(s2))
        return (
            y[3], y[4], y[5],
            c1 * x + c2 * px + kd * dx - kb * bx + kq * ex - ks * sx,
            c1 * yy + c2 * py + kd * dy - kb * by + kq * ey - ks * sy,
            c1 * z + c2 * pz + kd * dz - kb * bz + kq * ez - ks * sz,
        )  # fmt: skip

    return rhs


@lru_cache(maxsize=32)
def _rhs_for(model: ForceModel) -> Rhs:
    return _make_rhs(model)


# --- The integrator --------------------------------------------------------------


def _error_norm(k: Vec, h: float, y: Vec, y_new: Vec, rtol: float) -> float:
    """DOP853's blended 5th/3rd-order estimate, scaled by |r| and |v| (RMS over 6)."""
    errs: list[list[float]] = (_E53 @ k).tolist()
    err5, err3 = errs
    y0: list[float] = y.tolist()
    y1: list[float] = y_new.tolist()
    sqrt = math.sqrt
    scale_r = rtol * max(
        sqrt(y0[0] ** 2 + y0[1] ** 2 + y0[2] ** 2), sqrt(y1[0] ** 2 + y1[1] ** 2 + y1[2] ** 2)
    )
    scale_v = rtol * max(
        sqrt(y0[3] ** 2 + y0[4] ** 2 + y0[5] ** 2), sqrt(y1[3] ** 2 + y1[4] ** 2 + y1[5] ** 2)
    )
    e5 = (err5[0] ** 2 + err5[1] ** 2 + err5[2] ** 2) / scale_r**2 + (
        err5[3] ** 2 + err5[4] ** 2 + err5[5] ** 2
    ) / scale_v**2
    e3 = (err3[0] ** 2 + err3[1] ** 2 + err3[2] ** 2) / scale_r**2 + (
        err3[3] ** 2 + err3[4] ** 2 + err3[5] ** 2
    ) / scale_v**2
    if e5 == 0.0 and e3 == 0.0:
        return 0.0
    return abs(h) * e5 / sqrt((e5 + 0.01 * e3) * 6.0)


def _initial_step_s(y: Vec, mu: float) -> float:
    # About 1/60 of the osculating circular period: the controller settles
    # from there within a step or two.
    r = math.sqrt(float(y[0:3] @ y[0:3]))
    return 2.0 * math.pi * math.sqrt(r**3 / mu) / 60.0


class _Segment:
    """The Chebyshev segment of the perturber table the integrator is in.

    Evaluating the twelve stage times of a step against one segment's
    coefficients (fixed shapes: (12, deg+1) @ (deg+1, 9)) costs a quarter of
    the table's general gather-and-contract call; a step that straddles a
    segment boundary (a few per 2-day segment) takes the general call."""

    def __init__(self, table: ChebyshevTable, t_s: float) -> None:
        self.table = table
        self._k = np.arange(table.degree + 1, dtype=np.float64)
        self._set(t_s)

    def _set(self, t_s: float) -> None:
        self.start_s, self.length_s, self.coef = self.table.window(t_s)
        self.end_s = self.start_s + self.length_s

    def stages(self, t_s: float, hd_s: float) -> list[list[float]]:
        t_lo, t_hi = (t_s, t_s + hd_s) if hd_s >= 0.0 else (t_s + hd_s, t_s)
        if not self.start_s <= t_lo < self.end_s:
            self._set(t_lo)
        times = t_s + _C * hd_s
        if t_hi > self.end_s:
            out: list[list[float]] = self.table(times).tolist()
            return out
        tau = (times - self.start_s) * (2.0 / self.length_s) - 1.0
        np.clip(tau, -1.0, 1.0, out=tau)
        basis = np.cos(np.multiply.outer(np.arccos(tau), self._k))
        stage_cols: list[list[float]] = np.dot(basis, self.coef).tolist()
        return stage_cols


def _integrate(
    y0: Vec, t0_s: float, dt_s: float, model: ForceModel, rtol: float, h_s: float | None
) -> tuple[Vec, float, int]:
    """DOP853 from t0 to t0 + dt; returns (state, next step size hint, steps)."""
    table = perturber_table(model.central)
    table.prepare(t0_s, t0_s + dt_s)
    rhs = _rhs_for(model)
    direction = 1.0 if dt_s >= 0.0 else -1.0
    t, t_end = t0_s, t0_s + dt_s
    y = np.array(y0, dtype=np.float64)
    h = abs(h_s) if h_s else _initial_step_s(y, model.mu_m3_s2)
    k = np.empty((_N_STAGES + 1, 6))
    k[0] = rhs(y.tolist(), table(t).tolist())
    steps = 0
    seg = _Segment(table, t)
    while direction * (t_end - t) > 0.0:
        if steps > _MAX_STEPS or h < 1e-9:
            raise PropagationError("step size underflow or too many steps", t)
        h_try = min(h, abs(t_end - t))
        hd = direction * h_try
        eph = seg.stages(t, hd)
        ha = _A * hd
        for i in range(1, _N_STAGES):
            k[i] = rhs((y + ha[i, :i] @ k[:i]).tolist(), eph[i])
        y_new = y + hd * (_B @ k[:_N_STAGES])
        k[_N_STAGES] = rhs(y_new.tolist(), eph[_N_STAGES - 1])
        err = _error_norm(k, hd, y, y_new, rtol)
        steps += 1
        if err <= 1.0:
            t = t_end if h_try == abs(t_end - t) else t + hd
            y = y_new
            k[0] = k[_N_STAGES]
            grow = 10.0 if err == 0.0 else min(10.0, 0.9 * err ** (-1.0 / 8.0))
            # A step clipped to hit t_end says nothing about the natural size.
            h = max(h, h_try * grow) if h_try < h else h_try * grow
        else:
            h = h_try * max(0.2, 0.9 * err ** (-1.0 / 8.0))
    return y, h, steps


def propagate(
    r_m: ArrayLike,
    v_m_s: ArrayLike,
    t0_s: float,
    dt_s: float,
    model: ForceModel,
    rtol: float = 1e-10,
    step_hint_s: float | None = None,
) -> tuple[Vec, Vec]:
    """State after ``dt_s`` (either sign) under ``model``, adaptive DOP853.

    ``rtol`` bounds the local error per step relative to |r| and |v|."""
    y0 = np.concatenate([np.asarray(r_m, dtype=np.float64), np.asarray(v_m_s, dtype=np.float64)])
    if dt_s == 0.0:
        return y0[0:3].copy(), y0[3:6].copy()
    y, _, _ = _integrate(y0, float(t0_s), float(dt_s), model, rtol, step_hint_s)
    return y[0:3], y[3:6]


class Propagator:
    """Step-wise propagation that keeps the step size between calls.

    >>> p = Propagator(ForceModel("moon"))
    >>> r, v = p.step(r, v, t_s, 60.0)   # doctest: +SKIP
    """

    def __init__(self, model: ForceModel, rtol: float = 1e-10) -> None:
        self.model = model
        self.rtol = rtol
        self.step_hint_s: float | None = None
        self.steps = 0

    def step(self, r_m: ArrayLike, v_m_s: ArrayLike, t0_s: float, dt_s: float) -> tuple[Vec, Vec]:
        y0 = np.concatenate(
            [np.asarray(r_m, dtype=np.float64), np.asarray(v_m_s, dtype=np.float64)]
        )
        if dt_s == 0.0:
            return y0[0:3].copy(), y0[3:6].copy()
        y, self.step_hint_s, n = _integrate(
            y0, float(t0_s), float(dt_s), self.model, self.rtol, self.step_hint_s
        )
        self.steps += n
        return y[0:3], y[3:6]


# --- Closed-form two-body ellipse --------------------------------------------------

Vec3 = tuple[float, float, float]


def kepler_ellipse(
    r_m: Vec3, v_m_s: Vec3, dt_s: float, mu_m3_s2: float
) -> tuple[Vec3, Vec3] | None:
    """Two-body state after ``dt_s`` (any sign, any number of revolutions) on an
    ellipse, in plain floats; None if the orbit is not bound.

    The difference form of Kepler's equation in the eccentric anomaly with f
    and g functions: a few microseconds, bracketed so it always converges
    (for sunlight samples, ICUBE-Q and the targeting residuals, which ask
    thousands of times; `kepler.propagate_kepler` is the general reference).
    """
    x, y, z = r_m
    vx, vy, vz = v_m_s
    r0 = math.sqrt(x * x + y * y + z * z)
    alpha = 2.0 / r0 - (vx * vx + vy * vy + vz * vz) / mu_m3_s2  # 1/a
    if alpha * r0 < 1e-6:
        return None
    a = 1.0 / alpha
    n = math.sqrt(mu_m3_s2 * alpha**3)
    ec = 1.0 - r0 * alpha  # e cos E0
    es = (x * vx + y * vy + z * vz) / math.sqrt(mu_m3_s2 * a)  # e sin E0
    de = _kepler_delta_e(n * dt_s, ec, es)
    sx, cx = math.sin(de), math.cos(de)
    r = a * (1.0 - ec * cx + es * sx)
    f = 1.0 - a / r0 * (1.0 - cx)
    g = dt_s - (de - sx) / n
    f_dot = -math.sqrt(mu_m3_s2 * a) / (r * r0) * sx
    g_dot = 1.0 - a / r * (1.0 - cx)
    return ((f * x + g * vx, f * y + g * vy, f * z + g * vz),
            (f_dot * x + g_dot * vx, f_dot * y + g_dot * vy, f_dot * z + g_dot * vz))


def _kepler_delta_e(m_rad: float, ec: float, es: float) -> float:
    """Eccentric-anomaly change x with x - ec sin x + es (1 - cos x) = m_rad.

    The left side grows monotonically (its slope is r/a > 0) and differs from
    x by at most 2e, so Newton kept inside [m - 2, m + 2] always converges."""
    lo, hi = m_rad - 2.0, m_rad + 2.0
    x = m_rad
    for _ in range(100):
        sx, cx = math.sin(x), math.cos(x)
        f = x - ec * sx + es * (1.0 - cx) - m_rad
        if f > 0.0:
            hi = x
        else:
            lo = x
        x_new = x - f / (1.0 - ec * cx + es * sx)
        if not lo < x_new < hi:
            x_new = 0.5 * (lo + hi)
        if abs(x_new - x) <= 1e-15 * max(1.0, abs(x)):
            return x_new
        x = x_new
    return x
