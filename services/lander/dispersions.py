"""The lander's dispersible parameters (services/kernel/parameters.py) and their physics.

What a Monte Carlo case may change on the lander-ascender stack, each acting
where the physics puts it (services/lander/vehicle.py):

* ``engine.thrust_scale``, ``engine.isp_scale``: factors on the 7,500 N
  variable-thrust engine's maximum thrust and on its exhaust velocity
  (``dg.LANDER_ENGINE``). The braking flies near full thrust, so a weaker
  engine is held at its (lower) maximum for longer: 5 % weaker, ~4 min
  instead of ~1. Its constant-deceleration law then reaches the gate a
  little sooner and faster, and the approach, planned on a fraction of the
  lower thrust, takes longer. The exhaust velocity sets the propellant every
  burn takes (rocket equation), the phasing and descent-orbit-lowering burns
  too: one engine flies them all.
* ``mass_offset_kg``: propellant loaded off the nominal, added to the LA
  stack's mass when the lander takes it over at separation (its dry mass is
  the same).
* ``navigation.bias_east_m``, ``navigation.bias_north_m``: the lander's
  estimate of its own position relative to the site is off by this, in the
  site's east/north plane (estimate minus truth: a map-tie or navigation
  error). The guidance brings its *estimate* to the site, so the lander
  touches down at minus the bias from where it would have: the guidance is
  given the site moved by minus the bias. The hazard map moves with it (it
  is the on-board map's, tied to the same wrong origin), so the avoidance
  chooses the same spot relative to the site it believes in.
* ``terrain.height_error_m``: the real ground at the site lies this much above
  the map height the guidance flies to (``LANDING_SITE_HEIGHT_M``); the
  engine is still cut 2 m above the map (``DescentConfig.terrain_error_m``).

Every parameter left out of a run keeps its nominal value and its code path
is skipped entirely, so a run given none flies the nominal mission bit for bit.
"""

from __future__ import annotations

import numpy as np

from services.dynamics import frames
from services.dynamics.burns import Engine
from services.dynamics.constants import (
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
)
from services.dynamics.guidance import descent as dg
from services.kernel.parameters import Parameter

__all__ = ["PARAMETERS", "believed_site_deg", "scaled_engine"]

# --- ranges (chosen: CNSA publishes none of these dispersions) ---------------
#: A twentieth either way on the maximum thrust: a healthy pressure-fed
#: bipropellant engine delivers its rating to a few per cent (inlet pressures,
#: mixture ratio). A weaker engine is a failed one, the ``engine_thrust_loss``
#: fault's domain: 8 % short, the braking already runs into the ground.
THRUST_SCALE_LOW, THRUST_SCALE_HIGH = 0.95, 1.05
#: On the 3,100 m/s exhaust velocity, itself chosen (descent.py): down to the
#: 2,940 m/s of the CUMCM 2014 CE-3 model (0.948), up to ~3,220 m/s (Isp
#: ~330 s), about the best any storable MMH/MON engine has flown.
ISP_SCALE_LOW, ISP_SCALE_HIGH = 0.94, 1.04
#: Propellant is loaded by weighing to well under 1 % (~10 kg); the range is
#: ten times that because the stack's mass at separation is itself unpublished
#: (~3 % of the 3,320 kg assumed; descent propellant ~1,700 kg).
MASS_OFFSET_KG = 100.0
#: Per axis. Before powered descent the lander knows its position from Earth
#: tracking of the orbit (hundreds of metres); no terrain-relative navigation
#: corrects it before the hover scan. A kilometre is also the acceptance radius
#: of the landing (tests/unit/mission/test_lander.py): beyond it the case has
#: failed anyway.
NAV_BIAS_M = 1_000.0
#: LROC gives the site's height to +-30 m (reference row 14).
TERRAIN_ERROR_M = 30.0

PARAMETERS: tuple[Parameter, ...] = (
    Parameter("engine.thrust_scale", 1.0, "1", THRUST_SCALE_LOW, THRUST_SCALE_HIGH,
              "factor on the descent engine's maximum thrust (7,500 N); its throttle "
              "floor stays, lowered only to a maximum below it"),
    Parameter("engine.isp_scale", 1.0, "1", ISP_SCALE_LOW, ISP_SCALE_HIGH,
              "factor on the lander engine's exhaust velocity: the propellant of every "
              "lander burn, phasing to touchdown"),
    Parameter("mass_offset_kg", 0.0, "kg", -MASS_OFFSET_KG, MASS_OFFSET_KG,
              "propellant loaded off the nominal: the LA stack's mass at separation"),
    Parameter("navigation.bias_east_m", 0.0, "m", -NAV_BIAS_M, NAV_BIAS_M,
              "east error of the lander's position estimate (estimate - truth) during "
              "powered descent: the touchdown moves west by it"),
    Parameter("navigation.bias_north_m", 0.0, "m", -NAV_BIAS_M, NAV_BIAS_M,
              "north error of the lander's position estimate (estimate - truth) during "
              "powered descent: the touchdown moves south by it"),
    Parameter("terrain.height_error_m", 0.0, "m", -TERRAIN_ERROR_M, TERRAIN_ERROR_M,
              "real ground above the map height the guidance flies to: the engine cut "
              "2 m above the map leaves a shorter (or longer) drop"),
)


def scaled_engine(engine: Engine, thrust_scale: float, isp_scale: float) -> Engine:
    """``engine`` with its maximum thrust and exhaust velocity scaled. The throttle
    floor is the engine's own (the flow valve's lowest setting) unless the new
    maximum is below it."""
    max_thrust_n = engine.max_thrust_n * thrust_scale
    return Engine(max_thrust_n, engine.v_e_m_s * isp_scale,
                  min(engine.min_thrust_n, max_thrust_n))


def believed_site_deg(bias_east_m: float, bias_north_m: float) -> tuple[float, float]:
    """(lat, lon) in degrees of where a lander really flies when its guidance
    brings a position estimate that is off by (east, north) to the site: the site
    moved by minus the bias in its tangent plane (at a kilometre the tangent and
    the arc differ by 0.1 mm)."""
    east, north, _ = dg.site_enu_basis(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG)
    site = frames.moon_fixed_from_selenographic(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG,
                                                LANDING_SITE_HEIGHT_M)
    moved = np.asarray(site - bias_east_m * east - bias_north_m * north)
    lat_deg, lon_deg, _ = frames.selenographic_from_moon_fixed(moved)
    return lat_deg, lon_deg
