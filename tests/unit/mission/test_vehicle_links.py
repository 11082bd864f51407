"""Which vehicles have a link of their own: none while stowed, none after impact.

Decision: a stowed vehicle (lander and ascender inside the CE-6
stack before ``la_or_separation``, the ascender on the lander before its
hand-over, the returner in the orbiter until ``returner_separation``) has no
body of its own and no link of its own: the carrier flies the stack and its
frames carry it. An impacted ascender has no radio at all. Authorities: the
CE-6 site of LROC (41.6385 S, 153.9852 W, -5,256 m; reference timeline row 14),
where Queqiao-2 relays a surface user ~21 h a day (reference (d)); the
disposal of the ascender by a controlled impact (reference row 23).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from services.ascender.vehicle import AscenderCore
from services.dynamics import frames
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.onboard import Coast
from services.kernel.vehicle import Outbox, VehicleCore
from services.lander.vehicle import LanderCore
from services.reentry.vehicle import ReentryCore

SITE_LAT_DEG, SITE_LON_DEG, SITE_HEIGHT_M = -41.6385, -153.9852, -5_256.0  # LROC
# An hour after touchdown Queqiao-2 sees the site and a station sees Queqiao-2
# (test_comms: the lander there has a relay path then).
T_OVER_SITE = mission_s_from_utc("2024-06-01T23:23:16Z")
HOUR_S = 3_600.0
WRECK_DRIFT_M = 1.0  # the wreck is Moon-fixed: it stays on its impact point


def _site_state(t_s: float) -> tuple[np.ndarray, np.ndarray]:
    fixed = frames.moon_fixed_from_selenographic(SITE_LAT_DEG, SITE_LON_DEG, SITE_HEIGHT_M)
    return frames.mci_from_moon_fixed_state(fixed, np.zeros(3), t_s)


def _falling_ascender(t_impact_s: float) -> AscenderCore:
    """An ascender on its deorbit arc, a minute above the site at ``t_impact_s``."""
    core = AscenderCore(6)
    r, v = _site_state(t_impact_s)
    core.coast = Coast(r, v, t_impact_s)
    core.phase, core.t_s, core.mass_kg = "deorbit", t_impact_s, 400.0
    core.t_impact_s = t_impact_s + 60.0
    return core


def _step(core: VehicleCore, t_from: float, t_to: float) -> list[tuple[str, dict[str, object]]]:
    """One clock step as the runtime runs it: advance, then the downlink."""
    out = Outbox()
    core.advance(t_from, t_to, out)
    core.after_step(t_from, t_to, out)
    return [(str(i.body["name"]), dict(i.body)) for i in out.drain() if i.kind == "evt"]


def _links(events: list[tuple[str, dict[str, object]]]) -> list[tuple[str, object]]:
    return [(n, v.get("path")) for n, v in events if n in ("link_acquired", "link_lost")]


def test_the_ascender_loses_its_link_at_impact_and_never_regains_one() -> None:
    t0 = T_OVER_SITE
    core = _falling_ascender(t0)
    before = _step(core, t0 - 60.0, t0)
    assert _links(before) == [("link_acquired", "relay")]  # alive, it has a path
    at_impact = _step(core, t0, t0 + 60.0)
    names = [n for n, _ in at_impact]
    assert "ascender_impact" in names
    assert _links(at_impact) == [("link_lost", "relay")]
    assert core.downlink is not None
    dl_before = core.downlink.stats.recorded
    t = t0 + 60.0
    for _ in range(72):  # three days of idle hourly steps
        assert _step(core, t, t + HOUR_S) == []
        t += HOUR_S
    dl = core.downlink
    assert dl is not None and not dl.link.up
    assert dl.stats.recorded == dl_before  # a destroyed recorder records nothing
    assert core.link_blocked()


def test_the_wreck_stays_where_it_hit() -> None:
    t0 = T_OVER_SITE
    core = _falling_ascender(t0)
    _step(core, t0 - 60.0, t0)
    _step(core, t0, t0 + 60.0)
    hit = core.impact
    t = t0 + 60.0 + 3 * 24 * HOUR_S
    _step(core, t0 + 60.0, t)
    s = core.summary()
    assert s.phase == "impacted" and s.central_body == "moon" and s.speed_m_s == 0.0
    where = frames.moon_fixed_from_mci(np.asarray(s.r_m), t)
    impact = frames.moon_fixed_from_selenographic(hit["lat_deg"], hit["lon_deg"], hit["alt_m"])
    assert float(np.linalg.norm(where - impact)) < WRECK_DRIFT_M


@pytest.mark.parametrize("make", [LanderCore, AscenderCore, ReentryCore],
                         ids=["lander", "ascender", "returner"])
def test_a_stowed_vehicle_has_no_link_of_its_own(make: Callable[[int], VehicleCore]) -> None:
    core = make(6)
    assert core.phase == "stowed"
    assert core.summary().central_body == ""  # no body of its own: the carrier flies it
    t = mission_s_from_utc("2024-05-20T00:00:00Z")
    for _ in range(48):
        assert _links(_step(core, t, t + HOUR_S)) == []
        t += HOUR_S
    downlink = core.downlink
    assert downlink is None or not downlink.link.up
