"""Skip re-entry of a lunar-return capsule: 3-DOF dynamics and bank guidance.

The state is integrated in the Earth-fixed frame (ECEF, WGS 84 axes): the
velocity is the Earth-relative (= air-relative, no winds) velocity, so the
equations carry Coriolis and centrifugal terms, J2 gravity and the US76
atmosphere (`atmosphere.density_fast_kg_m3`). Altitude is the height above
the WGS 84 ellipsoid to first order in the flattening (error < 30 m).

The vehicle is a blunt capsule flying at trim angle of attack (`Capsule`;
the Chang'e-6 returner's figures are `change6.RETURNER`).

Heat flux: Sutton & Graves (1971) stagnation-point convective heating,
q = k sqrt(rho / R_n) v^3 with k = 1.7415e-4 kg^0.5 / m for Earth air.

Guidance: numerical predictor-corrector on the bank magnitude (in the style
of Apollo/Orion PredGuid and FNPEG): every GUIDANCE_PERIOD_S the rest of the
flight is predicted to chute deploy with a constant bank magnitude, and the
magnitude is corrected by the secant method until the predicted range
matches the range to the landing target. The sign follows a crossrange
deadband that narrows with speed (bank reversals). The first dip therefore
flies mostly lift-up and skips out when the target is far. At ~20 km the
capsule goes to parachute attitude (no lift), at 10 km the main canopy opens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike

from services.dynamics import frames
from services.dynamics.atmosphere import density_fast_kg_m3
from services.dynamics.constants import (
    F_EARTH,
    G0_M_S2,
    GM_EARTH_M3_S2,
    J2_EARTH,
    OMEGA_EARTH_RAD_S,
    R_EARTH_EQ_M,
)

Vec3 = tuple[float, float, float]

SUTTON_GRAVES_K_EARTH = 1.7415e-4  # Sutton & Graves 1971, SI units, Earth air
ENTRY_INTERFACE_ALT_M = 120_000.0  # Xinhua 2024-06-25: first entry at ~120 km
# Skip-out / second entry are counted at the Karman line: above 100 km the
# drag at 7 km/s is below 0.01 g, so the arc is ballistic (the apex altitude
# itself is unpublished; CE5-T1's plan was ~140 km, ours is ~110-180 km).
SKIP_ALT_M = 100_000.0
PARACHUTE_ATTITUDE_ALT_M = 20_000.0  # Xinhua: parachute attitude at ~20 km
PARACHUTE_DEPLOY_ALT_M = 10_000.0  # Xinhua: chute opens at ~10 km
GUIDANCE_PERIOD_S = 2.0  # bank command update period
GUIDANCE_MIN_SPEED_M_S = 500.0  # below this the bank magnitude is held (range left is tiny)
GUIDANCE_MIN_DRAG_M_S2 = 0.5  # no bank updates outside the sensible atmosphere
ATMOSPHERE_SUBSTEP_S = 0.5  # RK4 substep inside the atmosphere
COAST_SUBSTEP_S = 10.0  # RK4 substep above ~125 km (gravity only, J2)
COAST_ALT_M = 125_000.0
MAX_BANK_RAD = math.radians(175.0)
# Nominal second-pass bank assumed while flying the first pass: leaves range
# margin both ways and sideways lift for crossrange on the second pass.
SECOND_PASS_BANK_RAD = math.radians(55.0)
MIN_BANK_RAD = math.radians(15.0)  # keeps some lift sideways for crossrange


class EntryPhase(StrEnum):
    EXO = "exo"  # above the entry interface before the first dip
    FIRST_ENTRY = "first_entry"
    SKIP = "skip"  # ballistic arc above SKIP_ALT_M after the first dip
    SECOND_ENTRY = "second_entry"
    PARACHUTE_ATTITUDE = "parachute_attitude"
    PARACHUTE = "parachute"
    LANDED = "landed"


@dataclass(frozen=True, slots=True)
class Capsule:
    """A returner's mass, aerodynamics and main canopy (e.g. change6.RETURNER)."""

    mass_kg: float
    diameter_m: float
    drag_coefficient: float  # hypersonic
    lift_to_drag: float  # at trim angle of attack
    nose_radius_m: float  # heat-shield spherical radius
    chute_area_m2: float
    chute_drag_coefficient: float
    chute_inflation_s: float  # opening to full area, linearly

    def __post_init__(self) -> None:
        if self.mass_kg <= 0 or self.diameter_m <= 0 or self.nose_radius_m <= 0:
            raise ValueError("Capsule: mass_kg, diameter_m and nose_radius_m must be > 0")
        if not 0.0 <= self.lift_to_drag < 1.0:
            raise ValueError(f"Capsule: lift_to_drag {self.lift_to_drag} outside [0, 1)")

    @property
    def reference_area_m2(self) -> float:
        return math.pi * self.diameter_m**2 / 4.0

    @property
    def ballistic_coefficient_kg_m2(self) -> float:
        return self.mass_kg / (self.drag_coefficient * self.reference_area_m2)


@dataclass(frozen=True, slots=True)
class LandingTarget:
    """The point the guidance flies to (a mission's: e.g. change6.SIZIWANG)."""

    lat_deg: float
    lon_deg: float
    ground_height_m: float  # above the WGS 84 ellipsoid

    def unit_ecef(self) -> Vec3:
        """Geocentric unit vector of the target point."""
        r = frames.ecef_from_geodetic(self.lat_deg, self.lon_deg, self.ground_height_m)
        n = float(np.linalg.norm(r))
        return (float(r[0]) / n, float(r[1]) / n, float(r[2]) / n)


@dataclass(frozen=True, slots=True)
class Guidance:
    """Guidance memory carried from step to step."""

    bank_mag_rad: float = 0.0  # current bank magnitude (0 = full lift up)
    bank_sign: float = 1.0  # +1 lift to the right of the velocity, -1 left
    next_update_s: float = 0.0  # mission time of the next bank update
    predicted_miss_m: float = 0.0  # last predicted downrange miss (+ = long)
    predictions: int = 0  # predictor runs so far (cost accounting)
    climbed: bool = False  # the first dip has turned into a climb
    second_pass: bool = False  # past the first apex: the bank now shapes the second pass


@dataclass(frozen=True, slots=True)
class EntryState:
    t_s: float
    r_ecef_m: Vec3
    v_ecef_m_s: Vec3  # Earth-relative velocity in ECEF axes
    mass_kg: float
    capsule: Capsule
    target: LandingTarget
    phase: EntryPhase = EntryPhase.EXO
    guidance: Guidance = Guidance()
    chute_open_t_s: float = math.inf
    #: The true atmosphere's density over the US76 model's (a campaign's
    #: dispersion). The flown dynamics and the sensed loads use it; the
    #: guidance's predictor keeps the model, since the vehicle cannot know it.
    density_scale: float = 1.0
    #: Added to the (Earth-relative) flight-path angle at the end of the
    #: substep that crosses the entry interface (at most a second past it in
    #: the reentry core's steps), speed kept: the error of the state there.
    ei_fpa_error_rad: float = 0.0


@dataclass(frozen=True, slots=True)
class EntryOutputs:
    t_s: float
    altitude_m: float
    speed_m_s: float  # Earth-relative
    lat_deg: float
    lon_deg: float
    flight_path_angle_deg: float  # Earth-relative, geocentric horizon
    sensed_decel_m_s2: float
    sensed_decel_g: float
    heat_flux_w_m2: float
    bank_deg: float
    phase: EntryPhase
    range_to_target_m: float
    events: tuple[str, ...]


# --- Dynamics ----------------------------------------------------------------
_E2_EARTH = F_EARTH * (2.0 - F_EARTH)


def _altitude_m(x: float, y: float, z: float) -> float:
    """Height above the WGS 84 ellipsoid, first order in the flattening."""
    r = math.sqrt(x * x + y * y + z * z)
    s2 = z * z / (r * r)
    return r - R_EARTH_EQ_M * (1.0 - F_EARTH * s2)


def _aero_accel(
    x: float,
    y: float,
    z: float,
    vx: float,
    vy: float,
    vz: float,
    rho: float,
    drag_per_mass: float,
    lift_to_drag: float,
    bank_rad: float,
) -> Vec3:
    """Drag plus lift rotated by the bank angle about the relative velocity."""
    v = math.sqrt(vx * vx + vy * vy + vz * vz)
    if v < 1e-3 or rho == 0.0:
        return (0.0, 0.0, 0.0)
    d = 0.5 * rho * v * v * drag_per_mass
    ux, uy, uz = vx / v, vy / v, vz / v
    ax, ay, az = -d * ux, -d * uy, -d * uz
    if lift_to_drag == 0.0:
        return (ax, ay, az)
    r = math.sqrt(x * x + y * y + z * z)
    # lift-up direction: radial component perpendicular to the velocity
    rdu = (x * ux + y * uy + z * uz) / r
    nx, ny, nz = x / r - rdu * ux, y / r - rdu * uy, z / r - rdu * uz
    nn = math.sqrt(nx * nx + ny * ny + nz * nz)
    if nn < 1e-9:
        return (ax, ay, az)
    nx, ny, nz = nx / nn, ny / nn, nz / nn
    # right-hand side direction: velocity x up
    sx, sy, sz = uy * nz - uz * ny, uz * nx - ux * nz, ux * ny - uy * nx
    lift = d * lift_to_drag
    cb, sb = math.cos(bank_rad), math.sin(bank_rad)
    return (
        ax + lift * (cb * nx + sb * sx),
        ay + lift * (cb * ny + sb * sy),
        az + lift * (cb * nz + sb * sz),
    )


_J2_TERM_M2 = 1.5 * J2_EARTH * R_EARTH_EQ_M * R_EARTH_EQ_M


def _gravity_ecef(x: float, y: float, z: float) -> Vec3:
    """Point mass plus J2 (the Earth's axis is the ECEF z axis)."""
    r2 = x * x + y * y + z * z
    r = math.sqrt(r2)
    k = GM_EARTH_M3_S2 / (r2 * r)
    j = _J2_TERM_M2 / r2
    zz = 5.0 * z * z / r2
    f_xy = -k * (1.0 + j * (1.0 - zz))
    return (f_xy * x, f_xy * y, -k * (1.0 + j * (3.0 - zz)) * z)


def _derivs(
    s: tuple[float, ...], drag_per_mass: float, lift_to_drag: float, bank_rad: float
) -> tuple[float, ...]:
    x, y, z, vx, vy, vz = s
    # _altitude_m and _gravity_ecef written in (the hot loop of the predictor;
    # same operations, same order)
    r2 = x * x + y * y + z * z
    r = math.sqrt(r2)
    rho = density_fast_kg_m3(r - R_EARTH_EQ_M * (1.0 - F_EARTH * (z * z / (r * r))))
    ax, ay, az = _aero_accel(x, y, z, vx, vy, vz, rho, drag_per_mass, lift_to_drag, bank_rad)
    k = GM_EARTH_M3_S2 / (r2 * r)
    j = _J2_TERM_M2 / r2
    zz = 5.0 * z * z / r2
    f_xy = -k * (1.0 + j * (1.0 - zz))
    gx, gy, gz = f_xy * x, f_xy * y, -k * (1.0 + j * (3.0 - zz)) * z
    w = OMEGA_EARTH_RAD_S
    # Coriolis -2 w x v and centrifugal -w x (w x r) for w along +z
    return (
        vx,
        vy,
        vz,
        gx + ax + 2.0 * w * vy + w * w * x,
        gy + ay - 2.0 * w * vx + w * w * y,
        gz + az,
    )


def _rk4(s: tuple[float, ...], h: float, dpm: float, ld: float, bank: float) -> tuple[float, ...]:
    # Written out per component (the predictor runs this ~50,000 times per
    # entry); the same operations in the same order as the tuple form.
    x, y, z, vx, vy, vz = s
    hh = 0.5 * h
    k1 = _derivs(s, dpm, ld, bank)
    k2 = _derivs((x + hh * k1[0], y + hh * k1[1], z + hh * k1[2],
                  vx + hh * k1[3], vy + hh * k1[4], vz + hh * k1[5]), dpm, ld, bank)
    k3 = _derivs((x + hh * k2[0], y + hh * k2[1], z + hh * k2[2],
                  vx + hh * k2[3], vy + hh * k2[4], vz + hh * k2[5]), dpm, ld, bank)
    k4 = _derivs((x + h * k3[0], y + h * k3[1], z + h * k3[2],
                  vx + h * k3[3], vy + h * k3[4], vz + h * k3[5]), dpm, ld, bank)
    h6 = h / 6.0
    return (
        x + h6 * (k1[0] + 2.0 * k2[0] + 2.0 * k3[0] + k4[0]),
        y + h6 * (k1[1] + 2.0 * k2[1] + 2.0 * k3[1] + k4[1]),
        z + h6 * (k1[2] + 2.0 * k2[2] + 2.0 * k3[2] + k4[2]),
        vx + h6 * (k1[3] + 2.0 * k2[3] + 2.0 * k3[3] + k4[3]),
        vy + h6 * (k1[4] + 2.0 * k2[4] + 2.0 * k3[4] + k4[4]),
        vz + h6 * (k1[5] + 2.0 * k2[5] + 2.0 * k3[5] + k4[5]),
    )


def _drag_per_mass(state: EntryState, t_s: float) -> tuple[float, float]:
    """(Cd A / m, L/D) for the phase; the canopy grows linearly while inflating.

    Drag (and lift, L/D times it) goes as rho Cd A / m, so the true
    atmosphere's ``density_scale`` rides on Cd A / m here (skipped when
    nominal); the predictor computes its own, from the model atmosphere."""
    dpm, ld = _drag_per_mass_model(state, t_s)
    if state.density_scale != 1.0:
        dpm *= state.density_scale
    return dpm, ld


def _drag_per_mass_model(state: EntryState, t_s: float) -> tuple[float, float]:
    cap = state.capsule
    body = cap.drag_coefficient * cap.reference_area_m2 / state.mass_kg
    if state.phase is EntryPhase.PARACHUTE:
        frac = min(1.0, max(0.0, (t_s - state.chute_open_t_s) / cap.chute_inflation_s))
        chute = cap.chute_drag_coefficient * cap.chute_area_m2 * frac / state.mass_kg
        return body + chute, 0.0
    if state.phase is EntryPhase.PARACHUTE_ATTITUDE or state.phase is EntryPhase.LANDED:
        return body, 0.0
    return body, cap.lift_to_drag


# --- Geometry helpers ----------------------------------------------------------
def _unit(a: Vec3) -> Vec3:
    n = math.sqrt(a[0] * a[0] + a[1] * a[1] + a[2] * a[2])
    return (a[0] / n, a[1] / n, a[2] / n)


def _cross(a: Vec3, b: Vec3) -> Vec3:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _angle(a: Vec3, b: Vec3) -> float:
    """Angle between unit vectors, well conditioned at small angles."""
    c = _cross(a, b)
    return math.atan2(math.sqrt(_dot(c, c)), _dot(a, b))


def crossrange_rad(r: Vec3, v: Vec3, target_unit: Vec3) -> float:
    """Angle of the target out of the trajectory plane, + when it lies left."""
    h = _unit(_cross(r, v))
    return math.asin(max(-1.0, min(1.0, _dot(h, target_unit))))


def _deadband_rad(speed_m_s: float) -> float:
    """Crossrange deadband: wide at high speed, narrow near the end."""
    return math.radians(0.03 + 0.35 * (speed_m_s / 11_000.0) ** 2)


def _lateral_sign(sign: float, r: Vec3, v: Vec3, target_unit: Vec3, speed: float) -> float:
    xr = crossrange_rad(r, v, target_unit)
    if abs(xr) > _deadband_rad(speed):
        # lift to the right (+) turns the plane right, towards a target on the right
        return -1.0 if xr > 0.0 else 1.0
    return sign


# --- Predictor-corrector -------------------------------------------------------
_PRED_DT_ATM_S = 2.0
_PRED_DT_COAST_S = 20.0
_PRED_MAX_S = 4_000.0
_MISS_TOL_M = 1_000.0
_BRACKET_STEP_RAD = math.radians(8.0)
_MAX_FALSI_ITER = 6


def _radial_rate(s: tuple[float, ...]) -> float:
    return (s[0] * s[3] + s[1] * s[4] + s[2] * s[5]) / math.sqrt(s[0] ** 2 + s[1] ** 2 + s[2] ** 2)


def _predict_final(state: EntryState, bank_mag: float, target_unit: Vec3) -> Vec3 | None:
    """ECEF unit vector of the predicted chute-deploy point, or None if it never gets there.

    Before the first apex `bank_mag` is flown on the first pass and the
    nominal bank on the second; after it, `bank_mag` is the second-pass bank.
    """
    s: tuple[float, ...] = (*state.r_ecef_m, *state.v_ecef_m_s)
    dpm = state.capsule.drag_coefficient * state.capsule.reference_area_m2 / state.mass_kg
    ld = state.capsule.lift_to_drag
    g = state.guidance
    sign, climbed, second = g.bank_sign, g.climbed, g.second_pass
    t = 0.0
    while t < _PRED_MAX_S:
        alt = _altitude_m(s[0], s[1], s[2])
        if alt < PARACHUTE_DEPLOY_ALT_M:
            return _unit((s[0], s[1], s[2]))
        rdot = _radial_rate(s)
        if not second:
            climbed = climbed or rdot > 0.0
            second = climbed and rdot < 0.0
        h = _PRED_DT_COAST_S if alt > COAST_ALT_M else _PRED_DT_ATM_S
        r3: Vec3 = (s[0], s[1], s[2])
        v3: Vec3 = (s[3], s[4], s[5])
        sign = _lateral_sign(sign, r3, v3, target_unit, math.sqrt(_dot(v3, v3)))
        mag = bank_mag if second == g.second_pass else SECOND_PASS_BANK_RAD
        lift = 0.0 if alt < PARACHUTE_ATTITUDE_ALT_M else ld
        s = _rk4(s, h, dpm, lift, sign * mag)
        t += h
    return None


def _downrange_miss_m(state: EntryState, bank_mag: float, target_unit: Vec3) -> float:
    """Predicted range minus range to target (+ = overshoot); long-biased if no landing."""
    here = _unit(state.r_ecef_m)
    final = _predict_final(state, bank_mag, target_unit)
    to_target = _angle(here, target_unit)
    if final is None:
        return 2.0e7  # skipped out for good: treat as a large overshoot
    return (_angle(here, final) - to_target) * R_EARTH_EQ_M


def _correct_bank(state: EntryState, target_unit: Vec3) -> Guidance:
    """Bracket the zero of the downrange miss in bank magnitude, then Illinois regula falsi.

    Warm started from the last solution: in steady flight one or two
    predictions per update suffice. If no bank reaches the target, the
    bound nearest to it (full lift up or full lift down) is flown.
    """
    g = state.guidance
    # full lift up is allowed on the first pass; later some bank stays for crossrange
    lo = MIN_BANK_RAD if g.second_pass else 0.0
    x0 = min(max(g.bank_mag_rad, lo), MAX_BANK_RAD)
    f0 = _downrange_miss_m(state, x0, target_unit)
    runs = 1
    if abs(f0) < _MISS_TOL_M:
        return replace(g, bank_mag_rad=x0, predicted_miss_m=f0, predictions=g.predictions + runs)
    # more bank -> less lift up -> shorter range: step the way that shortens the miss
    step = _BRACKET_STEP_RAD if f0 > 0.0 else -_BRACKET_STEP_RAD
    x1, f1 = x0, f0
    while f1 * f0 > 0.0:
        xn = min(max(x1 + step, lo), MAX_BANK_RAD)
        if xn == x1:  # bound reached without a sign change
            return replace(
                g, bank_mag_rad=x1, predicted_miss_m=f1, predictions=g.predictions + runs
            )
        x0, f0 = x1, f1
        x1, f1 = xn, _downrange_miss_m(state, xn, target_unit)
        runs += 1
        step *= 2.0
    side = 0
    for _ in range(_MAX_FALSI_ITER):
        x2 = min(max(x1 - f1 * (x1 - x0) / (f1 - f0), lo), MAX_BANK_RAD)
        f2 = _downrange_miss_m(state, x2, target_unit)
        runs += 1
        if abs(f2) < _MISS_TOL_M:
            x1, f1 = x2, f2
            break
        if f2 * f1 < 0.0:
            x0, f0 = x1, f1
            if side == -1:
                f0 *= 0.5
            side = -1
        else:
            if side == 1:
                f0 *= 0.5
            side = 1
        x1, f1 = x2, f2
    return replace(g, bank_mag_rad=x1, predicted_miss_m=f1, predictions=g.predictions + runs)


def _guidance_update(state: EntryState, drag_m_s2: float) -> Guidance:
    g = state.guidance
    g = replace(g, next_update_s=state.t_s + GUIDANCE_PERIOD_S)
    speed = math.sqrt(_dot(state.v_ecef_m_s, state.v_ecef_m_s))
    lifting = state.phase in (EntryPhase.FIRST_ENTRY, EntryPhase.SECOND_ENTRY)
    if not lifting or drag_m_s2 < GUIDANCE_MIN_DRAG_M_S2:
        return g
    target_unit = state.target.unit_ecef()
    sign = _lateral_sign(g.bank_sign, state.r_ecef_m, state.v_ecef_m_s, target_unit, speed)
    if speed < GUIDANCE_MIN_SPEED_M_S:
        return replace(g, bank_sign=sign)
    g = _correct_bank(replace(state, guidance=replace(g, bank_sign=sign)), target_unit)
    return replace(g, bank_sign=sign)


# --- Step ---------------------------------------------------------------------
def _phase_after(phase: EntryPhase, alt_prev: float, alt: float) -> tuple[EntryPhase, str | None]:
    """Phase transition for an altitude change, and the event it raises."""
    ei = ENTRY_INTERFACE_ALT_M
    if phase is EntryPhase.EXO and alt < ei:
        return EntryPhase.FIRST_ENTRY, "entry_interface"
    if phase is EntryPhase.FIRST_ENTRY and alt_prev < SKIP_ALT_M <= alt:
        return EntryPhase.SKIP, "skip_out"
    if phase is EntryPhase.SKIP and alt < SKIP_ALT_M <= alt_prev:
        return EntryPhase.SECOND_ENTRY, "second_entry"
    lifting = (EntryPhase.FIRST_ENTRY, EntryPhase.SECOND_ENTRY)
    if phase in lifting and alt < PARACHUTE_ATTITUDE_ALT_M:
        return EntryPhase.PARACHUTE_ATTITUDE, "parachute_attitude"
    if phase is EntryPhase.PARACHUTE_ATTITUDE and alt < PARACHUTE_DEPLOY_ALT_M:
        return EntryPhase.PARACHUTE, "parachute_deploy"
    return phase, None


def _substep_s(state: EntryState, alt_m: float, t_end_s: float) -> float:
    h = COAST_SUBSTEP_S if alt_m > COAST_ALT_M else ATMOSPHERE_SUBSTEP_S
    if state.phase in (EntryPhase.PARACHUTE, EntryPhase.PARACHUTE_ATTITUDE):
        h = 1.0
    h = min(h, t_end_s - state.t_s)
    if state.phase in (EntryPhase.FIRST_ENTRY, EntryPhase.SECOND_ENTRY):
        # guidance runs on a fixed time grid, whatever the caller's step length
        h = min(h, max(state.guidance.next_update_s - state.t_s, 1e-9))
    return h


def _land(
    state: EntryState, prev: tuple[float, ...], new: tuple[float, ...], h: float
) -> EntryState:
    """Interpolate to the ground and stop."""
    ground = state.target.ground_height_m
    a0 = _altitude_m(prev[0], prev[1], prev[2])
    a1 = _altitude_m(new[0], new[1], new[2])
    frac = 1.0 if a0 == a1 else min(1.0, max(0.0, (a0 - ground) / (a0 - a1)))
    r = tuple(p + frac * (n - p) for p, n in zip(prev[:3], new[:3], strict=True))
    return replace(
        state,
        t_s=state.t_s + frac * h,
        r_ecef_m=(r[0], r[1], r[2]),
        v_ecef_m_s=(0.0, 0.0, 0.0),
        phase=EntryPhase.LANDED,
    )


def _advance(state: EntryState, t_end_s: float, events: list[str]) -> EntryState:
    """One RK4 substep with phase and guidance bookkeeping."""
    alt = _altitude_m(*state.r_ecef_m)
    lifting = state.phase in (EntryPhase.FIRST_ENTRY, EntryPhase.SECOND_ENTRY)
    if lifting and state.t_s >= state.guidance.next_update_s - 1e-9:
        drag = _sensed(state)[0]
        state = replace(state, guidance=_guidance_update(state, drag))
    h = _substep_s(state, alt, t_end_s)
    dpm, ld = _drag_per_mass(state, state.t_s + 0.5 * h)
    g = state.guidance
    s0 = (*state.r_ecef_m, *state.v_ecef_m_s)
    s1 = _rk4(s0, h, dpm, ld, g.bank_sign * g.bank_mag_rad)
    alt1 = _altitude_m(s1[0], s1[1], s1[2])
    if alt1 <= state.target.ground_height_m:
        events.append("earth_landing")
        return _land(state, s0, s1, h)
    new = replace(
        state, t_s=state.t_s + h, r_ecef_m=(s1[0], s1[1], s1[2]), v_ecef_m_s=(s1[3], s1[4], s1[5])
    )
    new = replace(new, guidance=_track_apex(g, s1))
    phase, event = _phase_after(state.phase, alt, alt1)
    if event is None:
        return new
    events.append(event)
    if event == "entry_interface" and state.ei_fpa_error_rad != 0.0:
        new = _with_fpa_error(new)
    if phase is EntryPhase.PARACHUTE:
        return replace(new, phase=phase, chute_open_t_s=new.t_s)
    if phase in (EntryPhase.FIRST_ENTRY, EntryPhase.SECOND_ENTRY):
        return replace(new, phase=phase, guidance=replace(new.guidance, next_update_s=new.t_s))
    return replace(new, phase=phase)


def _with_fpa_error(state: EntryState) -> EntryState:
    """The velocity turned in its vertical plane (through the geocentric radial)
    by ``ei_fpa_error_rad``, its length kept: gamma -> gamma + error."""
    up = _unit(state.r_ecef_m)
    v = state.v_ecef_m_s
    speed = math.sqrt(_dot(v, v))
    vr = _dot(up, v)
    horiz = _unit((v[0] - vr * up[0], v[1] - vr * up[1], v[2] - vr * up[2]))
    gamma = math.asin(vr / speed) + state.ei_fpa_error_rad
    c, s = speed * math.cos(gamma), speed * math.sin(gamma)
    v_new = (c * horiz[0] + s * up[0], c * horiz[1] + s * up[1], c * horiz[2] + s * up[2])
    return replace(state, v_ecef_m_s=v_new)


def _track_apex(g: Guidance, s: tuple[float, ...]) -> Guidance:
    """Flag the climb out of the first dip and the apex after it."""
    if g.second_pass:
        return g
    rdot = _radial_rate(s)
    if not g.climbed:
        return replace(g, climbed=True) if rdot > 0.0 else g
    if rdot < 0.0:
        return replace(g, second_pass=True, bank_mag_rad=SECOND_PASS_BANK_RAD)
    return g


def _sensed(state: EntryState) -> tuple[float, float]:
    """(non-gravitational acceleration m/s^2, stagnation heat flux W/m^2)."""
    x, y, z = state.r_ecef_m
    vx, vy, vz = state.v_ecef_m_s
    rho = density_fast_kg_m3(_altitude_m(x, y, z))
    dpm, ld = _drag_per_mass_model(state, state.t_s)
    if state.density_scale != 1.0:
        rho *= state.density_scale
    a = _aero_accel(x, y, z, vx, vy, vz, rho, dpm, ld, 0.0)
    v = math.sqrt(vx * vx + vy * vy + vz * vz)
    q = SUTTON_GRAVES_K_EARTH * math.sqrt(rho / state.capsule.nose_radius_m) * v**3
    return math.sqrt(_dot(a, a)), q


def outputs(state: EntryState, events: tuple[str, ...] = ()) -> EntryOutputs:
    """Telemetry view of a state."""
    lat, lon, h = frames.geodetic_from_ecef(state.r_ecef_m)
    decel, heat = _sensed(state)
    v = math.sqrt(_dot(state.v_ecef_m_s, state.v_ecef_m_s))
    fpa = 0.0
    if v > 0.0:
        fpa = math.degrees(math.asin(_dot(_unit(state.r_ecef_m), state.v_ecef_m_s) / v))
    rng = _angle(_unit(state.r_ecef_m), state.target.unit_ecef()) * R_EARTH_EQ_M
    g = state.guidance
    return EntryOutputs(
        t_s=state.t_s,
        altitude_m=h,
        speed_m_s=v,
        lat_deg=lat,
        lon_deg=lon,
        flight_path_angle_deg=fpa,
        sensed_decel_m_s2=decel,
        sensed_decel_g=decel / G0_M_S2,
        heat_flux_w_m2=heat,
        bank_deg=math.degrees(g.bank_sign * g.bank_mag_rad),
        phase=state.phase,
        range_to_target_m=rng,
        events=events,
    )


def step(state: EntryState, dt_s: float) -> tuple[EntryState, EntryOutputs]:
    """Advance the returner by dt_s (any length) and report what happened."""
    if dt_s < 0.0:
        raise ValueError(f"step: dt_s must be >= 0, got {dt_s}")
    events: list[str] = []
    t_end = state.t_s + dt_s
    while state.t_s < t_end - 1e-9 and state.phase is not EntryPhase.LANDED:
        state = _advance(state, t_end, events)
    if state.phase is EntryPhase.LANDED:
        state = replace(state, t_s=max(state.t_s, t_end))
    return state, outputs(state, tuple(events))


# --- Builders and whole-entry run -----------------------------------------------
def entry_state_from_eci(
    r_eci_m: ArrayLike,
    v_eci_m_s: ArrayLike,
    t_s: float,
    capsule: Capsule,
    target: LandingTarget,
) -> EntryState:
    """Entry state from an inertial (ECI) state, e.g. at orbiter separation."""
    r_ef, v_ef = frames.ecef_from_eci_state(r_eci_m, v_eci_m_s, t_s)
    return _make_state(t_s, r_ef, v_ef, capsule, target)


def _make_state(
    t_s: float,
    r_ef: ArrayLike,
    v_ef: ArrayLike,
    capsule: Capsule,
    target: LandingTarget,
) -> EntryState:
    r = np.asarray(r_ef, dtype=float)
    v = np.asarray(v_ef, dtype=float)
    alt = _altitude_m(float(r[0]), float(r[1]), float(r[2]))
    # a state given at the interface (within the first-order altitude error)
    # still raises the entry_interface event on its first step
    at_or_above = alt >= ENTRY_INTERFACE_ALT_M - 100.0
    phase = EntryPhase.EXO if at_or_above else EntryPhase.FIRST_ENTRY
    return EntryState(
        t_s=t_s,
        r_ecef_m=(float(r[0]), float(r[1]), float(r[2])),
        v_ecef_m_s=(float(v[0]), float(v[1]), float(v[2])),
        mass_kg=capsule.mass_kg,
        phase=phase,
        guidance=Guidance(next_update_s=t_s),
        capsule=capsule,
        target=target,
    )


def entry_state_from_geodetic(
    t_s: float,
    lat_deg: float,
    lon_deg: float,
    alt_m: float,
    inertial_speed_m_s: float,
    inertial_fpa_deg: float,
    inertial_heading_deg: float,
    capsule: Capsule,
    target: LandingTarget,
) -> EntryState:
    """Entry state from inertial speed, flight-path angle and heading (from north).

    The angles are measured against the geocentric local horizon, the usual
    convention for entry corridors.
    """
    r = frames.ecef_from_geodetic(lat_deg, lon_deg, alt_m)
    up = r / np.linalg.norm(r)
    east = np.cross([0.0, 0.0, 1.0], up)
    east /= np.linalg.norm(east)
    north = np.cross(up, east)
    g, psi = math.radians(inertial_fpa_deg), math.radians(inertial_heading_deg)
    horiz = math.cos(psi) * north + math.sin(psi) * east
    v_inertial = inertial_speed_m_s * (math.sin(g) * up + math.cos(g) * horiz)
    v_rel = v_inertial - np.cross([0.0, 0.0, OMEGA_EARTH_RAD_S], r)
    return _make_state(t_s, r, v_rel, capsule, target)


@dataclass(frozen=True, slots=True)
class EntryResult:
    final: EntryState
    trace: tuple[EntryOutputs, ...]
    events: dict[str, float]  # event name -> mission time of first occurrence
    miss_m: float  # great-circle distance from touchdown to the target
    peak_decel_g: float
    peak_heat_flux_w_m2: float


def simulate_entry(state: EntryState, dt_s: float = 1.0, max_s: float = 7_200.0) -> EntryResult:
    """Step to touchdown (or max_s) and summarise."""
    trace: list[EntryOutputs] = []
    events: dict[str, float] = {}
    t_stop = state.t_s + max_s
    while state.phase is not EntryPhase.LANDED and state.t_s < t_stop:
        state, out = step(state, dt_s)
        trace.append(out)
        for e in out.events:
            events.setdefault(e, out.t_s)
    miss = _angle(_unit(state.r_ecef_m), state.target.unit_ecef()) * R_EARTH_EQ_M
    return EntryResult(
        final=state,
        trace=tuple(trace),
        events=events,
        miss_m=miss,
        peak_decel_g=max((o.sensed_decel_g for o in trace), default=0.0),
        peak_heat_flux_w_m2=max((o.heat_flux_w_m2 for o in trace), default=0.0),
    )


def site_point(
    lat_deg: float, lon_deg: float, range_m: float, azimuth_deg: float
) -> tuple[float, float]:
    """Point at a great-circle range and azimuth from (lat, lon) on the sphere."""
    la, lo = math.radians(lat_deg), math.radians(lon_deg)
    d = range_m / R_EARTH_EQ_M
    az = math.radians(azimuth_deg)
    la2 = math.asin(math.sin(la) * math.cos(d) + math.cos(la) * math.sin(d) * math.cos(az))
    lo2 = lo + math.atan2(
        math.sin(az) * math.sin(d) * math.cos(la), math.cos(d) - math.sin(la) * math.sin(la2)
    )
    return math.degrees(la2), (math.degrees(lo2) + 540.0) % 360.0 - 180.0


def bearing_deg(lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float) -> float:
    """Initial great-circle azimuth from point 1 to point 2, degrees from north."""
    la1, la2 = math.radians(lat1_deg), math.radians(lat2_deg)
    dlo = math.radians(lon2_deg - lon1_deg)
    y = math.sin(dlo) * math.cos(la2)
    x = math.cos(la1) * math.sin(la2) - math.sin(la1) * math.cos(la2) * math.cos(dlo)
    return math.degrees(math.atan2(y, x)) % 360.0
