"""Powered descent of the lander-ascender from ~15 km to touchdown.

Phases (reference (c) "Descent orbit and powered descent", CE-5/CE-3
analogues): ``braking`` from ~15 km at near-full thrust to a gate ~2.5 km up
and a few km uprange; ``approach`` with the rapid attitude change at the gate
down to a hover point 100 m above the site; ``hover`` (hazard scan);
``avoidance`` (lateral move to the safest nearby spot of a seeded hazard
map while sinking to 30 m); ``vertical_descent`` at ~1.5 then 1 m/s;
engine cut at 2 m (``free_fall``); ``landed``.

Guidance. Braking flies a constant deceleration along the arc to a gate
(downrange a = (v_f^2 - v^2) / 2d, which also fixes t_go = 2d / (v + v_f)),
with the vertical and crossrange channels on zero-effort-miss /
zero-effort-velocity E-guidance (the energy-optimal linear-acceleration
law of Apollo-era explicit guidance, a = 6 ZEM / t_go^2 - 2 ZEV / t_go)
applied to the kinematics, the engine cancelling at each cycle gravity less
the centrifugal relief of the horizontal speed: the height falls as a cubic
in time from the perilune to the gate, never climbing.
Braking runs in curvilinear coordinates (arc to the site, crossrange,
height above the site's reference radius). The ignition point
sets the throttle (~90 %), so the variable-thrust engine absorbs range
errors. The approach is pure E-guidance in the flat site-local frame (east,
north, up) to a hover point 100 m above the site, its t_go picked at the
gate as the shortest whose whole profile fits ~55 % of the thrust. The
terminal phases use a cascaded position/velocity loop with gravity
feed-forward.

Integration: RK4 in MCI, Moon point-mass gravity, sub-steps of
``substep_s``; the thrust vector is held fixed in MCI over a sub-step (one
guidance cycle). Third bodies and J2 change a 15-min descent by metres and
are left out. Terrain is taken flat at the site's reference height; the
real ground may lie ``terrain_error_m`` above that map height, which only the
ground contact sees (the guidance flies the map, and cuts the engine 2 m above
it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.dynamics import frames
from services.dynamics.burns import Engine, moon_gravity_mci, rk4_powered_step
from services.dynamics.constants import (
    GM_MOON_M3_S2,
    LANDER_ENGINE_THRUST_N,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)
from services.dynamics.guidance import (
    ArcGravity,
    MoonRotation,
    PoweredOutput,
    zem_zev,
    zem_zev_accel,
)
from services.dynamics.guidance.loi import (
    PARKING_HEIGHT_M,
    PARKING_INCLINATION_DEG,
    plan_descent_orbit_lowering,
    plane_normal_over_site,
    time_to_true_anomaly_s,
)
from services.dynamics.kepler import propagate_kepler
from services.dynamics.vec import cross, norm

__all__ = [
    "LANDER_DRY_MASS_KG",
    "LANDER_ENGINE",
    "LANDER_IGNITION_MASS_KG",
    "DescentConfig",
    "DescentResult",
    "DescentState",
    "Hazard",
    "choose_safe_spot",
    "hazard_map",
    "nominal_ignition_state",
    "simulate_descent",
    "site_enu_basis",
    "step",
]

Vec = NDArray[np.float64]

# --- vehicle (choices documented; CNSA publishes only the 7,500 N figure) ---
# Throttle floor 1,500 N: the CE-3 engine of the same family throttles
# 1,500-7,500 N (5:1), Zhang Honghua et al., "GNC system design for the
# Chang'e-3 lander", Sci. Sin. Tech. 44 (2014).
LANDER_MIN_THRUST_N = 1_500.0
# Effective exhaust velocity 3,100 m/s (Isp ~316 s), a bipropellant
# MMH/MON figure; the CUMCM 2014 problem A CE-3 model uses 2,940 m/s.
LANDER_V_E_M_S = 3_100.0
LANDER_ENGINE = Engine(LANDER_ENGINE_THRUST_N, LANDER_V_E_M_S, LANDER_MIN_THRUST_N)
# NSSDC "landed mass ~3,200 kg" (reference (b), W/U) read as the
# lander-ascender mass at powered-descent ignition, propellant included.
LANDER_IGNITION_MASS_KG = 3_200.0
# Assumption (module masses unpublished, reference (b)): lander dry ~750 kg
# + ascender wet ~750 kg; leaves 1,700 kg of descent propellant.
LANDER_DRY_MASS_KG = 1_500.0

PHASES = ("braking", "approach", "hover", "avoidance", "vertical_descent", "free_fall", "landed")


@dataclass(frozen=True)
class Hazard:
    """A crater or boulder in the site-local east/north plane."""

    east_m: float
    north_m: float
    radius_m: float


@dataclass(frozen=True)
class DescentConfig:
    """Targets and tuning of one powered descent (defaults: the CE-6 landing)."""

    rotation: MoonRotation
    site_lat_deg: float = LANDING_SITE_LAT_DEG
    site_lon_deg: float = LANDING_SITE_LON_DEG
    site_height_m: float = LANDING_SITE_HEIGHT_M
    engine: Engine = LANDER_ENGINE
    dry_mass_kg: float = LANDER_DRY_MASS_KG
    seed: int = 6
    braking_accel_fraction: float = 0.80
    gate_height_m: float = 2_500.0  # reference (c): attitude adjustment at ~2.5 km
    gate_uprange_m: float = 4_000.0
    gate_velocity_m_s: tuple[float, float] = (60.0, -40.0)  # (downrange, vertical)
    approach_accel_fraction: float = 0.55
    hover_height_m: float = 100.0  # reference (c): hover at ~100 m
    hover_hold_s: float = 20.0
    avoidance_end_height_m: float = 30.0
    avoidance_speed_m_s: float = 2.0
    descent_rate_m_s: float = 1.5
    final_rate_m_s: float = 1.0
    final_rate_below_m: float = 10.0
    cutoff_height_m: float = 2.0  # reference (c): engine cut "just above the surface"
    footprint_radius_m: float = 4.0
    substep_s: float = 0.2
    #: How much higher the real ground at the site is than ``site_height_m``,
    #: the map height the guidance flies to (negative: lower). Only the ground
    #: contact uses it: the engine is still cut ``cutoff_height_m`` above the
    #: map, so the drop that follows is that much shorter (or longer), and a
    #: ground above the cut-off height is met with the engine lit.
    terrain_error_m: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.braking_accel_fraction <= 1.0:
            raise ValueError(
                f"braking_accel_fraction must be in (0, 1], got {self.braking_accel_fraction}"
            )
        if not self.hover_height_m > self.avoidance_end_height_m > self.cutoff_height_m > 0.0:
            raise ValueError(
                "need hover_height_m > avoidance_end_height_m > cutoff_height_m > 0, got "
                f"{self.hover_height_m}, {self.avoidance_end_height_m}, {self.cutoff_height_m}"
            )
        if not 0.0 < self.substep_s <= 0.5:
            raise ValueError(
                f"substep_s must be in (0, 0.5] s for RK4 accuracy, got {self.substep_s}"
            )
        if not math.isfinite(self.terrain_error_m):
            raise ValueError(
                f"terrain_error_m must be a finite number of metres, got {self.terrain_error_m}"
            )

    @property
    def site_radius_m(self) -> float:
        return R_MOON_M + self.site_height_m

    @property
    def ground_radius_m(self) -> float:
        """Radius of the real ground at the site (the map's plus the terrain error)."""
        return self.site_radius_m + self.terrain_error_m

    @property
    def site_fixed_m(self) -> Vec:
        return frames.moon_fixed_from_selenographic(
            self.site_lat_deg, self.site_lon_deg, self.site_height_m
        )


@dataclass(frozen=True)
class DescentState:
    """Everything the descent needs between steps (MCI, mission seconds)."""

    t_s: float
    r_mci_m: Vec = field(compare=False)
    v_mci_m_s: Vec = field(compare=False)
    mass_kg: float
    phase: str = "braking"
    phase_start_s: float = 0.0
    ignition_s: float = 0.0
    tgo_s: float = math.inf  # braking/approach time-to-go (guidance memory)
    aim_en_m: tuple[float, float] = (0.0, 0.0)  # landing aim in site east/north
    touchdown_v_m_s: tuple[float, float] | None = None  # (vertical, horizontal)
    landed_fixed_m: tuple[float, float, float] | None = None

    @classmethod
    def at_ignition(
        cls, t_s: float, r_mci_m: ArrayLike, v_mci_m_s: ArrayLike, mass_kg: float
    ) -> DescentState:
        return cls(
            t_s,
            np.asarray(r_mci_m, dtype=np.float64),
            np.asarray(v_mci_m_s, dtype=np.float64),
            mass_kg,
            "braking",
            t_s,
            t_s,
        )


# --- site geometry and hazards ---------------------------------------------


def site_enu_basis(lat_deg: float, lon_deg: float) -> Vec:
    """Rows east, north, up of the site-local frame, in Moon-fixed axes."""
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    sl, cl, so, co = math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)
    return np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])


def hazard_map(seed: int, half_width_m: float = 60.0, count: int = 40) -> tuple[Hazard, ...]:
    """Seeded craters and boulders around the site (radii 1-8 m).

    A crude stand-in for the lidar hazard map; density chosen so the nominal
    aim point is usually unsafe and the safe spot lies metres to tens of
    metres away, as in the real hazard-avoidance manoeuvre.
    """
    rng = np.random.default_rng(seed)
    east = rng.uniform(-half_width_m, half_width_m, count)
    north = rng.uniform(-half_width_m, half_width_m, count)
    radius = 1.0 + 7.0 * rng.random(count) ** 2
    return tuple(
        Hazard(float(e), float(n), float(r)) for e, n, r in zip(east, north, radius, strict=True)
    )


def choose_safe_spot(
    hazards: tuple[Hazard, ...],
    footprint_radius_m: float,
    search_radius_m: float = 40.0,
    grid_m: float = 1.0,
) -> tuple[float, float]:
    """Nearest grid point whose clearance from every hazard rim is at least
    two footprints; if none, the point with the largest clearance."""
    axis = np.arange(-search_radius_m, search_radius_m + grid_m / 2, grid_m)
    east, north = np.meshgrid(axis, axis)
    east, north = east.ravel(), north.ravel()
    inside = east**2 + north**2 <= search_radius_m**2
    east, north = east[inside], north[inside]
    he = np.array([h.east_m for h in hazards])
    hn = np.array([h.north_m for h in hazards])
    hr = np.array([h.radius_m for h in hazards])
    gap = np.hypot(east[:, None] - he, north[:, None] - hn) - hr
    clearance = gap.min(axis=1) if hazards else np.full(east.shape, np.inf)
    safe = clearance >= 2.0 * footprint_radius_m
    if not safe.any():
        best = int(np.argmax(clearance))
    else:
        dist = np.where(safe, np.hypot(east, north), np.inf)
        best = int(np.argmin(dist))
    return float(east[best]), float(north[best])


# --- guidance laws ---------------------------------------------------------


_TGO_GRID_S = np.geomspace(2.0, 2_000.0, 80)


def _profile_excess(
    pos: Vec, vel: Vec, grav: ArcGravity, pos_f: Vec, vel_f: Vec, tgo: Vec, limit: _AccelLimit
) -> Vec:
    """Largest ratio |a| / available acceleration at either end of the
    linear E-guidance profile, for each ``tgo``.

    The profile runs from a0 = 6 ZEM/t^2 - 2 ZEV/t to a_f = -6 ZEM/t^2 +
    4 ZEV/t; checking only a0 would pick a t_go whose last seconds need far
    more thrust than the engine has.
    """
    t = tgo[:, None]
    zem, zev = zem_zev(pos, vel, grav, pos_f, vel_f, t)
    a0 = np.linalg.norm(6.0 * zem / (t * t) - 2.0 * zev / t, axis=1)
    af = np.linalg.norm(-6.0 * zem / (t * t) + 4.0 * zev / t, axis=1)
    end_mass = np.maximum(limit.mass_kg - limit.mass_flow_kg_s * tgo, limit.dry_mass_kg)
    result: Vec = np.maximum(
        a0 / limit.accel_now_m_s2, af * end_mass / (limit.accel_now_m_s2 * limit.mass_kg)
    )
    return result


@dataclass(frozen=True)
class _AccelLimit:
    """Usable thrust acceleration now, and how it grows as propellant burns."""

    accel_now_m_s2: float
    mass_kg: float
    mass_flow_kg_s: float
    dry_mass_kg: float


def _shortest_feasible_tgo(
    pos: Vec, vel: Vec, grav: ArcGravity, pos_f: Vec, vel_f: Vec, limit: _AccelLimit
) -> float:
    """Shortest t_go whose whole E-guidance profile fits the thrust limit."""
    excess = _profile_excess(pos, vel, grav, pos_f, vel_f, _TGO_GRID_S, limit)
    ok = np.nonzero(excess <= 1.0)[0]
    if ok.size == 0:
        return float(_TGO_GRID_S[int(np.argmin(excess))])
    i = int(ok[0])
    if i == 0:
        return float(_TGO_GRID_S[0])
    fine = np.linspace(_TGO_GRID_S[i - 1], _TGO_GRID_S[i], 33)
    excess = _profile_excess(pos, vel, grav, pos_f, vel_f, fine, limit)
    return float(fine[int(np.nonzero(excess <= 1.0)[0][0])])


def _limit(cfg: DescentConfig, mass_kg: float, fraction: float) -> _AccelLimit:
    thrust = fraction * cfg.engine.max_thrust_n
    return _AccelLimit(
        thrust / mass_kg, mass_kg, cfg.engine.mass_flow_kg_s(thrust), cfg.dry_mass_kg
    )


@dataclass(frozen=True)
class _Local:
    """Vehicle state seen from the site at one instant."""

    m_fixed: Vec  # MCI -> fixed
    r_f: Vec
    v_f: Vec
    enu: Vec  # rows east, north, up (fixed axes)
    p_enu: Vec
    u_enu: Vec
    height_m: float  # above the site reference radius


def _local(state: DescentState, cfg: DescentConfig, enu: Vec, site_f: Vec) -> _Local:
    m = cfg.rotation.matrix(state.t_s)
    r_f = m @ state.r_mci_m
    v_f = m @ state.v_mci_m_s - cross(cfg.rotation.omega_fixed_rad_s, r_f)
    height = norm(r_f) - cfg.site_radius_m
    return _Local(m, r_f, v_f, enu, enu @ (r_f - site_f), enu @ v_f, height)


def _braking_accel_fixed(
    loc: _Local, cfg: DescentConfig, site_f: Vec, mass_kg: float
) -> tuple[float, Vec]:
    """Braking to the gate in curvilinear (downrange, crossrange, up) axes."""
    r = norm(loc.r_f)
    up = loc.r_f / r
    s_hat = site_f / np.linalg.norm(site_f)
    e_d = s_hat - float(s_hat @ up) * up
    sin_arc = norm(e_d)
    e_d /= sin_arc
    e_c = cross(up, e_d)
    arc = math.atan2(sin_arc, float(s_hat @ up))
    scale = cfg.site_radius_m / r
    vel = np.array([float(loc.v_f @ e_d) * scale, float(loc.v_f @ e_c), float(loc.v_f @ up)])
    pos = np.array([-cfg.site_radius_m * arc, 0.0, r - cfg.site_radius_m])
    v_down_f, v_up_f = cfg.gate_velocity_m_s
    pos_f = np.array([-cfg.gate_uprange_m, 0.0, cfg.gate_height_m])
    vel_f = np.array([v_down_f, 0.0, v_up_f])
    # Downrange: constant deceleration that reaches the gate speed at the gate.
    dist = max(pos_f[0] - pos[0], 1.0)
    a_down = (v_down_f**2 - vel[0] ** 2) / (2.0 * dist)
    tgo = 2.0 * dist / max(vel[0] + v_down_f, 1.0)
    v_h = float(math.hypot(vel[0] / scale, vel[1]))
    a_cross, a_up = _braking_cross_up(pos, vel, pos_f, vel_f, tgo, _net_up_gravity_m_s2(r, v_h))
    result: Vec = a_down * e_d + a_cross * e_c + a_up * up
    return tgo, result


_NO_GRAVITY = ArcGravity(np.zeros(3))


def _net_up_gravity_m_s2(r_m: float, v_h_m_s: float) -> float:
    """Radial acceleration of a coasting body in polar coordinates: gravity
    less the centrifugal relief of its horizontal speed (r'' = -mu/r^2 + v_h^2/r)."""
    return -GM_MOON_M3_S2 / (r_m * r_m) + v_h_m_s * v_h_m_s / r_m


def _braking_cross_up(
    pos: Vec, vel: Vec, pos_f: Vec, vel_f: Vec, tgo: float, g_up_m_s2: float
) -> tuple[float, float]:
    """Crossrange and up thrust accelerations of the braking phase.

    The *kinematic* E-guidance profile over the downrange t_go: the total
    acceleration is linear in time, so the height is a cubic from the
    perilune's zero sink rate to the gate's -40 m/s and falls all the way;
    the engine cancels the net vertical gravity of this instant. Predicting
    that gravity over t_go instead (E-guidance on the thrust, which is then
    linear in time) fits a line to a centrifugal relief that falls as the
    square of the braking speed: the engine pushed up ~0.1 m/s^2 too much in
    the first minutes and the lander climbed 1.7 km above its 15 km perilune
    before it descended.

    The engine never pushes toward the ground: in the first ~30 s, while the
    lander is still faster than circular at the perilune, holding the height
    would need the engine 3 deg below the horizon; thrusting horizontally
    instead lets it rise ~20 m, which the cubic takes back.
    """
    a = zem_zev_accel(pos, vel, _NO_GRAVITY, pos_f, vel_f, tgo)
    return float(a[1]), max(float(a[2]) - g_up_m_s2, 0.0)


def _gravity_enu(loc: _Local, state: DescentState) -> Vec:
    g_enu: Vec = loc.enu @ (loc.m_fixed @ moon_gravity_mci(state.r_mci_m))
    return g_enu


def _approach_target(cfg: DescentConfig) -> tuple[Vec, Vec]:
    return np.array([0.0, 0.0, cfg.hover_height_m]), np.zeros(3)


def _track_accel_enu(
    loc: _Local, g_enu: Vec, target_enu: Vec, v_max_h: float, v_z_ref: float | None
) -> Vec:
    """Cascaded P position -> P velocity loop with gravity feed-forward."""
    kp, kv = 0.25, 1.2  # 1/s; kp <= kv/4 keeps the cascade well damped
    err = target_enu - loc.p_enu
    v_ref = kp * err
    h = float(math.hypot(v_ref[0], v_ref[1]))
    if h > v_max_h:
        v_ref[:2] *= v_max_h / h
    if v_z_ref is not None:
        v_ref[2] = v_z_ref
    else:
        v_ref[2] = max(-2.0, min(2.0, float(v_ref[2])))
    result: Vec = kv * (v_ref - loc.u_enu) - g_enu
    return result


# --- the state machine -----------------------------------------------------


def _enter(state: DescentState, phase: str, events: list[str], **changes: object) -> DescentState:
    events.append(
        f"{phase}_start"
        if phase not in ("free_fall", "landed")
        else ("engine_cutoff" if phase == "free_fall" else "touchdown")
    )
    return replace(state, phase=phase, phase_start_s=state.t_s, **changes)  # type: ignore[arg-type]


def _transition(
    state: DescentState, loc: _Local, cfg: DescentConfig, a_max: float, events: list[str]
) -> DescentState:
    """Phase changes decided at the start of a sub-step."""
    if state.phase == "braking":
        if state.tgo_s <= 2.0:
            pos_f, vel_f = _approach_target(cfg)
            tgo = _shortest_feasible_tgo(
                loc.p_enu,
                loc.u_enu,
                ArcGravity(_gravity_enu(loc, state)),
                pos_f,
                vel_f,
                _limit(cfg, state.mass_kg, cfg.approach_accel_fraction),
            )
            return _enter(state, "approach", events, tgo_s=tgo)
    elif state.phase == "approach" and state.tgo_s <= 1.0:
        return _enter(state, "hover", events)
    elif state.phase == "hover" and state.t_s - state.phase_start_s >= cfg.hover_hold_s:
        aim = choose_safe_spot(hazard_map(cfg.seed), cfg.footprint_radius_m)
        return _enter(state, "avoidance", events, aim_en_m=aim)
    elif state.phase == "avoidance":
        target = np.array([*state.aim_en_m, cfg.avoidance_end_height_m])
        if (
            norm(target - loc.p_enu) < 0.5
            and norm(loc.u_enu) < 0.2
        ):
            return _enter(state, "vertical_descent", events)
    elif state.phase == "vertical_descent" and loc.height_m <= cfg.cutoff_height_m:
        return _enter(state, "free_fall", events)
    return state


def _thrust_accel_enu(
    state: DescentState, loc: _Local, cfg: DescentConfig, site_f: Vec, a_max: float
) -> tuple[float, Vec]:
    """(time-to-go memory, commanded thrust acceleration in ENU)."""
    g = _gravity_enu(loc, state)
    tgo = state.tgo_s
    if state.phase == "braking":
        tgo, accel_f = _braking_accel_fixed(loc, cfg, site_f, state.mass_kg)
        result: Vec = loc.enu @ accel_f
        return tgo, result
    if state.phase == "approach":
        pos_f, vel_f = _approach_target(cfg)
        return tgo, zem_zev_accel(loc.p_enu, loc.u_enu, ArcGravity(g), pos_f, vel_f, max(tgo, 1.0))
    if state.phase == "hover":
        return tgo, _track_accel_enu(loc, g, np.array([0.0, 0.0, cfg.hover_height_m]), 1.0, None)
    if state.phase == "avoidance":
        target = np.array([*state.aim_en_m, cfg.avoidance_end_height_m])
        return tgo, _track_accel_enu(loc, g, target, cfg.avoidance_speed_m_s, None)
    if state.phase == "vertical_descent":
        rate = (
            cfg.final_rate_m_s if loc.height_m <= cfg.final_rate_below_m else cfg.descent_rate_m_s
        )
        target = np.array([*state.aim_en_m, 0.0])
        return tgo, _track_accel_enu(loc, g, target, 0.5, -rate)
    return tgo, np.zeros(3)


def _limit_thrust(accel_enu: Vec, mass_kg: float, engine: Engine, lit: bool) -> tuple[float, Vec]:
    """Thrust magnitude within the throttle range and its unit direction (ENU)."""
    mag = norm(accel_enu)
    if not lit or mag == 0.0:
        return 0.0, np.array([0.0, 0.0, 1.0])
    return engine.clamp_thrust_n(mag * mass_kg), accel_enu / mag


def _free_fall_to_ground(
    state: DescentState, loc: _Local, cfg: DescentConfig, h: float
) -> float | None:
    """Time within ``h`` at which a coasting vehicle reaches the real ground, if any."""
    g = GM_MOON_M3_S2 / float(loc.r_f @ loc.r_f)
    z, vz = loc.height_m - cfg.terrain_error_m, float(loc.u_enu[2])
    disc = vz * vz + 2.0 * g * z
    t_hit = (vz + math.sqrt(max(disc, 0.0))) / g
    return t_hit if t_hit <= h else None


def _land(
    state: DescentState, loc: _Local, cfg: DescentConfig, dt: float, events: list[str]
) -> DescentState:
    """Integrate the last fall exactly (constant g over the drop) and stop on the ground."""
    g = GM_MOON_M3_S2 / float(loc.r_f @ loc.r_f)
    vz = float(loc.u_enu[2]) - g * dt
    p_f = loc.r_f + loc.v_f * dt
    p_f *= cfg.ground_radius_m / norm(p_f)
    v_touch = (abs(vz), float(math.hypot(loc.u_enu[0], loc.u_enu[1])))
    landed = replace(
        state,
        t_s=state.t_s + dt,
        touchdown_v_m_s=v_touch,
        landed_fixed_m=(float(p_f[0]), float(p_f[1]), float(p_f[2])),
    )
    landed = _enter(landed, "landed", events)
    return _on_surface(landed, cfg, landed.t_s)


def _hit_ground(
    state: DescentState, cfg: DescentConfig, h: float, r_end: Vec, thrust_mci_n: Vec,
    events: list[str],
) -> DescentState:
    """The vehicle reached the ground with the engine lit, inside a sub-step of ``h``.

    Off-nominal flight (e.g. a thrust loss the braking cannot absorb) can take
    the guided path into the terrain; the vehicle stops there, at the instant
    found by interpolating the height over the sub-step, with the speed it had,
    rather than flying on under the surface and reporting a soft landing later.
    """
    h0 = norm(state.r_mci_m) - cfg.ground_radius_m
    h1 = norm(r_end) - cfg.ground_radius_m
    dt = h * h0 / (h0 - h1)
    r, v, m = rk4_powered_step(
        state.r_mci_m, state.v_mci_m_s, state.mass_kg, dt, thrust_mci_n, cfg.engine.v_e_m_s
    )
    r_f, v_f = cfg.rotation.fixed_state(r, v, state.t_s + dt)
    up = r_f / norm(r_f)
    v_up = float(v_f @ up)
    v_h = norm(v_f - v_up * up)
    p_f = up * cfg.ground_radius_m
    landed = replace(
        state, t_s=state.t_s + dt, mass_kg=m, touchdown_v_m_s=(abs(v_up), v_h),
        landed_fixed_m=(float(p_f[0]), float(p_f[1]), float(p_f[2])),
    )  # fmt: skip
    return _on_surface(_enter(landed, "landed", events), cfg, landed.t_s)


def _on_surface(state: DescentState, cfg: DescentConfig, t_s: float) -> DescentState:
    assert state.landed_fixed_m is not None
    r, v = cfg.rotation.mci_state(np.array(state.landed_fixed_m), np.zeros(3), t_s)
    return replace(state, t_s=t_s, r_mci_m=r, v_mci_m_s=v)


def _substep(
    state: DescentState, h: float, cfg: DescentConfig, enu: Vec, site_f: Vec, events: list[str]
) -> tuple[DescentState, float, Vec]:
    """Advance by one guidance cycle of at most ``h``; returns (state, thrust, dir)."""
    loc = _local(state, cfg, enu, site_f)
    a_max = cfg.engine.max_thrust_n / state.mass_kg
    state = _transition(state, loc, cfg, a_max, events)
    if state.phase == "free_fall":
        t_hit = _free_fall_to_ground(state, loc, cfg, h)
        if t_hit is not None:
            return _land(state, loc, cfg, t_hit, events), 0.0, np.zeros(3)
    tgo, accel = _thrust_accel_enu(state, loc, cfg, site_f, a_max)
    lit = state.phase != "free_fall"
    thrust_n, dir_enu = _limit_thrust(accel, state.mass_kg, cfg.engine, lit)
    propellant = state.mass_kg - cfg.dry_mass_kg
    if lit and thrust_n * h / cfg.engine.v_e_m_s > propellant:
        events.append("propellant_exhausted")
        state = _enter(state, "free_fall", events)
        thrust_n = 0.0
    dir_mci = loc.m_fixed.T @ (enu.T @ dir_enu)
    r, v, m = rk4_powered_step(
        state.r_mci_m, state.v_mci_m_s, state.mass_kg, h, thrust_n * dir_mci, cfg.engine.v_e_m_s
    )
    if lit and norm(r) < cfg.ground_radius_m <= loc.height_m + cfg.site_radius_m:
        return _hit_ground(state, cfg, h, r, thrust_n * dir_mci, events), thrust_n, dir_mci
    new_tgo = tgo - h if state.phase in ("braking", "approach") else tgo
    return (
        replace(state, t_s=state.t_s + h, r_mci_m=r, v_mci_m_s=v, mass_kg=m, tgo_s=new_tgo),
        thrust_n,
        dir_mci,
    )


def step(
    state: DescentState, dt_s: float, cfg: DescentConfig
) -> tuple[DescentState, PoweredOutput]:
    """Advance the descent by one clock step of any length."""
    if dt_s < 0.0:
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    enu = site_enu_basis(cfg.site_lat_deg, cfg.site_lon_deg)
    site_f = cfg.site_fixed_m
    events: list[str] = []
    if state.t_s == state.ignition_s and state.phase == "braking":
        events.append("ignition")
    t_end = state.t_s + dt_s
    thrust_n, dir_mci = 0.0, np.zeros(3)
    while state.phase != "landed" and t_end - state.t_s > 1e-9:
        h = min(cfg.substep_s, t_end - state.t_s)
        state, thrust_n, dir_mci = _substep(state, h, cfg, enu, site_f, events)
    if state.phase == "landed":
        state = _on_surface(state, cfg, t_end)
        thrust_n = 0.0
    height = norm(state.r_mci_m) - cfg.site_radius_m
    out = PoweredOutput(
        state.t_s,
        state.phase,
        thrust_n,
        thrust_n / cfg.engine.max_thrust_n,
        dir_mci,
        tuple(events),
        height,
        state.mass_kg - cfg.dry_mass_kg,
    )
    return state, out


# --- whole descent ---------------------------------------------------------


@dataclass(frozen=True)
class DescentResult:
    """Summary of a simulated descent."""

    final: DescentState
    duration_s: float
    events: tuple[tuple[float, str], ...]
    miss_distance_m: float  # touchdown point to the site, along the surface
    propellant_left_kg: float
    touchdown_v_m_s: tuple[float, float]  # (vertical, horizontal)
    steps: int


def simulate_descent(
    state: DescentState, cfg: DescentConfig, dt_s: float = 1.0, max_duration_s: float = 1_800.0
) -> DescentResult:
    """Loop :func:`step` until touchdown (or ``max_duration_s``)."""
    events: list[tuple[float, str]] = []
    steps = 0
    while state.phase != "landed" and state.t_s - state.ignition_s < max_duration_s:
        state, out = step(state, dt_s, cfg)
        events.extend((out.t_s, e) for e in out.events)
        steps += 1
    if state.touchdown_v_m_s is None or state.landed_fixed_m is None:
        raise RuntimeError(f"no touchdown within {max_duration_s} s (phase {state.phase})")
    land = np.array(state.landed_fixed_m)
    site = cfg.site_fixed_m
    cos_arc = float(land @ site) / (norm(land) * norm(site))
    miss = cfg.site_radius_m * math.acos(max(-1.0, min(1.0, cos_arc)))
    return DescentResult(
        state,
        state.phase_start_s - state.ignition_s,
        tuple(events),
        miss,
        state.mass_kg - cfg.dry_mass_kg,
        state.touchdown_v_m_s,
        steps,
    )


# Ignition uprange of the site, tuned so the braking phase ends at the gate
# at ~85-95 % throttle (~600 km of arc) and the whole descent lasts ~14 min
# like CE-6's 22:09 -> 22:23 UTC (reference timeline row 13).
NOMINAL_LEAD_ANGLE_DEG = 20.0


def nominal_ignition_state(
    t_ignition_s: float,
    *,
    lead_angle_deg: float = NOMINAL_LEAD_ANGLE_DEG,
    mass_kg: float = LANDER_IGNITION_MASS_KG,
    site_lat_deg: float = LANDING_SITE_LAT_DEG,
    site_lon_deg: float = LANDING_SITE_LON_DEG,
    site_height_m: float = LANDING_SITE_HEIGHT_M,
) -> DescentState:
    """State at powered-descent ignition on the nominal descent orbit.

    Builds the 200 km, 137 deg parking orbit passing over the site, plans
    descent-orbit lowering with :func:`plan_descent_orbit_lowering`, and
    coasts to the ~15 km perilune; the pass time is iterated so that the
    perilune falls at ``t_ignition_s``.
    """
    mu = GM_MOON_M3_S2
    site_f = frames.moon_fixed_from_selenographic(site_lat_deg, site_lon_deg, site_height_m)
    r_park = R_MOON_M + PARKING_HEIGHT_M
    v_park = math.sqrt(mu / r_park)
    lead = math.radians(lead_angle_deg)
    t_pass = t_ignition_s + lead * r_park / v_park
    for _ in range(3):
        site = frames.mci_from_moon_fixed(site_f, t_pass)
        s_hat = site / np.linalg.norm(site)
        normal = plane_normal_over_site(
            site, frames.moon_pole_mci(t_pass), math.radians(PARKING_INCLINATION_DEG)
        )
        r0, v0 = r_park * s_hat, v_park * cross(normal, s_hat)
        t_start = t_pass - math.tau * r_park / v_park  # one revolution before the pass
        r1, v1 = propagate_kepler(r0, v0, t_start - t_pass, mu)
        burn = plan_descent_orbit_lowering(
            r1,
            v1,
            t_start,
            lambda t: frames.mci_from_moon_fixed(site_f, t),
            site_reference_radius_m=R_MOON_M + site_height_m,
            lead_angle_rad=lead,
        )[0]
        r2, v2 = propagate_kepler(r1, v1, burn.t_s - t_start, mu)
        v2 = v2 + burn.dv_mci_m_s
        dt_peri = time_to_true_anomaly_s(r2, v2, 0.0)
        t_peri = burn.t_s + dt_peri
        t_pass -= t_peri - t_ignition_s
    r3, v3 = propagate_kepler(r2, v2, dt_peri, mu)
    return DescentState.at_ignition(t_peri, r3, v3, mass_kg)
