"""Powered ascent of the ascender from the lander's deck to lunar orbit.

Phases: ``vertical_rise`` (thrust along the local vertical to clear the
lander), ``powered_ascent`` (guided pitch-over and climb to the insertion
point), ``engine_cutoff`` when the orbit's specific energy reaches the
target's, then ``coast``.

Guidance is the explicit scheme of the Apollo LM ascent: full thrust,
time-to-go from the rocket equation on the velocity still to be gained;
the radial and out-of-plane channels on E-guidance (a = 6 ZEM / t_go^2 -
2 ZEV / t_go) to the insertion radius with zero radial speed and onto the
target plane; the rest of the thrust goes downrange. Its pitch history is
close to the linear-tangent law that is optimal for this flat-Moon problem.

Target orbit: CE-6's is unpublished (reference (c)); we insert at perilune
of a 15 x 180 km orbit (heights above the 1,737.4 km sphere), a stable orbit
whose perilune clears the highest far-side terrain (~+8 km) and reaches
orbit in ~6 minutes with the 3,000 N engine (reference (b)).

Integration: RK4 in MCI on Moon point-mass gravity, sub-steps of
``substep_s``; third bodies and J2 change a 6-min ascent by metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from services.dynamics import frames
from services.dynamics.burns import Engine, rk4_powered_step
from services.dynamics.constants import (
    ASCENDER_ENGINE_THRUST_N,
    GM_MOON_M3_S2,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)
from services.dynamics.guidance import (
    ArcGravity,
    MoonRotation,
    PoweredOutput,
    zem_zev_accel,
)
from services.dynamics.guidance.loi import apsis_speed_m_s
from services.dynamics.kepler import elements_from_rv
from services.dynamics.vec import cross, norm

__all__ = [
    "ASCENDER_DRY_MASS_KG",
    "ASCENDER_ENGINE",
    "ASCENDER_WET_MASS_KG",
    "AscentConfig",
    "AscentResult",
    "AscentState",
    "simulate_ascent",
    "step",
]

Vec = NDArray[np.float64]

# --- vehicle (choices documented; CNSA publishes only thrust and duration) --
# Effective exhaust velocity 3,090 m/s (Isp ~315 s), a storable
# bipropellant figure for a 3 kN apogee-class engine (assumption).
ASCENDER_V_E_M_S = 3_090.0
ASCENDER_ENGINE = Engine(ASCENDER_ENGINE_THRUST_N, ASCENDER_V_E_M_S, ASCENDER_ENGINE_THRUST_N)
# Assumption (module masses unpublished, reference (b) item 1): ~750 kg wet
# with the ~2 kg sample; 420 kg of propellant covers ascent (~1.85 km/s) and
# the four phasing burns with margin.
ASCENDER_WET_MASS_KG = 750.0
ASCENDER_DRY_MASS_KG = 330.0

PHASES = ("vertical_rise", "powered_ascent", "coast")


@dataclass(frozen=True)
class AscentConfig:
    """Target orbit, launch site and tuning of one ascent."""

    rotation: MoonRotation
    target_normal_mci: Vec = field(compare=False)  # unit normal of the orbiter's plane
    perilune_height_m: float = 15e3
    apolune_height_m: float = 180e3
    site_lat_deg: float = LANDING_SITE_LAT_DEG
    site_lon_deg: float = LANDING_SITE_LON_DEG
    site_height_m: float = LANDING_SITE_HEIGHT_M
    engine: Engine = ASCENDER_ENGINE
    dry_mass_kg: float = ASCENDER_DRY_MASS_KG
    vertical_rise_s: float = 10.0  # assumption: clears the lander, then pitches over
    substep_s: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 < self.perilune_height_m <= self.apolune_height_m:
            raise ValueError(
                "need 0 < perilune_height_m <= apolune_height_m, got "
                f"{self.perilune_height_m}, {self.apolune_height_m}"
            )
        if not 0.0 < self.substep_s <= 0.5:
            raise ValueError(f"substep_s must be in (0, 0.5] s, got {self.substep_s}")

    @property
    def insertion_radius_m(self) -> float:
        return R_MOON_M + self.perilune_height_m

    @property
    def insertion_speed_m_s(self) -> float:
        return apsis_speed_m_s(self.insertion_radius_m, R_MOON_M + self.apolune_height_m)

    @property
    def target_energy_j_kg(self) -> float:
        a = R_MOON_M + 0.5 * (self.perilune_height_m + self.apolune_height_m)
        return -GM_MOON_M3_S2 / (2.0 * a)

    @property
    def site_radius_m(self) -> float:
        return R_MOON_M + self.site_height_m


@dataclass(frozen=True)
class AscentState:
    t_s: float
    r_mci_m: Vec = field(compare=False)
    v_mci_m_s: Vec = field(compare=False)
    mass_kg: float
    phase: str = "vertical_rise"
    liftoff_s: float = 0.0
    cutoff_s: float | None = None

    @classmethod
    def on_pad(
        cls, t_s: float, cfg: AscentConfig, mass_kg: float = ASCENDER_WET_MASS_KG
    ) -> AscentState:
        """At rest on the site (the lander's deck height is neglected)."""
        site_f = frames.moon_fixed_from_selenographic(
            cfg.site_lat_deg, cfg.site_lon_deg, cfg.site_height_m
        )
        r, v = cfg.rotation.mci_state(site_f, np.zeros(3), t_s)
        return cls(t_s, r, v, mass_kg, "vertical_rise", t_s)


def _energy(r: Vec, v: Vec) -> float:
    return 0.5 * float(v @ v) - GM_MOON_M3_S2 / norm(r)


def _guided_accel(state: AscentState, cfg: AscentConfig, a_thrust: float) -> Vec:
    """Unit-free thrust acceleration vector (MCI) of the explicit ascent law."""
    r_vec, v_vec = state.r_mci_m, state.v_mci_m_s
    r = norm(r_vec)
    up = r_vec / r
    n_hat = cfg.target_normal_mci
    down = cross(n_hat, up)
    down /= np.linalg.norm(down)
    v_up, v_down, v_cross = float(v_vec @ up), float(v_vec @ down), float(v_vec @ n_hat)
    v_f = cfg.insertion_speed_m_s
    # Time-to-go: rocket equation on the velocity to be gained, plus the
    # gravity loss of holding the climb (half of g less centrifugal, averaged).
    g_loss = 0.5 * (GM_MOON_M3_S2 / (r * r) - v_down * v_down / r)
    dv_go = math.sqrt((v_f - v_down) ** 2 + v_cross**2 + v_up**2)
    mdot = cfg.engine.mass_flow_kg_s(cfg.engine.max_thrust_n)
    tgo = state.mass_kg / mdot * (1.0 - math.exp(-dv_go / cfg.engine.v_e_m_s))
    tgo = state.mass_kg / mdot * (1.0 - math.exp(-(dv_go + g_loss * tgo) / cfg.engine.v_e_m_s))
    tgo = max(tgo, 5.0)  # below a few seconds E-guidance gains blow up; hold the attitude
    grav = ArcGravity(
        np.array([0.0, 0.0, -GM_MOON_M3_S2 / (r * r)]), vh_now=v_down, vh_end=v_f, inv_r=1.0 / r
    )
    pos = np.array([0.0, float(r_vec @ n_hat), r])
    vel = np.array([v_down, v_cross, v_up])
    a = zem_zev_accel(
        pos, vel, grav, np.array([0.0, 0.0, cfg.insertion_radius_m]), np.zeros(3), tgo
    )
    a_up, a_cross = float(a[2]), float(a[1])
    side = a_up * a_up + a_cross * a_cross
    if side > 0.98 * a_thrust * a_thrust:  # keep some thrust downrange
        scale = math.sqrt(0.98 * a_thrust * a_thrust / side)
        a_up, a_cross, side = a_up * scale, a_cross * scale, side * scale * scale
    a_down = math.sqrt(a_thrust * a_thrust - side)
    result: Vec = a_down * down + a_cross * n_hat + a_up * up
    return result


def _substep(
    state: AscentState, h: float, cfg: AscentConfig, events: list[str]
) -> tuple[AscentState, float, Vec]:
    if state.phase == "coast":
        r, v, m = rk4_powered_step(
            state.r_mci_m, state.v_mci_m_s, state.mass_kg, h, np.zeros(3), cfg.engine.v_e_m_s
        )
        return replace(state, t_s=state.t_s + h, r_mci_m=r, v_mci_m_s=v), 0.0, np.zeros(3)
    if state.phase == "vertical_rise" and state.t_s - state.liftoff_s >= cfg.vertical_rise_s:
        events.append("pitch_over")
        state = replace(state, phase="powered_ascent")
    thrust = cfg.engine.max_thrust_n
    if state.phase == "vertical_rise":
        direction = state.r_mci_m / np.linalg.norm(state.r_mci_m)
    else:
        accel = _guided_accel(state, cfg, thrust / state.mass_kg)
        direction = accel / np.linalg.norm(accel)
    # Cut off inside the sub-step when the orbit energy reaches the target:
    # energy rises at thrust * (v . dir) / m, nearly constant over a sub-step.
    rate = thrust * float(state.v_mci_m_s @ direction) / state.mass_kg
    missing = cfg.target_energy_j_kg - _energy(state.r_mci_m, state.v_mci_m_s)
    cut = state.phase == "powered_ascent" and rate > 0.0 and missing <= rate * h
    h_burn = max(0.0, missing / rate) if cut else h
    if (state.mass_kg - cfg.dry_mass_kg) < cfg.engine.mass_flow_kg_s(thrust) * h_burn:
        events.append("propellant_exhausted")
        h_burn = max(0.0, (state.mass_kg - cfg.dry_mass_kg) / cfg.engine.mass_flow_kg_s(thrust))
        cut = True
    r, v, m = rk4_powered_step(
        state.r_mci_m,
        state.v_mci_m_s,
        state.mass_kg,
        h_burn,
        thrust * direction,
        cfg.engine.v_e_m_s,
    )
    state = replace(state, t_s=state.t_s + h_burn, r_mci_m=r, v_mci_m_s=v, mass_kg=m)
    if cut:
        events.append("engine_cutoff")
        state = replace(state, phase="coast", cutoff_s=state.t_s)
    return state, thrust, direction


def step(state: AscentState, dt_s: float, cfg: AscentConfig) -> tuple[AscentState, PoweredOutput]:
    """Advance the ascent by one clock step of any length."""
    if dt_s < 0.0:
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    events: list[str] = ["liftoff"] if state.t_s == state.liftoff_s else []
    t_end = state.t_s + dt_s
    thrust, direction = 0.0, np.zeros(3)
    while t_end - state.t_s > 1e-9:
        state, thrust, direction = _substep(
            state, min(cfg.substep_s, t_end - state.t_s), cfg, events
        )
    if state.phase == "coast":
        thrust = 0.0
    height = norm(state.r_mci_m) - cfg.site_radius_m
    out = PoweredOutput(
        state.t_s, state.phase, thrust, thrust / cfg.engine.max_thrust_n, direction,
        tuple(events), height, state.mass_kg - cfg.dry_mass_kg,
    )  # fmt: skip
    return state, out


@dataclass(frozen=True)
class AscentResult:
    """Summary of a simulated ascent (heights above the 1,737.4 km sphere)."""

    final: AscentState
    burn_s: float
    perilune_height_m: float
    apolune_height_m: float
    plane_error_deg: float
    propellant_left_kg: float
    steps: int


def simulate_ascent(
    state: AscentState, cfg: AscentConfig, dt_s: float = 1.0, max_duration_s: float = 900.0
) -> AscentResult:
    """Loop :func:`step` until engine cutoff (or ``max_duration_s``)."""
    steps = 0
    while state.phase != "coast" and state.t_s - state.liftoff_s < max_duration_s:
        state, _ = step(state, dt_s, cfg)
        steps += 1
    if state.cutoff_s is None:
        raise RuntimeError(f"no engine cutoff within {max_duration_s} s")
    el = elements_from_rv(state.r_mci_m, state.v_mci_m_s, GM_MOON_M3_S2)
    h = cross(state.r_mci_m, state.v_mci_m_s)
    cos_err = float(h @ cfg.target_normal_mci) / norm(h)
    return AscentResult(
        state,
        state.cutoff_s - state.liftoff_s,
        el.a_m * (1.0 - el.e) - R_MOON_M,
        el.a_m * (1.0 + el.e) - R_MOON_M,
        math.degrees(math.acos(max(-1.0, min(1.0, cos_err)))),
        state.mass_kg - cfg.dry_mass_kg,
        steps,
    )
