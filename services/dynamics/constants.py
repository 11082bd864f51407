"""Physical constants and mission figures, each with its source.

Units are in the names. Derived values are computed here, never retyped.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

# --- Fundamental -----------------------------------------------------------
C_M_S = 299_792_458.0  # speed of light, exact (SI definition)
G0_M_S2 = 9.80665  # standard gravity, exact (CGPM 1901)
DAY_S = 86_400.0
HOUR_S = 3_600.0

# --- Earth -----------------------------------------------------------------
GM_EARTH_M3_S2 = 3.986004418e14  # WGS 84 / IERS 2010 conventions
R_EARTH_EQ_M = 6_378_137.0  # WGS 84 equatorial radius
F_EARTH = 1.0 / 298.257223563  # WGS 84 flattening
J2_EARTH = 1.08262668e-3  # EGM2008 (unnormalised C20 = -J2)
OMEGA_EARTH_RAD_S = 7.292115e-5  # WGS 84 mean rotation rate

# --- Moon ------------------------------------------------------------------
GM_MOON_M3_S2 = 4.9028e12  # DE421 (Folkner et al. 2008, GM_moon = 4902.800 km^3/s^2)
R_MOON_M = 1_737_400.0  # IAU WGCCRE 2015 mean radius
J2_MOON = 2.0330530e-4  # GRAIL GL0660B (Konopliv et al. 2013), unnormalised
# The Moon rotates synchronously: sidereal month 27.321661 d (IAU).
SIDEREAL_MONTH_S = 27.321661 * DAY_S
OMEGA_MOON_RAD_S = 2.0 * math.pi / SIDEREAL_MONTH_S

# --- Sun -------------------------------------------------------------------
GM_SUN_M3_S2 = 1.32712440018e20  # DE421 / IAU 2009
AU_M = 149_597_870_700.0  # IAU 2012 B2, exact
SOLAR_CONSTANT_W_M2 = 1361.0  # Kopp & Lean 2011, total solar irradiance at 1 AU

# --- Mission epoch and reference figures ----------------------------------
# Launch of Chang'e-6, CZ-5 Y8 from Wenchang (reference timeline row 1).
MISSION_EPOCH_UTC = datetime(2024, 5, 3, 9, 27, 29, tzinfo=UTC)

# Landing site per LROC image 1374 (reference (c) "Landing site").
LANDING_SITE_LAT_DEG = -41.6385
LANDING_SITE_LON_DEG = -153.9852
LANDING_SITE_HEIGHT_M = -5_256.0  # relative to the 1,737.4 km reference sphere

# Sample mass returned, CNSA 2024-06-28 (reference timeline row 33).
SAMPLE_MASS_G = 1_935.3

# Engines (reference (b)).
LANDER_ENGINE_THRUST_N = 7_500.0  # variable-thrust main engine, CNSA
ASCENDER_ENGINE_THRUST_N = 3_000.0  # CNSA, ~6 min burn to orbit

# --- Added by the dynamics core (sun geometry) -------------------------------
R_SUN_M = 695_700_000.0  # IAU 2015 Resolution B3, nominal solar radius
