"""The real mission's figures that tests hold the twin to, each with its source.

Tests take expected values from here, never from the code under test: a wrong
constant in `services/` must fail a test, not move the test along with it.
Sources are rows of docs/reference/change6-mission.md and
docs/reference/change6-timeline.csv unless named otherwise.
"""

from __future__ import annotations

import math

#: Launch, the zero of mission time (timeline row 1). No leap second falls in
#: the mission, so mission seconds are UTC seconds since this instant.
LAUNCH_UTC = "2024-05-03T09:27:29Z"

#: The landing site, LROC (lroc.sese.asu.edu/images/1374; reference row 14):
#: 41.6385 S, 153.9852 W (= 206.0148 E), -5,256 m, +-30 m.
LANDING_SITE_LAT_DEG = -41.6385
LANDING_SITE_LON_DEG = -153.9852
#: Height of the site relative to the 1,737.4 km reference sphere (LROC).
LANDING_SITE_HEIGHT_M = -5_256.0

#: Far-side samples returned, CNSA 2024-06-28 (reference row 33): 1,935.3 g.
SAMPLE_MASS_G = 1_935.3

#: IAU mean lunar radius (Archinal et al. 2011, Celest. Mech. Dyn. Astr. 109): 1,737.4 km.
R_MOON_M = 1_737_400.0
#: GM of the Moon, DE421 (Folkner et al. 2008, IPN PR 42-178, table 4): 4,902.800 km^3/s^2.
GM_MOON_M3_S2 = 4.9028000e12
#: IUGG mean Earth radius R1 (Moritz 2000, "Geodetic Reference System 1980").
EARTH_MEAN_RADIUS_M = 6_371_008.8

#: No coordinates of the CE-6 touchdown on Earth were published (reference,
#: "not found" item 10): only "Siziwang Banner, Inner Mongolia" (row 31). The
#: banner's seat, Wulanhua, is at 41.5331 N, 111.7067 E, and the banner spans
#: 25,513 km^2 up to the Mongolian border about 200 km north of the seat
#: (Wikipedia, "Dorbod Banner"); a landing within 200 km of the seat is in or
#: at the banner.
SIZIWANG_SEAT_LAT_DEG = 41.5331
SIZIWANG_SEAT_LON_DEG = 111.7067
SIZIWANG_REACH_M = 200_000.0

#: Probe separation into the Earth-Moon transfer orbit (timeline row 4, i-Cable
#: News), lunar orbit insertion (row 7, The Hans India) and the first entry at
#: ~120 km (row 28, Sino-Carib), each to the minute.
SEPARATION_UTC = "2024-05-03T10:04:00Z"
LOI_UTC = "2024-05-08T02:12:00Z"
EI_UTC = "2024-06-25T05:41:00Z"

#: Real UTC of the key events: lunar touchdown (row 14, to the second), docking
#: (row 21), landing at Siziwang (row 31).
REAL_UTC = {"lunar_touchdown": "2024-06-01T22:23:16Z", "docking": "2024-06-06T06:48:00Z",
            "earth_landing": "2024-06-25T06:07:00Z"}


def central_angle_rad(lat1_deg: float, lon1_deg: float, lat2_deg: float, lon2_deg: float) -> float:
    """The great-circle angle between two points (haversine): how tests measure
    distances on a sphere, independently of the frames code they check."""
    p1, p2 = math.radians(lat1_deg), math.radians(lat2_deg)
    dl = math.radians(lon2_deg - lon1_deg)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * math.asin(min(1.0, math.sqrt(h)))


#: Main engines (reference rows 13 and 19, vehicle table "Lander main engine",
#: "Ascender engine"; CNSA via Chinanews and People's Daily): the lander's
#: 7,500 N variable-thrust engine and the ascender's 3,000 N engine.
LANDER_ENGINE_THRUST_N = 7_500.0
ASCENDER_ENGINE_THRUST_N = 3_000.0
#: The lander hovers ~100 m above the chosen spot for its laser scan
#: (reference row 13 and "Descent orbit and powered descent").
HOVER_HEIGHT_M = 100.0
