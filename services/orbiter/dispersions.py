"""What a Monte Carlo case may change on the orbiter, and the physics each change acts through.

The orbiter's dispersible quantities (services/kernel/parameters.py): its main
engine, how every burn is executed, the OR stack's mass properties and the
state the launcher delivers at separation. Each acts where a real vehicle's
would:

* the burns are *planned* with the design engine (design.MAIN_ENGINE): the
  planners do not know a dispersion, which is the point of one;
* an impulsive burn delivers the commanded delta-v times ``1 + e``
  (``burn.magnitude_error``), turned by the thrust misalignment
  (``burn.pointing_error_*``), and spends propellant by the rocket equation
  with the engine's true exhaust velocity (``engine.isp_scale``);
* a finite burn (LOI, an operator's) is cut off when it has delivered its
  planned delta-v, as an accelerometer cut-off ends a main-engine burn: with
  the true thrust and exhaust velocity it lasts longer or shorter
  (:func:`cutoff_duration_s`), and ``1 + e`` of the planned delta-v is what
  the miscalibrated cut-off lets through;
* the separation state is the solver's plus an error in the local radial /
  along-track / cross-track frame (:func:`injected_state`), which the cruise
  corrections then absorb.

The rendezvous' closing burns are impulsive burns like any other; the
terminal approach flies on its own thrusters (closing.APPROACH), which the
main engine's figures do not describe.

Pure functions of vectors and numbers: no state, no I/O.
"""

from __future__ import annotations

import math

import numpy as np

from services.dynamics.burns import Engine, inertial_from_rtn, rtn_basis
from services.kernel.parameters import Parameter
from services.orbiter.flight import Vec, unit, vec

__all__ = ["ENGINE_PARAMETERS", "INJECTION_PARAMETERS", "PARAMETERS", "cutoff_duration_s",
           "injected_state", "misaligned", "misalignment_axes"]

#: The parameters that change how a finite burn performs against its plan.
ENGINE_PARAMETERS = ("engine.thrust_scale", "engine.isp_scale", "burn.magnitude_error")
#: The six components of the injection error, position (m) then velocity (m/s), R, T, N.
INJECTION_PARAMETERS = tuple(
    [f"injection.position_error_{a}_m" for a in ("radial", "along", "cross")]
    + [f"injection.velocity_error_{a}_m_s" for a in ("radial", "along", "cross")])

# Ranges (chosen; the CE-6 orbiter's acceptance figures are unpublished): a
# healthy bipropellant apogee engine delivers its rated thrust to a few per
# cent and its Isp to ~1 %. The thrust bounds (+-20 %) reach a pressure
# regulator drifted or failed to blowdown, an engine still flown; the Isp
# bounds, a mixture ratio well off its design. Outright failure is the
# thrust_loss fault's domain.
_THRUST_SCALE_RANGE = (0.8, 1.2)
_ISP_SCALE_RANGE = (0.95, 1.05)
# A working accelerometer's scale factor is good to ~0.1 %; 5 % bounds the
# cut-off error of the shortest burns (thrust tail-off against a few m/s).
_MAGNITUDE_ERROR_RANGE = (-0.05, 0.05)
# Thrust axis aligned to ~0.1-0.25 deg and attitude held to ~0.1 deg on a
# healthy spacecraft; 1 deg bounds a badly calibrated one.
_POINTING_ERROR_DEG = 1.0
# The dry mass and the split of the launch mass are assumptions (design.py):
# +-100 kg (~9 % of the dry mass, ~3 % of the load) spans plausible vehicles.
_MASS_OFFSET_KG = 100.0
# Launcher injection accuracy for a trans-lunar injection (chosen: Long March 5
# figures are unpublished in this form): a few km and a few m/s; the bounds
# are what the cruise corrections can still absorb.
_INJECTION_POSITION_M = 20_000.0
_INJECTION_VELOCITY_M_S = 10.0


def _parameters() -> tuple[Parameter, ...]:
    scale = "1"
    params = [
        Parameter("engine.thrust_scale", 1.0, scale, *_THRUST_SCALE_RANGE,
                  "main engine thrust factor: finite burns (LOI, operator burns) last "
                  "1/scale as long to deliver their planned delta-v"),
        Parameter("engine.isp_scale", 1.0, scale, *_ISP_SCALE_RANGE,
                  "main engine exhaust velocity factor: every burn's propellant follows "
                  "the rocket equation with v_e * scale"),
        Parameter("burn.magnitude_error", 0.0, scale, *_MAGNITUDE_ERROR_RANGE,
                  "every burn delivers (1 + e) times the delta-v commanded (a systematic "
                  "accelerometer / cut-off calibration error)"),
        Parameter("burn.pointing_error_x_deg", 0.0, "deg", -_POINTING_ERROR_DEG,
                  _POINTING_ERROR_DEG,
                  "thrust misalignment about x = u x N (u the thrust direction, N the "
                  "orbit normal): turns a prograde burn out of the orbit plane"),
        Parameter("burn.pointing_error_y_deg", 0.0, "deg", -_POINTING_ERROR_DEG,
                  _POINTING_ERROR_DEG,
                  "thrust misalignment about y = u x x: turns a prograde burn up (radial)"),
        Parameter("dry_mass_offset_kg", 0.0, "kg", -_MASS_OFFSET_KG, _MASS_OFFSET_KG,
                  "added to the OR stack's dry mass"),
        Parameter("propellant_offset_kg", 0.0, "kg", -_MASS_OFFSET_KG, _MASS_OFFSET_KG,
                  "added to the propellant loaded (the tank's capacity follows)"),
    ]
    for name in INJECTION_PARAMETERS:
        position = name.startswith("injection.position")
        bound = _INJECTION_POSITION_M if position else _INJECTION_VELOCITY_M_S
        params.append(Parameter(name, 0.0, "m" if position else "m/s", -bound, bound,
                                "error of the launcher's injection at separation, in the "
                                "radial / along-track (N x R) / cross-track (orbit normal) "
                                "frame of the separation state"))
    return tuple(params)


PARAMETERS: tuple[Parameter, ...] = _parameters()


def misalignment_axes(u: Vec, r_m: Vec, v_m_s: Vec) -> tuple[Vec, Vec]:
    """The axes (x, y) a thrust misalignment turns the unit direction ``u`` about.

    x = u x N (N the unit orbit normal of (r, v)), y = u x x, so (x, y, u) is
    right-handed and fixed by the burn and the orbit: for a prograde burn x is
    the radial and y the negative orbit normal. A burn along the orbit normal
    takes x = u x R (R the radial unit vector) instead."""
    n_hat = unit(np.cross(r_m, v_m_s))
    x = np.cross(u, n_hat)
    if float(np.linalg.norm(x)) < 1e-9:
        x = np.cross(u, unit(r_m))
    x = unit(x)
    return x, np.cross(u, x)


def misaligned(dv: Vec, r_m: Vec, v_m_s: Vec, x_deg: float, y_deg: float) -> Vec:
    """``dv`` turned by ``x_deg`` about x, then by ``y_deg`` about y
    (:func:`misalignment_axes`), its length kept. In closed form, for
    u = dv / |dv|: u' = cos(ax) cos(ay) u + cos(ax) sin(ay) x - sin(ax) y,
    so the angle between them is acos(cos(ax) cos(ay)). A zero ``dv`` stays zero."""
    mag = float(np.linalg.norm(dv))
    if mag == 0.0:
        return vec(dv)
    u = vec(dv) / mag
    x, y = misalignment_axes(u, r_m, v_m_s)
    ax, ay = math.radians(x_deg), math.radians(y_deg)
    turned: Vec = mag * (math.cos(ax) * math.cos(ay) * u + math.cos(ax) * math.sin(ay) * x
                         - math.sin(ax) * y)
    return turned


def injected_state(r_m: Vec, v_m_s: Vec, dr_rtn_m: Vec, dv_rtn_m_s: Vec) -> tuple[Vec, Vec]:
    """The state ``(r, v)`` with a position and a velocity error added, each
    given in the RTN frame of ``(r, v)`` (R radial, T = N x R along-track, N
    the orbit normal: services/dynamics/burns.py)."""
    basis = rtn_basis(r_m, v_m_s)
    return vec(r_m) + basis.T @ dr_rtn_m, vec(v_m_s) + inertial_from_rtn(r_m, v_m_s, dv_rtn_m_s)


def cutoff_duration_s(mass_kg: float, dv_m_s: float, engine: Engine, throttle: float,
                      propellant_kg: float) -> float:
    """How long ``engine`` at ``throttle`` burns from ``mass_kg`` until it has
    delivered ``dv_m_s`` of ideal delta-v (the rocket equation at constant
    thrust: m(t) = m0 - mdot t, dv = v_e ln(m0 / m)), or until
    ``propellant_kg`` is spent, whichever comes first."""
    mdot = engine.mass_flow_kg_s(throttle * engine.max_thrust_n)
    needed_kg = mass_kg * -math.expm1(-dv_m_s / engine.v_e_m_s)
    return min(needed_kg, propellant_kg) / mdot
