"""The orbiter core: the CE-6 stack, the OR stack and ICUBE-Q, flown with hand-made messages.

Authorities for the tolerances: reference (c) "Orbits and trajectory"
(capture ~200 x 8,600 km, ~12 h; parking ~200 km, 137 deg), docs/mission.md
(hand-over fields), change6.entry_interface_target (120 km, -6.4 deg).
The flight is built once per module in stages (snapshots), so the file runs
in seconds.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from services.dynamics import change6
from services.dynamics.burns import rtn_basis
from services.dynamics.constants import GM_MOON_M3_S2
from services.dynamics.guidance.rendezvous import lvlh_relative
from services.dynamics.propagate import Propagator, propagate
from services.dynamics.targeting import (
    EARTH_MODEL,
    MOON_MODEL,
    MOON_SOI_SWITCH_S,
    entry_interface_state,
)
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.errors import CommandNotAllowed, InvalidCommand
from services.orbiter import legs
from services.orbiter.flight import apsides_km, vec
from services.orbiter.vehicle import OrbiterCore
from tests.authorities import EI_UTC, LOI_UTC, SAMPLE_MASS_G, SEPARATION_UTC
from tests.unit.mission.driver import Drive

#: Powered descent began 2024-06-01 22:09 UTC (reference timeline row 13).
PDI_UTC = "2024-06-01T22:09:00Z"
PDI_S = mission_s_from_utc(PDI_UTC)

SEED = 6
T_SEP = mission_s_from_utc(SEPARATION_UTC)
T_LOI = mission_s_from_utc(LOI_UTC)
T_EI = mission_s_from_utc(EI_UTC)
T_LA_SEP = mission_s_from_utc("2024-05-30T06:00:00Z")
T_RET_SEP = mission_s_from_utc("2024-06-25T05:21:00Z")
Plan = list[tuple[str, dict[str, Any]]]
CRUISE: Plan = [("2024-05-04T03:00:00Z", {"op": "trajectory_correction"}),
          ("2024-05-06T12:00:00Z", {"op": "trajectory_correction"}),
          ("2024-05-08T02:12:00Z", {"op": "lunar_orbit_insertion"})]
ADJUST: Plan = [("2024-05-08T08:00:00Z", {"op": "release_icubeq"}),
          ("2024-05-10T00:00:00Z", {"op": "orbit_adjust", "stage": 1, "pdi_utc": PDI_UTC}),
          ("2024-05-14T00:00:00Z", {"op": "orbit_adjust", "stage": 2, "pdi_utc": PDI_UTC}),
          ("2024-05-20T00:00:00Z", {"op": "orbit_adjust", "stage": 3, "pdi_utc": PDI_UTC}),
          ("2024-05-28T12:00:00Z", {"op": "orbit_adjust", "stage": 4, "pdi_utc": PDI_UTC}),
          ("2024-05-30T06:00:00Z", {"op": "separate_lander"})]
RETURN: Plan = [("2024-06-15T00:00:00Z", {"op": "prepare_return", "ei_utc": EI_UTC}),
          ("2024-06-19T00:00:00Z", {"op": "trans_earth_injection", "ei_utc": EI_UTC}),
          ("2024-06-23T00:00:00Z", {"op": "trajectory_correction", "target": "entry_interface"}),
          ("2024-06-25T05:21:00Z", {"op": "separate_returner"})]
HANDOVER_FIELDS = {"type", "handover_id", "what", "frame", "r_m", "v_m_s", "t_s", "mass_kg",
                   "propellant_kg", "dry_mass_kg", "sample_mass_g", "extra"}


def orb(d: Drive) -> OrbiterCore:
    assert isinstance(d.core, OrbiterCore)
    return d.core


def fly(d: Drive, plan: Plan, first_step_s: float = 600.0) -> None:
    """Issue each command at its instant, as ground does (applied at the step start;
    the step that starts then is at most ground's coast step)."""
    for utc, command in plan:
        d.until_t(mission_s_from_utc(utc))
        d.deliver("command", dict(command))
        d.dt_s = min(d.dt_s, first_step_s)
        d.step()


def resume(snap: dict[str, Any], dt_s: float) -> Drive:
    core = OrbiterCore(SEED)
    core.restore(json.loads(json.dumps(snap)))  # what a real snapshot goes through
    d = Drive(core, float(snap["t_s"]), dt_s)
    return d


@pytest.fixture(scope="module")
def cruise() -> dict[str, Any]:
    """Separation through LOI, with a snapshot taken in the middle of the LOI burn."""
    d = Drive(OrbiterCore(SEED), T_SEP)
    d.deliver("command", {"op": "probe_separation", "loi_utc": LOI_UTC})
    d.step()
    sep_state = orb(d).snapshot()["flight"]
    fly(d, CRUISE[:2])
    fly(d, CRUISE[2:], first_step_s=5.0)
    d.until_t(T_LOI + 300.0)
    mid_burn, mid_dt = orb(d).snapshot(), d.dt_s
    d.until(lambda d: "lunar_orbit_insertion" in d.names())
    return {"drive": d, "sep_state": sep_state, "mid_burn": (mid_burn, mid_dt),
            "after_loi": (orb(d).snapshot(), d.dt_s)}


@pytest.fixture(scope="module")
def parking(cruise: dict[str, Any]) -> dict[str, Any]:
    """ICUBE-Q release, the four adjustment stages and the LA stack hand-over."""
    d = resume(*cruise["after_loi"])
    fly(d, ADJUST)
    return {"drive": d, "snap": (orb(d).snapshot(), d.dt_s)}


# --- cruise and capture -----------------------------------------------------------------


def test_separation_state_comes_from_the_solver_and_reaches_the_loi_perilune(
        cruise: dict[str, Any]) -> None:
    sep = cruise["sep_state"]
    sol = legs.tli_solution(change6.lunar_arrival_target(T_SEP, T_LOI))
    assert sep["central"] == "earth"
    # the first step after separation flew the solver's state (1 m: integrator steps)
    r_sol, _ = propagate(sol.r_sep_eci_m, sol.v_sep_eci_m_s, T_SEP, sep["t_s"] - T_SEP,
                         EARTH_MODEL)
    assert float(np.linalg.norm(vec(sep["r_m"]) - r_sol)) < 1.0
    peri = legs.predict_perilune(vec(sep["r_m"]), vec(sep["v_m_s"]), sep["t_s"],
                                 T_LOI - MOON_SOI_SWITCH_S)
    assert peri.alt_m == pytest.approx(200e3, abs=1e3)  # 1 km: the solver's B-plane tolerance
    assert peri.inclination_deg == pytest.approx(137.0, abs=0.05)
    assert peri.t_s == pytest.approx(T_LOI, abs=10.0)


def test_cruise_corrections_are_small_and_the_second_is_zero_on_track(
        cruise: dict[str, Any]) -> None:
    d: Drive = cruise["drive"]
    tcms = [v for _, n, v in d.events if n == "trajectory_correction"]
    assert len(tcms) == 2
    # the first moves perilune to the middle of the LOI burn (a few m/s at most)
    assert 0.0 < tcms[0]["dv_m_s"] < 5.0
    assert tcms[1]["dv_m_s"] == 0.0


def test_loi_is_a_finite_burn_into_the_200_by_8600_km_12_h_orbit(cruise: dict[str, Any]) -> None:
    d: Drive = cruise["drive"]
    t, loi = d.event("lunar_orbit_insertion")
    assert loi["perilune_km"] == pytest.approx(200.0, abs=20.0)
    assert loi["apolune_km"] == pytest.approx(8_600.0, abs=100.0)
    assert loi["period_h"] == pytest.approx(12.0, abs=0.5)
    assert loi["inclination_deg"] == pytest.approx(137.0, abs=1.0)
    # 3,000 N on ~8.3 t for ~330 m/s: a burn of ~15 minutes starting at the LOI epoch
    assert 600.0 < loi["burn_s"] < 1_200.0
    assert t - loi["burn_s"] == pytest.approx(T_LOI, abs=5.0)
    assert orb(d).phase == "lunar_orbit"


def test_snapshot_restore_continues_identically(cruise: dict[str, Any]) -> None:
    snap, dt = cruise["mid_burn"]
    d = resume(snap, dt)
    d.until(lambda d: "lunar_orbit_insertion" in d.names())
    restored_flight = orb(d).snapshot()["flight"]
    orig_after = cruise["after_loi"][0]["flight"]
    assert restored_flight["t_s"] == orig_after["t_s"]
    assert restored_flight["r_m"] == orig_after["r_m"]
    assert restored_flight["v_m_s"] == orig_after["v_m_s"]
    assert orb(d).snapshot()["tank"] == cruise["after_loi"][0]["tank"]


def test_thrust_loss_fault_under_burns_the_loi(cruise: dict[str, Any]) -> None:
    snap, dt = cruise["mid_burn"]
    d = resume(snap, dt)
    orb(d).faults["thrust_loss"] = {"fault_id": "f1", "kind": "thrust_loss", "target": "",
                                    "magnitude": 0.5, "since": d.t_s, "duration_s": 0.0}
    d.until(lambda d: "lunar_orbit_insertion" in d.names())
    _, loi = d.event("lunar_orbit_insertion")
    assert loi["apolune_km"] > 8_600.0 + 1_000.0  # half thrust for 2/3 of the burn


# --- adjustments, ICUBE-Q, LA hand-over ---------------------------------------------------


def test_adjustments_reach_the_parking_orbit_over_the_site_at_pdi(
        parking: dict[str, Any]) -> None:
    d = resume(*parking["snap"])
    f = orb(d).flight
    assert f is not None and f.central == "moon"
    peri_km, apo_km = apsides_km(f.elements())
    assert peri_km == pytest.approx(200.0, abs=20.0) and apo_km == pytest.approx(200.0, abs=20.0)
    assert legs.inclination_deg(f.r_m, f.v_m_s, f.t_s) == pytest.approx(137.0, abs=1.0)
    d.until_t(PDI_S)  # the lander flies on in the plane the orbiter left
    n_hat = np.cross(f.r_m, f.v_m_s) / np.linalg.norm(np.cross(f.r_m, f.v_m_s))
    assert abs(legs.site_offset_m(n_hat, PDI_S)) < 5_000.0  # a few km of crossrange


def test_icubeq_flies_its_own_orbit_and_images_the_lit_side(parking: dict[str, Any]) -> None:
    d: Drive = parking["drive"]
    s = orb(d).summary()
    assert "icubeq_release" in d.names()
    # ~12 h capture orbit: between 200 km and ~8,600 km above the Moon
    assert 150e3 < s.values["icubeq_altitude_m"] < 8_700e3
    images = s.values["icubeq_images"]
    days = (d.t_s - d.event("icubeq_release")[0]) / 86_400.0
    # 2 cameras x 1/min while over the lit side: less than all the time, more than nothing
    assert 0.2 * 2 * 1_440 * days < images < 2 * 1_440 * days


def test_la_stack_handover_has_every_field_and_acks_are_taken_once(
        parking: dict[str, Any]) -> None:
    d = resume(*parking["snap"])
    msgs = parking["drive"].sent_of("handover")
    assert len(msgs) == 1 and msgs[0].target == "lander"
    body = msgs[0].body
    assert set(body) >= HANDOVER_FIELDS
    assert body["what"] == "la_stack" and body["frame"] == "MCI" and body["t_s"] == T_LA_SEP
    assert body["mass_kg"] == pytest.approx(3_240.0) and body["sample_mass_g"] == 0.0
    assert body["propellant_kg"] + body["dry_mass_kg"] == pytest.approx(body["mass_kg"])
    # the OR stack keeps flying: total at launch was 8,350 kg
    assert orb(d).mass_kg() < 8_350.0 - 3_240.0
    ack = {"type": "handover_ack", "handover_id": body["handover_id"], "accepted": True}
    for _ in range(2):
        d.deliver("transfer", dict(ack), src="lander")
        d.step()
    d.deliver("transfer", {**ack, "handover_id": "la_stack-0"}, src="lander")  # stale
    d.step()
    assert d.names().count("handover_acknowledged") == 1
    assert orb(d).counts.ignored_acks == 2


# --- rendezvous, docking, sample transfer --------------------------------------------------


def _aim_point(d: Drive) -> tuple[np.ndarray, np.ndarray]:
    f = orb(d).flight
    assert f is not None
    basis = rtn_basis(f.r_m, f.v_m_s)
    r_asc = f.r_m + basis.T @ np.array([10e3, 50e3, 0.0])  # 10 km above, 50 km ahead
    speed = math.sqrt(GM_MOON_M3_S2 / float(np.linalg.norm(r_asc)))
    v_asc = speed * np.cross(basis[2], r_asc / np.linalg.norm(r_asc))
    return r_asc, v_asc


def test_rendezvous_from_the_aim_point_reaches_capture_and_takes_the_sample(
        parking: dict[str, Any]) -> None:
    d = resume(*parking["snap"])
    d.until_t(T_LA_SEP + 3_600.0)
    r_asc, v_asc = _aim_point(d)
    asc: dict[str, Any] = {"r": r_asc, "v": v_asc, "t": d.t_s, "p": Propagator(MOON_MODEL)}

    def ascender_reports(d: Drive) -> None:
        if orb(d).phase == "docked":
            return
        asc["r"], asc["v"] = asc["p"].step(asc["r"], asc["v"], asc["t"], d.t_s - asc["t"])
        asc["t"] = d.t_s
        d.deliver("transfer", {"type": "target_state", "r_m": asc["r"].tolist(),
                               "v_m_s": asc["v"].tolist(), "t_s": d.t_s, "mass_kg": 450.0},
                  src="ascender")

    ascender_reports(d)
    d.deliver("command", {"op": "rendezvous"})
    t0 = d.t_s
    d.until(lambda d: "docking" in d.names(), each=ascender_reports)
    t_dock, dock = d.event("docking")
    assert t_dock - t0 < 3.0 * 3_600.0  # the reference closes ~1.3 h after the aim point
    assert dock["range_m"] <= 0.30 and dock["closing_speed_m_s"] <= 0.05  # capture_ok
    assert "closing_burn" in d.names()
    docked = d.sent_of("docked")
    assert docked and set(docked[0].body) >= {"type", "t_s", "frame", "r_m", "v_m_s", "mass_kg"}
    # the stack after docking: the ascender (as it flew) at the claws
    r_a, v_a = asc["p"].step(asc["r"], asc["v"], asc["t"], d.t_s - asc["t"])
    f = orb(d).flight
    assert f is not None
    rel_r, _ = lvlh_relative(r_a, v_a, f.r_m, f.v_m_s)
    assert float(np.linalg.norm(rel_r)) < 1.0

    handover = {"type": "sample_handover", "handover_id": "sample-1", "from": "ascender",
                "to": "returner", "container_id": "CE6-SC", "sample_mass_g": SAMPLE_MASS_G}
    for _ in range(2):  # a repeated message is acked again, never counted twice
        d.deliver("transfer", dict(handover), src="ascender")
        d.step()
    assert len(d.sent_of("sample_ack")) == 2
    assert d.names().count("sample_transfer") == 1
    custody = [v for _, n, v in d.events if n == "sample_custody"]
    assert custody == [pytest.approx({**custody[0], "owner": "returner",
                                      "sample_mass_g": SAMPLE_MASS_G})]
    assert orb(d).summary().sample_mass_g == SAMPLE_MASS_G

    d.deliver("command", {"op": "undock"})
    d.step()
    undocked = d.sent_of("undocked")[0].body
    assert undocked["mass_kg"] == 450.0 and orb(d).phase == "lunar_orbit"
    assert float(np.linalg.norm(vec(undocked["v_m_s"]) - f.v_m_s)) > 0.1


# --- return -----------------------------------------------------------------------------------


def test_tei_and_tcm_reach_the_entry_interface_and_the_returner_is_handed_over(
        parking: dict[str, Any]) -> None:
    d = resume(*parking["snap"])
    orb(d).sample_g = SAMPLE_MASS_G  # as after the transfer from the ascender
    fly(d, RETURN)
    names = d.names()
    for name in ("tei_burn_1", "tei_burn_2", "trajectory_correction", "returner_separation"):
        assert name in names
    assert d.event("tei_burn_2")[1]["dv_m_s"] > 100.0
    assert d.event("trajectory_correction")[1]["dv_m_s"] < 5.0
    t_sep, sep = d.event("returner_separation")
    assert t_sep == T_RET_SEP and 3_000e3 < sep["alt_m"] < 8_000e3  # "~5,000 km"
    ho = d.sent_of("handover")[0]
    assert ho.target == "reentry" and set(ho.body) >= HANDOVER_FIELDS
    assert ho.body["frame"] == "ECI" and ho.body["sample_mass_g"] == SAMPLE_MASS_G
    assert ho.body["mass_kg"] == pytest.approx(330.0)  # entry.Capsule
    assert orb(d).summary().sample_mass_g == 0.0

    tgt = change6.entry_interface_target(T_EI)
    r, v = propagate(vec(ho.body["r_m"]), vec(ho.body["v_m_s"]), T_RET_SEP,
                     tgt.t_ei_s - T_RET_SEP, EARTH_MODEL)
    ei = entry_interface_state(r, v, tgt.t_ei_s, tgt.site)
    assert ei.altitude_m == pytest.approx(tgt.altitude_m, abs=2_000.0)
    assert ei.fpa_deg == pytest.approx(tgt.fpa_deg, abs=0.1)
    assert abs(ei.crossrange_deg) < 0.1

    d.until(lambda d: "avoidance_burn" in d.names())
    assert d.event("avoidance_burn")[1]["perigee_alt_m"] > 150e3  # the orbiter stays up
    assert orb(d).tank.mass_kg > orb(d).tank.reserve_kg


# --- commands -----------------------------------------------------------------------------------


def test_commands_are_validated_by_phase_and_arguments() -> None:
    core = OrbiterCore(SEED)
    with pytest.raises(CommandNotAllowed):
        core.validate({"op": "lunar_orbit_insertion"})
    with pytest.raises(InvalidCommand):
        core.validate({"op": "fly_to_mars"})
    core.phase = "lunar_orbit"
    with pytest.raises(InvalidCommand):
        core.validate({"op": "orbit_adjust", "stage": 7})
    with pytest.raises(InvalidCommand):
        core.validate({"op": "rendezvous"})  # the LA stack is still attached
    with pytest.raises(InvalidCommand, match="pdi_utc"):
        core.validate({"op": "orbit_adjust", "stage": 2})  # the plane needs the plan's PDI
    core.validate({"op": "orbit_adjust", "stage": 2, "pdi_utc": PDI_UTC})
    for op in ("prepare_return", "trans_earth_injection"):  # aimed at the plan's EI
        with pytest.raises(InvalidCommand, match="ei_utc"):
            core.validate({"op": op})
        core.validate({"op": op, "ei_utc": EI_UTC})
    assert {"probe_separation", "rendezvous", "separate_returner"} <= core.operations()


def test_separation_needs_the_plans_loi_which_is_unknown_before() -> None:
    core = OrbiterCore(SEED)
    assert math.isnan(core.loi_epoch_s)
    with pytest.raises(InvalidCommand, match="loi_utc"):
        core.validate({"op": "probe_separation"})
    with pytest.raises(InvalidCommand, match="loi_utc"):
        core.validate({"op": "probe_separation", "loi_utc": "next Tuesday"})
    core.validate({"op": "probe_separation", "loi_utc": LOI_UTC})


def test_a_correction_to_the_entry_interface_needs_the_ei_of_the_return_first() -> None:
    core = OrbiterCore(SEED)
    core.phase = "moon_earth_transfer"
    with pytest.raises(InvalidCommand, match="ei_utc"):
        core.validate({"op": "trajectory_correction"})  # the return leg's default target
    core.ei_epoch_s = T_EI
    core.validate({"op": "trajectory_correction", "target": "entry_interface"})


def test_the_stack_has_no_state_before_separation_and_weighs_8350_kg() -> None:
    core = OrbiterCore(SEED)
    s = core.summary()
    assert s.phase == "launch" and s.central_body == ""
    assert s.mass_kg == pytest.approx(8_350.0)
