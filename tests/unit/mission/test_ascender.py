"""The ascender core: custody, liftoff, ascent, phasing, docking, impact.

Authorities: liftoff 2024-06-03T23:38:10Z with the 3,000 N engine, ~6 min to
orbit (reference (b), timeline row 19); four phasing burns to a point ~50 km
ahead of and ~10 km above the orbiter (timeline rows 20-21); docking
2024-06-06T06:48Z (acceptance: +-2 h).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from services.ascender.phasing import KnownState, relative_lvlh
from services.ascender.vehicle import AscenderCore
from services.dynamics import frames
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.errors import CommandNotAllowed
from tests.authorities import (
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    SAMPLE_MASS_G,
)
from tests.unit.mission.driver import Drive
from tests.unit.mission.test_lander import T_SEP, post_separation_state

T_SEAL = mission_s_from_utc("2024-06-02T14:00:00Z")
T_LIFTOFF = mission_s_from_utc("2024-06-03T23:38:10Z")
T_DOCKING = mission_s_from_utc("2024-06-06T06:48:00Z")
AIM_AFTER = mission_s_from_utc("2024-06-06T04:20:00Z")
AIM_BEFORE = mission_s_from_utc("2024-06-06T06:30:00Z")
AIM_TOLERANCE_M = 3_000.0  # "within a few km" of the 50 km / 10 km point


def orbiter_state() -> dict[str, Any]:
    r, v = post_separation_state(200.0, plane_error_deg=0.0)
    return {"orbiter_r_m": r.tolist(), "orbiter_v_m_s": v.tolist(), "orbiter_t_s": T_SEP}


def pad_handover() -> dict[str, Any]:
    fixed = frames.moon_fixed_from_selenographic(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG,
                                                 LANDING_SITE_HEIGHT_M)
    r, v = frames.mci_from_moon_fixed_state(fixed, np.zeros(3), T_SEAL)
    return {"type": "handover", "handover_id": f"ascender-{T_SEAL}", "what": "ascender",
            "frame": "MCI", "r_m": r.tolist(), "v_m_s": v.tolist(), "t_s": T_SEAL,
            "mass_kg": 750.0, "propellant_kg": 420.0, "dry_mass_kg": 330.0,
            "sample_mass_g": 0.0, "extra": {"fixed_r_m": fixed.tolist(), **orbiter_state()}}


def sample_handover() -> dict[str, Any]:
    return {"type": "sample_handover", "handover_id": "sample-1", "from": "lander",
            "to": "ascender", "container_id": "CE6-SC", "sample_mass_g": SAMPLE_MASS_G}


def on_pad(seed: int = 6) -> Drive:
    d = Drive(AscenderCore(seed), T_SEAL - 60.0)
    d.deliver("transfer", sample_handover(), src="lander")
    d.step()
    d.deliver("transfer", pad_handover(), src="lander")
    d.step()
    return d


def to_orbit(d: Drive) -> Drive:
    d.deliver("command", {"op": "liftoff", "execute_at_utc": "2024-06-03T23:38:10Z"})
    d.until(lambda x: "ascent_orbit_insertion" in x.names())
    return d


@pytest.fixture(scope="module")
def at_aim_point() -> Drive:
    d = to_orbit(on_pad())
    d.until_t(d.event("ascent_orbit_insertion")[0] + 1_800.0)
    d.deliver("command", {"op": "plan_phasing", "plan_id": "phasing"})
    d.until(lambda x: "rendezvous_aim_point" in x.names())
    return d


def test_sample_custody_is_acked_and_held() -> None:
    d = on_pad()
    ack = d.sent_of("sample_ack")[0]
    assert ack.target == "lander" and ack.body["sample_mass_g"] == SAMPLE_MASS_G
    assert d.core.summary().sample_mass_g == SAMPLE_MASS_G
    assert d.event("sample_custody")[1]["owner"] == "ascender"
    assert d.sent_of("handover_ack")[0].body["accepted"] is True
    assert d.core.phase == "on_pad"


def test_liftoff_refused_before_the_sample_is_sealed() -> None:
    d = Drive(AscenderCore(1), T_SEAL)
    with pytest.raises(CommandNotAllowed):
        d.core.validate({"op": "liftoff"})
    d.deliver("transfer", pad_handover(), src="lander")
    d.step()
    with pytest.raises(CommandNotAllowed):  # on the pad but no sample yet
        d.core.validate({"op": "liftoff"})
    d.deliver("command", {"op": "liftoff"})
    d.step()
    assert d.event("command_rejected")[1]["op"] == "liftoff"
    assert d.core.phase == "on_pad"


def test_ascent_reaches_a_safe_orbit_in_five_to_seven_minutes(at_aim_point: Drive) -> None:
    t_lift, _ = at_aim_point.event("ascent_liftoff")
    t_ins, ins = at_aim_point.event("ascent_orbit_insertion")
    assert t_lift == pytest.approx(T_LIFTOFF, abs=1e-6)  # time tag held on board
    assert 300.0 <= t_ins - t_lift <= 420.0
    assert ins["perilune_alt_m"] >= 10_000.0
    assert ins["apolune_alt_m"] > ins["perilune_alt_m"]


def test_four_phasing_burns_reach_the_aim_point_at_the_aim_time(at_aim_point: Drive) -> None:
    burns = [v for _, n, v in at_aim_point.events if n == "phasing_burn"]
    assert [b["n"] for b in burns] == [1, 2, 3, 4]
    t_aim, aim = at_aim_point.event("rendezvous_aim_point")
    assert AIM_AFTER <= t_aim <= AIM_BEFORE
    assert abs(t_aim - T_DOCKING) < 2 * 3_600.0
    assert aim["radial_m"] == pytest.approx(10_000.0, abs=AIM_TOLERANCE_M)
    assert aim["along_track_m"] == pytest.approx(50_000.0, abs=AIM_TOLERANCE_M)
    assert abs(aim["cross_track_m"]) < AIM_TOLERANCE_M
    assert at_aim_point.core.summary().propellant_kg > 0.0
    # From the aim point the orbiter gets the target's state every step.
    at_aim_point.step()
    last = at_aim_point.sent_of("target_state")[-1]
    assert last.target == "orbiter" and last.body["t_s"] == at_aim_point.t_s
    known = orbiter_state()
    orb = KnownState(np.asarray(known["orbiter_r_m"]), np.asarray(known["orbiter_v_m_s"]), T_SEP)
    rel = relative_lvlh(orb, np.asarray(last.body["r_m"]), last.body["t_s"])
    assert float(np.linalg.norm(rel)) < 100_000.0


def test_docked_transfer_undock_deorbit_impact(at_aim_point: Drive) -> None:
    core = AscenderCore(6)
    core.restore(orjson.loads(orjson.dumps(at_aim_point.core.snapshot())))
    d = Drive(core, 0.0)
    d.t_s = d.core.t_s = at_aim_point.t_s
    s = core.summary()
    d.deliver("transfer", {"type": "docked", "r_m": list(s.r_m), "v_m_s": list(s.v_m_s),
                           "t_s": d.t_s}, src="orbiter")
    d.step()
    assert core.phase == "docked"
    d.deliver("command", {"op": "transfer_sample"})
    d.step()
    handover = d.sent_of("sample_handover")[0]
    assert handover.target == "orbiter" and handover.body["to"] == "returner"
    assert handover.body["sample_mass_g"] == SAMPLE_MASS_G
    assert core.summary().sample_mass_g == 0.0
    s = core.summary()
    d.deliver("transfer", {"type": "undocked", "r_m": list(s.r_m), "v_m_s": list(s.v_m_s),
                           "t_s": d.t_s}, src="orbiter")
    d.step()
    assert core.phase == "free"
    d.deliver("command", {"op": "deorbit"})
    d.until(lambda x: "ascender_impact" in x.names())
    t_burn, _ = d.event("ascender_deorbit_burn")
    t_hit, hit = d.event("ascender_impact")
    assert 0.0 < t_hit - t_burn < 2 * 3_600.0
    assert hit["alt_m"] == pytest.approx(LANDING_SITE_HEIGHT_M, abs=1.0)
    assert -90.0 <= hit["lat_deg"] <= 90.0
    assert core.summary().phase == "impacted"


def test_snapshot_restore_round_trips_in_phasing() -> None:
    a = to_orbit(on_pad(3))
    a.until_t(a.event("ascent_orbit_insertion")[0] + 1_800.0)
    a.deliver("command", {"op": "plan_phasing"})
    for _ in range(3):
        a.step()
    b = Drive(AscenderCore(3), 0.0)
    b.core.restore(orjson.loads(orjson.dumps(a.core.snapshot())))
    b.t_s, b.dt_s = a.t_s, a.dt_s
    n_before = len(a.events)
    a.until(lambda x: "phasing_burn" in x.names()[n_before:])
    b.until(lambda x: "phasing_burn" in x.names())
    assert a.events[n_before:] == b.events
    assert a.core.summary() == b.core.summary()


def test_surface_to_orbit_through_simloop_with_ground_and_the_lander() -> None:
    """Lander and ascender cores under ground's flight plan (SimLoop semantics):
    custody passes lander -> ascender, and the sample is never duplicated."""
    from services.ground.plan import parse_plan
    from services.ground.vehicle import GroundCore
    from services.lander.vehicle import LanderCore
    from services.local.simloop import SimLoop
    from tests.unit.mission.test_lander import fly_to_surface

    landed = fly_to_surface(120.0)
    lander = LanderCore(6)
    lander.restore(landed.core.snapshot())
    ascender = AscenderCore(6)
    ascender.t_s = landed.t_s
    plan = parse_plan({"name": "surface", "end": {"after": "ascent_orbit_insertion",
                                                  "offset_s": 600},
                       "items": [
        {"id": "setup", "after": "sim_start", "offset_s": 600, "target": "lander",
         "command": {"op": "surface_setup"}},
        {"id": "drill", "after": "surface_setup", "offset_s": 1800, "target": "lander",
         "command": {"op": "operation", "name": "drill"}},
        {"id": "scoop", "after": "drill_complete", "offset_s": 1800, "target": "lander",
         "command": {"op": "operation", "name": "scoop"}},
        {"id": "flag", "after": "scoop_complete", "offset_s": 600, "target": "lander",
         "command": {"op": "deploy", "name": "flag"}},
        {"id": "seal", "after": "flag_deployed", "offset_s": 1800, "target": "lander",
         "command": {"op": "operation", "name": "seal_sample"}},
        {"id": "liftoff", "after": "sample_sealed", "offset_s": 3600, "target": "ascender",
         "command": {"op": "liftoff", "execute_at_utc": "2024-06-03T23:38:10Z"}}]})
    ground = GroundCore(6, plan)
    ground.seen["sim_start"] = landed.t_s
    from services.relay.vehicle import RelayCore

    relay = RelayCore(6)  # far side: ground reaches the lander through Queqiao-2
    relay.t_s = landed.t_s
    loop = SimLoop(ground, {"lander": lander, "ascender": ascender, "relay": relay})
    loop.t_s = landed.t_s
    held: list[tuple[float, float]] = []

    def check(sl: SimLoop) -> None:
        a, b = lander.summary().sample_mass_g, ascender.summary().sample_mass_g
        assert a == 0.0 or b == 0.0  # one owner at a time
        held.append((a, b))

    loop.run(until_s=T_LIFTOFF + 3_600.0, on_step=check)
    names = loop.event_names()
    for name in ("surface_setup", "drill_complete", "scoop_complete", "flag_deployed",
                 "sample_sealed", "sampling_complete", "handover_accepted", "ascent_liftoff",
                 "ascent_orbit_insertion"):
        assert name in names, name
    assert "command_rejected" not in names
    assert held[-1] == (0.0, SAMPLE_MASS_G)
    liftoff = next(e for e in loop.events if e.body["name"] == "ascent_liftoff")
    assert liftoff.t == pytest.approx(T_LIFTOFF, abs=1e-6)
