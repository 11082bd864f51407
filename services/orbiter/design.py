"""The orbiter's vehicle choices: masses, engine, power, ICUBE-Q. Each with its source.

CNSA publishes only the 8,350 kg launch mass and the ~3,200 kg landed mass
(reference (b)); the split below is an assumption chosen to be physically
consistent with the delta-v the twin's trajectory needs (LOI ~330 m/s, orbit
adjustments, rendezvous, TEI ~810 m/s, with a reserve), using the CE-5
orbiter's published 3,000 N main engine (reference (b), CE-5 analogue).

Mass budget at launch (kg)::

    LA stack (lander + ascender, propellant incl.)   3,240.0
    ICUBE-Q                                              7.0
    returner, empty (330 kg entry mass - sample)       328.1
    orbiter dry                                      1,150.0
    orbiter propellant                               3,624.9
    total                                            8,350.0
"""

from __future__ import annotations

from services.dynamics.burns import Engine
from services.dynamics.change6 import RETURNER
from services.dynamics.constants import SAMPLE_MASS_G
from services.dynamics.guidance.descent import LANDER_IGNITION_MASS_KG

# Reference (b): "8.35-ton" total launch mass (China Daily, Wikipedia).
LAUNCH_MASS_KG = 8_350.0
# Assumption: guidance/descent.py reads the ~3,200 kg landed mass as the mass
# at powered-descent ignition; the LA stack also carries ~40 kg for its own
# phasing and descent-orbit lowering (~40 m/s at v_e 3,100 m/s).
LA_PHASING_PROPELLANT_KG = 40.0
LA_STACK_MASS_KG = LANDER_IGNITION_MASS_KG + LA_PHASING_PROPELLANT_KG
# Reference (timeline row 8): ICUBE-Q, a ~7 kg cubesat (6U class).
ICUBEQ_MASS_KG = 7.0
# The returner's entry mass includes the sample; the empty returner is the rest.
RETURNER_ENTRY_MASS_KG = RETURNER.mass_kg
RETURNER_EMPTY_MASS_KG = RETURNER_ENTRY_MASS_KG - SAMPLE_MASS_G / 1_000.0
# Assumption (module masses unpublished): orbiter dry mass.
ORBITER_DRY_MASS_KG = 1_150.0
ORBITER_PROPELLANT_KG = (
    LAUNCH_MASS_KG - LA_STACK_MASS_KG - ICUBEQ_MASS_KG - RETURNER_EMPTY_MASS_KG
    - ORBITER_DRY_MASS_KG
)
# Assumption: 2 % of the load kept back for attitude control and disposal.
PROPELLANT_RESERVE_KG = 70.0

# Reference (b), CE-5 analogue: 3,000 N orbiter main engine. v_e 3,050 m/s
# (Isp ~311 s), a bipropellant MMH/MON figure (assumption).
MAIN_ENGINE = Engine(3_000.0, 3_050.0)
# Long burns are integrated in chunks of at most this many mission seconds
# (the clock step during a burn) with 1 s guidance sub-steps.
BURN_STEP_S = 5.0
BURN_SUBSTEP_S = 1.0

# Power (assumptions; CE-5/6 orbiter figures unpublished): two wings rated
# 2,400 W at 1 AU, a 28 V x 100 Ah battery, 900 W average load.
SOLAR_RATED_W = 2_400.0
BATTERY_CAPACITY_WH = 2_800.0
LOAD_W = 900.0
# Simple thermal model: the bus sits between these in shadow and in full Sun.
TEMPERATURE_SHADOW_C = 5.0
TEMPERATURE_SUN_C = 22.0
# Sunlight is sampled at least this often within a clock step (eclipses in
# the 2.1 h parking orbit last ~45 min).
SUN_SAMPLE_S = 600.0

# ICUBE-Q (assumption for a "simple model"): released with 0.5 m/s away from
# the orbiter; each of its two cameras takes one image per minute while the
# point below it is sunlit (the lit side of the Moon).
ICUBEQ_RELEASE_DV_M_S = 0.5
ICUBEQ_CAMERAS = 2
ICUBEQ_IMAGE_INTERVAL_S = 60.0
