"""Queqiao-2: store-and-forward of frames and commands, power, and a relay day in SimLoop.

Authorities: reference (b)/(d) (1,350 W array, 135 Ah battery; the far-side
site is reachable only through Queqiao-2, "> 21 h/day") and `comms` for the
orbit; light time is distance over c per leg.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.dynamics import comms, frames, links
from services.dynamics.constants import AU_M, C_M_S, R_MOON_M
from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.envelope import Envelope
from services.kernel.vehicle import Outbox, Summary, VehicleCore
from services.local.simloop import SimLoop
from services.relay.vehicle import ARRAY_RATED_W, RelayCore, array_power_w

TOUCHDOWN_S = mission_s_from_utc("2024-06-01T22:23:16Z")
LIGHT_TIME_TOL_S = 1e-6  # 300 m


def _frame(t: float, link: links.Link, seq: int = 1) -> dict[str, Any]:
    return {"origin": "lander", "frame_seq": seq, "t_s": t, "path": "relay",
            "station": link.station, "sent_at_s": t, "deliver_at_s": t + link.light_time_s,
            "playback": False}


def _relay_at(t: float) -> RelayCore:
    relay = RelayCore(6)
    out = Outbox()
    relay.advance(t - 60.0, t, out)
    relay.after_step(t - 60.0, t, out)
    return relay


def _site_link(t: float) -> links.Link:
    return links.link_for("lander", frames.eci_from_mci(comms.landing_site_mci_m(t), t), t)


def test_forwarded_frame_arrives_after_the_sum_of_both_legs() -> None:
    t = TOUCHDOWN_S + 3_600.0
    link = _site_link(t)
    assert link.path == "relay"
    relay = _relay_at(t)
    out = Outbox()
    relay.apply(Envelope("m", "lander", 1, t, 1, "transfer",
                         {"type": "relay_frame", "frame": _frame(t, link)}), out)
    (item,) = [i for i in out.drain() if i.kind == "dl"]
    assert item.target == "relay" and item.body["type"] == "forwarded"
    frame = item.body["frame"]
    site = frames.eci_from_mci(comms.landing_site_mci_m(t), t)
    qq2 = frames.eci_from_mci(comms.queqiao2_state_mci(t)[0], t)
    station = frames.eci_from_ecef(comms.STATIONS[link.station].ecef_m, t)
    legs = (np.linalg.norm(qq2 - site) + np.linalg.norm(station - qq2)) / C_M_S
    assert frame["deliver_at_s"] - frame["sent_at_s"] == pytest.approx(legs, abs=LIGHT_TIME_TOL_S)


def _ground_gap(t0: float) -> tuple[float, float]:
    """The first interval after t0 when no station sees Queqiao-2 (1-min scan)."""
    t = t0
    while links.relay_ground_link(t).up:
        t += 60.0
    start = t
    while not links.relay_ground_link(t).up:
        t += 60.0
    return start, t


def test_frames_are_stored_while_no_station_sees_queqiao2_and_played_back() -> None:
    start, end = _ground_gap(TOUCHDOWN_S)
    relay = _relay_at(start)
    assert not relay.ground.up
    out = Outbox()
    for k in range(3):
        relay.apply(Envelope("m", "lander", k + 1, start, 1, "transfer",
                             {"type": "relay_frame",
                              "frame": _frame(start, links.Link("relay", "x", 1.3, 1e6), k + 1)}),
                    out)
    assert not [i for i in out.drain() if i.kind == "dl"]
    assert relay.summary().values["relay_store_frames"] == 3
    relay.advance(start, end, out)
    relay.after_step(start, end, out)
    fwd = [i.body["frame"] for i in out.drain() if i.kind == "dl" and i.target == "relay"
           and i.body.get("type") == "forwarded"]
    assert [f["frame_seq"] for f in fwd] == [1, 2, 3]
    leg2 = links.relay_ground_link(end).light_time_s
    assert all(f["deliver_at_s"] == pytest.approx(end + leg2) for f in fwd)
    assert relay.summary().values["relay_store_frames"] == 0


def test_relay_forwards_commands_to_their_vehicle() -> None:
    relay = RelayCore(6)
    out = Outbox()
    cmd = {"op": "operation", "operation": "drill", "plan_id": "drill"}
    relay.apply(Envelope("m", "ground", 1, 10.0, 1, "transfer",
                         {"type": "relay_cmd", "to": "lander", "command": cmd}), out)
    (item,) = out.drain()
    assert (item.kind, item.target, item.body) == ("cmd", "lander", cmd)


def test_power_in_sunlight_and_in_the_moons_shadow() -> None:
    t = TOUCHDOWN_S
    sun_mci = np.array(links.moon_eci_m(t)) * -1.0 + np.array(
        __import__("services.relay.vehicle", fromlist=["sun_eci_m"]).sun_eci_m(t))
    u = sun_mci / np.linalg.norm(sun_mci)
    lit = array_power_w(tuple(2.0 * R_MOON_M * u), t)
    d_au = np.linalg.norm(sun_mci) / AU_M
    assert lit == pytest.approx(ARRAY_RATED_W / d_au**2, rel=1e-3)
    assert array_power_w(tuple(-2.0 * R_MOON_M * u), t) == 0.0


def test_summary_is_queqiao2s_orbit_with_power_and_battery() -> None:
    relay = _relay_at(TOUCHDOWN_S)
    s = relay.summary()
    r, _ = comms.queqiao2_state_mci(TOUCHDOWN_S)
    assert np.allclose(s.r_m, r) and s.frame == "MCI" and s.central_body == "moon"
    assert 0.0 <= s.values["battery_soc_ratio"] <= 1.0
    assert "power_w" in s.values and "backlog_frames" in s.values
    back = RelayCore(6)
    back.restore(relay.snapshot())
    assert back.summary().values == s.values


# --- A relay day in the loop: a lander at the site, Queqiao-2, ground ---------------
class SiteCore(VehicleCore):
    """A lander sitting at the CE-6 site (downlink only)."""

    name = "lander"

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return 600.0

    def summary(self) -> Summary:
        r = comms.landing_site_mci_m(self.t_s)
        return Summary(phase="surface", frame="MCI", central_body="moon",
                       r_m=(float(r[0]), float(r[1]), float(r[2])))


def test_a_day_at_the_site_every_frame_reaches_ground() -> None:
    plan = parse_plan({"name": "day", "end": {"at": "2024-06-03T22:00:00Z"}, "items": [
        {"id": "drill", "at": "2024-06-02T12:00:00Z", "target": "lander",
         "command": {"op": "set_mode", "mode": "drill"}}]})
    ground = GroundCore(6, plan)
    lander, relay = SiteCore(6), RelayCore(6)
    loop = SimLoop(ground, {"lander": lander, "relay": relay})
    loop.t_s = lander.t_s = relay.t_s = TOUCHDOWN_S
    loop.run()
    dl = lander.downlink
    assert dl is not None
    a = ground.links.heard.archives["lander"]
    assert a.gaps() == [] and a.duplicates == 0
    in_flight = ground.links.heard.in_flight
    on_the_way = (sum(f["origin"] == "lander" for f in in_flight) + len(relay.store)
                  + sum(e.body.get("type") == "relay_frame" for e in loop.held["relay"]))
    assert on_the_way <= 2  # the last step's frame(s) between the lander and ground
    assert a.received + on_the_way + dl.backlog == dl.next_seq - 1
    assert a.relayed == a.received  # the far side: everything through Queqiao-2
    assert a.played_back > 0  # the relay gaps were caught up
    assert lander.phase == "drill"  # the plan's command reached it
    names = loop.event_names()
    assert names.count("link_acquired") >= 2 and "link_lost" in names


def test_runtime_exports_the_link_metrics() -> None:
    from prometheus_client import CollectorRegistry

    from services.kernel.config import ServiceConfig
    from services.kernel.runtime import ServiceRuntime

    registry = CollectorRegistry()
    relay = RelayCore(6)
    rt = ServiceRuntime(relay, ServiceConfig.from_env("relay", {"TWIN_INSECURE": "true"}), registry)
    out = Outbox()
    t = TOUCHDOWN_S
    for k in range(3):
        relay.advance(t + 60.0 * k, t + 60.0 * (k + 1), out)
        relay.after_step(t + 60.0 * k, t + 60.0 * (k + 1), out)
        rt.gauges.refresh(relay.summary(), t + 60.0 * (k + 1))
    labels = {"mission": "ce6", "service": "relay"}
    up = registry.get_sample_value("twin_link_up", {**labels, "link": "relay"})
    assert up == relay.summary().values["link_up"] == 1.0
    lt = registry.get_sample_value("twin_link_light_time_seconds", {**labels, "link": "relay"})
    assert lt is not None and 1.1 < lt < 1.5
    sent = registry.get_sample_value("twin_frames_sent_total", {**labels, "vehicle": "relay"})
    assert sent == 3.0
    assert registry.get_sample_value("twin_recorder_backlog_frames",
                                     {**labels, "vehicle": "relay"}) == 0.0
