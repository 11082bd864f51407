"""Chang'e-6's figures for the generic algorithms, each with its source.

The algorithms (`targeting`, `entry`, `links`) take a mission's figures as
arguments; this module holds Chang'e-6's that are not dates. The dates
(separation, lunar orbit insertion, entry interface) are the flight plan's
facts (services/ground/plans/nominal.json), so moving one in the plan moves
what the vehicles aim at. Sources are rows of docs/reference/change6-mission.md
and docs/reference/change6-timeline.csv unless named otherwise; "chosen"
marks a figure no source gives, picked to fit those that do.

Where the entry interface falls: on 2024-06-21 the Moon stood at declination
~-27 deg, so a ~4-day return arrives near the anti-Moon point (28 N, 84 E at
05:41 UTC on 06-25) and meets 120 km about 25 deg before it, over the Arabian
Sea, heading north-east with Siziwang ~5,400 km ahead (CE-5 likewise
"bounced off the atmosphere over the Arabian Sea"). The reference's "over
the Atlantic" fits the orbiter/returner separation ~20 min earlier, not the
entry: from the Atlantic the site is 11,000-13,000 km away, more than a
26-minute skip entry can fly.
"""

from __future__ import annotations

from services.dynamics.constants import DAY_S
from services.dynamics.entry import ENTRY_INTERFACE_ALT_M, Capsule, LandingTarget
from services.dynamics.guidance.loi import PARKING_HEIGHT_M, PARKING_INCLINATION_DEG
from services.dynamics.targeting import EntryInterfaceTarget, LunarArrivalTarget

__all__ = [
    "EARTH_PARKING_PERIGEE_ALT_M",
    "ENTRY_FPA_DEG",
    "RETURNER",
    "SIZIWANG",
    "SIZIWANG_GROUND_H_M",
    "SIZIWANG_LAT_DEG",
    "SIZIWANG_LON_DEG",
    "TEI1_APOLUNE_ALT_M",
    "TEI_TRANSFER_S",
    "entry_interface_target",
    "lunar_arrival_target",
]

# --- The returner --------------------------------------------------------------------
# A CE-5T1 / CE-5 analogue. Public sources give only "~300 kg" (CE-5
# returner) and "about one seventh of a Shenzhou return capsule" (reference,
# landing-zone note: ~14 % of the volume). Chosen, with the reasoning:
#
# * entry mass 330 kg: ~300 kg dry class plus heat shield and 1.9 kg sample;
# * maximum diameter 1.31 m: Shenzhou return module 2.52 m scaled by
#   0.14 ** (1/3) = 0.52 (same shape, 14 % of the volume), reference area 1.35 m^2;
# * hypersonic drag coefficient 1.3 and trim L/D 0.30 (Apollo/Shenzhou-type
#   blunt capsule flying at trim angle of attack; Apollo L/D 0.3-0.37);
#   ballistic coefficient m / (Cd A) = 188 kg/m^2;
# * nose (heat-shield spherical) radius 1.16 m: Soyuz/Shenzhou 2.235 m scaled
#   by the same 0.52;
# * main canopy 50 m^2 (reference: "~50 m^2", unconfirmed), Cd 0.8 (ring-sail
#   type), opened at 10 km and inflated linearly over 8 s (a stand-in for the
#   drogue and reefing stages, keeping the opening load at a few g).
RETURNER = Capsule(
    mass_kg=330.0,
    diameter_m=1.31,
    drag_coefficient=1.3,
    lift_to_drag=0.30,
    nose_radius_m=1.16,
    chute_area_m2=50.0,
    chute_drag_coefficient=0.8,
    chute_inflation_s=8.0,
)

# --- Earth landing ------------------------------------------------------------------
# Siziwang Banner landing zone, Amugulang grassland (Shenzhou/CE-5/CE-6 zone,
# timeline row 31), some 50-80 km north of the banner seat Wulanhua
# (41.53 N, 111.68 E). The exact CE-6 touchdown point is unpublished
# (reference, "not found" item 10); 42.0 N, 111.45 E is a point in that
# grassland (chosen: 41.6-42.0 N, 111.3-111.6 E). Ground ~1,400 m above the
# ellipsoid (terrain ~1,450 m MSL, geoid ~-40 m there).
SIZIWANG_LAT_DEG = 42.0
SIZIWANG_LON_DEG = 111.45
SIZIWANG_GROUND_H_M = 1_400.0
SIZIWANG = LandingTarget(
    lat_deg=SIZIWANG_LAT_DEG, lon_deg=SIZIWANG_LON_DEG, ground_height_m=SIZIWANG_GROUND_H_M
)

# --- Earth-Moon transfer ------------------------------------------------------------
# Perigee of the orbit the CZ-5 upper stage leaves the probe in (chosen: a
# typical low parking orbit; the reference gives no TLI perigee).
EARTH_PARKING_PERIGEE_ALT_M = 200_000.0

# --- Return -------------------------------------------------------------------------
# Inertial, geocentric horizon (chosen): steep enough that the ~5,400 km range
# to Siziwang needs a real skip (apex > 120 km), shallow enough for < 9 g.
ENTRY_FPA_DEG = -6.4
# TEI-2 to EI: 4.3 d puts TEI-2 on 2024-06-20 ~23 UTC, between Wikipedia's
# "20 June ~15:00" and SpaceNews' "around June 21" (timeline row 25).
TEI_TRANSFER_S = 4.3 * DAY_S
# Apolune of the ellipse TEI-1 raises the parking orbit to (chosen; CE-5's
# TEI-1 "raised the orbit to an ellipse", no figure published).
TEI1_APOLUNE_ALT_M = 5_000_000.0


def lunar_arrival_target(t_sep_s: float, t_loi_s: float) -> LunarArrivalTarget:
    """The free coast from separation at ``t_sep_s`` to a perilune at ``t_loi_s``
    in the plane and height of the parking orbit the LOI guidance aims at."""
    return LunarArrivalTarget(
        t_sep_s=t_sep_s,
        t_perilune_s=t_loi_s,
        perilune_alt_m=PARKING_HEIGHT_M,
        inclination_deg=PARKING_INCLINATION_DEG,
        parking_alt_m=EARTH_PARKING_PERIGEE_ALT_M,
    )


def entry_interface_target(t_ei_s: float) -> EntryInterfaceTarget:
    """The returner's entry interface at ``t_ei_s``, aimed at Siziwang."""
    return EntryInterfaceTarget(
        t_ei_s=t_ei_s,
        altitude_m=ENTRY_INTERFACE_ALT_M,  # where the entry model starts (Xinhua's ~120 km)
        fpa_deg=ENTRY_FPA_DEG,
        site=SIZIWANG,
        transfer_s=TEI_TRANSFER_S,
        tei1_apolune_alt_m=TEI1_APOLUNE_ALT_M,
    )
